"""The ``ponder`` command line. Subcommands from plugins arrive through
``ponder_register_commands``; nothing here imports dspy or litellm."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from ponder import __version__
from ponder.errors import PonderError

log = logging.getLogger("ponder")


class AppState:
    """What every command needs, built lazily: the config, then the plugins it selects."""

    def __init__(self, config_path: str | None = None, plugin_modules: tuple[str, ...] = (),
                 overrides: list[tuple[tuple[str, ...], Any, str]] | None = None) -> None:
        self.config_path = config_path
        self.plugin_modules = plugin_modules
        self.overrides = overrides or []
        self._config = None
        self._plugins = None
        self._commands: dict[str, click.Command] | None = None

    def plugin_commands(self, builtin: set[str]) -> dict[str, click.Command]:
        """Subcommands added by plugins; a broken config or plugin must not hide --help."""
        if self._commands is None:
            group = click.Group()
            try:
                self.plugins.add_commands(group)
            except PonderError as exc:
                log.debug("plugin commands unavailable: %s", exc)
            for name in sorted(set(group.commands) & builtin):
                log.warning("a plugin's command %r is shadowed by the built-in one", name)
            self._commands = {n: c for n, c in group.commands.items() if n not in builtin}
        return self._commands

    @property
    def config(self):  # -> ponder.config.Config
        if self._config is None:
            from ponder.config import load_config

            self._config = load_config(self.config_path, overrides=self.overrides)
        return self._config

    @property
    def plugins(self):  # -> ponder.loader.PluginSet
        if self._plugins is None:
            from ponder.loader import load_plugins

            settings = self.config.plugins
            self._plugins = load_plugins(
                modules=[*settings.load, *self.plugin_modules],
                allow=settings.allow,
                disable=settings.disable,
                strict=settings.strict,
            )
        return self._plugins


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"ponder: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbose: int) -> None:
    from ponder.secrets import SecretsFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    handler.addFilter(SecretsFilter())  # secrets never reach a log line
    logger = logging.getLogger("ponder")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)


class PonderGroup(click.Group):
    """Adds plugin subcommands on demand and turns PonderError into a clean exit.

    Plugin commands live on the invocation's AppState, not on this module-level group, so one
    process can run the CLI many times (tests do) without commands leaking between runs.
    """

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        state = ctx.find_object(AppState)
        if state is None:  # `ponder --help` parses options before the group callback runs
            state = ctx.ensure_object(AppState)
            state.config_path = ctx.params.get("config_path")
            state.plugin_modules = tuple(ctx.params.get("plugin_modules") or ())
        return state.plugin_commands(builtin=set(self.commands))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugin_commands(ctx)})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None:
            command = self._plugin_commands(ctx).get(name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PonderError as exc:
            from ponder.secrets import redact

            click.echo(f"ponder: error: {redact(str(exc))}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=PonderGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="ponder")
@click.option("--config", "config_path", metavar="PATH", envvar="PONDER_CONFIG",
              help="Config file (default: ./ponder.toml, over the user-level file).")
@click.option("--plugin", "plugin_modules", multiple=True, metavar="MODULE",
              help="Load an in-house plugin module (dotted path or .py file). Repeatable.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, plugin_modules: tuple[str, ...],
        verbose: int) -> None:
    """ponder: answer questions over codebases and documents far larger than a model's window.

    Every feature is a plugin; `ponder plugins` lists what is installed.
    """
    _setup_logging(verbose)
    state = ctx.ensure_object(AppState)
    state.config_path, state.plugin_modules = config_path, plugin_modules


# --- ponder plugins ------------------------------------------------------------------------------
@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_obj
def plugins_command(state: AppState, as_json: bool) -> None:
    """List plugins: where each came from, its status and what it provides."""
    plugin_set = state.plugins
    state.plugin_commands(builtin=set(cli.commands))
    rows = [info.to_dict() for info in plugin_set.plugins]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ponder {__version__} plugins", title_justify="left")
    for column in ("name", "distribution", "version", "status", "provides", "import ms"):
        table.add_column(column, justify="right" if column == "import ms" else "left")
    colours = {"ok": "green", "failed": "red", "disabled": "yellow"}
    for row in rows:
        provides = "; ".join(f"{kind}: {', '.join(names)}"
                             for kind, names in sorted(row["provides"].items()))
        if row["commands"]:
            commands = "commands: " + ", ".join(row["commands"])
            provides = f"{provides}; {commands}" if provides else commands
        status = f"[{colours[row['status']]}]{row['status']}[/]"
        distribution = "(local)" if row["local"] else row["distribution"]
        table.add_row(row["name"], distribution, row["version"], status, provides or "-",
                      f"{row['import_ms']:.1f}")
    console = Console()
    console.print(table)
    for row in rows:
        if row["status"] == "failed":
            console.print(f"[red]{row['name']}[/]: {row['error']}", highlight=False)


# --- ponder ask -----------------------------------------------------------------------------------
#: exit codes of `ask`: 0 complete answer, 3 partial answer (see the result's note), 1 failure,
#: 2 bad input (usage, config, sources)
EXIT_PARTIAL = 3


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
        click.option("--chunk-tokens", type=int, help="Chunk size in (estimated) tokens."),
        click.option("--include", multiple=True, metavar="GLOB", help="Only matching files."),
        click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching files."),
        click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                     help="Any config value, e.g. --set strategy.fan_in=4. Repeatable."),
        click.option("--no-cache", "no_cache", is_flag=True,
                     help="Ask the model again instead of using cached replies."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
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
    from ponder.config import parse_assignment

    flags = {
        "strategy": ("strategy", "name"), "adapter": ("adapter", "name"),
        "predictor": ("predictor", "name"), "concurrency": ("limits", "concurrency"),
        "max_cost": ("limits", "max_cost"), "max_tokens": ("limits", "max_tokens"),
        "timeout": ("limits", "timeout"), "model": ("adapter", "model"),
    }
    overrides = []
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
    from ponder.system import System

    state.overrides = _overrides(params)
    config = state.config
    if params.get("model") and not config.adapter.name:
        config.adapter.name = "litellm"  # a bare --model means "any litellm model string"
    quiet = params.get("quiet") or params.get("as_json")
    progress = "silent" if quiet else (params.get("progress") or "auto")
    system = System(config, plugins=state.plugins, progress=progress)
    if sources is not None:
        answer = system.ask(question, sources, include=params.get("include") or (),
                            exclude=params.get("exclude") or (),
                            chunk_tokens=params.get("chunk_tokens"))
    else:
        from ponder.sources import load_git_diff

        context = load_git_diff(rev=diff_rev, text=diff_text)
        answer = system.run(question, context, chunk_tokens=params.get("chunk_tokens"))
    _print_answer(answer, as_json=bool(params.get("as_json")), quiet=bool(quiet))
    if answer.partial:
        # every chunk failed and no limit stopped the run: that is a failure, not a partial
        nothing_read = (answer.chunks.get("total") and not answer.chunks.get("read")
                        and answer.stopped_by is None)
        raise click.exceptions.Exit(EXIT_PARTIAL if answer.answer and not nothing_read else 1)


def _print_answer(answer: Any, *, as_json: bool, quiet: bool) -> None:
    from ponder.secrets import clean_secrets, redact

    if as_json:
        click.echo(redact(json.dumps(clean_secrets(answer.to_dict()), indent=2, default=str)))
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
        f"model: {answer.model}; calls: {usage.calls}; tokens: {usage.input_tokens} in, "
        f"{usage.output_tokens} out; cost: ${usage.cost_usd:.4f}; {answer.elapsed_s:.1f}s; "
        f"run {answer.run_id}",
    ]
    if answer.citations:
        lines.append("cited: " + ", ".join(f"{c.path}:{c.line}" for c in answer.citations[:10]))
    if answer.skipped_sources:
        shown = ", ".join(f"{s['path']} ({s['reason']})" for s in answer.skipped_sources[:5])
        more = len(answer.skipped_sources) - 5
        lines.append(f"skipped {len(answer.skipped_sources)} file(s): {shown}"
                     + (f" and {more} more" if more > 0 else ""))
    if answer.note:
        lines.append(f"partial: {answer.note}")
    lines.extend(f"problem: {problem}" for problem in answer.problems)
    click.echo("\n".join(redact(line) for line in lines), err=True)


@cli.command("ask")
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
    if not sources:
        if sys.stdin.isatty():
            raise click.UsageError("no sources given: name files or directories, or - for stdin")
        sources = ("-",)
    _run_ask(state, question, params, sources=list(sources))


@cli.command("diff")
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
    text = sys.stdin.read()
    if not text.strip():
        raise click.UsageError("no diff on stdin: pipe `git diff` in, or use --git REV")
    _run_ask(state, question, params, diff_text=text)


# --- ponder runs ---------------------------------------------------------------------------------
def _add_runs() -> None:
    from ponder.cli_runs import add_runs_command

    add_runs_command(cli)


_add_runs()


# --- ponder config -------------------------------------------------------------------------------
@cli.group("config")
def config_group() -> None:
    """Show or check the resolved configuration (file, then PONDER_* environment, then flags)."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with each value's origin.")
@click.pass_obj
def config_show(state: AppState, as_json: bool) -> None:
    """Print the resolved config with secrets masked and where each value came from."""
    from ponder.config import render_toml

    config = state.config
    if as_json:
        click.echo(json.dumps({"files": config.files, "config": config.to_dict(masked=True),
                               "origins": config.origins}, indent=2, default=str))
        return
    header = "# files: " + (", ".join(config.files) if config.files else "(none; defaults)")
    click.echo(header + "\n" + render_toml(config))


@config_group.command("check")
@click.pass_obj
def config_check(state: AppState) -> None:
    """Validate the config and every selected plugin's settings; exit 2 on any problem."""
    from ponder.config import check_components

    config = state.config
    check_components(config, state.plugins)
    failed = state.plugins.failed()
    for info in failed:
        click.echo(f"warning: {info.describe()} failed to load: {info.error}", err=True)
    click.echo(f"config OK ({', '.join(config.files) or 'defaults only'})")


@config_group.command("path")
def config_path_command() -> None:
    """Print where the user-level config file lives."""
    from ponder.config import user_config_path

    click.echo(str(user_config_path()))


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of raising it.
        result = cli.main(args=argv, prog_name="ponder", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("ponder: aborted", err=True)
        return 130
    except PonderError as exc:  # raised outside a command (e.g. while resolving one)
        from ponder.secrets import redact

        click.echo(f"ponder: error: {redact(str(exc))}", err=True)
        return exc.exit_code
    except Exception as exc:  # a bug (ponder's or a plugin's): never let Python print it raw,
        # since its message or a chained cause may hold a key (a provider echoing it, a plugin)
        import traceback

        from ponder.retry import is_retryable
        from ponder.secrets import redact

        debug = log.isEnabledFor(logging.DEBUG)
        if debug:  # -vv: the traceback too, redacted
            click.echo(redact("".join(traceback.format_exception(exc))).rstrip(), err=True)
        # a provider's error (dspy's LMError family, a 5xx after the retries) is not ponder's bug
        provider = is_retryable(exc) or "LMError" in {c.__name__ for c in type(exc).__mro__}
        what = "error: the model call failed" if provider else "internal error"
        hint = "" if debug else " (run with -vv for the traceback)"
        click.echo(f"ponder: {what}: {redact(f'{type(exc).__name__}: {exc}')}{hint}", err=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
