"""Sessions over the loopback fake provider: history in the request, restarts, expiry, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ponder
from ponder.sessions.store import SessionSettings, SessionStore
from ponder.testing import run_cli
from ponder.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.fault

RULES = [
    # the reply proves what the provider received: the first turn, question and answer
    (r"(?s)Q: What is MAGIC_PORT\?\nA: MAGIC_PORT is 48213.*Current question.*who reads it",
     {"answer": "SAW_HISTORY: start() reads it (app.py:4)"}),
    (r"What is MAGIC_PORT", {"answer": "MAGIC_PORT is 48213 (app.py:1)"}),
]


@pytest.fixture
def provider():
    with FakeProvider(rules=RULES, default_reply="NO_HISTORY", latency=0.05) as fake:
        yield fake


@pytest.fixture
def config(tmp_path, provider):
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("MAGIC_PORT = 48213\n\ndef start():\n    return MAGIC_PORT\n")
    path = tmp_path / "ponder.toml"
    path.write_text(f'strategy = "direct"\n[adapter]\nname = "openai_compatible"\n'
                    f'base_url = "{provider.base_url}"\nmodel = "m"\ncontext_window = 32768\n'
                    f'[cache]\nenabled = false\n[sessions]\nttl = 3600\n')
    return str(path), str(src)


def test_history_reaches_the_model_on_the_second_turn(config, provider):
    path, src = config
    with ponder.Session("s1", [src], config=path) as session:
        first = session.ask("What is MAGIC_PORT?")
        assert first.answer == "MAGIC_PORT is 48213 (app.py:1)"
        assert session.last_load_s > 0  # the first question loaded the sources
        second = session.ask("And who reads it?")
        assert second.answer.startswith("SAW_HISTORY")
        assert session.last_load_s == 0  # the second did not
        assert [t["history_turns"] for t in session.turns] == [0, 1]
        storage = session.system.open_storage()
        run = storage.get_run(second.run_id)
        storage.close()
    # the run store recorded the question as asked: with the first turn in front of it
    assert run["question"].startswith("Earlier in this conversation")
    assert "Q: What is MAGIC_PORT?\nA: MAGIC_PORT is 48213" in run["question"]
    assert provider.stats()["requests"] == 2


def test_a_session_survives_a_process_restart(config, provider, tmp_path):
    path, src = config
    first = run_cli(["--config", path, "ask", "--session", "s2", "What is MAGIC_PORT?", src,
                     "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["session"]["turn"] == 1
    # a new Python process, no sources named: the session remembers them and its history
    env = {**os.environ, "PONDER_STRICT_PLUGINS": "1"}
    second = subprocess.run([sys.executable, "-m", "ponder", "--config", path, "ask",
                             "--session", "s2", "And who reads it?", "--json"],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert second.returncode == 0, second.stderr
    data = json.loads(second.stdout)
    assert data["answer"].startswith("SAW_HISTORY")
    assert data["session"] == {**data["session"], "turn": 2, "history_turns": 1,
                               "resumed": True}
    listed = run_cli(["--config", path, "sessions", "--json"])
    (summary,) = json.loads(listed.stdout)["sessions"]
    assert summary["name"] == "s2" and summary["turns"] == 2 and summary["sources"] == [src]
    shown = run_cli(["--config", path, "sessions", "show", "s2"])
    assert shown.exit_code == 0 and "[2] And who reads it?" in shown.stdout
    assert run_cli(["--config", path, "sessions", "delete", "s2"]).exit_code == 0
    gone = run_cli(["--config", path, "sessions", "show", "s2"])
    assert gone.exit_code == 2 and "no session 's2'" in gone.stderr


def test_sessions_expire_after_the_ttl(config):
    from ponder.plugins.memory_store import MemoryStorage

    now = [1000.0]
    store = SessionStore(MemoryStorage(), SessionSettings(ttl=60), clock=lambda: now[0])
    store.put({"name": "old", "sources": ["src"], "turns": []})
    assert store.get("old")["expires_at"] == 1060.0
    now[0] = 1059.0
    assert [r["name"] for r in store.list()] == ["old"]
    now[0] = 1060.0
    assert store.get("old") is None and store.list() == []
    assert store.storage.get_record("session", "old") is None  # deleted, not just hidden


def test_ttl_is_validated_with_file_and_key(tmp_path, config):
    path, src = config
    text = Path(path).read_text().replace("ttl = 3600", "ttl = -1")
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    result = run_cli(["--config", str(bad), "ask", "--session", "x", "q", src])
    assert result.exit_code == 2
    assert f"{bad}: sessions.ttl: must be > 0, got -1" in result.stderr


def test_history_is_bounded_oldest_dropped():
    from ponder.sessions.session import history_prompt

    turns = [{"question": f"q{i}", "answer": "a" * 400} for i in range(10)]
    prompt, kept = history_prompt(turns, "now?", budget=350)
    assert kept == 3  # each turn is ~102 tokens: the three newest fit
    assert "Q: q9" in prompt and "Q: q7" in prompt and "Q: q6" not in prompt
    assert prompt.index("Q: q7") < prompt.index("Q: q9")  # oldest first
    assert history_prompt([], "now?", budget=350) == ("now?", 0)


def test_chat_repl(config, provider):
    path, src = config
    result = run_cli(["--config", path, "chat", src],
                     input="What is MAGIC_PORT?\nAnd who reads it?\n/sources\n/cost\n"
                           "/save chatted\n/bogus\n/quit\n")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "MAGIC_PORT is 48213 (app.py:1)" in out
    assert "SAW_HISTORY" in out  # the second question went with the first turn
    assert "1 files, 55 chars" in out and "2 turns: 2 calls" in out
    assert "saved as session chatted" in out and "unknown command /bogus" in out
    assert "cited app.py:1" in result.stderr
    shown = run_cli(["--config", path, "sessions", "show", "chatted", "--json"])
    assert [t["question"] for t in json.loads(shown.stdout)["turns"]] == [
        "What is MAGIC_PORT?", "And who reads it?"]


def test_a_kept_context_is_chunked_once(config):
    from ponder.context.chunking import chunk_context, keep_chunks, split_context
    from ponder.context.sources import load_sources

    _, src = config
    context = load_sources([src])
    fresh = split_context(context, chunk_tokens=200)
    keep_chunks(context)
    try:
        first = split_context(context, chunk_tokens=200)
        for _ in range(6):  # more sizes than chunk_context's own few-entry memo holds
            chunk_context(context, chunk_tokens=300 + _)
        again = chunk_context(context, chunk_tokens=200)
        assert first == fresh and all(a is b for a, b in zip(first, again, strict=True))
        assert split_context(context, chunk_tokens=300)[0] is not first[0]  # per size
    finally:
        keep_chunks(context, False)
    assert split_context(context, chunk_tokens=200)[0] is not first[0]


def test_a_session_keeps_its_retrievers_index_in_memory(config, provider):
    # retrieve_then_read over bm25: the first question builds the index, the second gets the
    # same indexed retriever back from memory (neither rebuilt nor loaded from the store)
    from ponder.support.observability import Tracker

    path, src = config
    for n in range(6):  # more chunks than top_k, so they are ranked
        (Path(src) / f"mod{n}.py").write_text("".join(f"def f{n}_{i}():\n    return {i}\n"
                                                      for i in range(40)))
    system = (ponder.build()
              .adapter("openai_compatible", base_url=provider.base_url, model="m",
                       context_window=32768)
              .strategy("retrieve_then_read", top_k=2, chunk_tokens=100).retriever("bm25")
              .cache(enabled=False)
              .storage("sqlite", path=str(Path(path).parent / "runs.sqlite")).system())

    def index_span(tracker: Tracker) -> dict:
        return next(s.attributes for s in tracker.spans if s.name == "index")

    with ponder.Session(None, [src], system=system) as session:
        first, second = Tracker(), Tracker()
        session.ask("What is MAGIC_PORT?", tracker=first)
        session.ask("And who reads it?", tracker=second)
        assert index_span(first)["loaded_from_store"] is False
        assert "kept_in_memory" not in index_span(first)
        assert index_span(second)["kept_in_memory"] is True
    # a new session over the same sources finds the index in the store, not in memory
    with ponder.Session(None, [src], system=system) as session:
        tracker = Tracker()
        session.ask("What is MAGIC_PORT?", tracker=tracker)
        assert index_span(tracker)["loaded_from_store"] is True
        assert "kept_in_memory" not in index_span(tracker)
