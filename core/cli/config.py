"""``ponder config show|check|path``: the resolved configuration and where each value came from."""

from __future__ import annotations

import json
from typing import Any

import click

from ponder.cli.app import AppState


@click.group("config")
def config_group() -> None:
    """Show or check the resolved configuration (file, then PONDER_* environment, then flags)."""


def _flags(fn: Any) -> Any:
    """``--set KEY=VALUE``, as ``ponder ask`` takes it: show or check the config a run with
    these flags would use (the flags layer), not only the files' and environment's."""
    return click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                        help="A config value as `ponder ask --set` gives it, e.g. "
                             "--set strategy.name=map_reduce. Repeatable.")(fn)


def _resolved(state: AppState, assignments: tuple[str, ...]) -> Any:
    from ponder.cli.ask import _overrides

    state.overrides = [*state.overrides, *_overrides({"assignments": assignments})]
    return state.config


def adapter_choice(config: Any) -> tuple[str | None, str]:
    """The adapter a run would use and why; ``(None, why not)`` when none is usable."""
    from ponder.engine.system import choose_adapter
    from ponder.errors import ConfigError

    try:
        return choose_adapter(config)
    except ConfigError as exc:
        return None, str(exc)


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with each value's origin.")
@_flags
@click.pass_obj
def config_show(state: AppState, as_json: bool, assignments: tuple[str, ...]) -> None:
    """Print the resolved config with secrets masked and where each value came from.

    With --set, the flags layer is applied too, so this is what `ponder ask --set …` would use.
    The adapter line says which adapter a run picks when none is configured.
    """
    from ponder.kernel.config import render_toml
    from ponder.support.secrets import redact

    config = _resolved(state, assignments)
    adapter, reason = adapter_choice(config)
    if as_json:
        click.echo(redact(json.dumps(
            {"files": config.files, "config": config.to_dict(masked=True),
             "origins": config.origins, "adapter": {"name": adapter, "reason": reason}},
            indent=2, default=str)))
        return
    header = "# files: " + (", ".join(config.files) if config.files else "(none; defaults)")
    if adapter is None:
        choice = "# adapter: none usable; a run would fail: " + reason.splitlines()[0]
    elif config.adapter.name:
        choice = f"# adapter: {adapter} ({reason})"
    else:
        choice = f"# adapter: none configured; a run would use {adapter!r} ({reason})"
    click.echo(redact(header + "\n" + choice + "\n" + render_toml(config)))


@config_group.command("check")
@_flags
@click.pass_obj
def config_check(state: AppState, assignments: tuple[str, ...]) -> None:
    """Validate the config, every selected plugin's settings and their secret references
    ($env: variables set, $file: files readable) for the adapters a run would use; exit 2 on
    any problem."""
    from ponder.errors import ConfigError
    from ponder.kernel.config import check_components, secret_problems
    from ponder.support.secrets import redact

    config = _resolved(state, assignments)
    plugins = state.plugins
    settings = check_components(config, plugins)
    for info in plugins.failed():
        click.echo(redact(f"warning: {info.describe()} failed to load: {info.error}"), err=True)
    adapter, reason = adapter_choice(config)
    if adapter is None:
        raise ConfigError(reason)
    chain = [adapter, *(name for name in config.adapter.fallbacks if name != adapter)]
    for name in chain:
        settings.append(config.adapter_settings(name, plugins.get("adapter", name).settings))
    problems = list(dict.fromkeys(secret_problems(settings)))
    if problems:
        raise ConfigError("\n".join(problems))
    click.echo(f"config OK ({', '.join(config.files) or 'defaults only'}); "
               f"adapter: {adapter} ({reason})")


@config_group.command("path")
def config_path_command() -> None:
    """Print where the user-level config file lives."""
    from ponder.kernel.config import user_config_path

    click.echo(str(user_config_path()))


def add_config_commands(cli: click.Group) -> None:
    cli.add_command(config_group)
