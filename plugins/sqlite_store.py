"""The ``sqlite`` storage: runs, their LM calls, spans and artifacts in one SQLite file.

What ``ponder runs`` reads. The file is opened in WAL mode, so ``ponder runs`` can read while a
run is writing, and every write is its own transaction: ``begin_run`` and each ``record_call``
are committed at once, so a process killed mid-run (even with SIGKILL) leaves a readable store
in which that run still says ``running``; ``list_runs``/``get_run`` then report it as
``incomplete`` once its process (recorded with the run, with the host name) is gone.

Nothing secret is written: every record goes through :func:`ponder.support.secrets.clean_secrets`
(values under secret-looking keys masked, registered secrets and key-shaped strings redacted)
whatever the caller already did. The prompt and reply text of LM calls is dropped unless
``record_prompts`` is on (their sizes are always kept).

The schema is versioned (table ``schema_version``) and upgraded in place by an ordered list of
migrations, each applied in a transaction; a file written by a newer ponder is refused rather
than guessed at.

Config example::

    [storage]
    name = "sqlite"
    # path = "~/ponder-runs.sqlite"   # default: ponder.sqlite in the per-user data directory
    # record_prompts = false          # keep each call's prompt and reply text
    # busy_timeout_s = 5.0            # how long to wait for another process's write lock
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from ponder import hookimpl
from ponder.errors import PonderError
from ponder.plugins._records import SQLiteRecords, clean_fields
from ponder.support.secrets import clean_secrets, redact

PONDER_PLUGIN_API = 1

log = logging.getLogger("ponder.storage")


@attrs.define
class SQLiteSettings:
    #: the database file; None: ``ponder.sqlite`` in the per-user data directory
    path: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str)))
    #: keep the prompt and reply text of each LM call (off: only their lengths are kept)
    record_prompts: bool = attrs.field(default=False,
                                       validator=attrs.validators.instance_of(bool))
    #: seconds to wait for another connection's write lock before failing
    busy_timeout_s: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))


# --- the records, shared with the memory storage ----------------------------------------------
#: what ``begin_run`` records
RUN_FIELDS = ("id", "started_at", "question", "source_digest", "sources", "config", "model",
              "adapter", "strategy")
#: what ``finish_run`` records (``spans`` go to their own table)
RESULT_FIELDS = ("status", "answer", "usage", "cost_usd", "elapsed_s", "failures",
                 "stopped_by", "chunks")
#: what ``record_call`` records
CALL_FIELDS = ("role", "adapter", "model", "prompt_chars", "reply_chars", "input_tokens",
               "output_tokens", "latency_s", "cost_usd", "retries", "cached", "error", "prompt",
               "reply", "recorded_at")
#: what a stored span holds (``Span.to_dict()``)
SPAN_FIELDS = ("id", "parent_id", "name", "type", "start", "end", "duration_s", "status",
               "error", "attributes", "thread")
#: fields holding nested values, stored as JSON text
JSON_FIELDS = frozenset({"sources", "config", "usage", "failures", "chunks"})
#: the run fields ``list_runs`` leaves out (potentially large; ``get_run`` has them)
HEAVY_RUN_FIELDS = ("chunks",)
#: a run still marked running: ``running`` while its process lives, else ``incomplete``
RUNNING, INCOMPLETE = "running", "incomplete"

HOSTNAME = socket.gethostname()
_SCALARS = (str, int, float, bool, type(None))


def to_plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists, unknown objects strings)."""
    return json.loads(json.dumps(value, default=str))


def _scalar(value: Any) -> Any:
    # a column holds text or a number: a list or dict is kept as its JSON text, any other
    # object (a datetime, a path) as its str()
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    return str(value)


def _split(record: Mapping[str, Any], fields: tuple[str, ...]) -> tuple[dict[str, Any], dict]:
    known = {f: record.get(f) for f in fields}
    extra = {k: v for k, v in record.items() if k not in fields and isinstance(k, str)}
    return known, extra


def normalise_run(run: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cleaned ``begin_run`` record (id, start time, pid and host filled in) and the keys
    that have no column of their own."""
    cleaned = clean_secrets(dict(run))
    known, extra = _split(cleaned, RUN_FIELDS)
    known["id"] = str(known["id"]) if known["id"] else uuid.uuid4().hex[:12]
    if known["started_at"] is None:
        known["started_at"] = time.time()
    for name in JSON_FIELDS & set(known):
        known[name] = to_plain(known[name])
    for name in set(known) - JSON_FIELDS:
        known[name] = _scalar(known[name])
    known.update(pid=os.getpid(), hostname=HOSTNAME, status=RUNNING)
    return known, to_plain(extra)


def normalise_result(result: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict], dict]:
    """The cleaned ``finish_run`` record, its spans (plain dicts) and its other keys.

    A ``begin_run`` field other than ``id`` given again here replaces the one recorded.
    """
    data = dict(result)
    spans = data.pop("spans", None) or []
    cleaned = clean_secrets(data)
    # begin_run's fields given again (the strategy ``auto`` chose, say) update the run
    updates = tuple(f for f in RUN_FIELDS if f != "id" and f in cleaned)
    known, extra = _split(cleaned, (*RESULT_FIELDS, *updates))
    known["status"] = known["status"] or "ok"
    for name in JSON_FIELDS & set(known):
        known[name] = to_plain(known[name])
    for name in set(known) - JSON_FIELDS:
        known[name] = _scalar(known[name])
    known["finished_at"] = time.time()
    plain_spans = [to_plain(clean_fields(s.to_dict() if hasattr(s, "to_dict") else dict(s),
                                          SPAN_FIELDS))
                   for s in spans]
    return known, plain_spans, to_plain(extra)


def normalise_call(call: Mapping[str, Any], *, record_prompts: bool
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cleaned ``record_call`` record (prompt/reply text dropped unless ``record_prompts``)
    and the keys that have no column of their own."""
    data = dict(call)
    if not record_prompts:  # dropped before cleaning: redacting a long prompt costs time
        data.pop("prompt", None)
        data.pop("reply", None)
    cleaned = clean_fields(data, CALL_FIELDS)
    known, extra = _split(cleaned, CALL_FIELDS)
    known = {name: _scalar(value) for name, value in known.items()}
    if known["cached"] is not None:
        known["cached"] = bool(known["cached"])
    if known["recorded_at"] is None:
        known["recorded_at"] = time.time()
    return known, to_plain(extra)


def artifact_key(kind: str, key: str) -> tuple[str, str]:
    """``(kind, key)`` as stored: a key built from settings must not carry a secret into the
    file, so both are redacted (the same way when reading, so lookups still match)."""
    return redact(str(kind)), redact(str(key))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as gone)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process there
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # access denied: it exists
        try:
            code = ctypes.c_ulong()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"  # killed, not yet reaped
    return True


def effective_status(status: str | None, pid: Any, hostname: Any) -> str | None:
    """``status``, except that a running run whose process is gone is ``incomplete``.

    A run from another host cannot be checked, so it stays ``running``.
    """
    if status == RUNNING and hostname == HOSTNAME and isinstance(pid, int) and not pid_alive(pid):
        return INCOMPLETE
    return status


def ambiguous_prefix_error(prefix: str, matches: list[str], location: str) -> PonderError:
    shown = ", ".join(matches[:10]) + (" and more" if len(matches) > 10 else "")
    return PonderError(f"run id {prefix!r} is ambiguous in {location}: it matches {shown}; "
                       f"give more of the id")


# --- the schema ---------------------------------------------------------------------------------
#: Migration ``i`` (1-based) brings the schema from version ``i - 1`` to ``i``. Append only:
#: never edit a released migration, add a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the tables
    (
        """CREATE TABLE runs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            started_at,
            question TEXT,
            source_digest TEXT,
            sources TEXT,
            config TEXT,
            model TEXT,
            adapter TEXT,
            strategy TEXT,
            pid INTEGER,
            hostname TEXT,
            status TEXT NOT NULL DEFAULT 'running',
            answer TEXT,
            usage TEXT,
            cost_usd REAL,
            elapsed_s REAL,
            failures TEXT,
            stopped_by TEXT,
            chunks TEXT,
            extra TEXT
        )""",
        """CREATE TABLE calls (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            role TEXT,
            adapter TEXT,
            model TEXT,
            prompt_chars INTEGER,
            reply_chars INTEGER,
            input_tokens INTEGER,
            output_tokens INTEGER,
            latency_s REAL,
            cost_usd REAL,
            retries INTEGER,
            cached INTEGER,
            error TEXT,
            prompt TEXT,
            reply TEXT,
            recorded_at REAL,
            extra TEXT
        )""",
        """CREATE TABLE spans (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            span_id TEXT,
            parent_id TEXT,
            name TEXT,
            type TEXT,
            start REAL,
            duration_s REAL,
            status TEXT,
            data TEXT NOT NULL
        )""",
        """CREATE TABLE artifacts (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            data BLOB NOT NULL,
            created_at REAL,
            PRIMARY KEY (kind, key)
        )""",
    ),
    # 2: when a run finished; indexes for get_run's lookups of a run's calls and spans
    (
        "ALTER TABLE runs ADD COLUMN finished_at REAL",
        "CREATE INDEX calls_by_run ON calls (run_id, seq)",
        "CREATE INDEX spans_by_run ON spans (run_id, seq)",
    ),
    # 3: keyed JSON records for the subsystems (eval examples, sessions, batch jobs, studies)
    (
        """CREATE TABLE records (
            namespace TEXT NOT NULL,
            key TEXT NOT NULL,
            data TEXT NOT NULL,
            updated_at REAL,
            PRIMARY KEY (namespace, key)
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_OUR_TABLES = frozenset({"schema_version", "runs", "calls", "spans", "artifacts", "records",
                         "sqlite_sequence"})
_RUN_COLUMNS = (*RUN_FIELDS, "pid", "hostname", *RESULT_FIELDS, "finished_at")
_CALL_COLUMNS = CALL_FIELDS


def read_schema_version(conn: sqlite3.Connection) -> int | None:
    """The file's schema version; 0 for an empty file; None for a database that has tables
    but no ``schema_version`` (not a ponder store)."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "schema_version" not in tables:
        return 0 if not (tables - _OUR_TABLES) else None
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def apply_migrations(conn: sqlite3.Connection, location: str, target: int = SCHEMA_VERSION
                     ) -> int:
    """Bring the schema up to ``target`` in one transaction; returns the version found.

    ``conn`` must be in autocommit mode (``isolation_level=None``). The version is read again
    under the write lock, so two processes opening a new file at once migrate it once.
    """
    version = read_schema_version(conn)
    _check_version(version, location)
    if version >= target:
        return version
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = read_schema_version(conn)
        _check_version(version, location)
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        found = version
        for number in range(version + 1, target + 1):
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            version = number
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    if found:
        log.info("upgraded the run store %s from schema version %d to %d", location, found,
                 version)
    return found


def _check_version(version: int | None, location: str) -> None:
    if version is None:
        raise PonderError(f"{location} is an SQLite database but not a ponder run store (it has "
                          f"tables and no schema_version); set [storage] path to another file")
    if version > SCHEMA_VERSION:
        raise PonderError(
            f"the run store {location} has schema version {version}, newer than this ponder "
            f"understands (up to {SCHEMA_VERSION}); it was written by a newer ponder. Upgrade "
            f"ponder, or set [storage] path to another file")


# --- the storage ----------------------------------------------------------------------------------
class SQLiteStorage(SQLiteRecords):
    """Runs, calls, spans and artifacts in one SQLite file (see the module docstring)."""

    def __init__(self, settings: SQLiteSettings | None = None) -> None:
        from ponder.support.fileutils import get_data_dir

        self.settings = settings or SQLiteSettings()
        if self.settings.path:
            path = Path(self.settings.path).expanduser().absolute()
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            path = get_data_dir() / "ponder.sqlite"
        self.path = path
        self.location = str(path)
        # One connection behind one lock, rather than one connection per thread: SQLite allows
        # one writer at a time anyway, so per-thread connections would only queue on the file
        # lock (failing with "database is locked" past the busy timeout) where a Python lock
        # simply queues; and connections opened by short-lived worker threads would outlive
        # them with nobody to close them. record_call is one small insert, so the lock is
        # never held for long.
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = self._connect()
            apply_migrations(self._conn, self.location)
        except sqlite3.Error as exc:
            self.close()
            raise PonderError(f"cannot open the run store {self.location}: {exc}") from None
        except BaseException:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        timeout = self.settings.busy_timeout_s
        conn = sqlite3.connect(self.location, timeout=timeout, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # e.g. a filesystem without shared memory support
            log.warning("the run store %s could not use WAL mode (got %s)", self.location, mode)
        # FULL: each commit is synced, so a committed call survives a power cut too; an LM
        # call takes far longer than the fsync
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    # --- plumbing -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; a write (IMMEDIATE) or a consistent read (DEFERRED).

        sqlite3 errors become PonderError naming the file.
        """
        with self._lock:
            conn = self._conn
            if conn is None:
                raise PonderError(f"the run store {self.location} is closed")
            try:
                conn.execute(f"BEGIN {mode}")
                try:
                    yield conn
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise PonderError(f"run store {self.location}: {exc}") from None

    @staticmethod
    def _json(value: Any) -> str | None:
        return None if value is None else json.dumps(value, default=str)

    @staticmethod
    def _unjson(text: Any) -> Any:
        return None if text is None else json.loads(text)

    def _run_from_row(self, row: sqlite3.Row, *, heavy: bool) -> dict[str, Any]:
        run: dict[str, Any] = self._unjson(row["extra"]) or {}
        for column in _RUN_COLUMNS:
            if not heavy and column in HEAVY_RUN_FIELDS:
                continue
            value = row[column]
            run[column] = self._unjson(value) if column in JSON_FIELDS else value
        run["status"] = effective_status(run["status"], run["pid"], run["hostname"])
        return run

    # --- writing ------------------------------------------------------------------------------
    def begin_run(self, run: dict[str, Any]) -> str:
        known, extra = normalise_run(run)
        row = {**known, "extra": self._json(extra or None)}
        for name in JSON_FIELDS & set(row):
            row[name] = self._json(row[name])
        columns = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (known["id"],)).fetchone():
                raise PonderError(f"run {known['id']!r} is already in {self.location}")
            conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", row)
        return known["id"]

    def record_call(self, run_id: str, call: dict[str, Any]) -> None:
        known, extra = normalise_call(call, record_prompts=self.settings.record_prompts)
        row = {"run_id": run_id, **known, "extra": self._json(extra or None)}
        columns = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise PonderError(f"no run {run_id!r} in {self.location} to record a call in")
            conn.execute(f"INSERT INTO calls ({columns}) VALUES ({marks})", row)

    def finish_run(self, run_id: str, result: dict[str, Any]) -> None:
        known, spans, extra = normalise_result(result)
        row = dict(known)
        for name in JSON_FIELDS & set(row):
            row[name] = self._json(row[name])
        assignments = ", ".join(f"{name} = :{name}" for name in row)
        with self._transaction() as conn:
            found = conn.execute("SELECT extra FROM runs WHERE id = ?", (run_id,)).fetchone()
            if found is None:
                raise PonderError(f"no run {run_id!r} in {self.location} to finish")
            merged = {**(self._unjson(found[0]) or {}), **extra}
            conn.execute(f"UPDATE runs SET {assignments}, extra = :extra WHERE id = :id",
                         {**row, "extra": self._json(merged or None), "id": run_id})
            conn.execute("DELETE FROM spans WHERE run_id = ?", (run_id,))  # finishing twice
            conn.executemany(
                "INSERT INTO spans (run_id, span_id, parent_id, name, type, start, duration_s, "
                "status, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, _scalar(s.get("id")), _scalar(s.get("parent_id")),
                  _scalar(s.get("name")), _scalar(s.get("type")), _scalar(s.get("start")),
                  _scalar(s.get("duration_s")), _scalar(s.get("status")), json.dumps(s))
                 for s in spans])

    def put_artifact(self, kind: str, key: str, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"artifact data must be bytes, got {type(data).__name__}")
        kind, key = artifact_key(kind, key)
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO artifacts (kind, key, data, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data, "
                "created_at = excluded.created_at",
                (kind, key, bytes(data), time.time()))

    # --- reading ------------------------------------------------------------------------------
    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` runs (all with ``limit <= 0``), newest first, without their
        calls, spans and chunks; ``call_count`` says how many calls each recorded."""
        with self._transaction("DEFERRED") as conn:
            rows = conn.execute(
                "SELECT runs.*, (SELECT count(*) FROM calls WHERE calls.run_id = runs.id) "
                "AS call_count FROM runs ORDER BY seq DESC LIMIT ?",
                (limit if limit and limit > 0 else -1,)).fetchall()
        result = []
        for row in rows:
            run = self._run_from_row(row, heavy=False)
            run["call_count"] = row["call_count"]
            result.append(run)
        return result

    def _resolve(self, conn: sqlite3.Connection, run_id: str) -> str | None:
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
            return run_id
        matches = [row[0] for row in conn.execute(
            "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY seq DESC LIMIT 11",
            (len(run_id), run_id))]
        if len(matches) > 1:
            raise ambiguous_prefix_error(run_id, matches, self.location)
        return matches[0] if matches else None

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run with its ``calls`` (in the order recorded) and ``spans``; ``run_id`` may be
        a unique prefix. None when nothing matches; PonderError when several runs do."""
        if not run_id:
            return None
        with self._transaction("DEFERRED") as conn:
            full_id = self._resolve(conn, run_id)
            if full_id is None:
                return None
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (full_id,)).fetchone()
            calls = conn.execute("SELECT * FROM calls WHERE run_id = ? ORDER BY seq",
                                 (full_id,)).fetchall()
            spans = conn.execute("SELECT data FROM spans WHERE run_id = ? ORDER BY seq",
                                 (full_id,)).fetchall()
        run = self._run_from_row(row, heavy=True)
        run["calls"] = []
        for call_row in calls:
            call: dict[str, Any] = self._unjson(call_row["extra"]) or {}
            call.update({column: call_row[column] for column in _CALL_COLUMNS})
            if call["cached"] is not None:
                call["cached"] = bool(call["cached"])
            run["calls"].append(call)
        run["spans"] = [json.loads(span_row["data"]) for span_row in spans]
        run["call_count"] = len(run["calls"])
        return run

    def get_artifact(self, kind: str, key: str) -> bytes | None:
        kind, key = artifact_key(kind, key)
        with self._transaction("DEFERRED") as conn:
            row = conn.execute("SELECT data FROM artifacts WHERE kind = ? AND key = ?",
                               (kind, key)).fetchone()
        return None if row is None else bytes(row[0])

    # --- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the file (idempotent); the last connection to close folds the WAL back in."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def __enter__(self) -> SQLiteStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.location!r})"


@hookimpl
def ponder_register_storage(register):
    register("sqlite", SQLiteStorage, settings=SQLiteSettings)
