"""A `ponder ask` process killed mid-run (SIGKILL) leaves a readable store: `ponder runs` lists
the run as incomplete, with the LM calls it had finished."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ponder.testing import run_cli
from ponder.testing.fake_provider import FakeProvider

pytestmark = [pytest.mark.fault, pytest.mark.slow]


def test_killed_ask_is_listed_as_incomplete(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"m{i}.py").write_text("".join(f"def f{i}_{j}():\n    return {j}\n\n"
                                              for j in range(60)))
    with FakeProvider(mode="oracle", needles={"x": "48213"}, latency=(0.2, 0, 0),
                      max_lifetime=120) as provider:
        config = tmp_path / "ponder.toml"
        config.write_text(
            '[adapter]\nname = "openai_compatible"\n'
            f'base_url = "{provider.base_url}"\nmodel = "fake-model"\n'
            '[strategy]\nname = "map_reduce"\nchunk_tokens = 300\n'
            '[limits]\nconcurrency = 2\n'
        )
        child = subprocess.Popen(
            [sys.executable, "-m", "ponder", "--config", str(config), "ask", "What is X?",
             str(src), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
        try:
            # bounded poll: wait until some calls have completed (and so were recorded)
            for _ in range(600):
                if provider.stats()["completed"] >= 4 or child.poll() is not None:
                    break
                time.sleep(0.05)
            assert child.poll() is None, child.communicate()[1].decode()
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
            child.communicate()
        completed = provider.stats()["completed"]

    db = Path(os.environ["PONDER_DATA_DIR"]) / "ponder.sqlite"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        status, question = conn.execute("SELECT status, question FROM runs").fetchone()
        stored_calls = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert status == "running" and question == "What is X?"
    # every stored call was a completed request; at most the in-flight ones were lost
    assert 4 - 2 <= stored_calls <= completed

    listing = run_cli(["runs", "--json"])
    assert listing.exit_code == 0, listing.stderr
    (run,) = json.loads(listing.stdout)
    assert run["status"] == "incomplete"
    shown = run_cli(["runs", "show", run["id"], "--json"])
    assert len(json.loads(shown.stdout)["calls"]) == stored_calls
