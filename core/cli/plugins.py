"""``ponder plugins``: where each plugin came from, its status and what it provides."""

from __future__ import annotations

import json

import click

from ponder import __version__
from ponder.cli.app import AppState, console
from ponder.support.secrets import clean_secrets, redact


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_obj
def plugins_command(state: AppState, as_json: bool) -> None:
    """List plugins: where each came from, its status and what it provides."""
    plugin_set = state.plugins
    state.plugin_commands(builtin=set(click.get_current_context().find_root().command.commands))
    # a plugin's error text is its own and may hold a key; the loader redacted it when it
    # failed, and it is redacted again here against every secret known by now
    rows = [clean_secrets(info.to_dict()) for info in plugin_set.plugins]
    for row in rows:
        if row.get("error"):
            row["error"] = redact(str(row["error"]))
    if as_json:
        click.echo(redact(json.dumps(rows, indent=2)))
        return
    from rich.markup import escape
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
    out = console()
    out.print(table)
    for row in rows:
        if row["status"] == "failed":
            out.print(f"[red]{escape(row['name'])}[/]: {escape(str(row['error']))}",
                      highlight=False)


def add_plugins_command(cli: click.Group) -> None:
    cli.add_command(plugins_command)
