"""A loopback fake LLM provider that speaks the OpenAI HTTP API, for tests and benchmarks.

Standard library (plus ``attrs``) only, so it imports fast. It binds 127.0.0.1 only.

Endpoints (``/v1`` prefix optional):

* ``POST /v1/chat/completions``: an OpenAI ``chat.completion``; ``"stream": true`` -> 400.
* ``POST /v1/embeddings``: deterministic 64-dim hashed bag-of-words vectors (:func:`embed_text`),
  L2-normalised, ``encoding_format`` ``float`` or ``base64`` (the openai SDK's default).
* ``GET /v1/models``: the fake model.
* ``/v1/files`` and ``/v1/batches``: the Files and Batch APIs (:mod:`ponder.testing.fake_batches`).
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
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import itertools
import json
import math
import random
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import attrs
from attrs import validators as v

from ponder.support.dspy_format import format_for_dspy, message_text
from ponder.testing.fake_batches import FakeBatches

__all__ = [
    "FAILURE_KINDS",
    "FAULT_KINDS",
    "MODES",
    "FakeProvider",
    "FakeProviderConfig",
    "count_tokens",
    "embed_text",
    "main",
    "rlm_root_code",
    "rlm_root_turn",
]

FAULT_KINDS: tuple[str, ...] = (
    "rate_limit",
    "server_error",
    "timeout",
    "malformed",
    "empty_choices",
)
MODES: tuple[str, ...] = ("rules", "oracle", "echo")
FAILURE_KINDS: tuple[str, ...] = (
    *FAULT_KINDS,
    "in_flight_cap",
    "tpm",
    "auth",
    "bad_request",
    "not_found",
)
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
_TPM_WINDOW_S = 60.0
_POLL_S = 0.1
_MAX_CHOICES = 16


# --------------------------------------------------------------------------------------- config


def _to_latency(value: Any) -> tuple[float, float, float]:
    if isinstance(value, int | float):
        value = (value,)
    parts = [float(x) for x in value]
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"latency takes 1 to 3 numbers (a, b, c), got {len(parts)}")
    return tuple(parts + [0.0] * (3 - len(parts)))  # type: ignore[return-value]


def _to_rules(value: Any) -> tuple[tuple[str, Any], ...]:
    if isinstance(value, Mapping):
        value = value.items()
    return tuple((str(p), r) for p, r in value)


def _check_rules(_inst: Any, _attr: Any, rules: tuple[tuple[str, Any], ...]) -> None:
    for pattern, reply in rules:
        try:
            re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise ValueError(f"rule pattern {pattern!r} is not a valid regex: {exc}") from exc
        if not isinstance(reply, str | Mapping):
            raise TypeError(f"rule reply must be a str or a dict of DSPy fields, got {reply!r}")


def _check_latency(_inst: Any, _attr: Any, value: tuple[float, float, float]) -> None:
    if any(x < 0 or not math.isfinite(x) for x in value):
        raise ValueError(f"latency terms must be finite and >= 0, got {value}")


def _check_kinds(_inst: Any, _attr: Any, kinds: tuple[str, ...]) -> None:
    if not kinds:
        raise ValueError("fault_kinds must not be empty")
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad:
        raise ValueError(f"unknown fault kinds {bad}; choose among {FAULT_KINDS}")


def _finite_ge0(_inst: Any, attr: attrs.Attribute, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attr.name} must be finite and >= 0, got {value}")


def _positive(_inst: Any, attr: attrs.Attribute, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attr.name} must be finite and > 0, got {value}")


_opt_pos_int = v.optional([v.instance_of(int), v.ge(1)])


def _check_regex(_inst: Any, attr: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{attr.name} must be a str, got {value!r}")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{attr.name} {value!r} is not a valid regex: {exc}") from exc


@attrs.frozen(kw_only=True)
class FakeProviderConfig:
    """Settings of a :class:`FakeProvider`; each field is validated where it is declared."""

    # network: loopback only, by design
    host: str = attrs.field(default="127.0.0.1", validator=v.in_(_LOOPBACK_HOSTS))
    port: int = attrs.field(default=0, validator=[v.instance_of(int), v.ge(0), v.le(65535)])
    model: str = attrs.field(default="fake-model", validator=[v.instance_of(str), v.min_len(1)])
    # replies
    mode: str = attrs.field(default="rules", validator=v.in_(MODES))
    rules: tuple[tuple[str, Any], ...] = attrs.field(
        default=(), converter=_to_rules, validator=_check_rules
    )
    default_reply: str = attrs.field(default="OK", validator=v.instance_of(str))
    needles: dict[str, str] = attrs.field(
        factory=dict,
        converter=dict,
        validator=v.deep_mapping(
            key_validator=v.instance_of(str), value_validator=v.instance_of(str)
        ),
    )
    oracle_miss: str = attrs.field(default="NOT FOUND", validator=v.instance_of(str))
    dspy_format: bool = attrs.field(default=True, validator=v.instance_of(bool))
    embedding_dim: int = attrs.field(
        default=64, validator=[v.instance_of(int), v.ge(1), v.le(4096)]
    )
    # latency: a + b*prompt_tokens + c*completion_tokens + uniform(0, jitter) seconds
    latency: tuple[float, float, float] = attrs.field(
        default=(0.0, 0.0, 0.0), converter=_to_latency, validator=_check_latency
    )
    jitter: float = attrs.field(default=0.0, converter=float, validator=_finite_ge0)
    # faults
    fault_rate: float = attrs.field(default=0.0, converter=float, validator=[v.ge(0.0), v.le(1.0)])
    fault_kinds: tuple[str, ...] = attrs.field(
        default=FAULT_KINDS, converter=tuple, validator=_check_kinds
    )
    seed: int = attrs.field(default=0, validator=v.instance_of(int))
    fail_first_n: int = attrs.field(default=0, validator=[v.instance_of(int), v.ge(0)])
    fail_first_kind: str = attrs.field(default="server_error", validator=v.in_(FAULT_KINDS))
    fault_header: bool = attrs.field(default=True, validator=v.instance_of(bool))
    retry_after: float = attrs.field(default=1.0, converter=float, validator=_positive)
    timeout_sleep: float = attrs.field(default=30.0, converter=float, validator=_finite_ge0)
    # auth and capacity
    api_key: str | None = attrs.field(
        default=None, repr=False, validator=v.optional([v.instance_of(str), v.min_len(1)])
    )
    max_in_flight: int | None = attrs.field(default=None, validator=_opt_pos_int)
    tpm: int | None = attrs.field(default=None, validator=_opt_pos_int)
    #: the rolling window ``tpm`` counts over (60 s like a provider; tests shorten it)
    tpm_window_s: float = attrs.field(default=_TPM_WINDOW_S, converter=float, validator=_positive)
    # lifetime
    max_lifetime: float = attrs.field(default=600.0, converter=float, validator=_positive)
    max_requests: int = attrs.field(default=100_000, validator=[v.instance_of(int), v.ge(1)])
    idle_timeout: float = attrs.field(default=15.0, converter=float, validator=_positive)
    max_body_bytes: int = attrs.field(
        default=256 * 1024 * 1024, validator=[v.instance_of(int), v.ge(1)]
    )
    # scripted dspy.RLM root (see the module docstring)
    rlm_root: bool = attrs.field(default=False, validator=v.instance_of(bool))
    rlm_pattern: str | None = attrs.field(default=None, validator=v.optional(_check_regex))
    rlm_max_hits: int = attrs.field(default=12, validator=[v.instance_of(int), v.ge(1)])


# --------------------------------------------------------------------------------------- helpers


def count_tokens(chars: int) -> int:
    """The fake tokenizer: ``ceil(chars / 4)``."""
    return (chars + 3) // 4


_WORD = re.compile(r"\w+")


def embed_text(text: str, dim: int = 64) -> list[float]:
    """Hashed bag-of-words embedding, L2-normalised: shared words make texts close.

    Each lower-cased ``\\w+`` token adds +-1 at a blake2b-chosen index (sign from the hash too).
    A text without words maps to the unit vector on axis 0, never to a zero vector.
    """
    vec = [0.0] * dim
    for tok in _WORD.findall(text.lower()):
        h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
        vec[h % dim] += 1.0 if (h >> 40) & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vec))
    if norm == 0.0:
        vec[0] = 1.0
        return vec
    return [x / norm for x in vec]


_RLM_ITERATION = re.compile(r"\[\[ ## iteration ## \]\]\s*(\d+)\s*/\s*\d+")
_RLM_ITERATION_JSON = re.compile(r"\"iteration\"\s*:\s*\"(\d+)\s*/\s*\d+\"")
_OUTPUT_FIELDS = re.compile(r"Your output fields are:(.*?)(?:\n\n|$)", re.DOTALL)


def rlm_root_turn(prompt: str) -> int | None:
    """The iteration (1-based) when ``prompt`` is a ``dspy.RLM`` root (action) prompt, else None.

    A root prompt has the input ``repl_history`` and the output fields ``reasoning`` and ``code``;
    the extract fallback and the ``llm_query`` sub-calls do not have ``code`` among their outputs.
    """
    if "repl_history" not in prompt:
        return None
    block = _OUTPUT_FIELDS.search(prompt)
    if block is None or "`code`" not in block.group(1):
        return None
    found = _RLM_ITERATION.findall(prompt) or _RLM_ITERATION_JSON.findall(prompt)
    return int(found[-1]) if found else 1


_RLM_STOP_WORDS = (
    "what which where when does that this with from into have were will there their about "
    "value values function functions module modules return returns each other code file files "
    "text line lines many much name"
)

_RLM_SEARCH = r"""import re
PATTERN = __PATTERN__
MAX_HITS = __MAX_HITS__
STOP = set(__STOP__.split())
lines = context.split("\n")


def _terms():
    if PATTERN:
        return [], 1
    ids = []
    for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", question):
        if "_" in w.strip("_") and w not in ids:
            ids.append(w)
    if ids:
        return ids, 1
    words = []
    for w in re.findall(r"[a-z]{4,}", question.lower()):
        if w not in STOP and w not in words:
            words.append(w)
    return words, 2


terms, need = _terms()
rx = re.compile(PATTERN) if PATTERN else None
scored = []
for i, line in enumerate(lines):
    if line.startswith("=== "):
        continue
    if rx is not None:
        n = 1 if rx.search(line) else 0
    else:
        text = line if need == 1 else line.lower()
        n = 0
        for t in terms:
            if t in text:
                n += 1
    if n >= need:
        scored.append((n, i))
best = max([n for n, i in scored]) if scored else 0
hits = [i for n, i in scored if n == best][:MAX_HITS]

# one hop: where the functions called on the hit lines are defined
called = []
for i in hits:
    own = re.findall(r"def\s+([A-Za-z_][A-Za-z0-9_]*)", lines[i])
    for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\(", lines[i]):
        if name not in own and name not in called:
            called.append(name)
if called:
    for i, line in enumerate(lines):
        if "def " in line and i not in hits:
            for name in called:
                if "def " + name + "(" in line:
                    hits.append(i)
                    break
hits = hits[:2 * MAX_HITS]


def _snippet(i):
    h = i
    while h > 0 and not lines[h].startswith("=== "):
        h -= 1
    lo = max(h + 1, i - 3)
    return lines[h] + "\n" + "\n".join(lines[lo:i + 4])


snippets = []
for i in hits:
    s = _snippet(i)
    if s not in snippets:
        snippets.append(s)
"""

_RLM_LOOK = r"""
shown = PATTERN if PATTERN else ", ".join(terms)
print("searched for " + shown + ": " + str(len(scored)) + " matching lines, "
      + str(len(snippets)) + " snippets")
for s in snippets[:3]:
    print(s)
"""

_RLM_READ = r"""
if snippets:
    prompt = ("Question: " + question + "\n\nExcerpts of the context that match the question "
              + "(found by searching it):\n\n" + "\n\n".join(snippets))
    answer = llm_query(prompt)
else:
    answer = "The context has no lines matching the question, so it does not say."
SUBMIT(answer=answer)
"""


def rlm_root_code(turn: int, pattern: str | None = None, max_hits: int = 12) -> str:
    """The code the scripted RLM root writes at iteration ``turn`` (see the module docstring)."""
    code = (
        _RLM_SEARCH.replace("__PATTERN__", repr(pattern))
        .replace("__MAX_HITS__", repr(int(max_hits)))
        .replace("__STOP__", repr(_RLM_STOP_WORDS))
    )
    return code + (_RLM_LOOK if turn <= 1 else _RLM_READ)


def _error_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:g}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True
    provider: FakeProvider


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


# --------------------------------------------------------------------------------------- provider


class FakeProvider:
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

    def _retry_headers(self, seconds: float) -> list[tuple[str, str]]:
        return [
            ("Retry-After", _fmt_seconds(seconds)),
            ("Retry-After-Ms", str(int(seconds * 1000))),
        ]

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
            if presented != f"Bearer {cfg.api_key}":
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

    def _pick_fault(self, forced: str | None) -> str | None:
        if forced is not None:
            return None if forced == "none" else forced
        with self._lock:
            index = self._unforced
            self._unforced += 1
            draw = self._rng.random()
            kind = self._rng.choice(self.config.fault_kinds)
        if index < self.config.fail_first_n:
            return self.config.fail_first_kind
        if draw < self.config.fault_rate:
            return kind
        return None

    def _reply_text(self, request: dict, messages: list[dict], texts: list[str]) -> str | Mapping:
        forced = request.get("reply")
        if forced is not None:
            return forced
        prompt = "\n".join(texts)
        if self.config.rlm_root:
            turn = rlm_root_turn(prompt)
            if turn is not None:
                return {
                    "reasoning": f"Scripted RLM root, iteration {turn}: search, read, submit.",
                    "code": "```python\n"
                    + rlm_root_code(turn, self.config.rlm_pattern, self.config.rlm_max_hits)
                    + "\n```",
                }
        mode = request["mode"]
        if mode == "echo":
            users = [m for m in messages if m.get("role") == "user"] or messages
            return message_text(users[-1].get("content"))
        if mode == "oracle":
            found = [ans for ans in self.config.needles.values() if ans in prompt]
            return "\n".join(found) if found else self.config.oracle_miss
        for pattern, reply in self._rules:
            if pattern.search(prompt):
                return reply
        return self.config.default_reply

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
            rf = body.get("response_format")
            json_mode = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
            if cfg.dspy_format or not isinstance(values, str):
                content = format_for_dspy(messages, values, json_mode=json_mode)
            else:
                content = values
            completion_tokens = count_tokens(len(content)) * request["n"]
            response: dict[str, Any] = {
                "id": f"chatcmpl-fake-{next(self._ids)}",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_ponder_fake",
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": content},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                    for i in range(request["n"])
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        else:
            inputs: list[str] = request["inputs"]
            prompt_tokens = count_tokens(sum(len(t) for t in inputs))
            completion_tokens = 0
            data = []
            for i, text in enumerate(inputs):
                vec = embed_text(text, request["dim"])
                emb: Any = vec
                if request["encoding_format"] == "base64":
                    emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
                data.append({"object": "embedding", "index": i, "embedding": emb})
            response = {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }

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

    def _tpm_admit(self, tokens: int) -> float | None:
        """Record ``tokens`` in the rolling window (``tpm_window_s``, 60 s by default); or the
        seconds to wait if over ``tpm``."""
        tpm = self.config.tpm
        window_s = self.config.tpm_window_s
        if tpm is None:
            return None
        now = time.monotonic()
        with self._lock:
            window = self._tpm_window
            while window and window[0][0] <= now - window_s:
                self._tpm_used -= window.popleft()[1]
            if self._tpm_used + tokens <= tpm:
                window.append((now, tokens))
                self._tpm_used += tokens
                return None
            if tokens > tpm:
                return window_s
            freed = 0
            for stamp, used in window:  # bounded by the window's length
                freed += used
                if self._tpm_used - freed + tokens <= tpm:
                    return max(1.0, float(math.ceil(stamp + window_s - now)))
            return window_s

    def _inject(self, h: _Handler, fault: str, kind: str) -> None:
        cfg = self.config
        if fault == "rate_limit":
            self._send(
                h,
                429,
                _error_body(
                    f"Rate limit reached for {cfg.model} (fake provider). "
                    f"Please try again in {_fmt_seconds(cfg.retry_after)}s.",
                    "requests",
                    "rate_limit_exceeded",
                ),
                self._retry_headers(cfg.retry_after),
            )
        elif fault == "server_error":
            with self._lock:
                status = self._aux_rng.choice((500, 503))
            if status == 500:
                body = _error_body(
                    "The server had an error processing your request (fake 500).", "server_error"
                )
                self._send(h, 500, body)
            else:
                body = _error_body(
                    "The engine is currently overloaded (fake 503).", "server_error", "overloaded"
                )
                self._send(h, 503, body, self._retry_headers(cfg.retry_after))
        elif fault == "timeout":
            self._sleep(h, cfg.timeout_sleep)
            raise _Abort
        elif fault == "malformed":
            self._send(
                h,
                200,
                b'{"id": "chatcmpl-fake-malformed", "object": "chat.completion", "choices": [{"',
            )
        else:  # empty_choices
            if kind == "chat":
                body = {
                    "id": f"chatcmpl-fake-{next(self._ids)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": cfg.model,
                    "choices": [],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                }
            else:
                body = {
                    "object": "list",
                    "data": [],
                    "model": cfg.model,
                    "usage": {"prompt_tokens": 0, "total_tokens": 0},
                }
            self._send(h, 200, body)


# --------------------------------------------------------------------------------------- CLI


def _parse_kv(text: str, sep: str) -> tuple[str, str]:
    key, found, value = text.partition(sep)
    if not found or not key:
        raise argparse.ArgumentTypeError(f"expected KEY{sep}VALUE, got {text!r}")
    return key, value


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ponder.testing.fake_provider",
        description="Loopback fake OpenAI-compatible provider. Prints its URL as the first line.",
    )
    p.add_argument("--host", default="127.0.0.1", choices=_LOOPBACK_HOSTS)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--model", default="fake-model")
    p.add_argument("--mode", choices=MODES, default="rules")
    p.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="REGEX=>REPLY",
        type=lambda s: _parse_kv(s, "=>"),
        help="rules mode: reply REPLY when REGEX matches",
    )
    p.add_argument("--default-reply", default="OK")
    p.add_argument(
        "--needle",
        action="append",
        default=[],
        metavar="KEY=ANSWER",
        type=lambda s: _parse_kv(s, "="),
        help="oracle mode: a needle and its answer text",
    )
    p.add_argument("--oracle-miss", default="NOT FOUND")
    p.add_argument(
        "--no-dspy-format", action="store_true", help="reply plain text even to DSPy prompts"
    )
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument(
        "--latency",
        default="0",
        metavar="A[,B[,C]]",
        help="seconds: A + B*prompt_tokens + C*completion_tokens",
    )
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-kinds", default=",".join(FAULT_KINDS), metavar="KIND,...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fail-first-n", type=int, default=0)
    p.add_argument("--fail-first-kind", choices=FAULT_KINDS, default="server_error")
    p.add_argument("--no-fault-header", action="store_true", help="ignore X-Fake-Fault headers")
    p.add_argument("--retry-after", type=float, default=1.0)
    p.add_argument("--timeout-sleep", type=float, default=30.0)
    p.add_argument("--api-key", default=None)
    p.add_argument("--max-in-flight", type=int, default=None)
    p.add_argument("--tpm", type=int, default=None)
    p.add_argument("--max-lifetime", type=float, default=600.0)
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument(
        "--rlm-root", action="store_true", help="answer dspy.RLM root prompts with scripted code"
    )
    p.add_argument("--rlm-pattern", default=None, help="regex the scripted RLM root searches for")
    p.add_argument("--rlm-max-hits", type=int, default=12)
    p.add_argument("--print-stats", action="store_true", help="print final stats JSON to stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        config = FakeProviderConfig(
            host=args.host,
            port=args.port,
            model=args.model,
            mode=args.mode,
            rules=args.rule,
            default_reply=args.default_reply,
            needles=dict(args.needle),
            oracle_miss=args.oracle_miss,
            dspy_format=not args.no_dspy_format,
            embedding_dim=args.embedding_dim,
            latency=[x for x in args.latency.split(",") if x.strip()],
            jitter=args.jitter,
            fault_rate=args.fault_rate,
            fault_kinds=[k.strip() for k in args.fault_kinds.split(",") if k.strip()],
            seed=args.seed,
            fail_first_n=args.fail_first_n,
            fail_first_kind=args.fail_first_kind,
            fault_header=not args.no_fault_header,
            retry_after=args.retry_after,
            timeout_sleep=args.timeout_sleep,
            api_key=args.api_key,
            max_in_flight=args.max_in_flight,
            tpm=args.tpm,
            max_lifetime=args.max_lifetime,
            max_requests=args.max_requests,
            rlm_root=args.rlm_root,
            rlm_pattern=args.rlm_pattern,
            rlm_max_hits=args.rlm_max_hits,
        )
    except (TypeError, ValueError) as exc:
        print(f"fake_provider: invalid configuration: {exc}", file=sys.stderr)
        return 2
    provider = FakeProvider(config).start()

    def _on_signal(signum: int, _frame: Any) -> None:
        provider._begin_stop("stopped")

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, _on_signal)
    print(provider.url, flush=True)
    try:
        while not provider.wait(0.5):  # bounded by max_lifetime
            pass
    finally:
        provider.stop()
        if args.print_stats:
            print(json.dumps(provider.stats()), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
