"""The LM response cache: a reply seen before is served from disk instead of the provider.

On by default (``[cache] enabled = true``), one SQLite file under the ponder cache dir
(:func:`ponder.support.fileutils.get_cache_dir`); ``ponder ask --no-cache`` bypasses it for one run.

**The key** is a sha256 over everything that decides a reply: the adapter's name and settings
(secrets masked, so rotating a key keeps the cache), the model, the predictor and its settings,
the DSPy prompt format, the signature (instructions and every field with its description) and
the inputs. A different model, prompt format or input never hits. Failures are never cached.

**The value** is the prediction's output fields as JSON (plus its token counts, for the record);
a prediction that is not plain JSON (a ReAct trajectory holding objects) is simply not cached.
Values go through :func:`ponder.support.secrets.redact` first, so a secret a model echoed never
lands in the cache file.

Adapters whose replies depend on more than the prompt (the ``scripted`` test adapter answers by
call index) opt out with a class attribute ``cache_responses = False``; agent predictors whose
calls run tools (``needs_tools``) are not cached either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import attrs

log = logging.getLogger("ponder.engine.cache")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def settings_identity(value: Any) -> Any:
    """A stable, secret-free description of a settings object, for cache and index keys."""
    from ponder.support.secrets import clean_secrets

    if value is None:
        return None
    if attrs.has(type(value)):
        return clean_secrets(attrs.asdict(value, recurse=True, value_serializer=_plain))
    return repr(value)


def _plain(_instance: Any, _field: Any, value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, type(None), list, dict, tuple)):
        return value
    return repr(value)


def signature_text(signature: Any) -> str:
    """The instructions and every field (name, kind, description, type) of a DSPy signature."""
    parts = [getattr(signature, "instructions", "") or ""]
    for name, field in getattr(signature, "fields", {}).items():
        extra = getattr(field, "json_schema_extra", None) or {}
        parts.append(f"{name}|{extra.get('__dspy_field_type', '')}|{extra.get('desc', '')}|"
                     f"{getattr(field, 'annotation', '')}")
    return "\n".join(parts)


def cache_key(*, adapter: str, adapter_settings: Any, model: str, predictor: str,
              predictor_settings: Any, prompt_format: str, signature: Any,
              inputs: dict[str, Any]) -> str:
    payload = {
        "v": 1,
        "adapter": adapter,
        "adapter_settings": settings_identity(adapter_settings),
        "model": model,
        "predictor": predictor,
        "predictor_settings": settings_identity(predictor_settings),
        "prompt_format": prompt_format,
        "signature": signature_text(signature),
        "inputs": {k: str(v) for k, v in sorted(inputs.items())},
    }
    blob = json.dumps(payload, sort_keys=True, default=repr).encode("utf-8", "surrogatepass")
    return hashlib.sha256(blob).hexdigest()


class ResponseCache:
    """A thread-safe SQLite key → JSON store (WAL, so parallel runs can share it)."""

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            from ponder.support.fileutils import get_cache_dir

            path = get_cache_dir() / "responses.sqlite"
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?",
                                   (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        try:
            return json.loads(row[0])
        except ValueError:  # a damaged entry is a miss, not a crash
            log.warning("ignoring a damaged cache entry in %s", self.path)
            return None

    def put(self, key: str, value: dict[str, Any]) -> bool:
        """Store ``value``; returns False (and stores nothing) when it is not plain JSON."""
        from ponder.support.secrets import redact

        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return False
        text = redact(text)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses (key, value, created) "
                             "VALUES (?, ?, ?)", (key, text, time.time()))
        return True

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
