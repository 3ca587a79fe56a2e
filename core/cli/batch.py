"""``ponder batch``: answer a questions file with one provider batch job, at the batch price.

``submit`` creates the job and returns (``--wait`` also waits and prints the answers); ``status``,
``results``, ``cancel`` and ``list`` work from any process, since the job lives in the run store
(:mod:`ponder.batchjobs`). ``--json`` prints one JSON object on every path, errors included.
Exit codes: 0 done (or submitted), 3 some questions not answered (listed), 1 failure, 2 bad
input.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ponder.cli.app import echo_json, report_error
from ponder.errors import PonderError

PARTIAL_EXIT = 3


@contextmanager
def _jobs(ctx: click.Context, *, quiet: bool = False) -> Iterator[Any]:
    """The batch jobs over the configured run store (closed afterwards)."""
    from ponder.batchjobs.jobs import BatchJobs
    from ponder.batchjobs.settings import BatchSettings, resolve_target
    from ponder.cli.app import AppState, run_store

    state = ctx.find_object(AppState) or ctx.ensure_object(AppState)
    config = state.config
    settings = config.section("batch", BatchSettings)
    storage = run_store(state)

    def target_for(adapter: str | None) -> Any:
        return resolve_target(config, state.plugins, adapter=adapter, discount=settings.discount)

    def progress(text: str) -> None:
        if not quiet:
            click.echo(text, err=True)

    try:
        yield BatchJobs(storage, target_for, settings, progress=progress, limits=config.limits)
    finally:
        storage.close()


def _emit(record: dict[str, Any], as_json: bool, *, answers: bool = False) -> None:
    from ponder.batchjobs.jobs import describe
    from ponder.support.secrets import redact

    if as_json:
        shown = {k: v for k, v in record.items() if k != "requests"}
        echo_json(shown)
        return
    click.echo(describe(record))
    if record.get("errors"):
        for error in record["errors"]:
            click.echo(f"  error: {redact(error)}")
    if not answers or not record.get("finished"):
        return
    for answer in record["answers"]:
        head = f"[{answer['custom_id']}] ({answer['source']}) {answer['question']}"
        click.echo(redact(head))
        text = answer.get("answer") if answer.get("answer") is not None else \
            f"(not answered: {answer.get('error')})"
        click.echo(redact("  " + str(text).replace("\n", "\n  ")))
    usage = record["usage"]
    pricing = record["pricing"]
    click.echo(
        f"answered {record['answered']}/{len(record['answers'])}; batch: "
        f"{usage['batch']['calls']} calls, {usage['batch']['input_tokens']:,} in / "
        f"{usage['batch']['output_tokens']:,} out tokens, ${usage['batch']['cost_usd']:.6f} at "
        f"{(1 - pricing['discount']):.0%} of list price; live retries: "
        f"{usage['live']['calls']} calls, ${usage['live']['cost_usd']:.6f}; "
        f"results: {record['results_path']}")


def _fail(ctx: click.Context, exc: BaseException, as_json: bool) -> None:
    from ponder.support.secrets import redact

    code = getattr(exc, "exit_code", 1)
    message = redact(str(exc) if isinstance(exc, PonderError | TimeoutError)
                     else f"{type(exc).__name__}: {exc}")
    ctx.exit(report_error(message, code, as_json=as_json))


def _exit_for(ctx: click.Context, record: dict[str, Any]) -> None:
    if record.get("finished") and record.get("failed"):
        ctx.exit(PARTIAL_EXIT)


def add_batch_commands(cli: click.Group) -> None:
    """Add the ``batch`` group (submit, status, results, cancel, list) to ``cli``."""

    json_option = click.option("--json", "as_json", is_flag=True,
                               help="Print one JSON object (errors too).")

    @cli.group("batch")
    def batch_group() -> None:
        """Answer many questions with one provider batch job (OpenAI's Batch API: half price,
        results within 24h).

        \b
        Examples:
          ponder batch submit questions.jsonl     # each line: {"question": …, "sources": […]}
          ponder batch status batch_abc           # state and counts, from any process
          ponder batch results batch_abc          # waits, then prints the answers
          ponder batch cancel batch_abc
        """

    @batch_group.command("submit")
    @click.argument("questions", type=click.Path(dir_okay=False))
    @click.option("--wait", is_flag=True, help="Wait for the job and print its answers.")
    @click.option("--poll-interval", type=click.FloatRange(min=0.01), default=None,
                  help="Seconds between polls (default: [batch] poll_interval).")
    @json_option
    @click.pass_context
    def submit(ctx: click.Context, questions: str, wait: bool, poll_interval: float | None,
               as_json: bool) -> None:
        """Submit QUESTIONS (JSONL, the eval dataset format) as one batch job."""
        try:
            with _jobs(ctx, quiet=as_json) as jobs:
                record = jobs.submit(questions)
                if not as_json:
                    click.echo(f"submitted {record['id']} ({len(record['requests'])} requests, "
                               f"{len(record['skipped'])} skipped)", err=True)
                if wait:
                    record = jobs.results(record["id"], poll_interval=poll_interval)
        except (PonderError, TimeoutError, OSError) as exc:
            _fail(ctx, exc, as_json)
            return
        _emit(record, as_json, answers=wait)
        _exit_for(ctx, record)

    @batch_group.command("status")
    @click.argument("job_id")
    @json_option
    @click.pass_context
    def status(ctx: click.Context, job_id: str, as_json: bool) -> None:
        """Ask the provider for JOB_ID's state and counts (and store them)."""
        try:
            with _jobs(ctx, quiet=True) as jobs:
                record = jobs.refresh(job_id)
        except (PonderError, OSError) as exc:
            _fail(ctx, exc, as_json)
            return
        _emit(record, as_json)

    @batch_group.command("results")
    @click.argument("job_id")
    @click.option("--wait/--no-wait", default=True, show_default=True,
                  help="Wait for a running job (a killed wait resumes here).")
    @click.option("--retry/--no-retry", "retry", default=None,
                  help="Answer failed/expired requests live (default: [batch] retry_failed).")
    @click.option("--poll-interval", type=click.FloatRange(min=0.01), default=None,
                  help="Seconds between polls (default: [batch] poll_interval).")
    @json_option
    @click.pass_context
    def results(ctx: click.Context, job_id: str, wait: bool, retry: bool | None,
                poll_interval: float | None, as_json: bool) -> None:
        """Download JOB_ID's results, join them on custom_id and print the answers."""
        try:
            with _jobs(ctx, quiet=as_json) as jobs:
                record = jobs.results(job_id, wait=wait, retry_failed=retry,
                                      poll_interval=poll_interval)
        except (PonderError, TimeoutError, OSError) as exc:
            _fail(ctx, exc, as_json)
            return
        _emit(record, as_json, answers=True)
        _exit_for(ctx, record)

    @batch_group.command("cancel")
    @click.argument("job_id")
    @json_option
    @click.pass_context
    def cancel(ctx: click.Context, job_id: str, as_json: bool) -> None:
        """Cancel JOB_ID (answers it finished stay; `results` retries or lists the rest)."""
        from ponder.support.batch import TERMINAL_STATUSES

        try:
            with _jobs(ctx, quiet=True) as jobs:
                was = jobs.get(job_id).get("status")
                record = jobs.cancel(job_id)
        except (PonderError, OSError) as exc:
            _fail(ctx, exc, as_json)
            return
        if was in TERMINAL_STATUSES:  # said plainly, not as if the cancel had done something
            record = {**record, "note": f"{record['id']} had already ended ({was}): nothing "
                                        "to cancel; `ponder batch results` shows its answers"}
            if not as_json:
                click.echo(f"ponder: {record['note']}", err=True)
        _emit(record, as_json)

    @batch_group.command("list")
    @json_option
    @click.pass_context
    def list_jobs(ctx: click.Context, as_json: bool) -> None:
        """The batch jobs in the run store, newest first (as last seen; `status` refreshes)."""
        from ponder.batchjobs.jobs import describe

        try:
            with _jobs(ctx, quiet=True) as jobs:
                records = jobs.list()
        except (PonderError, OSError) as exc:
            _fail(ctx, exc, as_json)
            return
        if as_json:
            echo_json({"jobs": [{k: v for k, v in r.items() if k not in ("requests", "answers")}
                                for r in records]})
            return
        for record in records:
            click.echo(f"{record.get('created_at', '')}  {describe(record)}")
        if not records:
            click.echo("no batch jobs", err=True)
        sys.stdout.flush()


def run_batch_ask(state: Any, question: str, params: dict[str, Any], sources: list[str],
                  overrides: list[Any], print_answer: Any) -> None:
    """``ponder ask --batch``: map_reduce's map phase as one batch job, then the run itself
    (its map calls served from the job's replies, the reduce live); see
    :mod:`ponder.batchjobs.ask`. Exit codes as for ``ask``."""
    from ponder.batchjobs.ask import batch_map
    from ponder.engine.system import System

    if not sources:
        raise click.UsageError("--batch needs SOURCES (files or directories; not stdin)")
    state.overrides = overrides
    config = state.config
    if params.get("no_cache"):
        config.cache.enabled = False
    if config.origin("strategy.name") == "default":  # --batch is map_reduce's map phase
        config.strategy.name = "map_reduce"
        config.origins["strategy.name"] = "--batch"
    if config.strategy.name == "map_reduce":
        # the run must make the map calls the job answered, even over a context one call could
        # read (map_reduce's single read would ask that call live and leave the job's replies)
        config.strategy.options["single_read"] = False
        config.origins["strategy.single_read"] = "--batch"
    as_json = bool(params.get("as_json"))
    quiet = bool(params.get("quiet")) or as_json
    ctx = click.get_current_context()
    try:
        with _jobs(ctx, quiet=quiet) as jobs:
            system = System(config, plugins=state.plugins,
                            progress="silent" if quiet else (params.get("progress") or "auto"))
            record = batch_map(system, jobs, question, sources,
                               include=params.get("include") or (),
                               exclude=params.get("exclude") or (),
                               chunk_tokens=params.get("chunk_tokens"))
    except (PonderError, TimeoutError, OSError) as exc:
        _fail(ctx, exc, as_json)
        return
    if not quiet:
        usage = record["usage"]["batch"]
        click.echo(f"map phase: batch {record['id']} ({record.get('status')}), "
                   f"{record['answered']}/{len(record['requests'])} chunks answered, "
                   f"{usage['input_tokens']:,} in / {usage['output_tokens']:,} out tokens, "
                   f"${usage['cost_usd']:.6f} at the batch price; the run reuses "
                   f"{record['cached']} replies and asks the rest live", err=True)
    answer = system.ask(question, sources, include=params.get("include") or (),
                        exclude=params.get("exclude") or (),
                        chunk_tokens=params.get("chunk_tokens"))
    if as_json:

        data = answer.to_dict()
        data["batch"] = {"id": record["id"], "status": record.get("status"),
                         "chunks": len(record["requests"]), "answered": record["answered"],
                         "cached": record["cached"], "usage": record["usage"],
                         "pricing": record["pricing"], "run_id": record.get("run_id")}
        echo_json(data)
    else:
        print_answer(answer, as_json=False, quiet=quiet)
    if answer.partial:
        nothing_read = (answer.chunks.get("total") and not answer.chunks.get("read")
                        and answer.stopped_by is None)
        ctx.exit(PARTIAL_EXIT if answer.answer and not nothing_read else 1)
