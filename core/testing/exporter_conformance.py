"""The conformance suite of the ``exporter`` kind (telemetry exporters).

Subclass it, set ``name`` (and ``settings``/``plugins``), and override :meth:`make_exporter`
when the exporter needs a place to send to, and :meth:`received` to read back what arrived, so
the suite checks the spans made it whole::

    class TestMyExporter(ExporterConformance):
        name = "mine"

        def make_exporter(self, tmp_path):
            return MyExporter(MySettings(path=str(tmp_path / "out")))

        def received(self, exporter, tmp_path):
            return [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ponder.testing.conformance import ComponentConformance


def sample_spans(run_id: str = "conformance01") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A small run's spans (run > strategy > map item > LM call, one failed) as exporters get
    them, and their resource."""
    from ponder.engine.telemetry import SEMCONV_VERSION, to_otel
    from ponder.support.observability import SpanType, Tracker

    tracker = Tracker()
    with tracker.span("run", SpanType.RUN, run_id=run_id), \
            tracker.span("map_reduce", SpanType.STRATEGY), \
            tracker.span("map[0]", SpanType.CHUNK, index=0):
        with tracker.span("extract", SpanType.LLM, role="extract") as span:
            span.attributes.update(input_tokens=120, output_tokens=7)
        try:
            with tracker.span("extract", SpanType.LLM, role="extract"):
                raise TimeoutError("the provider did not answer")
        except TimeoutError:
            pass
    run = {"run_id": run_id, "model": "gpt-4o-mini", "provider": "openai",
           "question": "q?", "capture_content": False}
    resource = {"service.name": "ponder", "service.version": "0", "ponder.run_id": run_id,
                "telemetry.semconv.version": SEMCONV_VERSION}
    return to_otel([s.to_dict() for s in tracker.spans], run), resource


class ExporterConformance(ComponentConformance):
    """An exporter takes a run's spans and shuts down cleanly (twice, too)."""

    kind: ClassVar[str] = "exporter"

    def make_exporter(self, tmp_path: Path) -> Any:
        return self.make()

    def received(self, exporter: Any, tmp_path: Path) -> list[dict[str, Any]] | None:
        """What the backend got (span dicts with at least ``name``); None: cannot be read."""
        return None

    def test_exports_a_span_tree(self, tmp_path: Path) -> None:
        spans, resource = sample_spans()
        exporter = self.make_exporter(tmp_path)
        exporter.export(spans, resource)
        exporter.shutdown()
        got = self.received(exporter, tmp_path)
        if got is not None:
            assert sorted(s["name"] for s in got) == sorted(s["name"] for s in spans)
            by_name = {s["name"]: s for s in got}
            assert "chat gpt-4o-mini" in by_name and "invoke_agent ponder" in by_name

    def test_empty_export_and_double_shutdown(self, tmp_path: Path) -> None:
        exporter = self.make_exporter(tmp_path)
        exporter.export([], {"service.name": "ponder"})
        exporter.shutdown()
        exporter.shutdown()
        got = self.received(exporter, tmp_path)
        assert not got
