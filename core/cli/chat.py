"""``ponder chat SOURCES…``: a conversation over sources loaded once.

Line editing and history come from prompt_toolkit when it is installed, else from the standard
library's ``readline`` (history kept in ``<ponder data dir>/chat_history``). Commands: ``/sources``,
``/cost``, ``/save [NAME]`` (store the session under NAME, and write the transcript with
``/save FILE.md``), ``/history``, ``/help``, ``/quit`` (or Ctrl-D).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ponder.cli.app import AppState

HELP = ("/sources  what is loaded   /cost  usage so far   /save [NAME|FILE.md]  keep the session "
        "or write its transcript\n/history  earlier questions   /quit  leave (Ctrl-D too)")


def _reader(history_file: Path) -> tuple[Callable[[str], str], Callable[[], None]]:
    """(read a line, save the history): prompt_toolkit, else readline, else plain input()."""
    try:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
    except ImportError:
        pass
    else:
        prompt_session: Any = PromptSession(history=FileHistory(str(history_file)))
        return (lambda prompt: prompt_session.prompt(prompt)), (lambda: None)
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input
        return input, lambda: None
    with contextlib.suppress(OSError):  # no history yet
        readline.read_history_file(history_file)
    readline.set_history_length(1000)

    def save() -> None:
        with contextlib.suppress(OSError):  # a history that cannot be kept is no failure
            readline.write_history_file(history_file)

    return input, save


def _usage_line(usage: Any) -> str:
    cached = f" (+{usage.cached_calls} cached)" if usage.cached_calls else ""
    return (f"{usage.calls} calls{cached}, {usage.input_tokens} in / {usage.output_tokens} out, "
            f"${usage.cost_usd:.4f}")


def _command(session: Any, line: str) -> bool:
    """Run a /command; False means leave."""
    name, _, arg = line[1:].partition(" ")
    arg = arg.strip()
    if name in ("quit", "exit", "q"):
        return False
    if name == "help":
        click.echo(HELP)
    elif name == "sources":
        context = session.context
        click.echo(f"{', '.join(session.sources)}: {len(context.documents)} files, "
                   f"{context.total_chars:,} chars (≈{context.estimated_tokens:,} tokens)"
                   + (f", {len(context.skipped)} skipped" if context.skipped else ""))
        for document in context.documents[:20]:
            click.echo(f"  {document.path}")
        if len(context.documents) > 20:
            click.echo(f"  … and {len(context.documents) - 20} more")
    elif name == "cost":
        total = session.usage
        click.echo(f"{total['turns']} turns: {total['calls']} calls, {total['input_tokens']} in "
                   f"/ {total['output_tokens']} out, ${total['cost_usd']:.4f}")
    elif name == "history":
        for number, turn in enumerate(session.turns, 1):
            click.echo(f"[{number}] {turn['question']}")
    elif name == "save":
        if arg.endswith(".md"):
            Path(arg).write_text(session.transcript(), encoding="utf-8")
            click.echo(f"wrote {arg}")
        elif arg or session.name:
            session.save(arg or None)
            click.echo(f"saved as session {session.name} (ponder ask --session {session.name} "
                       "… carries it on)")
        else:
            click.echo("/save NAME keeps the session in the run store; /save FILE.md writes "
                       "the transcript")
    else:
        click.echo(f"unknown command /{name}; /help lists them")
    return True


@click.command("chat")
@click.argument("sources", nargs=-1, required=False)
@click.option("--session", "name", metavar="NAME", help="Keep (or carry on) session NAME.")
@click.option("--strategy", help="Strategy plugin for every question.")
@click.option("--model", help="Model for the adapter.")
@click.option("--include", multiple=True, metavar="GLOB", help="Only matching files.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching files.")
@click.pass_obj
def chat_command(state: AppState, sources: tuple[str, ...], name: str | None,
                 strategy: str | None, model: str | None, include: tuple[str, ...],
                 exclude: tuple[str, ...]) -> None:
    """Talk about SOURCES: each question sees the conversation so far.

    \b
    Examples:
      ponder chat src/
      ponder chat --session review src/     (carry it on later: ponder chat --session review)
    """
    from ponder.cli.ask import _overrides
    from ponder.engine.system import System
    from ponder.errors import PonderError
    from ponder.sessions.session import Session
    from ponder.support.fileutils import get_data_dir
    from ponder.support.secrets import redact

    state.overrides = _overrides({"strategy": strategy, "model": model})
    config = state.config
    if model and not config.adapter.name:
        config.adapter.name = "litellm"
    system = System(config, plugins=state.plugins, progress="auto")
    session = Session(name, list(sources), system=system, include=include, exclude=exclude)
    read, save_history = _reader(Path(get_data_dir()) / "chat_history")
    resumed = f" (carrying on: {len(session.turns)} earlier turns)" if session.resumed else ""
    click.echo(f"ponder chat over {', '.join(session.sources)}{resumed}. /help for commands.")
    try:
        while True:
            try:
                line = read("? ").strip()
            except EOFError:
                click.echo()
                break
            except KeyboardInterrupt:
                click.echo()
                continue
            if not line:
                continue
            if line.startswith("/"):
                if not _command(session, line):
                    break
                continue
            try:
                answer = session.ask(line)
            except KeyboardInterrupt:
                click.echo("(interrupted)")
                continue
            except PonderError as exc:
                click.echo(f"ponder: error: {redact(str(exc))}", err=True)
                continue
            except Exception as exc:  # a provider or plugin failure must not end the session
                click.echo(f"ponder: error: {redact(f'{type(exc).__name__}: {exc}')}", err=True)
                continue
            click.echo(redact(answer.answer))
            cited = ", ".join(f"{c.path}:{c.line}" for c in answer.citations[:8])
            load_s = session.last_load_s  # a small project loads in milliseconds, not 0.00s
            load = "" if not load_s else f"; loaded sources in {load_s:.2f}s" if load_s >= 0.1 \
                else f"; loaded sources in {load_s * 1000:.0f} ms"
            click.echo(f"  [{_usage_line(answer.usage)}; {answer.elapsed_s:.1f}s{load}"
                       + (f"; cited {cited}" if cited else "") + "]", err=True)
            if answer.note:
                click.echo(f"  partial: {answer.note}", err=True)
    finally:
        total = session.usage
        click.echo(f"{total['turns']} turns, {total['calls']} calls, ${total['cost_usd']:.4f}"
                   + (f"; session {session.name} saved" if session.name else ""), err=True)
        session.close()
        save_history()
    sys.stdout.flush()


def add_chat_commands(cli: click.Group) -> None:
    cli.add_command(chat_command)
