"""The fake provider's HTTP layer: the threading server, the request handler, and the plumbing
that reads a body, sends a JSON answer and sleeps while watching for a hang-up or a stop.

The standard library's ``http.server`` needs a few settings to behave like a provider under
load (HTTP/1.1 keep-alive, ``TCP_NODELAY``, a deep accept queue, daemon handler threads), and a
request that must sleep (latency, the ``timeout`` fault) has to wake when the server stops or
the client goes away. Those concerns are about sockets, not about what is answered, so they live
here, as :class:`HTTPPlumbing`, a mixin that :class:`ponder.testing.fake_provider.FakeProvider`
inherits; it expects the provider's ``config``, ``_lock``, ``_stop_event``, ``_in_flight``,
``_fail`` and ``_remaining``. The handler calls back ``provider._dispatch`` for every request.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ponder.testing.fake_replies import _error_body
from ponder.testing.fake_settings import FakeProviderConfig

__all__ = ["HTTPPlumbing"]

#: how often a sleeping request and the serve loop look at the stop event
_POLL_S = 0.1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True
    #: the FakeProvider serving (not imported: ponder.testing.fake_provider imports this module)
    provider: Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ponder-fake-provider/0.1"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        self.timeout = self.server.provider.config.idle_timeout
        super().setup()
        # headers and body go out in separate writes: without this the body waits for the
        # client's delayed ACK (~40 ms per request on a kept-alive connection)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.provider._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.provider._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.server.provider._dispatch(self, "GET")

    def do_POST(self) -> None:
        self.server.provider._dispatch(self, "POST")


class _Abort(Exception):
    """The request ends with the connection closed and no reply."""


class HTTPPlumbing:
    """Body reading, JSON sending and interruptible sleeps for the fake provider's handlers."""

    config: FakeProviderConfig
    _lock: threading.Lock
    _stop_event: threading.Event
    _in_flight: int

    def _send(
        self,
        h: _Handler,
        status: int,
        body: Any,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._leave(h)  # the request stops counting as in flight once its answer is decided
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            for name, value in headers:
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(payload)
            h.wfile.flush()
        except OSError:
            h.close_connection = True

    def _leave(self, h: _Handler) -> None:
        if getattr(h, "_fake_admitted", False):
            h._fake_admitted = False  # type: ignore[attr-defined]
            with self._lock:
                self._in_flight -= 1

    def _read_body(self, h: _Handler) -> bytes:
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            self._fail("bad_request")
            self._send(
                h, 411, _error_body("chunked bodies are not supported", "invalid_request_error")
            )
            h.close_connection = True
            raise _Abort
        try:
            length = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > self.config.max_body_bytes:
            self._fail("bad_request")
            self._send(
                h,
                413,
                _error_body("request body too large or invalid length", "invalid_request_error"),
            )
            h.close_connection = True
            raise _Abort
        return h.rfile.read(length) if length else b""

    def _sleep(self, h: _Handler, seconds: float) -> bool:
        """Sleep ``seconds`` (capped by the lifetime); False if stopped or the client hung up."""
        end = time.monotonic() + min(max(0.0, seconds), self._remaining())
        while True:  # bounded: at most seconds / _POLL_S + 1 rounds
            left = end - time.monotonic()
            if self._stop_event.is_set():
                return False
            if left <= 0:
                return True
            step = min(left, _POLL_S)
            try:
                readable, _, _ = select.select([h.connection], [], [], step)
                if readable and not h.connection.recv(1, socket.MSG_PEEK):
                    return False  # the client hung up
            except (OSError, ValueError):
                return False
            if readable:  # pipelined bytes, not EOF: just wait
                self._stop_event.wait(step)

    # ---------------------------------------------------------------- dispatch
