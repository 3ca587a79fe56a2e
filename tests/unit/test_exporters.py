"""The telemetry exporters (otlp, console, jsonl) pass the exporter conformance suite, and the
span conversion writes the GenAI conventions (checked through the SDK's in-memory exporter)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ponder.testing.exporter_conformance import ExporterConformance, sample_spans
from ponder.testing.otlp_receiver import OTLPReceiver


class TestJSONLExporter(ExporterConformance):
    name = "jsonl"

    def make_exporter(self, tmp_path: Path):
        from ponder.plugins.exporter_jsonl import JSONLExporter, JSONLSettings

        return JSONLExporter(JSONLSettings(path=str(tmp_path / "spans.jsonl")))

    def received(self, exporter, tmp_path: Path):
        path = tmp_path / "spans.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] \
            if path.exists() else []


class TestOTLPExporter(ExporterConformance):
    name = "otlp"

    @pytest.fixture(autouse=True)
    def _receiver(self):
        with OTLPReceiver() as receiver:
            self.receiver = receiver
            yield

    def make_exporter(self, tmp_path: Path):
        from ponder.plugins.exporter_otlp import OTLPExporter, OTLPSettings

        return OTLPExporter(OTLPSettings(endpoint=self.receiver.url, timeout_s=5))

    def received(self, exporter, tmp_path: Path):
        assert self.receiver.errors == []
        return list(self.receiver.spans)


class TestConsoleExporter(ExporterConformance):
    name = "console"

    @pytest.fixture(autouse=True)
    def _stderr(self, capsys):
        self.capsys = capsys

    def received(self, exporter, tmp_path: Path):
        text = self.capsys.readouterr().err
        decoder, spans, index = json.JSONDecoder(), [], 0
        while True:  # the SDK prints one indented JSON object per span
            start = text.find("{", index)
            if start < 0:
                return spans
            span, index = decoder.raw_decode(text, start)
            spans.append(span)


def _in_memory():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ponder.plugins._otel import SDKExporter

    memory = InMemorySpanExporter()
    return memory, SDKExporter(memory)


def test_sdk_spans_keep_the_tree_ids_and_genai_attributes():
    memory, exporter = _in_memory()
    spans, resource = sample_spans("abc123")
    exporter.export(spans, resource)
    got = {s.name: s for s in memory.get_finished_spans()}
    assert set(got) == {"invoke_agent ponder", "ponder.strategy map_reduce",
                        "ponder.map_item map[0]", "chat gpt-4o-mini"}
    finished = memory.get_finished_spans()
    assert len({s.context.trace_id for s in finished}) == 1  # one trace per run
    ids = {s.context.span_id for s in finished}
    roots = [s for s in finished if s.parent is None]
    assert [r.name for r in roots] == ["invoke_agent ponder"]
    assert all(s.parent.span_id in ids for s in finished if s.parent is not None)
    chats = [s for s in finished if s.name == "chat gpt-4o-mini"]
    assert {s.parent.span_id for s in chats} == {got["ponder.map_item map[0]"].context.span_id}
    ok = next(s for s in chats if s.attributes.get("gen_ai.usage.input_tokens") == 120)
    assert ok.attributes["gen_ai.operation.name"] == "chat"
    assert ok.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert ok.attributes["gen_ai.provider.name"] == "openai"
    assert ok.attributes["gen_ai.usage.output_tokens"] == 7
    assert ok.status.status_code.name == "OK"
    failed = next(s for s in chats if s is not ok)
    assert failed.attributes["error.type"] == "TimeoutError"
    assert failed.status.status_code.name == "ERROR"
    assert "did not answer" in failed.status.description
    assert ok.resource.attributes["service.name"] == "ponder"
    assert ok.resource.attributes["ponder.run_id"] == "abc123"
    assert ok.instrumentation_scope.schema_url.endswith("/1.37.0")
    for s in finished:  # children start no earlier than their parent
        if s.parent is not None:
            parent = next(p for p in finished if p.context.span_id == s.parent.span_id)
            assert s.start_time >= parent.start_time and s.end_time <= parent.end_time


def test_a_new_span_type_gets_its_own_convention():
    from ponder.engine.telemetry import CONVENTIONS, register_convention, to_otel

    def trial(span, run):
        return f"optimize trial {span['attributes']['number']}", "INTERNAL", {
            "ponder.trial.score": span["attributes"]["score"]}

    saved = dict(CONVENTIONS)
    try:
        register_convention("trial", trial)
        span = {"id": "00000000000000aa", "parent_id": None, "name": "trial", "type": "trial",
                "start": 1.0, "end": 2.0, "status": "ok", "error": None,
                "attributes": {"number": 3, "score": 0.75}}
        (out,) = to_otel([span], {"run_id": "r"})
        assert out["name"] == "optimize trial 3"
        assert out["attributes"]["ponder.trial.score"] == 0.75
    finally:
        CONVENTIONS.clear()
        CONVENTIONS.update(saved)


def test_attributes_are_redacted_and_flattened():
    from ponder.engine.telemetry import to_otel

    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    span = {"id": "00000000000000ab", "parent_id": None, "name": "search", "type": "retrieve",
            "start": 1.0, "end": 1.5, "status": "error", "error": f"ValueError: bad key {key}",
            "attributes": {"note": f"key={key}", "hits": [1, 2], "nested": {"a": 1}}}
    (out,) = to_otel([span], {"run_id": "r"})
    text = json.dumps(out)
    assert key not in text
    assert out["attributes"]["ponder.hits"] == [1, 2]
    assert out["attributes"]["ponder.nested"] == '{"a": 1}'
    assert out["attributes"]["error.type"] == "ValueError"
