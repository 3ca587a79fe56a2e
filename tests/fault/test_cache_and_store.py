"""The response cache and the run store through `ponder ask`, over real HTTP to the fake provider.

A second identical run is served from the cache (no request reaches the provider); another model
or `--no-cache` asks again; every run, and every call with the adapter that served it, lands in
the SQLite store that `ponder runs` reads.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from ponder.testing import run_cli
from ponder.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.fault

NEEDLE = "MAGIC_PORT = 48213"


@pytest.fixture
def provider():
    with FakeProvider(mode="oracle", needles={"port": "48213"}, max_lifetime=120) as fake:
        yield fake


@pytest.fixture
def project(tmp_path: Path, provider: FakeProvider) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        body = "".join(f"def helper_{i}_{j}(x):\n    return x + {j}\n\n" for j in range(40))
        if i == 3:
            body += f"{NEEDLE}\n"
        (src / f"mod{i}.py").write_text(body)
    (tmp_path / "ponder.toml").write_text(
        '[adapter]\nname = "openai_compatible"\n'
        f'base_url = "{provider.base_url}"\nmodel = "fake-model"\n'
        '[strategy]\nname = "map_reduce"\nchunk_tokens = 400\n'
    )
    return tmp_path


def ask(project: Path, *extra: str) -> dict:
    result = run_cli(["--config", str(project / "ponder.toml"), "ask", "What is MAGIC_PORT?",
                      str(project / "src"), "--json", *extra])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_second_identical_run_is_served_from_the_cache(project, provider):
    first = ask(project)
    sent = provider.stats()["requests"]
    assert "48213" in first["answer"]
    assert first["usage"]["calls"] > 1 and first["usage"]["cached_calls"] == 0
    assert sent == first["usage"]["calls"]

    second = ask(project)
    assert provider.stats()["requests"] == sent  # nothing new reached the provider
    assert second["usage"]["cached_calls"] == first["usage"]["calls"]
    assert second["usage"]["calls"] == 0 and second["usage"]["cost_usd"] == 0
    assert second["answer"] == first["answer"]


def test_no_cache_and_another_model_ask_again(project, provider):
    first = ask(project)
    sent = provider.stats()["requests"]

    ask(project, "--no-cache")
    assert provider.stats()["requests"] == 2 * sent

    other = ask(project, "--set", 'adapter.model="fake-model-2"')
    assert other["usage"]["cached_calls"] == 0
    assert provider.stats()["requests"] == 3 * sent
    assert first["answer"] == other["answer"]  # same oracle, so the same answer


def test_cache_config_off(project, provider):
    with (project / "ponder.toml").open("a") as f:
        f.write("[cache]\nenabled = false\n")
    first = ask(project)
    second = ask(project)
    assert second["usage"]["cached_calls"] == 0
    assert provider.stats()["requests"] == 2 * first["usage"]["calls"]


def test_run_and_calls_are_stored_and_listed(project, provider):
    answer = ask(project)
    data_dir = Path(os.environ["PONDER_DATA_DIR"])
    db = data_dir / "ponder.sqlite"
    assert db.is_file()
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT id, status FROM runs").fetchall()
        calls = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert runs == [(answer["run_id"], "ok")]
    assert calls == answer["usage"]["calls"]

    listing = run_cli(["--config", str(project / "ponder.toml"), "runs", "--json"])
    assert listing.exit_code == 0, listing.stderr
    (run,) = json.loads(listing.stdout)
    assert run["id"] == answer["run_id"] and run["status"] == "ok"

    shown = run_cli(["--config", str(project / "ponder.toml"), "runs", "show",
                     answer["run_id"][:6], "--json"])
    assert shown.exit_code == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["answer"] == answer["answer"]
    assert len(detail["calls"]) == answer["usage"]["calls"]
    assert {c["adapter"] for c in detail["calls"]} == {"openai_compatible"}
    assert {c["role"] for c in detail["calls"]} >= {"map", "reduce"}
