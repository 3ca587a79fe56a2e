"""Issue 15: outcomes that say what happened, end to end through ``python -m ponder``.

- a run that read no evidence (a timeout before the first chunk; every chunk failing) is
  ``failed``: exit 1, ``"status": "failed"``, ``"partial": false``, no answer, and the run store
  says ``failed`` too (before: exit 3 and ``"partial": true``);
- SIGTERM mid-run is handled like Ctrl-C: the same exit code, a partial answer in valid JSON,
  status ``interrupted`` in the JSON and in the store (before: killed, exit 143, no output);
- a run store that cannot be opened is warned about once and the ask still answers (before: the
  ask aborted), as docs/storage.md promises ("recording never costs an answer").

The provider is the loopback fake over real HTTP; the store is the real SQLite file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ponder.testing import run_cli
from ponder.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.fault

QUESTION = "What is MAGIC_PORT?"
#: a hang guard for one child process, never a timing assertion
CHILD_DEADLINE_S = 120
FINDING = [(r"`relevant_info`", {"relevant_info": "a setting line", "confidence": "low"}),
           (r"`partial_answers`", {"answer": "Settings are listed."})]


def make_corpus(root: Path, files: int) -> Path:
    for i in range(files):
        path = root / f"part_{i:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"setting_{i}_{j} = {(i * 7 + j) % 97}\n" for j in range(30)))
    return root


def write_config(tmp_path: Path, provider: FakeProvider, *, extra: str = "") -> str:
    path = tmp_path / "ponder.toml"
    path.write_text(
        'strategy = "map_reduce"\n'
        f"{extra}\n"
        "[limits]\nconcurrency = 2\nmax_retries = 0\n"
        '[adapter]\nname = "openai_compatible"\n'
        f'base_url = "{provider.base_url}"\nmodel = "fake-model"\n'
        "context_window = 8192\nmax_output_tokens = 256\n")
    return str(path)


def start_ponder(*args: str) -> subprocess.Popen[str]:
    # Python's own SIGINT handler, even when the test run was started with SIGINT ignored
    boot = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "runpy.run_module('ponder', run_name='__main__', alter_sys=True)")
    return subprocess.Popen([sys.executable, "-c", boot, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        stdout, stderr = proc.communicate(timeout=CHILD_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"ponder hung; stderr:\n{stderr[-3000:]}")
    return proc.returncode, stdout, stderr


def http_stats(provider: FakeProvider) -> dict[str, Any]:
    with urllib.request.urlopen(provider.url + "/stats", timeout=10) as reply:
        return json.load(reply)


def stored_run(cfg: str, run_id: str) -> dict[str, Any]:
    result = run_cli(["--config", cfg, "runs", "show", run_id, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_failed(code: int, stdout: str, stderr: str, cfg: str) -> dict[str, Any]:
    assert stdout.strip(), stderr[-3000:]
    data = json.loads(stdout)
    assert code == 1, f"exit {code}; stderr:\n{stderr[-3000:]}"
    assert data["status"] == "failed" and data["partial"] is False
    assert data["answer"] == "" and data["chunks"]["read"] == 0
    assert data["note"]  # what happened instead
    assert stored_run(cfg, data["run_id"])["status"] == "failed"
    return data


def test_a_timeout_before_the_first_chunk_is_a_failed_run(tmp_path):
    with FakeProvider(rules=FINDING, latency=600, max_lifetime=300) as provider:
        corpus = make_corpus(tmp_path / "corpus", files=6)
        cfg = write_config(tmp_path, provider)
        proc = start_ponder("--config", cfg, "ask", QUESTION, str(corpus), "--chunk-tokens",
                            "300", "--timeout", "8", "--json")
        code, stdout, stderr = finish(proc)
    data = assert_failed(code, stdout, stderr, cfg)
    assert data["stopped_by"] == "timeout"
    assert "before any of the" in data["note"]


def test_none_of_the_chunks_read_is_a_failed_run(tmp_path):
    """Every request gets a 500 and nothing is retried: 0 of N chunks."""
    with FakeProvider(rules=FINDING, fault_rate=1.0, fault_kinds=("server_error",),
                      retry_after=0.01) as provider:
        corpus = make_corpus(tmp_path / "corpus", files=4)
        cfg = write_config(tmp_path, provider)
        code, stdout, stderr = finish(start_ponder(
            "--config", cfg, "ask", QUESTION, str(corpus), "--chunk-tokens", "300", "--json"))
    data = assert_failed(code, stdout, stderr, cfg)
    assert data["stopped_by"] is None and len(data["failures"]) == data["chunks"]["total"]
    assert data["note"].startswith("No answer: none of the")


def interrupt_mid_run(tmp_path: Path, signum: int) -> tuple[int, dict[str, Any], str]:
    with FakeProvider(rules=FINDING, latency=0.3, max_lifetime=300) as provider:
        corpus = make_corpus(tmp_path / "corpus", files=40)
        cfg = write_config(tmp_path, provider)
        proc = start_ponder("--config", cfg, "ask", QUESTION, str(corpus), "--chunk-tokens",
                            "300", "--json")
        try:
            deadline = time.monotonic() + CHILD_DEADLINE_S
            while (seen := http_stats(provider))["completed"] < 3:
                assert proc.poll() is None, f"ponder exited early: {proc.communicate()}"
                assert time.monotonic() < deadline, f"no LM call completed: {seen}"
                time.sleep(0.05)
            proc.send_signal(signum)
            code, stdout, stderr = finish(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert stdout.strip(), f"exit {code}, no JSON; stderr:\n{stderr[-3000:]}"
    return code, json.loads(stdout), cfg


def test_sigterm_mid_run_is_handled_like_ctrl_c(tmp_path):
    (tmp_path / "int").mkdir()
    (tmp_path / "term").mkdir()
    int_code, int_data, _ = interrupt_mid_run(tmp_path / "int", signal.SIGINT)
    code, data, cfg = interrupt_mid_run(tmp_path / "term", signal.SIGTERM)
    assert code == int_code == 3
    assert data["status"] == int_data["status"] == "interrupted"
    assert data["stopped_by"] == "interrupted" and data["partial"] is True
    assert 0 < data["chunks"]["read"] < data["chunks"]["total"]
    assert data["answer"].startswith("[partial: the run stopped (interrupted)")
    assert stored_run(cfg, data["run_id"])["status"] == "interrupted"


def test_a_run_store_that_cannot_be_opened_costs_no_answer(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's directory should be\n")
    with FakeProvider(rules=FINDING) as provider:
        corpus = make_corpus(tmp_path / "corpus", files=2)
        cfg = write_config(tmp_path, provider,
                           extra=f'[storage]\nname = "sqlite"\npath = "{blocker}/runs.db"\n')
        code, stdout, stderr = finish(start_ponder(
            "--config", cfg, "ask", QUESTION, str(corpus), "--chunk-tokens", "300", "--json"))
    assert code == 0, f"exit {code}; stderr:\n{stderr[-3000:]}"
    data = json.loads(stdout)
    assert data["status"] == "ok" and data["answer"] == "Settings are listed."
    warnings = [line for line in stderr.splitlines() if "run store" in line]
    assert len(warnings) == 1 and "not recorded" in warnings[0], stderr[-3000:]
