"""The ``jsonl`` telemetry exporter: one OpenTelemetry-shaped JSON object per span, appended.

Config example::

    [telemetry]
    exporter = "jsonl"
    [telemetry.jsonl]
    path = "traces/spans.jsonl"    # default: <data dir>/telemetry/spans.jsonl

Each line is a span dict (``name``, ``trace_id``, ``span_id``, ``parent_span_id``, times in
Unix nanoseconds, ``kind``, ``status``, ``attributes`` with the GenAI conventions) plus its
``resource``. Needs no OpenTelemetry install. A run's lines are written with one ``write`` on a
file opened for appending, so two runs finishing together do not interleave their spans.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import attrs

from ponder import hookimpl

PONDER_PLUGIN_API = 1

_lock = threading.Lock()


@attrs.define
class JSONLSettings:
    """``[telemetry.jsonl]``."""

    #: where spans are appended; None: ``<data dir>/telemetry/spans.jsonl``
    path: str | None = None


class JSONLExporter:
    """Appends each exported span as one JSON line."""

    def __init__(self, settings: JSONLSettings | None = None) -> None:
        self.settings = settings or JSONLSettings()

    @property
    def path(self) -> Path:
        if self.settings.path:
            return Path(self.settings.path).expanduser()
        from ponder.support.fileutils import get_data_dir

        return get_data_dir("telemetry") / "spans.jsonl"

    def export(self, spans: Any, resource: dict[str, Any]) -> None:
        if not spans:
            return
        text = "".join(json.dumps({**span, "resource": resource}, ensure_ascii=False,
                                  default=str) + "\n" for span in spans)
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lock, open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def shutdown(self) -> None:
        return None


@hookimpl
def ponder_register_exporters(register):
    register("jsonl", JSONLExporter, settings=JSONLSettings)
