"""The ``memory`` storage: the ``sqlite`` storage's interface and semantics, kept in memory.

For tests and throwaway sessions: nothing is written to disk and everything is gone when the
process ends. Records are cleaned of secrets and turned into plain JSON data exactly as the
``sqlite`` storage does, so code tested against this one sees what it would read back from a
file.

Config example::

    [storage]
    name = "memory"
    # record_prompts = false   # keep each call's prompt and reply text
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import attrs

from ponder import hookimpl
from ponder.errors import PonderError
from ponder.plugins._records import MemoryRecords
from ponder.plugins.sqlite_store import (
    HEAVY_RUN_FIELDS,
    RESULT_FIELDS,
    ambiguous_prefix_error,
    artifact_key,
    effective_status,
    normalise_call,
    normalise_result,
    normalise_run,
)

PONDER_PLUGIN_API = 1


@attrs.define
class MemorySettings:
    #: keep the prompt and reply text of each LM call (off: only their lengths are kept)
    record_prompts: bool = attrs.field(default=False,
                                       validator=attrs.validators.instance_of(bool))


class MemoryStorage(MemoryRecords):
    """Runs, calls, spans and artifacts in dicts behind one lock."""

    location = ":memory:"

    def __init__(self, settings: MemorySettings | None = None) -> None:
        self.settings = settings or MemorySettings()
        self._lock = threading.Lock()
        self._runs: dict[str, dict[str, Any]] = {}  # insertion order = the order begun
        self._extras: dict[str, dict[str, Any]] = {}  # keys with no field of their own
        self._calls: dict[str, list[dict[str, Any]]] = {}
        self._spans: dict[str, list[dict[str, Any]]] = {}
        self._artifacts: dict[tuple[str, str], bytes] = {}
        self._records: dict[tuple[str, str], str] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise PonderError("the memory run store is closed")

    # --- writing ------------------------------------------------------------------------------
    def begin_run(self, run: dict[str, Any]) -> str:
        known, extra = normalise_run(run)
        record = {**known, **dict.fromkeys((*RESULT_FIELDS, "finished_at")),
                  "status": known["status"]}
        with self._lock:
            self._check_open()
            if known["id"] in self._runs:
                raise PonderError(f"run {known['id']!r} is already in {self.location}")
            self._runs[known["id"]] = record
            self._extras[known["id"]] = extra
            self._calls[known["id"]] = []
            self._spans[known["id"]] = []
        return known["id"]

    def record_call(self, run_id: str, call: dict[str, Any]) -> None:
        known, extra = normalise_call(call, record_prompts=self.settings.record_prompts)
        with self._lock:
            self._check_open()
            if run_id not in self._runs:
                raise PonderError(f"no run {run_id!r} in {self.location} to record a call in")
            self._calls[run_id].append({**extra, **known})

    def finish_run(self, run_id: str, result: dict[str, Any]) -> None:
        known, spans, extra = normalise_result(result)
        with self._lock:
            self._check_open()
            if run_id not in self._runs:
                raise PonderError(f"no run {run_id!r} in {self.location} to finish")
            self._runs[run_id].update(known)
            self._extras[run_id].update(extra)
            self._spans[run_id] = spans

    def put_artifact(self, kind: str, key: str, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"artifact data must be bytes, got {type(data).__name__}")
        kind, key = artifact_key(kind, key)
        with self._lock:
            self._check_open()
            self._artifacts[(kind, key)] = bytes(data)

    # --- reading ------------------------------------------------------------------------------
    def _view(self, run_id: str, *, heavy: bool) -> dict[str, Any]:
        # as in the sqlite storage, a key with a field of its own wins over an extra one
        run = copy.deepcopy({**self._extras[run_id], **self._runs[run_id]})
        if not heavy:
            for field in HEAVY_RUN_FIELDS:
                run.pop(field, None)
        run["status"] = effective_status(run["status"], run["pid"], run["hostname"])
        run["call_count"] = len(self._calls[run_id])
        return run

    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` runs (all with ``limit <= 0``), newest first, without their
        calls, spans and chunks; ``call_count`` says how many calls each recorded."""
        with self._lock:
            self._check_open()
            ids = list(reversed(self._runs))
            if limit and limit > 0:
                ids = ids[:limit]
            return [self._view(run_id, heavy=False) for run_id in ids]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run with its ``calls`` (in the order recorded) and ``spans``; ``run_id`` may be
        a unique prefix. None when nothing matches; PonderError when several runs do."""
        if not run_id:
            return None
        with self._lock:
            self._check_open()
            if run_id not in self._runs:
                matches = [r for r in reversed(self._runs) if r.startswith(run_id)]
                if len(matches) > 1:
                    raise ambiguous_prefix_error(run_id, matches, self.location)
                if not matches:
                    return None
                run_id = matches[0]
            run = self._view(run_id, heavy=True)
            run["calls"] = copy.deepcopy(self._calls[run_id])
            run["spans"] = copy.deepcopy(self._spans[run_id])
            return run

    def get_artifact(self, kind: str, key: str) -> bytes | None:
        kind, key = artifact_key(kind, key)
        with self._lock:
            self._check_open()
            return self._artifacts.get((kind, key))

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def __enter__(self) -> MemoryStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@hookimpl
def ponder_register_storage(register):
    register("memory", MemoryStorage, settings=MemorySettings)
