"""The command line says what happened (issue 15): bad input exits 2 and names its cause,
``--json`` prints one JSON object on every failure, plugin warnings read right, ``config show``
and ``config check`` cover the flags layer, the adapter choice and secret references."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.testing import run_cli

HELLO_PLUGIN = (
    "import click\nfrom ponder import hookimpl\n\n"
    "@hookimpl\ndef ponder_register_commands(cli):\n"
    "    @cli.command()\n    def hello():\n        'Say hello from acme.'\n"
    "        click.echo('hello from acme')\n"
)
BROKEN_PLUGIN = 'raise RuntimeError("the licence server is down")\n'


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("The service listens on port 48213.\n")
    return path


def one_json_error(result) -> dict:
    """stdout is exactly one JSON object with the error and the exit code."""
    data = json.loads(result.stdout)
    assert set(data) == {"error", "exit_code"}, data
    assert data["exit_code"] == result.exit_code
    return data


# --- bad input exits 2, naming the flag -------------------------------------------------------
@pytest.mark.parametrize(("args", "expected"), [
    (["--max-cost", "nan"], "--max-cost: limits.max_cost: expected a finite number, got nan"),
    (["--timeout", "inf"], "--timeout: limits.timeout: expected a finite number, got inf"),
    (["--set", "limits.max_cost=nan"],
     "--set limits.max_cost=nan: limits.max_cost: expected a finite number, got nan"),
    (["--set", "limits.concurrency.x=1"],
     "--set limits.concurrency.x=1: limits.concurrency: expected int"),
    (["--chunk-tokens", "-10"], "'--chunk-tokens': must be at least 64 tokens, got -10"),
])
def test_bad_flags_exit_2_naming_the_flag(source, args, expected):
    result = run_cli(["ask", "What port?", str(source), "--adapter", "scripted", *args])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "default" not in result.stderr


def test_non_finite_limit_in_toml_fails_config_check(tmp_path):
    path = tmp_path / "ponder.toml"
    path.write_text("[limits]\nmax_cost = nan\n")
    result = run_cli(["--config", str(path), "config", "check"])
    assert result.exit_code == 2
    assert f"{path}: limits.max_cost: expected a finite number, got nan" in result.stderr


def test_unknown_run_id_exits_2():
    result = run_cli(["runs", "show", "zzz"])
    assert result.exit_code == 2 and "no run 'zzz'" in result.stderr
    result = run_cli(["runs", "show", "zzz", "--json"])
    assert one_json_error(result)["error"].startswith("no run 'zzz'")


def test_project_file_that_is_a_directory_is_named(tmp_path, source):
    (tmp_path / "ponder.toml").mkdir()
    env = {"PWD": str(tmp_path)}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = run_cli(["ask", "What port?", str(source)], env=env)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2, result.output
    assert "ponder.toml: is a directory, not a config file" in result.stderr


def test_diff_at_a_terminal_says_no_diff_was_given(tmp_path):
    """stdin is a real terminal (a pty): ponder answers at once instead of waiting on it."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "ponder", "diff", "What changed?"],
                              stdin=follower, capture_output=True, text=True, timeout=60,
                              cwd=tmp_path, env=os.environ.copy())
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 2, proc.stderr
    assert "no diff given" in proc.stderr and "--git REV" in proc.stderr


# --- --json: one object on every failure --------------------------------------------------------
@pytest.mark.parametrize(("args", "code", "expected"), [
    (["ask", "q", "no/such/dir", "--adapter", "scripted", "--json"], 2, "no/such/dir"),
    (["ask", "q", ".", "--strategy", "map_reduse", "--json"], 2,
     "did you mean 'map_reduce'"),
    (["ask", "--json"], 2, "Missing argument 'QUESTION'"),
    (["ask", "q", ".", "--bogus", "--json"], 2, "No such option '--bogus'"),
    (["ask", "q", ".", "--adapter", "scripted", "--max-cost", "nan", "--json"], 2,
     "limits.max_cost"),
    (["plugins", "--json", "--bogus"], 2, "--bogus"),
    (["runs", "--json", "--limit", "-1"], 2, "--limit"),
    (["config", "show", "--json", "--set", "limits.timeout=inf"], 2, "limits.timeout"),
])
def test_json_failures_print_one_object(args, code, expected):
    result = run_cli(args)
    assert result.exit_code == code, result.output
    data = one_json_error(result)
    assert expected in data["error"]
    assert expected in result.stderr  # the human message is still on stderr


def test_json_failure_for_a_bad_config_file(tmp_path):
    path = tmp_path / "ponder.toml"
    path.write_text("[limits]\nconcurency = 2\n")
    result = run_cli(["--config", str(path), "ask", "q", ".", "--json"])
    data = one_json_error(result)
    assert data["exit_code"] == 2 and "did you mean 'concurrency'" in data["error"]


def test_without_json_stdout_stays_empty_on_failure(source):
    result = run_cli(["ask", "q", "no/such/dir", "--adapter", "scripted"])
    assert result.exit_code == 2 and result.stdout == ""


# --- plugins: warnings, --help, the table -------------------------------------------------------
def test_plugin_commands_are_listed_by_help(tmp_path):
    module = tmp_path / "acme_hello.py"
    module.write_text(HELLO_PLUGIN)
    for args in (["--plugin", str(module), "--help"], ["--help", "--plugin", str(module)],
                 [f"--plugin={module}", "--help"]):
        result = run_cli(args)
        assert result.exit_code == 0, result.output
        assert "hello" in result.stdout and "Say hello from acme." in result.stdout, args


def test_a_failing_local_plugin_warns_once_with_the_right_advice(tmp_path):
    module = tmp_path / "broken_acme.py"
    module.write_text(BROKEN_PLUGIN)
    result = run_cli(["--plugin", str(module), "plugins"], env={"PONDER_STRICT_PLUGINS": "0"})
    assert result.exit_code == 0, result.output
    warning = result.stderr
    assert f"plugin {str(module)!r} (local) failed to load and was skipped" in warning
    assert "((local))" not in warning
    assert "PONDER_DISABLE_PLUGINS" not in warning
    assert "remove" in warning and "--plugin" in warning


def test_strict_mode_says_it_stops_not_that_it_skipped(tmp_path):
    module = tmp_path / "broken_acme.py"
    module.write_text(BROKEN_PLUGIN)
    result = run_cli(["--plugin", str(module), "plugins"], env={"PONDER_STRICT_PLUGINS": "1"})
    assert result.exit_code == 1
    assert "failed to load: import raised RuntimeError: the licence server is down" \
        in result.stderr
    assert "skipped" not in result.stderr and "strict mode" in result.stderr


def test_plugins_table_is_not_wrapped_when_piped():
    proc = subprocess.run([sys.executable, "-m", "ponder", "plugins"], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│")]
    names = [line.split("│")[1].strip() for line in rows]
    assert "openai_compatible" in names and "retrieve_then_read" in names
    assert "" not in names  # a wrapped row continues on a line with an empty name cell
    assert max(len(line) for line in proc.stdout.splitlines()) > 80


# --- config show / check -----------------------------------------------------------------------
def test_config_show_applies_set_flags_and_names_them(tmp_path):
    result = run_cli(["config", "show", "--set", "strategy.name=map_reduce",
                      "--set", "limits.concurrency=7"])
    assert result.exit_code == 0, result.output
    assert 'name = "map_reduce"  # --set strategy.name=map_reduce' in result.stdout
    assert "concurrency = 7  # --set limits.concurrency=7" in result.stdout
    data = json.loads(run_cli(["config", "show", "--json", "--set", "limits.concurrency=7"])
                      .stdout)
    assert data["config"]["limits"]["concurrency"] == 7
    assert data["origins"]["limits.concurrency"] == "--set limits.concurrency=7"


def test_config_show_says_which_adapter_a_run_would_pick():
    keyed = run_cli(["config", "show", "--json"], env={"GEMINI_API_KEY": "AIza-trust-0123456789"})
    assert keyed.exit_code == 0, keyed.output
    assert json.loads(keyed.stdout)["adapter"] == {"name": "gemini",
                                                   "reason": "GEMINI_API_KEY is set"}
    text = run_cli(["config", "show"], env={"GEMINI_API_KEY": "AIza-trust-0123456789"}).stdout
    assert "# adapter: none configured; a run would use 'gemini' (GEMINI_API_KEY is set)" in text
    configured = run_cli(["config", "show", "--set", "adapter.name=scripted"]).stdout
    assert "# adapter: scripted (configured (--set adapter.name=scripted))" in configured


def test_config_check_catches_unset_env_and_missing_file_secrets(tmp_path):
    path = tmp_path / "ponder.toml"
    path.write_text('[adapter]\nname = "openai_compatible"\nbase_url = "http://127.0.0.1:9/v1"\n'
                    'model = "m"\napi_key = "$env:PONDER_TRUST_UNSET"\n'
                    'fallbacks = ["litellm"]\n'
                    f'[adapters.litellm]\nmodel = "openai/x"\napi_key = "$file:{tmp_path}/nokey"\n')
    result = run_cli(["--config", str(path), "config", "check"],
                     env={"PONDER_TRUST_UNSET": None})
    assert result.exit_code == 2, result.output
    assert (f"{path}: adapter.api_key: environment variable PONDER_TRUST_UNSET is not set"
            in result.stderr)
    assert (f"{path}: adapters.litellm.api_key: secret file {tmp_path}/nokey does not exist"
            in result.stderr)
    (tmp_path / "nokey").write_text("sk-trust-file-0123456789\n")
    fixed = run_cli(["--config", str(path), "config", "check"],
                    env={"PONDER_TRUST_UNSET": "sk-trust-env-0123456789"})
    assert fixed.exit_code == 0, fixed.output
    assert "config OK" in fixed.stdout and "adapter: openai_compatible" in fixed.stdout


def test_the_run_error_names_file_and_key_for_an_unset_variable(tmp_path, source):
    path = tmp_path / "ponder.toml"
    path.write_text('[adapter]\nname = "openai_compatible"\nbase_url = "http://127.0.0.1:9/v1"\n'
                    'model = "m"\napi_key = "$env:PONDER_TRUST_UNSET"\n')
    result = run_cli(["--config", str(path), "ask", "What port?", str(source)],
                     env={"PONDER_TRUST_UNSET": None})
    assert result.exit_code == 2, result.output
    assert (f"ponder: error: {path}: adapter.api_key: environment variable PONDER_TRUST_UNSET "
            "is not set") in result.stderr


def test_a_repaired_file_is_reported_as_repaired_not_skipped(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 listens on port 48213\n")
    config = tmp_path / "ponder.toml"
    config.write_text('[adapter]\nname = "scripted"\ndefault = "Port 48213."\n')
    result = run_cli(["--config", str(config), "ask", "What port?", str(tmp_path),
                      "--include", "*.txt", "--strategy", "direct"])
    assert result.exit_code in (0, 3), result.output
    assert "repaired 1 file(s): " in result.stderr and "latin1.txt" in result.stderr
    assert "skipped" not in result.stderr


def test_a_plugin_error_holding_a_key_is_masked_everywhere_it_is_shown(tmp_path):
    """The fast, in-process twin of the leak suite's broken-plugin scenarios."""
    key = "sk-trust-PLANTED-4c1d9e7a02"
    module = tmp_path / "leaky_acme.py"
    module.write_text(f'raise RuntimeError("licence check failed for {key}")\n')
    env = {"PONDER_STRICT_PLUGINS": "0"}
    table = run_cli(["--plugin", str(module), "plugins"], env=env)
    listed = run_cli(["--plugin", str(module), "plugins", "--json"], env=env)
    check = run_cli(["--plugin", str(module), "config", "check", "--set", "adapter.name=scripted"],
                    env=env)
    for result in (table, listed, check):
        assert result.exit_code == 0, result.output
        assert key not in result.output and "4c1d9e7a02" not in result.output
    assert "leaky_acme.py: import raised RuntimeError: licence check failed for ********" \
        in table.stdout
    (row,) = [r for r in json.loads(listed.stdout) if r["status"] == "failed"]
    assert row["error"] == "import raised RuntimeError: licence check failed for ********"
    assert "failed to load: import raised RuntimeError: licence check failed for ********" \
        in check.stderr
