"""``ponder sessions [show NAME | delete NAME]`` and ``ponder ask --session NAME``.

Sessions live in the run store (records namespace ``session``, see :mod:`ponder.sessions`).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import click

from ponder.cli.app import AppState, echo_json


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def _store(state: AppState) -> Any:
    from ponder.cli.app import run_store
    from ponder.sessions.store import SessionSettings, SessionStore

    return SessionStore(run_store(state), state.config.section("sessions", SessionSettings))


def run_session_ask(state: AppState, question: str, params: dict[str, Any],
                    sources: list[str], overrides: list[Any],
                    print_answer: Callable[..., None]) -> None:
    """``ponder ask --session NAME QUESTION [SOURCES…]``: one turn of a stored session.

    ``ask`` hands over its flags as config ``overrides`` and its answer printer, so this module
    does not import ``ask`` (which imports this one).
    """
    from ponder.engine.system import System
    from ponder.sessions.session import Session

    state.overrides = overrides
    config = state.config
    if params.get("model") and not config.adapter.name:
        config.adapter.name = "litellm"
    quiet = params.get("quiet") or params.get("as_json")
    progress = "silent" if quiet else (params.get("progress") or "auto")
    system = System(config, plugins=state.plugins, progress=progress)
    with Session(params["session"], sources, system=system, include=params.get("include") or (),
                 exclude=params.get("exclude") or ()) as session:
        answer = session.ask(question, chunk_tokens=params.get("chunk_tokens"))
        turn = session.turns[-1]
        info = {"name": session.name, "turn": len(session.turns),
                "history_turns": turn["history_turns"], "load_s": turn["load_s"],
                "resumed": session.resumed, "total": session.usage}
    if params.get("as_json"):
        data = answer.to_dict()
        data["session"] = info
        echo_json(data)
    else:
        print_answer(answer, as_json=False, quiet=bool(quiet))
        if not quiet:
            total = info["total"]
            click.echo(f"session {info['name']}: turn {info['turn']} (with "
                       f"{info['history_turns']} earlier turn(s)); session total: "
                       f"{total['calls']} calls, ${total['cost_usd']:.4f}", err=True)
    if answer.exit_code:  # the same rule as `ponder ask` (Answer.status)
        raise click.exceptions.Exit(answer.exit_code)


@click.group("sessions", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def sessions_group(ctx: click.Context, as_json: bool) -> None:
    """List the stored sessions (ponder ask --session NAME, ponder chat)."""
    if ctx.invoked_subcommand is not None:
        return
    from ponder.sessions.session import describe

    records = [describe(r) for r in _store(ctx.obj).list()]
    if as_json:
        echo_json({"sessions": records})
        return
    if not records:
        click.echo("no sessions (start one: ponder ask --session NAME \"…\" SOURCES…)")
        return
    click.echo(f"{'name':<20} {'turns':>5} {'cost':>9}  {'updated':<16}  {'expires':<16}  "
               "sources")
    for r in records:
        click.echo(f"{r['name']:<20} {r['turns']:>5} ${r['cost_usd']:>8.4f}  "
                   f"{_when(r['updated_at']):<16}  {_when(r['expires_at']):<16}  "
                   f"{', '.join(r['sources'])}")


@sessions_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def show_command(state: AppState, name: str, as_json: bool) -> None:
    """Show session NAME: its sources, config and every turn with its usage."""
    from ponder.errors import ConfigError
    from ponder.support.secrets import redact

    record = _store(state).get(name)
    if record is None:
        raise ConfigError(f"no session {name!r} (expired, deleted or never started; "
                          "`ponder sessions` lists them)")
    if as_json:
        echo_json(record)
        return
    click.echo(f"session {name}: {len(record['turns'])} turns over "
               f"{', '.join(record['sources'])}; expires {_when(record.get('expires_at'))}")
    for number, turn in enumerate(record["turns"], 1):
        usage = turn["usage"]
        click.echo(f"\n[{number}] {turn['question']}")
        click.echo(redact(turn["answer"]))
        click.echo(f"    {usage['calls']} calls, {usage['input_tokens']} in / "
                   f"{usage['output_tokens']} out, ${usage['cost_usd']:.4f}, "
                   f"{turn['elapsed_s']:.1f}s, run {turn['run_id']}")


@sessions_group.command("delete")
@click.argument("name")
@click.pass_obj
def delete_command(state: AppState, name: str) -> None:
    """Delete session NAME."""
    from ponder.errors import ConfigError

    if not _store(state).delete(name):
        raise ConfigError(f"no session {name!r} to delete")
    click.echo(f"deleted session {name}")


def add_sessions_commands(cli: click.Group) -> None:
    cli.add_command(sessions_group)
