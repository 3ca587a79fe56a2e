"""The ``console`` telemetry exporter: a run's spans printed as OpenTelemetry JSON on stderr.

For a quick look without a collector (``[telemetry] exporter = "console"``). It writes to
stderr so ``ponder ask --json``'s stdout stays one JSON object. Needs ``ponder[telemetry]``.
"""

from __future__ import annotations

import sys

import attrs

from ponder import hookimpl
from ponder.plugins._otel import SDKExporter, require_sdk

PONDER_PLUGIN_API = 1


@attrs.define
class ConsoleSettings:
    """``[telemetry.console]``: ``stream = "stderr"`` (default) or ``"stdout"``."""

    stream: str = attrs.field(default="stderr",
                              validator=attrs.validators.in_(("stderr", "stdout")))


class ConsoleExporter(SDKExporter):
    """Each span as the SDK's ``ConsoleSpanExporter`` prints it (one JSON object per span)."""

    def __init__(self, settings: ConsoleSettings | None = None) -> None:
        require_sdk("console")
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        self.settings = settings or ConsoleSettings()
        out = sys.stdout if self.settings.stream == "stdout" else sys.stderr
        super().__init__(ConsoleSpanExporter(out=out))


@hookimpl
def ponder_register_exporters(register):
    register("console", ConsoleExporter, settings=ConsoleSettings)
