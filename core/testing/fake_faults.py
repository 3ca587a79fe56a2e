"""The fake provider's fault model: the seeded fault draw, the injected faults themselves, and the
tokens-per-minute bucket.

The contract tests lean on is that the n-th unforced request's fate depends only on the seed and
n (two draws per request from ``random.Random(seed)``, a second RNG for the 500-or-503 choice
and the jitter), and that each fault looks like a real provider's: a 429 with ``Retry-After``, a
500 or a 503, a held connection closed without a reply, a truncated body, an empty
``choices``. That is a concern of its own, apart from what a healthy reply says
(:mod:`ponder.testing.fake_replies`) and from the sockets (:mod:`ponder.testing.fake_http`), so
it is :class:`FaultInjection`, a mixin of :class:`ponder.testing.fake_provider.FakeProvider`;
it uses the provider's ``config``, ``_lock``, RNGs, TPM window and ``_send`` / ``_sleep``.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from typing import Any

from ponder.testing.fake_http import _Abort, _Handler
from ponder.testing.fake_replies import _error_body, _fmt_seconds
from ponder.testing.fake_settings import FakeProviderConfig

__all__ = ["FaultInjection"]


class FaultInjection:
    """Fault draw, injection and the TPM bucket for the fake provider (see the module docstring)."""

    config: FakeProviderConfig
    _lock: threading.Lock
    _ids: Any
    _unforced: int
    _rng: random.Random
    _aux_rng: random.Random
    _tpm_window: deque[tuple[float, int]]
    _tpm_used: int

    def _retry_headers(self, seconds: float) -> list[tuple[str, str]]:
        return [
            ("Retry-After", _fmt_seconds(seconds)),
            ("Retry-After-Ms", str(int(seconds * 1000))),
        ]

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
