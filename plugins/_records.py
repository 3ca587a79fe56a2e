"""Keyed JSON records, the part of the Storage protocol the subsystems share.

An eval's examples, a session's turns, a provider batch job, an optimizer's candidates: each
subsystem keeps its own ``namespace`` of ``key -> dict`` records in the run store, so they live
in the one SQLite file beside the runs, survive restarts and need no table of their own. Records
are cleaned of secrets before they are written, like everything else in the store
(:func:`clean_fields` cleans the records with ponder's own field names, call records and spans,
the same way for less).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from ponder.errors import PonderError
from ponder.support.secrets import clean_secrets


def clean_fields(record: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """``clean_secrets(record)`` for a record whose ``fields`` are ponder's own names (a call
    record's, a span's): their values are cleaned as ``clean_secrets`` cleans them, and every
    other key goes through it as before.

    Why not ``clean_secrets`` itself: it redacts every key and asks whether each names a secret
    (a dozen regular expressions per key); for fixed names, none of which names a secret
    (tested), that was most of the cost of recording a call and of finishing a run (351 spans
    at a 20 MB map_reduce).
    """
    out: dict[Any, Any] = {}
    for key, value in record.items():
        if key in fields:
            out[key] = clean_secrets(value)
        else:
            out.update(clean_secrets({key: value}))
    return out


def check_record(namespace: str, key: str, record: Any) -> str:
    """The record as JSON text, or a clear error for a bad namespace, key or value."""
    for what, value in (("namespace", namespace), ("key", key)):
        if not isinstance(value, str) or not value:
            raise PonderError(f"a record {what} must be a non-empty string, got {value!r}")
    if not isinstance(record, dict):
        raise TypeError(f"a record must be a dict, got {type(record).__name__}")
    return json.dumps(clean_secrets(record), default=str)


class SQLiteRecords:
    """``put_record``/``get_record``/``list_records``/``delete_record`` over the ``records``
    table; mixed into :class:`ponder.plugins.sqlite_store.SQLiteStorage` (``_transaction``)."""

    def put_record(self, namespace: str, key: str, record: dict[str, Any]) -> None:
        text = check_record(namespace, key, record)
        with self._transaction() as conn:  # type: ignore[attr-defined]
            conn.execute(
                "INSERT INTO records (namespace, key, data, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET data = excluded.data, "
                "updated_at = excluded.updated_at", (namespace, key, text, time.time()))

    def get_record(self, namespace: str, key: str) -> dict[str, Any] | None:
        with self._transaction("DEFERRED") as conn:  # type: ignore[attr-defined]
            row = conn.execute("SELECT data FROM records WHERE namespace = ? AND key = ?",
                               (namespace, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def list_records(self, namespace: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """``(key, record)`` pairs of ``namespace`` whose key starts with ``prefix``, by key."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self._transaction("DEFERRED") as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                "SELECT key, data FROM records WHERE namespace = ? AND key LIKE ? ESCAPE '\\' "
                "ORDER BY key", (namespace, escaped + "%")).fetchall()
        return [(key, json.loads(data)) for key, data in rows]

    def delete_record(self, namespace: str, key: str) -> bool:
        with self._transaction() as conn:  # type: ignore[attr-defined]
            cursor = conn.execute("DELETE FROM records WHERE namespace = ? AND key = ?",
                                  (namespace, key))
        return cursor.rowcount > 0


class MemoryRecords:
    """The same four methods over a dict, for :mod:`ponder.plugins.memory_store`."""

    _records: dict[tuple[str, str], str]

    def put_record(self, namespace: str, key: str, record: dict[str, Any]) -> None:
        self._records[(namespace, key)] = check_record(namespace, key, record)

    def get_record(self, namespace: str, key: str) -> dict[str, Any] | None:
        text = self._records.get((namespace, key))
        return None if text is None else json.loads(text)

    def list_records(self, namespace: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        return [(key, json.loads(text)) for (ns, key), text in sorted(self._records.items())
                if ns == namespace and key.startswith(prefix)]

    def delete_record(self, namespace: str, key: str) -> bool:
        return self._records.pop((namespace, key), None) is not None
