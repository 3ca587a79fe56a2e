"""Telemetry export of real runs: ``System.ask`` over the loopback fake provider (litellm over
HTTP), spans exported through the real OpenTelemetry SDK — its in-memory exporter (span tree,
GenAI attributes) and OTLP/HTTP protobuf to a loopback receiver started here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ponder import hookimpl
from ponder.errors import ConfigError
from ponder.testing import plugin_set, run_cli
from ponder.testing.fake_provider import FakeProvider
from ponder.testing.otlp_receiver import OTLPReceiver

pytestmark = pytest.mark.fault

NEEDLE = "MAGIC_PORT = 48213"
KEY = "sk-telemetry-test-0123456789abcdef"


class MemoryExporterPlugin:
    """Registers ``memory``: the SDK's InMemorySpanExporter behind ponder's SDK bridge."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        self.memory = InMemorySpanExporter()

    @hookimpl
    def ponder_register_exporters(self, register):
        from ponder.plugins._otel import SDKExporter

        register("memory", lambda: SDKExporter(self.memory))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    for i in range(6):
        lines = [f"value_{i}_{j} = {i * 100 + j}" for j in range(30)]
        if i == 4:
            lines.insert(10, NEEDLE)
        (root / f"part_{i}.py").write_text("\n".join(lines) + "\n")
    return root


def _config(tmp_path: Path, provider: FakeProvider, telemetry: str, strategy: str = "map_reduce"):
    from ponder.kernel.config import load_config

    path = tmp_path / "ponder.toml"
    path.write_text(
        f'[strategy]\nname = "{strategy}"\n[limits]\nmax_retries = 0\n'
        f'[adapter]\nname = "litellm"\nmodel = "openai/gpt-4o-mini"\n'
        f'api_base = "{provider.base_url}"\napi_key = "{KEY}"\n'
        f'[cache]\nenabled = false\n{telemetry}')
    return load_config(path)


def _ask(config, plugins, corpus: Path, chunk_tokens: int = 200):
    from ponder.engine.system import System

    return System(config, plugins=plugins, progress="silent").ask(
        "What is MAGIC_PORT?", [str(corpus)], chunk_tokens=chunk_tokens)


def test_map_reduce_run_exports_its_span_tree_to_the_sdk(tmp_path, corpus):
    memory_plugin = MemoryExporterPlugin()
    plugins = plugin_set(memory_plugin, entry_points=True)
    with FakeProvider(mode="oracle", needles={"port": "48213"}) as provider:
        config = _config(tmp_path, provider, '[telemetry]\nexporter = "memory"\n')
        answer = _ask(config, plugins, corpus)
        requests = provider.stats()["by_path"]["/v1/chat/completions"]
    assert "48213" in answer.answer
    spans = memory_plugin.memory.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "invoke_agent ponder"
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["ponder.run_id"] == answer.run_id
    assert root.resource.attributes["ponder.run_id"] == answer.run_id
    assert len({s.context.trace_id for s in spans}) == 1
    assert all(s.parent.span_id in by_id for s in spans if s.parent is not None)
    chats = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    # every LM request the provider served is one chat span, with its tokens
    assert len(chats) == requests == answer.usage.calls
    assert sum(s.attributes["gen_ai.usage.input_tokens"] for s in chats) == \
        answer.usage.input_tokens
    assert sum(s.attributes["gen_ai.usage.output_tokens"] for s in chats) == \
        answer.usage.output_tokens
    for chat in chats:
        assert chat.name == "chat gpt-4o-mini"
        assert chat.kind.name == "CLIENT"
        assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert chat.attributes["gen_ai.provider.name"] == "openai"
    items = [s for s in spans if s.attributes["ponder.span.type"] == "chunk"
             and s.attributes["ponder.span.name"].startswith("map[")]
    assert len(items) == answer.chunks["total"] > 1
    assert all(s.name.startswith("ponder.map_item map[") for s in items)
    for item in items:  # a map item's chat span is its child; the item sits under the strategy
        assert by_id[item.parent.span_id].name == "ponder.strategy map_reduce"
    assert {by_id[c.parent.span_id].attributes["ponder.span.type"] for c in chats} >= {"chunk"}
    # content is off by default: the question, prompts and replies are nowhere in the export
    assert not any("MAGIC_PORT?" in json.dumps(dict(s.attributes)) for s in spans)
    assert not any("value_4_" in json.dumps(dict(s.attributes)) for s in spans)
    assert not any(k.startswith("gen_ai.input") or k.startswith("gen_ai.output") or
                   k == "ponder.content" for s in chats for k in s.attributes)


def test_otlp_http_export_reaches_a_loopback_receiver(tmp_path, corpus):
    # a key in the sources reaches the prompts: content export must still redact it
    (corpus / "settings.env").write_text(f"OPENAI_API_KEY={KEY}\n")
    with FakeProvider(mode="oracle", needles={"port": "48213"}) as provider, \
            OTLPReceiver() as receiver:
        config = _config(tmp_path, provider, '[telemetry]\nexporter = "otlp"\n'
                         'capture_content = true\n'
                         f'[telemetry.otlp]\nendpoint = "{receiver.url}"\n'
                         'headers = { authorization = "Bearer collector-token-123" }\n')
        answer = _ask(config, plugin_set(entry_points=True), corpus)
    assert receiver.errors == []
    spans = receiver.spans
    assert spans and {s["trace_id"] for s in spans} == {spans[0]["trace_id"]}
    root = next(s for s in spans if s["parent_span_id"] is None)
    assert root["name"] == "invoke_agent ponder"
    assert root["resource"]["service.name"] == "ponder"
    assert root["resource"]["ponder.run_id"] == answer.run_id
    assert root["schema_url"].endswith("1.37.0")
    # opted in: the question is on the run span, in the GenAI message shape
    messages = json.loads(root["attributes"]["gen_ai.input.messages"])
    assert messages[0]["parts"][0]["content"] == "What is MAGIC_PORT?"
    chats = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "chat"]
    assert len(chats) == answer.usage.calls
    assert sum(s["attributes"]["gen_ai.usage.input_tokens"] for s in chats) == \
        answer.usage.input_tokens
    # opted in: every LM span carries its prompt and reply text, as GenAI messages
    for chat in chats:
        (sent,) = json.loads(chat["attributes"]["gen_ai.input.messages"])
        (got,) = json.loads(chat["attributes"]["gen_ai.output.messages"])
        assert sent["role"] == "user" and got["role"] == "assistant"
        assert "ponder.content" not in chat["attributes"]
    prompts = [json.loads(c["attributes"]["gen_ai.input.messages"])[0]["parts"][0]["content"]
               for c in chats]
    replies = [json.loads(c["attributes"]["gen_ai.output.messages"])[0]["parts"][0]["content"]
               for c in chats]
    assert any(NEEDLE in p for p in prompts) and any("48213" in r for r in replies)
    assert any("OPENAI_API_KEY" in p for p in prompts)  # the line was sent, its key redacted
    assert receiver.headers[0].get("authorization") == "Bearer collector-token-123"
    # no provider key anywhere in what was exported
    assert KEY not in json.dumps(spans)


def test_a_failed_call_exports_error_type(tmp_path, corpus):
    memory_plugin = MemoryExporterPlugin()
    with FakeProvider(mode="oracle", needles={"port": "48213"}, fail_first_n=1,
                      fail_first_kind="server_error") as provider:
        config = _config(tmp_path, provider, '[telemetry]\nexporter = "memory"\n')
        answer = _ask(config, plugin_set(memory_plugin, entry_points=True), corpus)
    spans = memory_plugin.memory.get_finished_spans()
    errors = [s for s in spans if s.status.status_code.name == "ERROR"]
    assert answer.failures and errors
    chat_errors = [s for s in errors if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert chat_errors and all(s.attributes["error.type"] for s in chat_errors)
    assert "Error" in chat_errors[0].attributes["error.type"]


def test_jsonl_exporter_via_the_cli(tmp_path, corpus):
    out = tmp_path / "spans.jsonl"
    with FakeProvider(mode="oracle", needles={"port": "48213"}) as provider:
        config = tmp_path / "ponder.toml"
        config.write_text(
            f'[strategy]\nname = "direct"\n[adapter]\nname = "litellm"\n'
            f'model = "openai/gpt-4o-mini"\napi_base = "{provider.base_url}"\n'
            f'api_key = "{KEY}"\n[telemetry]\nexporter = "jsonl"\n'
            f'[telemetry.jsonl]\npath = "{out}"\n')
        result = run_cli(["--config", str(config), "ask", "What is MAGIC_PORT?", str(corpus),
                          "--json"])
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["resource"]["ponder.run_id"] for line in lines} == {run_id}
    names = [line["name"] for line in lines]
    assert names[0] == "invoke_agent ponder" and "ponder.strategy direct" in names
    assert "chat gpt-4o-mini" in names
    assert KEY not in out.read_text()


def test_a_misspelt_exporter_fails_before_any_call(tmp_path, corpus):
    with FakeProvider(mode="oracle") as provider:
        config = _config(tmp_path, provider, '[telemetry]\nexporter = "otlpp"\n')
        with pytest.raises(ConfigError) as info:
            _ask(config, plugin_set(entry_points=True), corpus)
        assert provider.stats()["requests"] == 0
    assert "otlpp" in str(info.value) and "otlp" in str(info.value)


def test_bad_exporter_option_names_the_key(tmp_path, corpus):
    with FakeProvider(mode="oracle") as provider:
        config = _config(tmp_path, provider, '[telemetry]\nexporter = "otlp"\n'
                         '[telemetry.otlp]\nendpoint = "localhost:4318"\n')
        with pytest.raises(ConfigError) as info:
            _ask(config, plugin_set(entry_points=True), corpus)
    assert "telemetry.otlp" in str(info.value) and "endpoint" in str(info.value)


def test_track_decorated_code_joins_the_run_tree():
    """``@track`` inside a run's span records into that run's tracker, as a child."""
    from ponder.support.observability import SpanType, Tracker, get_tracker, track

    @track("helper", SpanType.TOOL)
    def helper(x: int) -> int:
        return x + 1

    tracker = Tracker()
    before = len(get_tracker().spans)
    with tracker.span("run", SpanType.RUN) as run:
        assert helper(1) == 2
    assert helper(2) == 3  # outside any run, tracking off: not recorded anywhere
    spans = {s.name: s for s in tracker.spans}
    assert spans["helper"].parent_id == run.id and spans["helper"].type is SpanType.TOOL
    assert len(get_tracker().spans) == before


def test_react_tool_calls_are_exported_as_execute_tool_spans(tmp_path, corpus):
    """A tool the react predictor calls on the running path is a @track span in the run's tree."""
    memory_plugin = MemoryExporterPlugin()
    step = {"next_thought": "look it up", "next_tool_name": "search_context",
            "next_tool_args": {"query": "MAGIC_PORT"}}
    with FakeProvider(rules=[(r"`next_tool_name`", step)], default_reply="48213") as provider:
        config = _config(tmp_path, provider,
                         '[predictor]\nname = "react"\ntools = ["search_context"]\n'
                         'max_iters = 2\n[telemetry]\nexporter = "memory"\n', strategy="direct")
        _ask(config, plugin_set(memory_plugin, entry_points=True), corpus)
    spans = memory_plugin.memory.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    tools = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "execute_tool"]
    assert tools and all(s.name == "execute_tool search_context" for s in tools)
    assert all(s.attributes["gen_ai.tool.name"] == "search_context" for s in tools)
    for tool in tools:  # inside the run's tree, under the strategy
        ancestors, span = [], tool
        while span.parent is not None:
            span = by_id[span.parent.span_id]
            ancestors.append(span.name)
        assert ancestors[-1] == "invoke_agent ponder"
        assert "ponder.strategy direct" in ancestors
