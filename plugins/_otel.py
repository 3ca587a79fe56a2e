"""ponder's exported span dicts as OpenTelemetry SDK spans, for the SDK-based exporters.

``otlp`` and ``console`` hand SDK ``ReadableSpan`` objects straight to an SDK ``SpanExporter``
rather than replaying the run through a ``TracerProvider``: the spans keep ponder's own ids,
parents and timings (they already happened), and no global tracer state is touched. The SDK is
the optional extra ``ponder[telemetry]``; it is imported inside functions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ponder.errors import ConfigError

INSTALL_HINT = "pip install -e '.[telemetry]'"


def require_sdk(exporter: str) -> None:
    """A ConfigError saying how to install the SDK when it is missing."""
    import importlib.util

    for module in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ConfigError(f"the {exporter} telemetry exporter needs the OpenTelemetry SDK, "
                              f"which is not installed: {INSTALL_HINT}")


def to_readable_spans(spans: Sequence[dict[str, Any]], resource: dict[str, Any]) -> list[Any]:
    """SDK ``ReadableSpan`` objects for ponder's OTel-shaped span dicts."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
    from opentelemetry.trace.status import Status, StatusCode

    from ponder.engine.telemetry import SCHEMA_URL

    res = Resource.create({k: v for k, v in resource.items() if v is not None},
                          schema_url=SCHEMA_URL)
    scope = InstrumentationScope("ponder", str(resource.get("service.version") or ""),
                                 schema_url=SCHEMA_URL)
    out = []
    for span in spans:
        trace_id = int(span["trace_id"], 16)
        context = SpanContext(trace_id, int(span["span_id"], 16), is_remote=False,
                              trace_flags=TraceFlags(TraceFlags.SAMPLED))
        parent = None
        if span.get("parent_span_id"):
            parent = SpanContext(trace_id, int(span["parent_span_id"], 16), is_remote=False,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))
        status = span.get("status") or {}
        code = {"OK": StatusCode.OK, "ERROR": StatusCode.ERROR}.get(status.get("code"),
                                                                    StatusCode.UNSET)
        out.append(ReadableSpan(
            name=span["name"], context=context, parent=parent, resource=res,
            attributes=span.get("attributes") or {}, kind=getattr(SpanKind, span["kind"]),
            status=Status(code, status.get("description") if code is StatusCode.ERROR
                          else None),
            start_time=span["start_time_unix_nano"], end_time=span["end_time_unix_nano"],
            instrumentation_scope=scope))
    return out


class SDKExporter:
    """An ``exporter`` over any SDK ``SpanExporter`` (OTLP, console, in-memory in tests)."""

    def __init__(self, span_exporter: Any) -> None:
        self.span_exporter = span_exporter
        self._shut = False

    def export(self, spans: Sequence[dict[str, Any]], resource: dict[str, Any]) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        if not spans:
            return
        result = self.span_exporter.export(to_readable_spans(spans, resource))
        if result is not SpanExportResult.SUCCESS:
            raise RuntimeError(f"{type(self.span_exporter).__name__} reported {result.name}")

    def shutdown(self) -> None:
        if not self._shut:
            self._shut = True
            self.span_exporter.shutdown()
