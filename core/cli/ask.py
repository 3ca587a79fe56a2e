"""``ponder ask`` and ``ponder diff``: one question over sources or a git diff.

Exit codes: 0 complete answer, 3 partial answer (the result's note says what is missing),
1 failure, 2 bad input (usage, config, sources).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ponder.cli.app import AppState, echo_json

#: exit code of a partial answer (see the result's note)
EXIT_PARTIAL = 3


def _check_chunk_tokens(ctx: click.Context, param: click.Parameter, value: int | None) -> Any:
    """Refuse a chunk size no chunk can have, naming the flag (click exits 2)."""
    if value is None:
        return None
    from ponder.context.chunking import MIN_CHUNK_TOKENS

    if value < MIN_CHUNK_TOKENS:
        raise click.BadParameter(f"must be at least {MIN_CHUNK_TOKENS} tokens, got {value}")
    return value


def _ask_options(fn: Any) -> Any:
    options = [
        click.option("--strategy", help="Strategy plugin (auto, direct, map_reduce, …)."),
        click.option("--adapter", help="Adapter plugin (local, litellm, gemini, …)."),
        click.option("--model", help="Model for the adapter (e.g. gemini/gemini-2.5-flash)."),
        click.option("--predictor", help="Predictor plugin (predict, chain_of_thought, …)."),
        click.option("--concurrency", type=int, help="Parallel LM calls at most."),
        click.option("--max-cost", type=float, help="Stop when the run has cost this (USD)."),
        click.option("--max-tokens", type=int, help="Stop after this many tokens in+out."),
        click.option("--timeout", type=float, help="Hard time limit in seconds."),
        click.option("--chunk-tokens", type=int, callback=_check_chunk_tokens,
                     help="Chunk size in (estimated) tokens."),
        click.option("--include", multiple=True, metavar="GLOB", help="Only matching files."),
        click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching files."),
        click.option("--program", metavar="NAME_OR_FILE",
                     help="An optimized program: `ponder optimize --out` file or study name."),
        click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                     help="Any config value, e.g. --set strategy.fan_in=4. Repeatable."),
        click.option("--no-cache", "no_cache", is_flag=True,
                     help="Ask the model again instead of using cached replies."),
        click.option("--session", metavar="NAME", help="ask only: a turn of stored session NAME "
                     "(history, loaded sources; see `ponder sessions`)."),
        click.option("--batch", is_flag=True, help="ask only: map_reduce's map phase as one "
                     "provider batch job at the batch price (waits; see docs/batch.md)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
        click.option("--dry-run", "dry_run", is_flag=True,
                     help="Print the plan (strategy, chunks, calls, tokens, cost, time); stop."),
        click.option("--probe", "probe", is_flag=True,
                     help="With --dry-run and no recorded latency: time the plan with one real "
                          "call (counted, priced and recorded)."),
        click.option("-q", "--quiet", is_flag=True, help="No progress or summary on stderr."),
        click.option("--progress", "progress",
                     type=click.Choice(["auto", "rich", "plain", "silent"]),
                     envvar="PONDER_PROGRESS", show_envvar=True,
                     help="Progress on stderr: a live bar on a terminal (auto), always a bar "
                          "(rich), a line every 10% for logs (plain), or none (silent)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _overrides(params: dict[str, Any]) -> list[tuple[tuple[str, ...], Any, str]]:
    from ponder.kernel.config import parse_assignment

    flags = {
        "strategy": ("strategy", "name"), "adapter": ("adapter", "name"),
        "predictor": ("predictor", "name"), "concurrency": ("limits", "concurrency"),
        "max_cost": ("limits", "max_cost"), "max_tokens": ("limits", "max_tokens"),
        "timeout": ("limits", "timeout"), "model": ("adapter", "model"),
    }
    overrides = []
    if params.get("program"):  # the program's keys first, so flags and --set still win
        from ponder.optimize.program import program_overrides

        overrides.extend(program_overrides(params["program"]))
    for param, path in flags.items():
        if params.get(param) is not None:
            overrides.append((path, params[param], "--" + param.replace("_", "-")))
    if params.get("no_cache"):
        overrides.append((("cache", "enabled"), False, "--no-cache"))
    for text in params.get("assignments") or ():
        path, value = parse_assignment(text)
        overrides.append((path, value, f"--set {text}"))
    return overrides


def _run_ask(state: AppState, question: str, params: dict[str, Any], *,
             sources: list[str] | None = None, diff_text: str | None = None,
             diff_rev: str | None = None) -> None:
    from ponder.engine.system import System

    if params.get("probe") and not params.get("dry_run"):
        raise click.UsageError("--probe times a plan: use it with --dry-run")
    state.overrides = _overrides(params)
    config = state.config
    if params.get("model") and not config.adapter.name:
        config.adapter.name = "litellm"  # a bare --model means "any litellm model string"
        config.origins["adapter.name"] = "--model"
    quiet = params.get("quiet") or params.get("as_json")
    progress = "silent" if quiet else (params.get("progress") or "auto")
    system = System(config, plugins=state.plugins, progress=progress)
    if sources is not None:
        from ponder.engine.plan import preflight  # the plan first: printed, or only announced

        sources = preflight(system, question, sources, params)
        if sources is None:
            return
        answer = system.ask(question, sources, include=params.get("include") or (),
                            exclude=params.get("exclude") or (),
                            chunk_tokens=params.get("chunk_tokens"))
    else:
        from ponder.context.sources import load_git_diff

        context = load_git_diff(rev=diff_rev, text=diff_text)
        answer = system.run(question, context, chunk_tokens=params.get("chunk_tokens"))
    _print_answer(answer, as_json=bool(params.get("as_json")), quiet=bool(quiet))
    if answer.exit_code:  # 3 partial (or interrupted with an answer), 1 failed: Answer.status
        raise click.exceptions.Exit(answer.exit_code)


def _print_answer(answer: Any, *, as_json: bool, quiet: bool) -> None:
    from ponder.support.secrets import redact

    if as_json:
        echo_json(answer.to_dict())
        return
    text = redact(answer.answer)
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    else:
        click.echo(text)
    if quiet:
        return
    usage = answer.usage
    lines = [
        f"strategy: {answer.strategy}" + (f" ({answer.strategy_reason})"
                                          if answer.strategy_reason else ""),
        f"model: {answer.model}; calls: {usage.calls}"
        + (f" (+{usage.cached_calls} from the cache)" if usage.cached_calls else "")
        + f"; tokens: {usage.input_tokens} in, "
        f"{usage.output_tokens} out; cost: ${usage.cost_usd:.4f}; {answer.elapsed_s:.1f}s; "
        f"run {answer.run_id}",
    ]
    if answer.citations:
        lines.append("cited: " + ", ".join(f"{c.path}:{c.line}" for c in answer.citations[:10]))
    # a repaired file (invalid UTF-8, bad bytes replaced) was read: it is not "skipped"
    for kind in ("skipped", "repaired"):
        listed = [s for s in answer.skipped_sources if s.get("kind", "skipped") == kind]
        if listed:
            shown = ", ".join(f"{s['path']} ({s['reason']})" for s in listed[:5])
            more = len(listed) - 5
            lines.append(f"{kind} {len(listed)} file(s): {shown}"
                         + (f" and {more} more" if more > 0 else ""))
    if answer.note:
        lines.append(f"{'failed' if answer.status == 'failed' else 'partial'}: {answer.note}")
    lines.extend(f"problem: {problem}" for problem in answer.problems)
    click.echo("\n".join(redact(line) for line in lines), err=True)


@click.command("ask")
@click.argument("question")
@click.argument("sources", nargs=-1)
@_ask_options
@click.pass_obj
def ask_command(state: AppState, question: str, sources: tuple[str, ...], **params: Any) -> None:
    """Answer QUESTION over SOURCES (files, directories, globs, or - for stdin).

    \b
    Examples:
      ponder ask "What patterns does this codebase have?" src/
      ponder ask "Where is the retry policy configured?" . --include '*.py' --json
      git show HEAD:README.md | ponder ask "Summarise this" -
    """
    if params.get("session"):  # sessions own their sources: a resumed one needs none
        from ponder.cli.sessions import run_session_ask

        return run_session_ask(state, question, params, list(sources), _overrides(params),
                               _print_answer)
    if params.get("batch"):  # the map phase as a provider batch job: ponder.cli.batch
        from ponder.cli.batch import run_batch_ask

        return run_batch_ask(state, question, params, list(sources), _overrides(params),
                             _print_answer)
    if not sources:
        if sys.stdin.isatty():
            raise click.UsageError("no sources given: name files or directories, or - for stdin")
        sources = ("-",)
    _run_ask(state, question, params, sources=list(sources))


@click.command("diff")
@click.argument("question")
@click.option("--git", "rev", metavar="REV", help="Diff against REV (runs `git diff REV`).")
@_ask_options
@click.pass_obj
def diff_command(state: AppState, question: str, rev: str | None, **params: Any) -> None:
    """Answer QUESTION about a git diff read from stdin, or from `git diff REV` with --git.

    \b
    Examples:
      git diff main | ponder diff "Does this change break the public API?"
      ponder diff "What does this change do?" --git HEAD~3
    """
    if rev:
        _run_ask(state, question, params, diff_rev=rev)
        return
    if sys.stdin.isatty():  # reading would wait, silently, for a diff nobody is typing
        raise click.UsageError("no diff given: pipe one in (git diff main | ponder diff …) "
                               "or use --git REV")
    text = sys.stdin.read()
    if not text.strip():
        raise click.UsageError("no diff on stdin: pipe `git diff` in, or use --git REV")
    _run_ask(state, question, params, diff_text=text)


def add_ask_commands(cli: click.Group) -> None:
    cli.add_command(ask_command)
    cli.add_command(diff_command)
