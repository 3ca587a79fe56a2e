"""A separately installable plugin distribution, installed for real, works with no change to
ponder: discovered through its entry point, listed, selectable and validated by config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib" / "ponder-acme-gateway"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("contrib-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(CONTRIB)],
        check=True, capture_output=True, text=True,
    )
    return target


def ponder(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "ponder", *args], env=env, cwd=cwd,
                          capture_output=True, text=True)


def test_contrib_plugin_is_discovered(installed):
    result = ponder(installed, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    row = rows["acme_gateway"]
    assert row["distribution"] == "ponder-acme-gateway" and row["version"] == "0.1.0"
    assert row["status"] == "ok" and row["builtin"] is False
    assert row["provides"] == {"adapter": ["acme_gateway"]}


def test_contrib_plugin_is_selected_and_validated_by_config(installed, tmp_path, monkeypatch):
    monkeypatch.setenv("ACME_KEY", "acme-test-key-0123")  # config check resolves $env: (issue 15)
    (tmp_path / "ponder.toml").write_text(
        '[adapter]\nname = "acme_gateway"\nteam = "search"\napi_key = "$env:ACME_KEY"\n')
    result = ponder(installed, "config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout

    (tmp_path / "ponder.toml").write_text('[adapter]\nname = "acme_gateway"\nteem = "x"\n')
    result = ponder(installed, "config", "check", cwd=tmp_path)
    assert result.returncode == 2
    assert "ponder.toml: adapter.teem: unknown key; did you mean 'team'?" in result.stderr


def test_contrib_plugin_can_be_blocked(installed):
    env_rows = ponder(installed, "plugins", "--json")
    assert env_rows.returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "ponder", "plugins", "--json"],
        env={**os.environ, "PYTHONPATH": str(installed),
             "PONDER_DISABLE_PLUGINS": "ponder-acme-gateway"},
        capture_output=True, text=True, check=True)
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["acme_gateway"]["status"] == "disabled"
