"""The ponder command line, in-process and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ponder import __version__
from ponder.testing import run_cli

HEAVY = ("dspy", "litellm", "llama_cpp", "torch")


def imported_modules(*args: str) -> set[str]:
    """Top-level modules a real `ponder ARGS` process imported (python -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ponder", *args],
                          capture_output=True, text=True, env=os.environ.copy())
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_version_and_help():
    result = run_cli(["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout
    result = run_cli(["--help"])
    assert result.exit_code == 0
    for command in ("ask", "config", "plugins"):
        assert command in result.stdout


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["config", "show"],
                                  ["plugins", "--json"]])
def test_light_commands_do_not_import_heavy_modules(args):
    imported = imported_modules(*args)
    assert "ponder" in imported  # the measurement itself works
    assert not imported & set(HEAVY), f"`ponder {' '.join(args)}` imported {imported & set(HEAVY)}"


def test_plugins_json_lists_builtins_with_required_fields():
    result = run_cli(["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    for name in ("scripted", "litellm", "gemini", "openai_compatible", "local"):
        row = rows[name]
        assert row["status"] == "ok" and row["distribution"] == "ponder"
        assert row["provides"]["adapter"] == [name]
        assert isinstance(row["import_ms"], float) and "version" in row


def test_plugins_table():
    result = run_cli(["plugins"])
    assert result.exit_code == 0
    assert "scripted" in result.stdout and "adapter" in result.stdout


def test_config_check_ok_and_errors(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[adapter]\nname = "scripted"\n')
    result = run_cli(["--config", str(good), "config", "check"])
    assert result.exit_code == 0 and "config OK" in result.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text('[adapter]\nname = "scripted"\ncontext_windw = 10\n[limits]\ntimeout = "x"\n')
    result = run_cli(["--config", str(bad), "config", "check"])
    assert result.exit_code == 2
    assert f"{bad}: limits.timeout: expected a number, got 'x'" in result.stderr


def test_config_check_unknown_plugin_name(tmp_path):
    path = tmp_path / "ponder.toml"
    path.write_text('strategy = "map_reduse"\n')
    result = run_cli(["--config", str(path), "config", "check"])
    assert result.exit_code == 2
    assert "strategy.name: unknown strategy 'map_reduse'; did you mean 'map_reduce'?" \
        in result.stderr


def test_config_show_masks_secrets(tmp_path):
    path = tmp_path / "ponder.toml"
    path.write_text('[adapter]\nname = "litellm"\napi_key = "sk-planted-SECRET-0123456789"\n')
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = run_cli(["--config", str(path), *args])
        assert result.exit_code == 0
        assert "sk-planted-SECRET" not in result.output and "api_key" in result.output


def test_in_house_plugin_from_command_line(tmp_path):
    module = tmp_path / "acme_cli_plugin.py"
    module.write_text(
        "import click\nfrom ponder import hookimpl\n\n"
        "@hookimpl\ndef ponder_register_commands(cli):\n"
        "    @cli.command()\n    def hello():\n        click.echo('hello from acme')\n"
    )
    result = run_cli(["--plugin", str(module), "hello"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "hello from acme"
    rows = json.loads(run_cli(["--plugin", str(module), "plugins", "--json"]).stdout)
    (row,) = [r for r in rows if r["local"]]
    assert row["commands"] == ["hello"] and row["source"] == "local"
