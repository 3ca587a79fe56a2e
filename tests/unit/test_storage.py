"""The ``sqlite`` and ``memory`` storages, their schema handling, secrets, and ``ponder runs``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ponder.errors import PonderError
from ponder.plugins import memory_store, sqlite_store
from ponder.plugins.memory_store import MemorySettings, MemoryStorage
from ponder.plugins.sqlite_store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SQLiteSettings,
    SQLiteStorage,
    apply_migrations,
    effective_status,
)
from ponder.support.secrets import MASK, forget_secrets, known_secrets, register_secret
from ponder.testing.conformance import StorageConformance


def open_sqlite(path: Path, **settings) -> SQLiteStorage:
    return SQLiteStorage(SQLiteSettings(path=str(path), **settings))


def raw_files(path: Path) -> dict[str, bytes]:
    """The bytes of the database and of its -wal and -shm files (those that exist)."""
    files = {}
    for suffix in ("", "-wal", "-shm"):
        candidate = Path(str(path) + suffix)
        if candidate.exists():
            files[candidate.name] = candidate.read_bytes()
    return files


# --- the conformance suite, for both ------------------------------------------------------------
class TestSQLiteConformance(StorageConformance):
    name = "sqlite"
    plugins = (sqlite_store,)

    def make_storage(self, tmp_path: Path) -> SQLiteStorage:
        return open_sqlite(tmp_path / "runs.sqlite")

    def reopen_storage(self, storage: SQLiteStorage, tmp_path: Path) -> SQLiteStorage:
        storage.close()
        return self.make_storage(tmp_path)


class TestMemoryConformance(StorageConformance):
    name = "memory"
    plugins = (memory_store,)


# --- where the file goes ------------------------------------------------------------------------
def test_default_path_is_the_isolated_data_dir() -> None:
    from ponder.support.fileutils import get_data_dir

    with SQLiteStorage() as storage:
        assert Path(storage.location) == get_data_dir() / "ponder.sqlite"
        # tests/conftest.py points the data dir at a per-test directory, never the real one
        assert Path(storage.location).parent == Path(os.environ["PONDER_DATA_DIR"])
    assert (get_data_dir() / "ponder.sqlite").is_file()


def test_path_setting_creates_parent_dirs(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "runs.sqlite"
    with open_sqlite(target) as storage:
        storage.begin_run({"id": "run000000001", "question": "q"})
        assert storage.location == str(target)
    assert target.is_file()


def test_memory_location() -> None:
    assert MemoryStorage().location == ":memory:"


def test_settings_are_validated() -> None:
    from ponder.errors import ConfigError
    from ponder.kernel.config import structure_settings

    with pytest.raises(ConfigError, match=r"storage\.busy_timeout_s"):
        structure_settings(SQLiteSettings, {"busy_timeout_s": -1}, section="storage")
    with pytest.raises(ConfigError, match=r"storage\.record_prompts"):
        structure_settings(SQLiteSettings, {"record_prompts": "yes"}, section="storage")
    settings = structure_settings(SQLiteSettings, {"path": "x.sqlite", "busy_timeout_s": 2},
                                  section="storage")
    assert settings.busy_timeout_s == 2.0 and settings.path == "x.sqlite"


# --- the file itself ----------------------------------------------------------------------------
def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    open_sqlite(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "calls", "spans", "artifacts", "schema_version"} <= tables
    finally:
        conn.close()


def test_an_old_version_file_is_upgraded(tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= 2, "this test needs a migration after the first"
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(conn, str(path), target=1)
    conn.execute("INSERT INTO runs (id, started_at, question, status, pid, hostname) "
                 "VALUES ('oldrun000001', 1600000000.0, 'from version 1', 'ok', 1, 'h')")
    conn.execute("INSERT INTO calls (run_id, role, input_tokens) VALUES ('oldrun000001', 'map', 7)")
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 1
    columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    assert "finished_at" not in columns  # added by migration 2
    conn.close()

    with open_sqlite(path) as storage:
        old = storage.get_run("oldrun")
        assert old["question"] == "from version 1" and old["status"] == "ok"
        assert [(c["role"], c["input_tokens"]) for c in old["calls"]] == [("map", 7)]
        assert old["finished_at"] is None
        storage.begin_run({"id": "newrun000001", "question": "after the upgrade"})
        storage.finish_run("newrun000001", {"status": "ok", "answer": "fine"})
        assert storage.get_run("newrun")["finished_at"] is not None
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)]
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"calls_by_run", "spans_by_run"} <= indexes
    finally:
        conn.close()


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "runs.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(conn, str(path), target=1)
    conn.close()
    broken = (*MIGRATIONS[:1], ("ALTER TABLE runs ADD COLUMN finished_at REAL",
                                "THIS IS NOT SQL"))
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", broken)
    with pytest.raises(PonderError, match=str(path).replace("\\", "\\\\")):
        open_sqlite(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 1
        assert "finished_at" not in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    finally:
        conn.close()


def test_a_newer_version_file_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    with open_sqlite(path) as storage:
        storage.begin_run({"id": "run000000001"})
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(PonderError) as caught:
        open_sqlite(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message and "newer" in message
    conn = sqlite3.connect(path)  # refused, not touched
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == (
            SCHEMA_VERSION + 1)
    finally:
        conn.close()


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    with pytest.raises(PonderError, match="not a ponder run store"):
        open_sqlite(path)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(PonderError) as caught:
        open_sqlite(path)
    assert str(path) in str(caught.value)


def test_closed_store_refuses_work_and_closes_twice(tmp_path: Path) -> None:
    storage = open_sqlite(tmp_path / "runs.sqlite")
    storage.close()
    storage.close()
    with pytest.raises(PonderError, match="closed"):
        storage.begin_run({"id": "run000000001"})


# --- records ------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "memory"])
def make_store(request, tmp_path):
    """A factory of stores of either kind (the sqlite ones in one file under tmp_path)."""
    made = []

    def make(**settings):
        if request.param == "sqlite":
            store = open_sqlite(tmp_path / "runs.sqlite", **settings)
        else:
            store = MemoryStorage(MemorySettings(**settings))
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def test_unknown_run_ids_are_errors_for_writes(make_store) -> None:
    store = make_store()
    with pytest.raises(PonderError, match="nope"):
        store.record_call("nope", {"role": "map"})
    with pytest.raises(PonderError, match="nope"):
        store.finish_run("nope", {"status": "ok"})
    store.begin_run({"id": "dup000000001"})
    with pytest.raises(PonderError, match="already"):
        store.begin_run({"id": "dup000000001"})


def test_finish_run_may_update_run_fields(make_store) -> None:
    store = make_store()
    store.begin_run({"id": "auto00000001", "strategy": "auto", "model": "m",
                     "started_at": "2025-01-02T03:04:05+00:00"})
    store.finish_run("auto00000001", {"status": "ok", "strategy": "map_reduce", "id": "other"})
    run = store.get_run("auto00000001")
    assert (run["id"], run["strategy"], run["model"]) == ("auto00000001", "map_reduce", "m")
    assert run["started_at"] == "2025-01-02T03:04:05+00:00"
    assert store.list_runs()[0]["strategy"] == "map_reduce"


def test_begin_run_fills_in_id_start_pid_and_host(make_store) -> None:
    store = make_store()
    run_id = store.begin_run({"question": "no id given"})
    assert run_id and isinstance(run_id, str)
    run = store.get_run(run_id)
    assert run["status"] == "running"  # this process is alive
    assert run["pid"] == os.getpid()
    assert run["hostname"] == sqlite_store.HOSTNAME
    assert isinstance(run["started_at"], float)


def test_extra_keys_round_trip_without_overriding_fields(make_store) -> None:
    store = make_store()
    store.begin_run({"id": "extra0000001", "tags": ["a", "b"], "status": "bogus"})
    store.record_call("extra0000001", {"role": "map", "attempt_ids": [1, 2]})
    store.finish_run("extra0000001", {"status": "ok", "note": "fine"})
    run = store.get_run("extra0000001")
    assert run["tags"] == ["a", "b"] and run["note"] == "fine" and run["status"] == "ok"
    assert run["calls"][0]["attempt_ids"] == [1, 2]


def test_a_dead_process_makes_a_running_run_incomplete(make_store, tmp_path) -> None:
    store = make_store()
    store.begin_run({"id": "dead00000001"})
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead_pid = int(child.stdout)  # exited and reaped by subprocess.run
    if isinstance(store, SQLiteStorage):
        conn = sqlite3.connect(store.location)
        with conn:
            conn.execute("UPDATE runs SET pid = ? WHERE id = 'dead00000001'", (dead_pid,))
        conn.close()
    else:
        store._runs["dead00000001"]["pid"] = dead_pid
    assert store.get_run("dead00000001")["status"] == "incomplete"
    assert store.list_runs()[0]["status"] == "incomplete"
    store.finish_run("dead00000001", {"status": "failed"})
    assert store.get_run("dead00000001")["status"] == "failed"


def test_effective_status() -> None:
    host = sqlite_store.HOSTNAME
    assert effective_status("running", os.getpid(), host) == "running"
    assert effective_status("running", os.getpid(), "another-host") == "running"
    assert effective_status("ok", 2**22 + 12345, host) == "ok"
    assert effective_status("running", -1, "another-host") == "running"  # cannot tell
    assert effective_status("running", None, host) == "running"


def test_prompts_dropped_unless_record_prompts(make_store, tmp_path) -> None:
    prompt, reply = "PROMPT-TEXT-4f1c9 what is x?", "REPLY-TEXT-77ab2 x is 1"
    store = make_store()
    store.begin_run({"id": "prompt000001"})
    store.record_call("prompt000001", {"role": "map", "prompt": prompt, "reply": reply,
                                       "prompt_chars": len(prompt), "reply_chars": len(reply)})
    call = store.get_run("prompt000001")["calls"][0]
    assert call["prompt"] is None and call["reply"] is None
    assert call["prompt_chars"] == len(prompt) and call["reply_chars"] == len(reply)
    if isinstance(store, SQLiteStorage):
        for name, data in raw_files(Path(store.location)).items():
            assert prompt.encode() not in data and reply.encode() not in data, name
        store.close()
    kept = make_store(record_prompts=True)
    kept.begin_run({"id": "prompt000002"})
    kept.record_call("prompt000002", {"role": "map", "prompt": prompt, "reply": reply})
    call = kept.get_run("prompt000002")["calls"][0]
    assert (call["prompt"], call["reply"]) == (prompt, reply)


@pytest.fixture
def planted_secrets():
    """Two registered secrets: one shaped like an OpenAI key, one shaped like nothing."""
    before = known_secrets()
    secrets = ("sk-PLANTED-ponder-test-123456", "PLANTED-hunter2-ponder-zz9")
    for secret in secrets:
        register_secret(secret)
    yield secrets
    forget_secrets()
    for secret in before:
        register_secret(secret)


def test_secrets_never_reach_the_files(tmp_path: Path, planted_secrets) -> None:
    path = tmp_path / "runs.sqlite"
    storage = open_sqlite(path, record_prompts=True)
    for index, secret in enumerate(planted_secrets):
        run_id = f"secret{index:06d}"
        storage.begin_run({
            "id": run_id,
            "question": f"is {secret} valid?",
            "config": {"adapter": {"api_key": secret, "note": f"key {secret}"},
                       "headers": {"Authorization": f"Bearer {secret}"}},
            "sources": [f"/tmp/{secret}/a.py"],
            "comment": secret,
        })
        storage.record_call(run_id, {"role": "map", "prompt": f"use {secret}",
                                     "reply": f"ok {secret}", "error": f"401 for {secret}",
                                     "headers": {"x-api-key": secret}})
        storage.finish_run(run_id, {
            "status": "failed", "answer": f"the key is {secret}",
            "failures": [{"index": 0, "error": f"rejected {secret}"}],
            "stopped_by": None, "usage": {"note": secret},
            "spans": [{"id": "s", "name": "run", "error": f"boom {secret}",
                       "attributes": {"token": secret, "k": secret}}],
        })
        storage.put_artifact("index", secret, b"the key itself is not bytes we look into")
    files = raw_files(path)
    assert path.name + "-wal" in files  # WAL mode: the records are still in the -wal file
    run = storage.get_run("secret000000")
    storage.close()
    files_after = raw_files(path)
    for name, data in [*files.items(), *files_after.items()]:
        for secret in planted_secrets:
            assert secret.encode() not in data, f"{secret} found in {name}"
    # masked, not dropped: the text is still there around the mask
    assert run["question"] == f"is {MASK} valid?"
    assert run["answer"] == f"the key is {MASK}"
    assert run["config"]["adapter"]["api_key"] == MASK
    assert run["calls"][0]["prompt"] == f"use {MASK}"
    assert run["calls"][0]["error"] == f"401 for {MASK}"


def test_memory_store_cleans_secrets_too(planted_secrets) -> None:
    secret = planted_secrets[1]
    store = MemoryStorage()
    store.begin_run({"id": "secret000001", "question": secret, "config": {"api_key": secret}})
    store.record_call("secret000001", {"error": secret})
    store.finish_run("secret000001", {"answer": secret})
    assert secret not in json.dumps(store.get_run("secret000001"))


def test_records_are_cleaned_as_clean_secrets_cleans_them(planted_secrets) -> None:
    """Call records and spans skip redacting their own field names (none names a secret), and
    are otherwise cleaned exactly as ``clean_secrets`` cleans them."""
    from ponder.support.observability import Span, SpanType
    from ponder.support.secrets import clean_secrets, is_secret_key, redact

    fields = (*sqlite_store.CALL_FIELDS, *sqlite_store.SPAN_FIELDS)
    assert not [f for f in fields if is_secret_key(f) or redact(f) != f]
    span = Span(name="map", type=SpanType.LLM, attributes={"k": planted_secrets[0]})
    assert tuple(span.to_dict()) == sqlite_store.SPAN_FIELDS
    secret = planted_secrets[1]
    call = {"role": f"map {secret}", "error": f"401 for {secret}", "input_tokens": 12,
            "headers": {"x-api-key": secret, "note": secret}, "api_key": secret,
            "nested": [secret, {"token": secret}], "cached": False}
    known, extra = sqlite_store.normalise_call(call, record_prompts=True)
    want_known, want_extra = sqlite_store._split(clean_secrets(call), sqlite_store.CALL_FIELDS)
    assert known["role"] == want_known["role"] == f"map {MASK}"
    assert known["error"] == want_known["error"] and known["input_tokens"] == 12
    assert extra == sqlite_store.to_plain(want_extra) and extra["api_key"] == MASK
    _, spans, _ = sqlite_store.normalise_result({"spans": [span, {**span.to_dict(),
                                                                 "password": secret}]})
    assert spans == [sqlite_store.to_plain(clean_secrets(span.to_dict())),
                     sqlite_store.to_plain(clean_secrets({**span.to_dict(), "password": secret}))]
    assert secret not in json.dumps(spans) and planted_secrets[0] not in json.dumps(spans)


# --- ponder runs --------------------------------------------------------------------------------
def runs_cli(tmp_path: Path | None = None, config=None, plugins=(sqlite_store, memory_store)):
    """A fresh click group holding only ``runs``, with an AppState built from ``config``."""
    from ponder.cli import AppState
    from ponder.cli.runs import add_runs_command
    from ponder.kernel.config import Config
    from ponder.testing import plugin_set

    @click.group()
    def root() -> None:
        pass

    add_runs_command(root)
    state = AppState()
    state._config = config or Config()
    state._plugins = plugin_set(*plugins)

    def invoke(*args: str):
        return CliRunner().invoke(root, ["runs", *args], obj=state, catch_exceptions=False)

    return invoke


def populate(storage) -> None:
    storage.begin_run({"id": "aaaa11110000", "started_at": 1_700_000_000.0,
                       "question": "Where is the retry policy configured?\nAnd why?",
                       "strategy": "map_reduce", "model": "openai/gpt-4o-mini",
                       "adapter": "litellm"})
    storage.record_call("aaaa11110000", {"role": "map", "adapter": "litellm",
                                         "input_tokens": 1200, "output_tokens": 80,
                                         "latency_s": 1.5, "cost_usd": 0.00021,
                                         "cached": False, "error": None})
    storage.record_call("aaaa11110000", {"role": "reduce", "adapter": "litellm",
                                         "input_tokens": 300, "output_tokens": 40,
                                         "latency_s": 0.75, "cost_usd": 0.00007,
                                         "cached": True, "error": "rate limited [429]"})
    storage.finish_run("aaaa11110000", {
        "status": "partial", "answer": "In retry.py [core/support/retry.py:10]",
        "cost_usd": 0.00028,
        "elapsed_s": 2.5, "usage": {"calls": 2, "input_tokens": 1500, "output_tokens": 120},
        "failures": [{"index": 3, "error": "timeout"}], "stopped_by": "max_cost"})
    storage.begin_run({"id": "bbbb22220000", "started_at": 1_700_000_100.0,
                       "question": "What [bold]is[/bold] this?", "strategy": "direct",
                       "model": "gemini/gemini-2.5-flash"})


def test_runs_lists_newest_first(tmp_path: Path) -> None:
    with SQLiteStorage() as storage:  # the default store: what `ponder runs` opens
        populate(storage)
    result = runs_cli()()
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.index("bbbb22220000") < out.index("aaaa11110000")
    assert "partial" in out and "running" in out
    assert "map_reduce" in out and "openai/gpt-4o-mini" in out
    assert "$0.000280" in out and "2.50s" in out
    assert "Where is the retry policy configured? And why?" in out
    assert "What [bold]is[/bold] this?" in out  # markup in a question is shown, not applied

    limited = runs_cli()("--limit", "1")
    assert "bbbb22220000" in limited.output and "aaaa11110000" not in limited.output


def test_runs_json(tmp_path: Path) -> None:
    with SQLiteStorage() as storage:
        populate(storage)
    result = runs_cli()("--json")
    assert result.exit_code == 0
    runs = json.loads(result.output)
    assert [r["id"] for r in runs] == ["bbbb22220000", "aaaa11110000"]
    assert runs[1]["usage"]["input_tokens"] == 1500


def test_runs_show(tmp_path: Path) -> None:
    with SQLiteStorage() as storage:
        populate(storage)
    result = runs_cli()("show", "aaaa")
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in ("aaaa11110000", "Where is the retry policy configured?",
                     "In retry.py [core/support/retry.py:10]", "partial", "max_cost",
                     "input_tokens: 1500", "timeout", "2 LM call(s)", "reduce", "1200",
                     "rate limited [429]", "yes", "1.50s"):
        assert expected in out, f"{expected!r} not in:\n{out}"
    assert out.index(" map ") < out.index(" reduce ")
    assert "$0.000210" in out and "$0.000070" in out

    unfinished = runs_cli()("show", "bbbb")
    assert "running" in unfinished.output and "no LM calls recorded" in unfinished.output

    as_json = json.loads(runs_cli()("show", "aaaa11110000", "--json").output)
    assert [c["role"] for c in as_json["calls"]] == ["map", "reduce"]
    assert as_json["failures"] == [{"index": 3, "error": "timeout"}]


def test_runs_show_unknown_and_ambiguous_ids(tmp_path: Path) -> None:
    with SQLiteStorage() as storage:
        populate(storage)
        storage.begin_run({"id": "aaaa99990000"})
    unknown = runs_cli()("show", "zzzz")
    assert unknown.exit_code == 2  # an unknown id is bad input (issue 15)
    assert "no run 'zzzz'" in unknown.output
    ambiguous = runs_cli()("show", "aaaa")
    assert ambiguous.exit_code == 2  # bad input too
    assert "aaaa11110000" in ambiguous.output and "aaaa99990000" in ambiguous.output


def test_runs_path_and_the_configured_store(tmp_path: Path) -> None:
    from ponder.kernel.config import Component, Config
    from ponder.support.fileutils import get_data_dir

    default = runs_cli()("path")
    assert default.output.strip() == str(get_data_dir() / "ponder.sqlite")

    configured = tmp_path / "elsewhere" / "mine.sqlite"
    config = Config(storage=Component("sqlite", {"path": str(configured)}))
    with open_sqlite(configured) as storage:
        populate(storage)
    assert runs_cli(config=config)("path").output.strip() == str(configured)
    assert "aaaa11110000" in runs_cli(config=config)().output
    assert "no runs recorded yet" in runs_cli()().output  # the default store is still empty

    memory = Config(storage=Component("memory"))
    assert runs_cli(config=memory)("path").output.strip() == ":memory:"


def test_runs_through_the_real_command_line(tmp_path: Path, monkeypatch) -> None:
    """`ponder runs` inside the real `ponder` group, as core/cli/main.py wires it."""
    from importlib.metadata import entry_points

    from ponder import cli as ponder_cli
    from ponder.cli.runs import add_runs_command
    from ponder.testing import run_cli

    group = click.Group()
    add_runs_command(group)
    monkeypatch.setitem(ponder_cli.cli.commands, "runs", group.commands["runs"])
    installed = {ep.name for ep in entry_points(group="ponder")}
    plugin_args = [] if "sqlite" in installed else ["--plugin", "ponder.plugins.sqlite_store"]
    with SQLiteStorage() as storage:
        populate(storage)
    listed = run_cli([*plugin_args, "runs"])
    assert listed.exit_code == 0, listed.output
    assert "bbbb22220000" in listed.stdout
    missing = run_cli([*plugin_args, "runs", "show", "nothere"])
    assert missing.exit_code == 2  # bad input (issue 15)
    assert "no run 'nothere'" in missing.stderr
