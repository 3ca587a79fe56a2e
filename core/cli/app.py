"""The root ``ponder`` group and the state every command shares.

``AppState`` builds the config and the plugin set lazily, so ``ponder --help`` reads neither;
``PonderGroup`` adds plugin subcommands on demand and turns a ``PonderError`` into its exit code.
Command modules import this one; this one imports none of them.
"""

from __future__ import annotations

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


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"ponder: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbose: int) -> None:
    from ponder.support.secrets import SecretsFilter

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
            from ponder.support.secrets import redact

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
