"""Sessions in the run store: one record per session in the ``session`` namespace.

A record holds what a later process needs to carry the conversation on: the sources as given
and their digest, the config (secrets masked), and every turn (question, answer, citations,
usage, the run it was recorded as). Each turn moves ``expires_at`` to ``[sessions] ttl`` seconds
after it; an expired session reads as absent and is deleted the next time the store is looked at.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from ponder.errors import ConfigError, PonderError

__all__ = ["NAMESPACE", "SessionSettings", "SessionStore", "check_name"]

NAMESPACE = "session"


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"must be > 0, got {value!r}", attribute)


@attrs.define
class SessionSettings:
    """``[sessions]``: how long a session lives and how much history the model sees."""

    #: seconds a session lives after its last turn (default: 7 days)
    ttl: float = attrs.field(default=7 * 24 * 3600.0, validator=_positive)
    #: tokens of earlier turns passed with each question; the oldest turns are dropped first
    history_tokens: int = attrs.field(default=2000, validator=_positive)


def check_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or len(name) > 100:
        raise ConfigError(f"session name {name!r}: use letters, digits, '-', '_' or '.' "
                          "(at most 100)")
    return name


class SessionStore:
    """The sessions of one run store (any storage plugin with keyed records)."""

    def __init__(self, storage: Any, settings: SessionSettings | None = None,
                 clock: Any = time.time) -> None:
        if storage is None or not callable(getattr(storage, "put_record", None)):
            raise PonderError("sessions need a run store with records ([storage] name = "
                              "\"sqlite\", the default)")
        self.storage = storage
        self.settings = settings or SessionSettings()
        self.clock = clock

    def _expired(self, record: dict[str, Any]) -> bool:
        expires = record.get("expires_at")
        return expires is not None and expires <= self.clock()

    def get(self, name: str) -> dict[str, Any] | None:
        """The session's record, or None when there is none or it has expired."""
        record = self.storage.get_record(NAMESPACE, check_name(name))
        if record is not None and self._expired(record):
            self.storage.delete_record(NAMESPACE, name)
            return None
        return record

    def put(self, record: dict[str, Any]) -> None:
        now = self.clock()
        record["updated_at"] = now
        record["expires_at"] = now + self.settings.ttl
        self.storage.put_record(NAMESPACE, check_name(record["name"]), record)

    def list(self) -> list[dict[str, Any]]:
        """Live sessions, newest first; expired ones are deleted on the way."""
        live = []
        for key, record in self.storage.list_records(NAMESPACE):
            if self._expired(record):
                self.storage.delete_record(NAMESPACE, key)
            else:
                live.append(record)
        return sorted(live, key=lambda r: r.get("updated_at") or 0, reverse=True)

    def delete(self, name: str) -> bool:
        return self.storage.delete_record(NAMESPACE, check_name(name))
