"""The root ``ponder`` group and the state every command shares.

``AppState`` builds the config and the plugin set lazily, so ``ponder --help`` reads neither;
``PonderGroup`` adds plugin subcommands on demand and turns a ``PonderError`` into its exit code.
Every failure is shown by :func:`report_error` (here and in ``main``): one line on stderr and,
when the command line has ``--json``, one ``{"error", "exit_code"}`` object on stdout.
Command modules import this one; this one imports none of them.
"""

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
    def config(self):  # -> ponder.kernel.config.Config
        if self._config is None:
            from ponder.kernel.config import load_config

            self._config = load_config(self.config_path, overrides=self.overrides)
        return self._config

    @property
    def plugins(self):  # -> ponder.kernel.loader.PluginSet
        if self._plugins is None:
            from ponder.kernel.loader import load_plugins

            settings = self.config.plugins
            self._plugins = load_plugins(
                modules=[*settings.load, *self.plugin_modules],
                allow=settings.allow,
                disable=settings.disable,
                strict=settings.strict,
            )
        return self._plugins


def wants_json(args: list[str] | tuple[str, ...]) -> bool:
    """Whether the command line asks for JSON output (``--json`` before any ``--``).

    Decided from the raw arguments, not from parsed options, because a usage error (a bad
    flag, a missing argument) happens before any option is parsed, and a script that passed
    ``--json`` must still get JSON on that path.
    """
    args = list(args)
    if "--" in args:
        args = args[: args.index("--")]
    return "--json" in args


def report_error(message: str, exit_code: int, *, as_json: bool,
                 run: dict[str, Any] | None = None) -> int:
    """Show a failure: ``ponder: error: …`` on stderr and, with ``--json``, one object on stdout.

    Every command that has ``--json`` goes through here for every failure (bad config, missing
    source, unknown plugin, usage errors, internal errors), so a script never parses an empty
    stdout: it reads ``{"error": "…", "exit_code": N}``. The message is redacted. ``run``: the
    failed run's id and usage (``ponder_run`` on an error raised inside a run), so a run that
    failed after requests reached the provider still says what it spent.
    """
    import json

    from ponder.engine.failures import clip_error
    from ponder.support.secrets import redact

    # an error may quote a whole (huge) model reply; callers that clip their own part first
    # (with a hint after it) stay under this
    text = clip_error(redact(message), limit=4_000)
    click.echo(text if text.startswith("ponder: ") else f"ponder: error: {text}", err=True)
    if run:
        usage = run.get("usage") or {}
        click.echo(f"ponder: run {run.get('run_id')} recorded: {usage.get('calls', 0)} calls "
                   f"served, {usage.get('failed_requests', 0)} requests failed, "
                   f"${usage.get('cost_usd', 0.0):.4f}", err=True)
    if as_json:
        plain = text.removeprefix("ponder: ").removeprefix("error: ")
        out: dict[str, Any] = {"error": plain, "exit_code": exit_code}
        if run:
            out.update({"run_id": run.get("run_id"), "usage": run.get("usage")})
        click.echo(json.dumps(out))
    return exit_code


def console(**kwargs: Any) -> Any:
    """A rich console for tables: the terminal's width, or a wide one when piped.

    Piped output has no width; rich would assume 80 columns and wrap every row of a wide
    table, which breaks ``ponder plugins | grep``.
    """
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 240, **kwargs)


def _root_options(args: list[str]) -> dict[str, Any]:
    """``--config`` and ``--plugin`` values before the subcommand, read from the raw arguments.

    ``--help`` is eager: click answers it before the group's other options are processed, so
    ``ponder --plugin X --help`` would list the commands without X's. This pre-scan lets the
    help see them (value-taking root options are only these two).
    """
    found: dict[str, Any] = {"config_path": None, "plugin_modules": []}
    names = {"--config": "config_path", "--plugin": "plugin_modules"}
    index = 0
    while index < len(args):
        arg = args[index]
        name, sep, value = arg.partition("=")
        if name in names:
            if not sep:
                if index + 1 >= len(args):
                    break
                index += 1
                value = args[index]
            if name == "--plugin":
                found["plugin_modules"].append(value)
            else:
                found["config_path"] = value
        elif arg == "--" or not arg.startswith("-"):
            break  # the subcommand: what follows is its own
        index += 1
    return found


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"ponder: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbose: int) -> None:
    from ponder.support.secrets import install_log_redaction

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    logger = logging.getLogger("ponder")
    logger.handlers[:] = [handler]
    logger.propagate = False
    install_log_redaction(logger)  # secrets never reach a log line
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)


class PonderGroup(click.Group):
    """Adds plugin subcommands on demand and turns PonderError into a clean exit.

    Plugin commands live on the invocation's AppState, not on this module-level group, so one
    process can run the CLI many times (tests do) without commands leaking between runs.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            ctx.meta["ponder.json"] = wants_json(args)
            ctx.meta["ponder.root_options"] = _root_options(args)
        return super().parse_args(ctx, args)

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        state = ctx.find_object(AppState)
        if state is None:  # `ponder --help` parses options before the group callback runs
            state = ctx.ensure_object(AppState)
            early = ctx.meta.get("ponder.root_options") or {}
            state.config_path = ctx.params.get("config_path") or early.get("config_path")
            state.plugin_modules = tuple(ctx.params.get("plugin_modules")
                                         or early.get("plugin_modules") or ())
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
            ctx.exit(report_error(str(exc), exc.exit_code,
                                  as_json=bool(ctx.meta.get("ponder.json")),
                                  run=getattr(exc, "ponder_run", None)))


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


def run_store(state: AppState) -> Any:
    """The configured run store, else ``sqlite`` (commands that read records always have one).

    Closed when the running command ends (click's ``call_on_close``), so a command never has
    to remember to; closing twice is harmless for every store.
    """
    from ponder.engine.system import System

    system = System(state.config, plugins=state.plugins)
    storage = system.open_storage() or system.build("storage", "sqlite")
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(storage.close)
    return storage


def echo_json(data: Any) -> None:
    """One JSON object on stdout, cleaned of secrets and redacted once more."""
    from ponder.support.secrets import clean_secrets, redact

    click.echo(redact(json.dumps(clean_secrets(data), indent=2, default=str)))

