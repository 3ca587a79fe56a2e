"""``ponder config show|check|path``: the resolved configuration and where each value came from."""

from __future__ import annotations

import json

import click

from ponder.cli.app import AppState


@click.group("config")
def config_group() -> None:
    """Show or check the resolved configuration (file, then PONDER_* environment, then flags)."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with each value's origin.")
@click.pass_obj
def config_show(state: AppState, as_json: bool) -> None:
    """Print the resolved config with secrets masked and where each value came from."""
    from ponder.kernel.config import render_toml

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
    from ponder.kernel.config import check_components

    config = state.config
    check_components(config, state.plugins)
    failed = state.plugins.failed()
    for info in failed:
        click.echo(f"warning: {info.describe()} failed to load: {info.error}", err=True)
    click.echo(f"config OK ({', '.join(config.files) or 'defaults only'})")


@config_group.command("path")
def config_path_command() -> None:
    """Print where the user-level config file lives."""
    from ponder.kernel.config import user_config_path

    click.echo(str(user_config_path()))


def add_config_commands(cli: click.Group) -> None:
    cli.add_command(config_group)
