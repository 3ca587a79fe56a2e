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
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
