"""``ponder runs``: list the recorded runs, show one with its LM calls, print where they live.

The store is the configured ``[storage]`` plugin (``sqlite`` when none is configured). Nothing
here imports dspy or litellm. Records were cleaned of secrets when they were written; what is
printed is redacted once more.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from ponder.cli.app import echo_json
from ponder.errors import PonderError

#: how much of a question the list shows
QUESTION_WIDTH = 60
STATUS_COLOURS = {"ok": "green", "partial": "yellow", "failed": "red", "interrupted": "red",
                  "running": "cyan", "incomplete": "magenta"}


@contextmanager
def open_storage(ctx: click.Context) -> Iterator[Any]:
    """The configured storage (else ``sqlite``), closed afterwards."""
    from ponder.cli.app import AppState, run_store

    storage = run_store(ctx.find_object(AppState) or ctx.ensure_object(AppState))
    try:
        yield storage
    finally:
        storage.close()


def _fail(ctx: click.Context, message: str, code: int = 2) -> None:
    """Report through the root group (``ponder.cli.app.report_error``: stderr, and one JSON
    object on stdout with ``--json``). An unknown or ambiguous run id is bad input: exit 2."""
    from ponder.cli.app import report_error

    as_json = bool(ctx.meta.get("ponder.json") or ctx.params.get("as_json"))
    ctx.exit(report_error(message, code, as_json=as_json))


# --- formatting -----------------------------------------------------------------------------------
def format_time(value: Any) -> str:
    """A run's ``started_at`` (epoch seconds or ISO text) as local ``YYYY-MM-DD HH:MM:SS``."""
    if value is None:
        return "-"
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            moment = datetime.fromtimestamp(value)
        else:
            moment = datetime.fromisoformat(str(value))
            if moment.tzinfo is not None:
                moment = moment.astimezone()
    except (ValueError, OverflowError, OSError):
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def format_cost(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        return "-"
    if value == 0:
        return "$0"
    return f"${value:.6f}" if abs(value) < 0.01 else f"${value:.4f}"


def format_seconds(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value:.2f}s" if value < 10 else f"{value:.1f}s"


def _text(value: Any) -> str:
    """``value`` as rich markup that shows it literally (``-`` when empty)."""
    from rich.markup import escape

    return "-" if value is None or value == "" else escape(str(value))


def _one_line(text: Any, width: int) -> str:
    line = " ".join(str(text or "").split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _status(value: Any) -> str:
    colour = STATUS_COLOURS.get(str(value))
    return f"[{colour}]{value}[/]" if colour else _text(value)


def _console() -> Any:
    from ponder.cli.app import console

    # the column sizes must not depend on a terminal (tests, pipes): wide enough for the ids
    return console(highlight=False, soft_wrap=False)


# --- the commands ----------------------------------------------------------------------------
def add_runs_command(cli: click.Group) -> None:
    """Add the ``runs`` group (list, ``show ID``, ``path``) to ``cli``."""

    @cli.group("runs", invoke_without_command=True)
    @click.option("--limit", "-n", type=click.IntRange(min=0), default=20, show_default=True,
                  help="How many runs to list, newest first (0: all).")
    @click.option("--json", "as_json", is_flag=True,
                  help="Print a JSON list instead of a table.")
    @click.pass_context
    def runs_group(ctx: click.Context, limit: int, as_json: bool) -> None:
        """List recorded runs, newest first; `ponder runs show ID` shows one with its calls.

        \b
        Examples:
          ponder runs --limit 5
          ponder runs show 3f2a        # a unique prefix of the id is enough
          ponder runs path             # where the runs are stored
        """
        if ctx.invoked_subcommand is not None:
            return
        with open_storage(ctx) as storage:
            try:
                runs = storage.list_runs(limit)
            except PonderError as exc:
                _fail(ctx, str(exc), exc.exit_code)
                return
        if as_json:
            echo_json(runs)
            return
        _print_runs(runs, storage.location)

    from ponder.cli.stats import stats_command

    runs_group.add_command(stats_command)

    @runs_group.command("show")
    @click.argument("run_id")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @click.pass_context
    def show_command(ctx: click.Context, run_id: str, as_json: bool) -> None:
        """Show run RUN_ID (a unique prefix is enough): answer, usage and every LM call."""
        with open_storage(ctx) as storage:
            try:
                run = storage.get_run(run_id)
            except PonderError as exc:
                # what a store reports about a given id (an ambiguous prefix) is about the
                # user's input, whatever exit code the store's error carries: exit 2
                _fail(ctx, str(exc), 2)
                return
            location = storage.location
        if run is None:
            _fail(ctx, f"no run {run_id!r} in {location} (`ponder runs` lists them)")
            return
        if as_json:
            echo_json(run)
            return
        _print_run(run)

    @runs_group.command("path")
    @click.pass_context
    def path_command(ctx: click.Context) -> None:
        """Print where the runs are stored (a file path, or :memory:)."""
        with open_storage(ctx) as storage:
            click.echo(storage.location)


def _print_runs(runs: list[dict[str, Any]], location: str) -> None:
    from rich.table import Table

    from ponder.support.secrets import redact

    console = _console()
    if not runs:
        console.print(f"no runs recorded yet in {location}")
        return
    table = Table(title=f"runs in {location}", title_justify="left")
    for column in ("id", "started", "status", "strategy", "model", "cost", "elapsed",
                   "question"):
        numeric = column in ("cost", "elapsed")
        table.add_column(column, justify="right" if numeric else "left",
                         no_wrap=column != "question", overflow="fold")
    for run in runs:
        table.add_row(
            _text(run.get("id")), format_time(run.get("started_at")), _status(run.get("status")),
            _text(run.get("strategy")), _text(run.get("model")), format_cost(run.get("cost_usd")),
            format_seconds(run.get("elapsed_s")),
            _text(redact(_one_line(run.get("question"), QUESTION_WIDTH))))
    console.print(table)


def _print_run(run: dict[str, Any]) -> None:
    from rich.table import Table

    from ponder.support.secrets import redact

    console = _console()
    usage = run.get("usage") or {}
    usage_text = (", ".join(f"{k}: {v}" for k, v in usage.items()) if isinstance(usage, dict)
                  else str(usage))
    fields = [
        ("run", _text(run.get("id"))),
        ("status", _status(run.get("status"))),
        ("started", format_time(run.get("started_at"))),
        ("strategy", _text(run.get("strategy"))),
        ("adapter", _text(run.get("adapter"))),
        ("model", _text(run.get("model"))),
        ("stopped by", _text(run.get("stopped_by"))),
        ("elapsed", format_seconds(run.get("elapsed_s"))),
        ("cost", format_cost(run.get("cost_usd"))),
        ("usage", _text(usage_text)),
        ("question", _text(redact(run.get("question") or ""))),
    ]
    for label, value in fields:
        console.print(f"[bold]{label}:[/] {value}")
    failures = run.get("failures") or []
    if failures:
        console.print(f"[bold]failures ({len(failures)}):[/]")
        for failure in failures:
            text = failure if not isinstance(failure, dict) else "; ".join(
                f"{k}: {v}" for k, v in failure.items())
            console.print(f"  - {_text(redact(str(text)))}")
    console.print("[bold]answer:[/]")
    console.print(_text(redact(run.get("answer") or "")))

    calls = run.get("calls") or []
    if not calls:
        console.print("no LM calls recorded")
        return
    table = Table(title=f"{len(calls)} LM call(s)", title_justify="left")
    for column in ("#", "role", "adapter", "tokens in", "tokens out", "latency", "cost",
                   "cached", "error"):
        numeric = column in ("#", "tokens in", "tokens out", "latency", "cost")
        table.add_column(column, justify="right" if numeric else "left",
                         no_wrap=column != "error", overflow="fold")
    for index, call in enumerate(calls, 1):
        table.add_row(
            str(index), _text(call.get("role")), _text(call.get("adapter")),
            _text(call.get("input_tokens")), _text(call.get("output_tokens")),
            format_seconds(call.get("latency_s")), format_cost(call.get("cost_usd")),
            "yes" if call.get("cached") else "",
            _text(redact(_one_line(call.get("error"), 80))) if call.get("error") else "")
    console.print(table)
