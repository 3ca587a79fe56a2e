"""The ``otlp`` telemetry exporter: a run's spans to an OpenTelemetry collector over OTLP/HTTP.

Config example::

    [telemetry]
    exporter = "otlp"
    [telemetry.otlp]
    endpoint = "http://localhost:4318/v1/traces"   # default; Jaeger, Tempo, Phoenix, Langfuse…
    headers = { authorization = "$env:OTEL_TOKEN" } # secrets: never logged or exported
    timeout_s = 5

Needs ``ponder[telemetry]`` (the OpenTelemetry SDK and its OTLP/HTTP exporter); without it the
factory raises a config error saying so, before the run starts.
"""

from __future__ import annotations

from typing import Any

import attrs

from ponder import hookimpl
from ponder.plugins._otel import SDKExporter, require_sdk
from ponder.support.secrets import Secret

PONDER_PLUGIN_API = 1

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"


def _http_url(_inst: Any, attr: attrs.Attribute, value: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"'{attr.name}' must be an http:// or https:// URL, got {value!r}")


@attrs.define
class OTLPSettings:
    """``[telemetry.otlp]``."""

    endpoint: str = attrs.field(default=DEFAULT_ENDPOINT, validator=_http_url)
    #: request headers (a collector's auth token); values may be ``$env:``/``$file:`` refs
    headers: dict[str, Secret] = attrs.field(factory=dict)
    timeout_s: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))


class OTLPExporter(SDKExporter):
    """Spans as OTLP/HTTP protobuf to ``endpoint``."""

    def __init__(self, settings: OTLPSettings | None = None) -> None:
        require_sdk("otlp")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        self.settings = settings or OTLPSettings()
        headers = {k: v.reveal() for k, v in self.settings.headers.items()}
        super().__init__(OTLPSpanExporter(endpoint=self.settings.endpoint, headers=headers,
                                          timeout=self.settings.timeout_s))


@hookimpl
def ponder_register_exporters(register):
    register("otlp", OTLPExporter, settings=OTLPSettings)
