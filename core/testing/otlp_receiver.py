"""A loopback OTLP/HTTP trace receiver for tests: decodes what an exporter sends.

It accepts ``POST /v1/traces`` with an ``ExportTraceServiceRequest`` protobuf body (plain or
gzip), decodes it with ``opentelemetry-proto`` (which the OTLP/HTTP exporter package pulls in)
and keeps every span as a plain dict, resource attributes included. Binds 127.0.0.1 only::

    with OTLPReceiver() as receiver:
        ...  # export to receiver.url
        assert receiver.spans[0]["name"] == "invoke_agent ponder"

From a shell (to try ``[telemetry] exporter = "otlp"`` by hand), it prints its endpoint, then
each span it receives as one JSON line, until Ctrl-C or SIGTERM::

    python -m ponder.testing.otlp_receiver [--port N]
"""

from __future__ import annotations

import contextlib
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


def decode_traces(body: bytes) -> list[dict[str, Any]]:
    """The spans of an OTLP ``ExportTraceServiceRequest`` as dicts."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest.FromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append({
                    "name": span.name, "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex() or None,
                    "kind": span.kind, "status_code": span.status.code,
                    "status_message": span.status.message,
                    "start_time_unix_nano": span.start_time_unix_nano,
                    "end_time_unix_nano": span.end_time_unix_nano,
                    "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                    "resource": resource, "scope": scope_spans.scope.name,
                    "schema_url": scope_spans.schema_url or resource_spans.schema_url,
                })
    return spans


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        receiver: OTLPReceiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
            body = gzip.decompress(body)
        status = 200
        if self.path.rstrip("/") != "/v1/traces":
            status = 404
        else:
            try:
                spans = decode_traces(body)
            except Exception as exc:  # a body that is not OTLP: the test should see why
                receiver.errors.append(f"{type(exc).__name__}: {exc}")
                status = 400
            else:
                with receiver.lock:
                    receiver.spans.extend(spans)
                    receiver.headers.append(dict(self.headers))
                    if receiver.on_spans is not None:
                        receiver.on_spans(spans)
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()


class OTLPReceiver:
    """Collects decoded spans in :attr:`spans` (and request headers in :attr:`headers`)."""

    def __init__(self, port: int = 0, *,
                 on_spans: Any = None) -> None:
        self.port = port
        #: called with each request's decoded spans (the command line prints them)
        self.on_spans = on_spans
        self.spans: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> OTLPReceiver:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        server.receiver = self  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "the receiver is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import signal

    parser = argparse.ArgumentParser(
        prog="python -m ponder.testing.otlp_receiver",
        description="Loopback OTLP/HTTP trace receiver: prints its endpoint, then each span "
                    "it receives as one JSON line.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    args = parser.parse_args(argv)

    def show(spans: list[dict[str, Any]]) -> None:
        for span in spans:
            print(json.dumps(span, sort_keys=True), flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with OTLPReceiver(args.port, on_spans=show) as receiver:
        print(receiver.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
