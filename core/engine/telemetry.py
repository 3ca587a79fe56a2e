"""Telemetry export: a finished run's spans, as OpenTelemetry spans, to the configured exporters.

``[telemetry] exporter = "otlp"`` (or ``"console"``, ``"jsonl"``, a list, or any plugin of the
``exporter`` kind) turns it on; each exporter's own options live in ``[telemetry.<name>]``.
:func:`watch_run` is the one call :class:`ponder.engine.system.System` makes: it builds the
exporters *before* the run (a misspelt exporter or a missing SDK is a config error, exit 2,
before any LM call) and exports when the run's root span closes, on success and on failure
alike, then removes itself. An exporter that fails is logged, never raised: telemetry must not
cost an answer.

Spans follow the OpenTelemetry GenAI semantic conventions, version :data:`SEMCONV_VERSION`
(``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.provider.name``,
``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``, ``error.type``). Each span type
has a convention (:data:`CONVENTIONS`); a subsystem adds its own with
:func:`register_convention`. ponder's own attributes are kept under ``ponder.*``. Prompt and
answer content is exported only with ``capture_content = true``; span attributes were cleaned of
secrets when the span finished and every string is redacted once more here.

The span dicts handed to exporters are SDK-free (see :class:`ponder.kernel.kinds.Exporter`), so
the ``jsonl`` exporter needs no OpenTelemetry install; ``otlp`` and ``console`` convert them to
SDK spans (``ponder[telemetry]``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ponder.errors import ConfigError
from ponder.support.observability import SpanType, Tracker
from ponder.support.secrets import clean_secrets, redact

log = logging.getLogger("ponder.telemetry")

#: the OpenTelemetry semantic-conventions release whose GenAI attributes ponder writes
SEMCONV_VERSION = "1.37.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

#: litellm provider prefixes -> ``gen_ai.provider.name`` well-known values
PROVIDER_NAMES = {
    "openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic",
    "gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai", "bedrock": "aws.bedrock",
    "mistral": "mistral_ai", "groq": "groq", "deepseek": "deepseek", "xai": "x_ai",
    "cohere": "cohere", "perplexity": "perplexity", "watsonx": "ibm.watsonx.ai",
}


@attrs.define
class TelemetrySettings:
    """``[telemetry]``: which exporters run and what they may see."""

    #: exporter plugin name(s): "otlp", "console", "jsonl"; empty: telemetry off
    exporter: list[str] = attrs.field(factory=list)
    #: export content: the question on the run span, each LM call's prompt and reply on its
    #: span (redacted); off by default, and then no span holds any text
    capture_content: bool = False
    #: the ``service.name`` resource attribute
    service_name: str = "ponder"


# --- conventions --------------------------------------------------------------------------------
#: span type -> fn(span dict, run info) -> (OTel span name, span kind, extra attributes)
Convention = Callable[[dict[str, Any], Mapping[str, Any]], tuple[str, str, dict[str, Any]]]


def _run(span: dict[str, Any], run: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "ponder",
                  "gen_ai.request.model": run.get("model"),
                  "gen_ai.provider.name": run.get("provider")}
    if run.get("capture_content") and run.get("question"):
        attributes["gen_ai.input.messages"] = _messages("user", run["question"])
    return "invoke_agent ponder", "INTERNAL", attributes


def _llm(span: dict[str, Any], run: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    a = span.get("attributes") or {}
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": run.get("model"),
                  "gen_ai.provider.name": run.get("provider"),
                  "gen_ai.usage.input_tokens": a.get("input_tokens"),
                  "gen_ai.usage.output_tokens": a.get("output_tokens")}
    content = a.get("content")
    if run.get("capture_content") and isinstance(content, dict):
        # GenAI semconv 1.37 message shapes: the prompt ponder sent (its input fields) and
        # the reply's output fields, as one text part each
        if content.get("prompt"):
            attributes["gen_ai.input.messages"] = _messages("user", content["prompt"])
        if content.get("reply"):
            attributes["gen_ai.output.messages"] = _messages("assistant", content["reply"])
    return f"chat {run.get('model')}", "CLIENT", attributes


def _messages(role: str, text: str) -> str:
    message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text}]}
    if role == "assistant":
        message["finish_reason"] = "stop"
    return json.dumps([message])


def _tool(span: dict[str, Any], run: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    tool = (span.get("attributes") or {}).get("tool") or span["name"].split()[-1]
    return f"execute_tool {tool}", "INTERNAL", {"gen_ai.operation.name": "execute_tool",
                                                "gen_ai.tool.name": tool}


def _named(prefix: str) -> Convention:
    def convention(span: dict[str, Any], run: Mapping[str, Any]) -> tuple[str, str,
                                                                          dict[str, Any]]:
        return f"ponder.{prefix} {span['name']}", "INTERNAL", {}

    return convention


CONVENTIONS: dict[str, Convention] = {
    SpanType.RUN.value: _run,
    SpanType.LLM.value: _llm,
    SpanType.TOOL.value: _tool,
    SpanType.STRATEGY.value: _named("strategy"),
    SpanType.CHUNK.value: _named("map_item"),
    SpanType.REDUCE.value: _named("reduce"),
    SpanType.RETRIEVE.value: _named("retrieve"),
    SpanType.EVAL_EXAMPLE.value: _named("eval_example"),
    SpanType.TRIAL.value: _named("trial"),
    SpanType.STAGE.value: _named("stage"),
    SpanType.BATCH.value: _named("batch"),
}
_lock = threading.Lock()
#: span attributes that hold prompt or reply text: never exported as ``ponder.*``
CONTENT_KEYS = frozenset({"content"})


def register_convention(span_type: str, convention: Convention) -> None:
    """Export spans of ``span_type`` with ``convention`` (a subsystem's own span kinds)."""
    with _lock:
        CONVENTIONS[str(span_type)] = convention


# --- conversion ---------------------------------------------------------------------------------
def trace_id_for(run_id: str) -> str:
    """A run's 128-bit trace id (32 hex digits), the same for every span of the run."""
    return hashlib.sha256(f"ponder-run:{run_id}".encode()).hexdigest()[:32]


def _span_id(value: str) -> str:
    """ponder span ids are 16 hex digits (64 bits): an OTel span id as they are."""
    text = str(value)
    if len(text) == 16 and all(c in "0123456789abcdef" for c in text):
        return text
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _attribute_value(value: Any) -> Any:
    """An OTel attribute value: str, bool, int, float or a list of one of those; else JSON."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple) and value and \
            all(isinstance(v, str | bool | int | float) for v in value) and \
            len({type(v) for v in value}) == 1:
        return [redact(v) if isinstance(v, str) else v for v in value]
    return redact(json.dumps(value, default=str, sort_keys=True))


def to_otel(spans: Sequence[dict[str, Any]], run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """ponder span dicts (``Span.to_dict()``) as OTel-shaped span dicts, parents first.

    ``run`` holds ``run_id``, ``model``, ``provider``, ``question`` and ``capture_content``.
    """
    trace_id = trace_id_for(str(run.get("run_id") or "run"))
    out: list[dict[str, Any]] = []
    for span in sorted(spans, key=lambda s: (s.get("start") or 0.0)):
        kind_name = str(span.get("type") or "other")
        with _lock:
            convention = CONVENTIONS.get(kind_name, _named(kind_name))
        name, kind, semconv = convention(span, run)
        attributes: dict[str, Any] = {"ponder.span.type": kind_name,
                                      "ponder.span.name": span["name"]}
        for key, value in clean_secrets(span.get("attributes") or {}).items():
            # content (capture_content) is exported only as the GenAI messages above
            if value is not None and key not in CONTENT_KEYS:
                attributes[f"ponder.{key}"] = _attribute_value(value)
        attributes.update({k: _attribute_value(v) for k, v in semconv.items() if v is not None})
        status = {"code": "OK", "description": None}
        if span.get("status") == "error":
            error = redact(str(span.get("error") or "error"))
            attributes["error.type"] = error.split(":", 1)[0].strip() or "error"
            status = {"code": "ERROR", "description": error}
        start = float(span.get("start") or 0.0)
        end = float(span.get("end") or start)
        out.append({
            "name": name, "kind": kind, "trace_id": trace_id,
            "span_id": _span_id(span["id"]),
            "parent_span_id": _span_id(span["parent_id"]) if span.get("parent_id") else None,
            "start_time_unix_nano": int(start * 1e9), "end_time_unix_nano": int(end * 1e9),
            "attributes": attributes, "status": status,
        })
    _nest_times(out)
    return out


def _nest_times(spans: list[dict[str, Any]]) -> None:
    """Clamp each child's times into its parent's. A span's end is its wall-clock start plus a
    ``perf_counter`` duration, so a child may overhang its parent by a microsecond, which some
    trace viewers draw as a broken tree."""
    by_id = {s["span_id"]: s for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        if span["parent_span_id"] in by_id:
            children.setdefault(span["parent_span_id"], []).append(span)
    stack = [s for s in spans if s["parent_span_id"] not in by_id]
    while stack:
        parent = stack.pop()
        for child in children.get(parent["span_id"], []):
            start = min(max(child["start_time_unix_nano"], parent["start_time_unix_nano"]),
                        parent["end_time_unix_nano"])
            child["start_time_unix_nano"] = start
            child["end_time_unix_nano"] = max(min(child["end_time_unix_nano"],
                                                  parent["end_time_unix_nano"]), start)
            stack.append(child)


def provider_name(adapter: str | None, model: str | None) -> str | None:
    """``gen_ai.provider.name`` for a run's adapter and model string."""
    if adapter == "gemini":
        return "gcp.gemini"
    prefix = (model or "").partition("/")[0] if "/" in (model or "") else ""
    if prefix in PROVIDER_NAMES:
        return PROVIDER_NAMES[prefix]
    return adapter


# --- exporters ----------------------------------------------------------------------------------
def telemetry_settings(config: Any) -> tuple[TelemetrySettings, dict[str, dict[str, Any]]]:
    """``[telemetry]`` validated, and each exporter's ``[telemetry.<name>]`` table (raw)."""
    from ponder.kernel.config import structure_settings

    raw = config.section("telemetry")
    tables = {k: v for k, v in raw.items() if isinstance(v, dict)}
    main = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    if isinstance(main.get("exporter"), str):  # one name, or a list of them
        main["exporter"] = [main["exporter"]] if main["exporter"] else []
    settings = structure_settings(TelemetrySettings, main, section="telemetry",
                                  origins=config.origins)
    return settings, tables


def captures_content(config: Any) -> bool:
    """Whether runs under ``config`` export content: ``capture_content`` with an exporter
    (what a worker process asks, since the driver's tracker flag does not travel)."""
    try:
        settings, _ = telemetry_settings(config)
    except Exception:  # the driver validated the section; a worker never fails on it
        return False
    return bool(settings.exporter) and settings.capture_content


def build_exporters(config: Any, plugins: Any) -> tuple[TelemetrySettings, list[tuple[str, Any]]]:
    """The configured exporters, built; a ConfigError names a bad name or option."""
    from ponder.kernel.config import structure_settings

    settings, tables = telemetry_settings(config)
    exporters = []
    for name in settings.exporter:
        try:
            entry = plugins.get("exporter", name)
        except KeyError as exc:  # the registry's did-you-mean message, located
            where = config.origin("telemetry.exporter")
            raise ConfigError(f"{where}: telemetry.exporter: {exc.args[0] if exc.args else exc}"
                              ) from None
        options = tables.get(name, {})
        if entry.settings is None:
            if options:
                raise ConfigError(f"exporter {name!r} takes no options ([telemetry.{name}])")
            exporters.append((name, entry.factory()))
            continue
        exporter_settings = structure_settings(entry.settings, options,
                                               section=f"telemetry.{name}",
                                               origins=config.origins)
        exporters.append((name, entry.factory(exporter_settings)))
    return settings, exporters


def export_spans(exporters: Sequence[tuple[str, Any]], spans: list[dict[str, Any]],
                 resource: dict[str, Any]) -> None:
    """Hand ``spans`` to each exporter, then shut it down; failures are logged only."""
    for name, exporter in exporters:
        try:
            exporter.export(spans, resource)
        except Exception as exc:
            log.warning("telemetry exporter %s failed: %s", name,
                        redact(f"{type(exc).__name__}: {exc}"))
        finally:
            try:
                exporter.shutdown()
            except Exception as exc:
                log.warning("telemetry exporter %s failed to shut down: %s", name,
                            redact(str(exc)))


def _subtree(spans: Sequence[dict[str, Any]], root_id: str) -> list[dict[str, Any]]:
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        children.setdefault(span.get("parent_id"), []).append(span)
    out, stack = [], [s for s in spans if s["id"] == root_id]
    while stack:
        span = stack.pop()
        out.append(span)
        stack.extend(children.get(span["id"], []))
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ponder")
    except PackageNotFoundError:
        return "0"


def watch_run(system: Any, tracker: Tracker, *, run_id: str, model: str, adapter: str,
              question: str) -> None:
    """Export run ``run_id``'s spans when its ``run`` span closes (nothing if telemetry is
    off). Raises ConfigError now for a bad ``[telemetry]`` section."""
    settings, exporters = build_exporters(system.config, system.plugins)
    if not exporters:
        return
    prefix, _, bare = model.partition("/")
    # gen_ai.request.model is the provider's model name, without litellm's provider prefix
    request_model = bare if bare and prefix in PROVIDER_NAMES else model
    # LM spans keep their prompt and reply only when content is to be exported (Services
    # reads this flag; a Ray worker reads the same setting from the run's config)
    tracker.capture_content = settings.capture_content
    run = {"run_id": run_id, "model": request_model,
           "provider": provider_name(adapter, model),
           "question": question, "capture_content": settings.capture_content}
    resource = {"service.name": settings.service_name, "service.version": _version(),
                "ponder.run_id": run_id, "ponder.adapter": adapter,
                "telemetry.semconv.version": SEMCONV_VERSION}

    def on_span(span: Any) -> None:
        if span.type is not SpanType.RUN or span.attributes.get("run_id") != run_id:
            return
        tracker.remove_listener(on_span)
        tree = _subtree([s.to_dict() for s in tracker.spans], span.id)
        export_spans(exporters, to_otel(tree, run), resource)

    tracker.add_listener(on_span)
