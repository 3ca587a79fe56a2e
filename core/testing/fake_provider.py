"""A loopback fake LLM provider that speaks the OpenAI HTTP API, for tests and benchmarks.

Standard library (plus ``attrs``) only, so it imports fast. It binds 127.0.0.1 only.

Endpoints (``/v1`` prefix optional):

* ``POST /v1/chat/completions``: an OpenAI ``chat.completion``; ``"stream": true`` -> 400.
* ``POST /v1/embeddings``: deterministic 64-dim hashed bag-of-words vectors (:func:`embed_text`),
  L2-normalised, ``encoding_format`` ``float`` or ``base64`` (the openai SDK's default).
* ``GET /v1/models``: the fake model.
* ``/v1/files`` and ``/v1/batches``: the Files and Batch APIs (:mod:`ponder.testing.fake_batches`).
* ``/v1/messages`` and ``/v1/messages/batches``: Anthropic's Messages API and Message Batches
  (:mod:`ponder.testing.fake_anthropic_batches`; the key may come as ``x-api-key`` there).
* ``GET /stats``, ``POST /reset``, ``GET /health``: control; never counted, capped or faulted.

Per request, in this order: lifetime/``max_requests`` check (a request past them is closed with no
reply) -> routing (404) -> auth (401; the message echoes the presented ``Authorization`` header,
like some real providers, so secret-scrubbing can be tested) -> body checks (400) -> in-flight cap
(429 ``in_flight_cap``) -> fault injection -> reply -> tokens-per-minute bucket (429 ``tpm``) ->
latency -> 200. Faults reply at once, except ``timeout``.

Reply modes (``mode``, or header ``X-Fake-Mode``):

* ``rules``: the reply of the first ``(pattern, reply)`` whose regex ``re.search``es (DOTALL) the
  prompt (all message texts joined by newlines), else ``default_reply``. A reply may be a dict of
  DSPy field values instead of a text.
* ``oracle``: for each ``needles`` item ``key -> answer``, in order, the needle is *found* when the
  answer text occurs verbatim (case-sensitive substring) anywhere in the prompt, any message. The
  reply is the found answers joined by newlines, or ``oracle_miss`` ("NOT FOUND"). Since replies
  carry the answer text itself, it survives map-reduce: a map call that saw the needle's line
  replies with it, and the reduce call that sees that reply finds it again. The key is a label only.
* ``echo``: the text of the last user message.

Scripted RLM root (``rlm_root=True``, any mode): a prompt written by ``dspy.RLM`` for its root
model (output fields ``reasoning`` and ``code``, an input ``repl_history``; the ``rlm`` strategy)
is answered with code instead, :func:`rlm_root_code`: it searches the REPL variable ``context``
line by line for ``rlm_pattern`` (a regex), or, without one, for the identifiers in ``question``
(words holding ``_``) or else for its words of 4+ letters (a line needs 2 of them); keeps the
best-scoring lines (at most ``rlm_max_hits``) and the ``def`` lines of the functions they call
(one hop); and cuts a snippet around each (its file's ``=== path`` header and 3 lines either
side). Iteration 1 prints what it found; iteration 2 and later read the snippets with one
``llm_query`` and ``SUBMIT(answer=...)`` its reply (no snippets: submit that nothing matched).
Every other prompt (the sub-calls included) gets the mode's reply, so with ``mode="oracle"`` the
sub-call is answered by the oracle.

Header ``X-Fake-Reply: <text>`` forces the reply text. Replies go through
:func:`ponder.support.dspy_format.format_for_dspy` (unless ``dspy_format=False``), so a DSPy
program parses them: ChatAdapter sections, or a JSON object when the request has a JSON
``response_format`` or the prompt was written by JSONAdapter. Plain prompts get plain text.

Faults (kinds ``rate_limit``, ``server_error``, ``timeout``, ``malformed``, ``empty_choices``) are
chosen per chat/embeddings request: header ``X-Fake-Fault: <kind>`` forces one (``none`` forces
none; both leave the RNG and the ``fail_first_n`` countdown untouched; honoured only while
``fault_header`` is true); else the first ``fail_first_n`` requests get ``fail_first_kind``; else
with probability ``fault_rate`` a kind from ``fault_kinds``. The fault RNG is
``random.Random(seed)`` and draws exactly two numbers per unforced request, so the n-th unforced
request's outcome depends only on the seed and n. ``server_error`` is 500 or 503 (a second
seeded RNG picks; 503 carries ``Retry-After``); ``timeout`` holds the connection
``timeout_sleep`` seconds (less if the server's lifetime ends first, or until the client hangs
up) and closes it without a reply; ``malformed`` is a 200 with a truncated JSON body;
``empty_choices`` a 200 with ``"choices": []`` (``"data": []`` for embeddings). Every 429
carries ``Retry-After`` (seconds) and ``Retry-After-Ms``. Faults answer at once (no latency).

Latency: ``a + b*prompt_tokens + c*completion_tokens + uniform(0, jitter)`` seconds
(``latency=(a, b, c)``), or exactly ``X-Fake-Latency: <seconds>``. Tokens are
``ceil(chars / 4)`` of all message contents (prompt) and of the reply (completion).

Lifetime: the server stops itself ``max_lifetime`` seconds after :meth:`FakeProvider.start` and
after serving ``max_requests`` counted requests; :meth:`FakeProvider.stop` stops it at once and
wakes every sleeping request. Every loop in here is bounded by that lifetime.

CLI (prints the URL as its first stdout line, then serves until killed or its lifetime ends)::

    python -m ponder.testing.fake_provider --port 0 --mode oracle --needle MAGIC_PORT=48213 \\
        --latency 0.2 --fault-rate 0.2

Layout: this module is the server itself (lifecycle, counters, routing, auth, request checks,
the in-flight cap and the serving order above); the rest lives beside it, one concern a module,
and is re-exported here so ``from ponder.testing.fake_provider import …`` keeps working:
settings and fault names in :mod:`ponder.testing.fake_settings`, reply rules, tokens,
embeddings and response bodies in :mod:`ponder.testing.fake_replies`, the scripted RLM root in
:mod:`ponder.testing.fake_rlm`, the fault draw, injection and TPM bucket in
:mod:`ponder.testing.fake_faults`, sockets and the handler in :mod:`ponder.testing.fake_http`,
the command line in :mod:`ponder.testing.fake_cli`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs

from ponder.support.dspy_format import message_text
from ponder.testing.fake_batches import FakeBatches
from ponder.testing.fake_cli import _build_parser as _build_parser  # re-exported for tests
from ponder.testing.fake_cli import main as _cli_main
from ponder.testing.fake_faults import FaultInjection
from ponder.testing.fake_http import _POLL_S, HTTPPlumbing, _Abort, _Handler, _Server
from ponder.testing.fake_replies import (
    _error_body,
    chat_completion,
    count_tokens,
    embed_text,
    embeddings_list,
    render_reply,
    reply_values,
)
from ponder.testing.fake_rlm import rlm_root_code, rlm_root_turn
from ponder.testing.fake_settings import (
    FAILURE_KINDS,
    FAULT_KINDS,
    MODES,
    FakeProviderConfig,
)

__all__ = [
    "FAILURE_KINDS",
    "FAULT_KINDS",
    "MODES",
    "FakeProvider",
    "FakeProviderConfig",
    "count_tokens",
    "embed_text",
    "main",
    "message_text",
    "rlm_root_code",
    "rlm_root_turn",
]

_MAX_CHOICES = 16


# --------------------------------------------------------------------------------------- provider


class FakeProvider(HTTPPlumbing, FaultInjection):
    """An OpenAI-compatible HTTP server on 127.0.0.1 with scripted replies, latency and faults.

    ``FakeProvider(**config_fields)`` or ``FakeProvider(FakeProviderConfig(...), **overrides)``.
    Use as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(self, config: FakeProviderConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = FakeProviderConfig(**overrides)
        elif overrides:
            config = attrs.evolve(config, **overrides)
        self.config = config
        self._rules = [(re.compile(p, re.DOTALL), r) for p, r in config.rules]
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._stopped = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._deadline = math.inf
        self._started_at: float | None = None
        self._stop_reason: str | None = None
        self._conns: set[socket.socket] = set()
        self._ids = itertools.count(1)
        self._in_flight = 0
        self._reset_locked()
        #: the Files and Batch APIs (``/v1/files``, ``/v1/batches``): ponder.testing.fake_batches
        self.batches = FakeBatches(self, count_tokens, _error_body)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeProvider:
        """Bind ``host:port`` (port 0: any free port) and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeProvider already started")
        server = _Server((self.config.host, self.config.port), _Handler)
        server.provider = self
        server.timeout = _POLL_S
        self._server = server
        self._started_at = time.monotonic()
        self._deadline = self._started_at + self.config.max_lifetime
        self._thread = threading.Thread(
            target=self._serve, name=f"fake-provider-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def _serve(self) -> None:
        server = self._server
        assert server is not None
        try:
            # bounded: ends at the deadline, or when stop() / max_requests sets the event
            while not self._stop_event.is_set() and time.monotonic() < self._deadline:
                server.handle_request()
        finally:
            if self._stop_reason is None:
                self._stop_reason = "max_lifetime"
            self._stop_event.set()
            server.server_close()
            with self._lock:
                conns = list(self._conns)
            for conn in conns:  # wake handler threads idling on keep-alive connections
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._stopped.set()

    def _begin_stop(self, reason: str) -> None:
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
        self._stop_event.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, wake sleeping requests and close connections; idempotent."""
        if self._server is None:
            return
        self._begin_stop("stopped")
        self._stopped.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (by itself or by :meth:`stop`); True if it has."""
        if self._server is None:
            return True
        return self._stopped.wait(timeout)

    @property
    def running(self) -> bool:
        return self._server is not None and not self._stopped.is_set()

    @property
    def stop_reason(self) -> str | None:
        """``"stopped"``, ``"max_lifetime"`` or ``"max_requests"`` once stopping; else None."""
        return self._stop_reason

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeProvider not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def __enter__(self) -> FakeProvider:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        return f"<FakeProvider {where} mode={self.config.mode} running={self.running}>"

    def _remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # ---------------------------------------------------------------- stats

    def _reset_locked(self) -> None:
        self._requests = 0
        self._by_path: dict[str, int] = {}
        self._max_in_flight = self._in_flight
        self._failures = dict.fromkeys(FAILURE_KINDS, 0)
        self._completed = 0
        self._aborted = 0
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._unforced = 0
        self._rng = random.Random(self.config.seed)
        self._aux_rng = random.Random(self.config.seed + 1_000_003)
        self._tpm_window: deque[tuple[float, int]] = deque()
        self._tpm_used = 0

    def reset(self) -> None:
        """Back to the just-started state: counters, fault RNGs, fail_first_n countdown, TPM
        window. ``in_flight`` is kept (those requests are still running), and ``max_in_flight``
        restarts from it. The request count toward ``max_requests`` restarts too."""
        with self._lock:
            self._reset_locked()

    def stats(self) -> dict[str, Any]:
        """Counters (the same JSON as ``GET /stats``).

        ``requests``/``by_path`` count API calls (not /stats, /reset, /health); ``failures`` counts
        each kind in :data:`FAILURE_KINDS`; ``completed`` counts 200s with a usable answer;
        ``aborted`` counts requests closed with no reply (timeouts, stop, client hang-ups).
        """
        with self._lock:
            return {
                "requests": self._requests,
                "by_path": dict(self._by_path),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "failures": dict(self._failures),
                "completed": self._completed,
                "aborted": self._aborted,
                "prompt_tokens": self._prompt_tokens,
                "completion_tokens": self._completion_tokens,
                "running": self.running,
                "uptime_s": 0.0
                if self._started_at is None
                else round(time.monotonic() - self._started_at, 3),
            }

    def _fail(self, kind: str) -> None:
        with self._lock:
            self._failures[kind] += 1

    # ---------------------------------------------------------------- HTTP plumbing

    def _dispatch(self, h: _Handler, method: str) -> None:
        if self._stop_event.is_set():
            h.close_connection = True
            return
        path = urlsplit(h.path).path.rstrip("/") or "/"
        try:
            if path in ("/stats", "/health") and method == "GET":
                self._send(h, 200, self.stats() if path == "/stats" else {"ok": True})
                return
            if path == "/reset" and method == "POST":
                self._read_body(h)
                self.reset()
                self._send(h, 200, {"ok": True})
                return
            with self._lock:
                self._requests += 1
                n = self._requests
                self._by_path[path] = self._by_path.get(path, 0) + 1
            if n > self.config.max_requests:
                self._begin_stop("max_requests")
                h.close_connection = True
                return
            try:
                self._handle_api(h, method, path)
            finally:
                if n >= self.config.max_requests:
                    self._begin_stop("max_requests")
        except _Abort:
            h.close_connection = True
            with self._lock:
                self._aborted += 1

    def _handle_api(self, h: _Handler, method: str, path: str) -> None:
        route = path[3:] if path.startswith("/v1/") else path
        kind = {
            ("POST", "/chat/completions"): "chat",
            ("POST", "/embeddings"): "embeddings",
            ("GET", "/models"): "models",
        }.get((method, route)) or ("batches" if FakeBatches.handles(method, route) else None)
        raw = self._read_body(h) if method == "POST" else b""
        if kind is None:
            self._fail("not_found")
            self._send(
                h,
                404,
                _error_body(f"no route {method} {path}", "invalid_request_error", "not_found"),
            )
            return
        cfg = self.config
        if cfg.api_key is not None:
            presented = h.headers.get("Authorization")
            # Anthropic's routes (fake_anthropic_batches) carry the key as x-api-key
            anthropic = route.startswith("/messages") and \
                h.headers.get("x-api-key") == cfg.api_key
            if presented != f"Bearer {cfg.api_key}" and not anthropic:
                self._fail("auth")
                # Deliberately nasty, like some real providers: echo what was presented.
                self._send(
                    h,
                    401,
                    _error_body(
                        f"Incorrect API key provided: {presented if presented else '<none>'}.",
                        "invalid_request_error",
                        "invalid_api_key",
                    ),
                )
                return
        if kind == "batches":
            self.batches.handle(h, method, route, raw)
            return
        if kind == "models":
            model = {"id": cfg.model, "object": "model", "created": 0, "owned_by": "ponder-fake"}
            self._send(h, 200, {"object": "list", "data": [model]})
            return
        try:
            body = json.loads(raw or b"null")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            request = self._parse_request(h, kind, body)
        except ValueError as exc:
            self._fail("bad_request")
            self._send(h, 400, _error_body(str(exc), "invalid_request_error", "invalid_request"))
            return

        with self._lock:
            capped = cfg.max_in_flight is not None and self._in_flight >= cfg.max_in_flight
            if capped:
                self._failures["in_flight_cap"] += 1
            else:
                self._in_flight += 1
                self._max_in_flight = max(self._max_in_flight, self._in_flight)
                h._fake_admitted = True  # type: ignore[attr-defined]
        if capped:
            self._send(
                h,
                429,
                _error_body(
                    f"Too many concurrent requests (cap {cfg.max_in_flight}) (fake provider)",
                    "requests",
                    "rate_limit_exceeded",
                ),
                self._retry_headers(cfg.retry_after),
            )
            return
        try:
            self._serve_admitted(h, kind, body, request)
        finally:
            self._leave(h)

    def _parse_request(self, h: _Handler, kind: str, body: dict) -> dict[str, Any]:
        """Validate the body and per-request headers; ValueError -> 400."""
        out: dict[str, Any] = {}
        lat = h.headers.get("X-Fake-Latency")
        if lat is not None:
            try:
                out["latency"] = float(lat)
            except ValueError:
                raise ValueError(
                    f"X-Fake-Latency must be a number of seconds, got {lat!r}"
                ) from None
            if not (math.isfinite(out["latency"]) and out["latency"] >= 0):
                raise ValueError("X-Fake-Latency must be finite and >= 0")
        fault = h.headers.get("X-Fake-Fault") if self.config.fault_header else None
        if fault is not None:
            fault = fault.strip().lower()
            if fault not in (*FAULT_KINDS, "none"):
                raise ValueError(
                    f"X-Fake-Fault must be one of {(*FAULT_KINDS, 'none')}, got {fault!r}"
                )
            out["fault"] = fault
        if kind == "chat":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise ValueError("'messages' must be a non-empty list")
            if not all(isinstance(m, dict) for m in messages):
                raise ValueError("each message must be an object")
            if body.get("stream"):
                raise ValueError("stream=true is not supported by the ponder fake provider")
            mode = h.headers.get("X-Fake-Mode") or self.config.mode
            if mode not in MODES:
                raise ValueError(f"X-Fake-Mode must be one of {MODES}, got {mode!r}")
            out["mode"] = mode
            n = body.get("n", 1)
            if not isinstance(n, int) or not 1 <= n <= _MAX_CHOICES:
                raise ValueError(f"'n' must be an integer in 1..{_MAX_CHOICES}")
            out["n"] = n
        else:
            inputs = body.get("input")
            if isinstance(inputs, str):
                inputs = [inputs]
            if (
                not isinstance(inputs, list)
                or not inputs
                or not all(isinstance(x, str) for x in inputs)
            ):
                raise ValueError("'input' must be a string or a non-empty list of strings")
            out["inputs"] = inputs
            fmt = body.get("encoding_format") or "float"
            if fmt not in ("float", "base64"):
                raise ValueError("'encoding_format' must be 'float' or 'base64'")
            out["encoding_format"] = fmt
            dim = body.get("dimensions") or self.config.embedding_dim
            if not isinstance(dim, int) or not 1 <= dim <= 4096:
                raise ValueError("'dimensions' must be an integer in 1..4096")
            out["dim"] = dim
        return out

    def _reply_text(self, request: dict, messages: list[dict], texts: list[str]) -> str | Mapping:
        """The reply before formatting (:func:`ponder.testing.fake_replies.reply_values`);
        subclasses (the landscapes) override it, and the Batch API calls it too."""
        return reply_values(self.config, self._rules, request, messages, texts)

    def _serve_admitted(self, h: _Handler, kind: str, body: dict, request: dict) -> None:
        cfg = self.config
        fault = self._pick_fault(request.get("fault"))
        if fault is not None:
            self._fail(fault)
            self._inject(h, fault, kind)
            return

        model = body.get("model") or cfg.model
        created = int(time.time())
        if kind == "chat":
            messages: list[dict] = body["messages"]
            texts = [message_text(m.get("content")) for m in messages]
            prompt_tokens = count_tokens(sum(len(t) for t in texts))
            request["reply"] = h.headers.get("X-Fake-Reply")
            values = self._reply_text(request, messages, texts)
            content = render_reply(cfg, messages, values, body)
            completion_tokens = count_tokens(len(content)) * request["n"]
            response = chat_completion(next(self._ids), created, model, content, request["n"],
                                       prompt_tokens, completion_tokens)
        else:
            inputs: list[str] = request["inputs"]
            prompt_tokens = count_tokens(sum(len(t) for t in inputs))
            completion_tokens = 0
            response = embeddings_list(inputs, request["dim"], request["encoding_format"], model,
                                       prompt_tokens)

        retry = self._tpm_admit(prompt_tokens + completion_tokens)
        if retry is not None:
            self._fail("tpm")
            self._send(
                h,
                429,
                _error_body(
                    f"Rate limit reached for {model} (fake provider): tokens per min (TPM) "
                    f"limit {cfg.tpm}",
                    "tokens",
                    "rate_limit_exceeded",
                ),
                self._retry_headers(retry),
            )
            return

        if "latency" in request:
            delay = request["latency"]
        else:
            a, b, c = cfg.latency
            with self._lock:
                jitter = self._aux_rng.uniform(0.0, cfg.jitter) if cfg.jitter else 0.0
            delay = a + b * prompt_tokens + c * completion_tokens + jitter
        if delay > 0 and not self._sleep(h, delay):
            raise _Abort
        with self._lock:  # counted before sending, so a client that got it sees it in stats
            self._completed += 1
            self._prompt_tokens += prompt_tokens
            self._completion_tokens += completion_tokens
        self._send(h, 200, response)


# --------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ponder.testing.fake_provider``: see :mod:`ponder.testing.fake_cli`."""
    return _cli_main(FakeProvider, argv)


if __name__ == "__main__":
    sys.exit(main())
