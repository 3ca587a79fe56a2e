"""One run-wide limit on requests and tokens per minute (``[adapter] rpm``, ``tpm``).

A provider key has one budget however many workers share it, so the run holds one
:class:`RateLimiter` and every LM request (each retry attempt included) takes a ticket from it
before it is sent: under the ``threads`` executor the limiter is this lock-protected object;
under ``ray`` it lives in one Ray actor and every worker asks that actor.

**Why a sliding window, not a classic token bucket.** Providers count "tokens per minute" over
a rolling 60 s window (the loopback fake provider does exactly that). A token bucket with
capacity ``C`` refilling at ``C``/minute lets ``2C`` through in one window (a full burst, then a
minute of refill), so it would overrun the key it is meant to protect. Here a request is
admitted only if the requests and tokens admitted in the last ``window_s`` seconds, plus its own,
fit; the window is lengthened by a small margin, since the provider stamps a request a little
later than we send it.

**Tokens are not known before the reply**, so a ticket reserves an estimate (the prompt estimate
times a factor learned from the replies so far, which covers the prompt framing and the answer)
and :meth:`RateLimiter.settle` replaces it with the tokens the provider reported. A request still
in flight never leaves the window: its tokens are counted until it settles, and it ages out from
the time it settled (no earlier than the provider could have counted it).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ponder.run")

#: the first estimate's factor over the prompt estimate, before any reply taught a better one
INITIAL_RATIO = 2.0
#: the factor is kept within these bounds (a reply far off the estimate must not freeze a run)
MAX_RATIO = 20.0


class RateLimiter:
    """Requests and tokens per window for the whole run; thread-safe; never sleeps itself.

    :meth:`try_acquire` answers at once (a ticket, or how long to wait), so the same object can
    sit in a Ray actor without blocking it; :meth:`acquire` is the sleeping loop around it.
    """

    def __init__(self, rpm: float | None = None, tpm: int | None = None, *,
                 window_s: float = 60.0, margin_s: float | None = None,
                 max_call_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rpm is not None and rpm <= 0:
            raise ValueError(f"rpm must be > 0, got {rpm!r}")
        if tpm is not None and tpm <= 0:
            raise ValueError(f"tpm must be > 0, got {tpm!r}")
        self.rpm = rpm
        self.tpm = tpm
        #: requests one window admits. Under one a minute (``rpm = 0.5``) no window of 60 s
        #: could ever admit a request, so the window grows to hold exactly one (120 s for
        #: 0.5); a longer window with the same ``tpm`` is only stricter on tokens
        self._requests_cap = None if rpm is None else max(1.0, rpm)
        if rpm is not None and rpm < 1:
            window_s = window_s / rpm
        # the provider stamps a request after we send it: age entries out a little later
        self.window_s = window_s + (max(0.25, window_s * 0.02) if margin_s is None else margin_s)
        #: a request unsettled this long is taken as done then (its worker died with it)
        self.max_call_s = max_call_s
        self._clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        #: ticket -> [tokens, settled_at or None, admitted_at], and the tickets in order
        self._entries: dict[int, list[Any]] = {}
        self._order: deque[int] = deque()
        self._tokens = 0
        self._ratio = INITIAL_RATIO
        #: counters for the run's record (and the tests)
        self.admitted = 0
        self.waits = 0
        self.peak_tokens = 0
        self.peak_requests = 0

    @property
    def active(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def estimate(self, prompt_tokens: int) -> int:
        """Tokens to reserve for a request whose prompt was estimated at ``prompt_tokens``."""
        with self._lock:
            return max(1, math.ceil(prompt_tokens * self._ratio))

    def _settled_at(self, entry: list[Any], now: float) -> float | None:
        if entry[1] is None and entry[2] + self.max_call_s <= now:
            return entry[2] + self.max_call_s
        return entry[1]

    def _expire(self, now: float, *, sweep: bool = False) -> None:
        """Drop settled entries older than the window: from the front (cheap), or all of them
        (``sweep``, when the room is short and one slow call holds the front)."""
        horizon = now - self.window_s
        order = self._order
        while order:
            tokens = self._entries[order[0]][0]
            settled = self._settled_at(self._entries[order[0]], now)
            if settled is None or settled > horizon:
                break
            del self._entries[order.popleft()]
            self._tokens -= tokens
        if sweep:
            keep: deque[int] = deque()
            for ticket in order:
                tokens = self._entries[ticket][0]
                settled = self._settled_at(self._entries[ticket], now)
                if settled is not None and settled <= horizon:
                    del self._entries[ticket]
                    self._tokens -= tokens
                else:
                    keep.append(ticket)
            self._order = keep

    def _fits(self, tokens: int) -> bool:
        return ((self._requests_cap is None or len(self._order) + 1 <= self._requests_cap)
                and (self.tpm is None or self._tokens + tokens <= self.tpm))

    def try_acquire(self, tokens: int) -> tuple[int | None, float]:
        """A ticket for one request of ``tokens`` (estimated), or ``(None, seconds to wait)``."""
        tokens = max(0, int(tokens))
        with self._lock:
            if self.tpm is not None:  # a request bigger than the window waits for an empty one
                tokens = min(tokens, self.tpm)
            now = self._clock()
            self._expire(now)
            if not self._fits(tokens):
                self._expire(now, sweep=True)
            if self._fits(tokens):
                ticket = next(self._ids)
                self._entries[ticket] = [tokens, None, now]
                self._order.append(ticket)
                self._tokens += tokens
                self.admitted += 1
                self.peak_tokens = max(self.peak_tokens, self._tokens)
                self.peak_requests = max(self.peak_requests, len(self._order))
                return ticket, 0.0
            self.waits += 1
            return None, self._wait_locked(now, tokens)

    def _wait_locked(self, now: float, tokens: int) -> float:
        """When enough settled entries age out for ``tokens`` more (a short poll when it
        depends on requests still in flight)."""
        poll = min(0.05, self.window_s / 100)
        need_requests = (0 if self._requests_cap is None
                         else len(self._order) + 1 - self._requests_cap)
        need_tokens = 0 if self.tpm is None else self._tokens + tokens - self.tpm
        freed_tokens = 0
        latest = now
        for freed_requests, ticket in enumerate(self._order, 1):
            size = self._entries[ticket][0]
            settled = self._settled_at(self._entries[ticket], now)
            if settled is None:
                return poll  # what frees the room is still in flight
            latest = max(latest, settled + self.window_s)
            freed_tokens += size
            if freed_requests >= need_requests and freed_tokens >= need_tokens:
                return max(poll, latest - now)
        return poll

    def settle(self, ticket: int | None, tokens: int | None) -> None:
        """The request of ``ticket`` is done: it used ``tokens`` (None: keep the estimate, e.g.
        the request failed and the provider may have counted it); its window starts now."""
        if ticket is None:
            return
        with self._lock:
            entry = self._entries.get(ticket)
            if entry is None:
                return
            if tokens is not None:
                self._tokens += int(tokens) - entry[0]
                entry[0] = int(tokens)
            entry[1] = self._clock()

    def learn(self, prompt_estimate: int, actual_tokens: int) -> None:
        """Raise the estimate factor when a reply used more than its estimate allowed."""
        if prompt_estimate <= 0 or actual_tokens <= 0:
            return
        with self._lock:
            self._ratio = min(MAX_RATIO, max(self._ratio, actual_tokens / prompt_estimate * 1.1))

    def acquire(self, tokens: int, *, remaining_s: Callable[[], float | None] = lambda: None,
                sleep: Callable[[float], None] = time.sleep) -> int | None:
        """Wait for a ticket; returns it, or None if the time left ran out first."""
        return wait_for_ticket(self.try_acquire, tokens, remaining_s=remaining_s, sleep=sleep)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"rpm": self.rpm, "tpm": self.tpm, "admitted": self.admitted,
                    "waits": self.waits, "peak_tokens": self.peak_tokens,
                    "peak_requests": self.peak_requests, "ratio": round(self._ratio, 3)}


def wait_for_ticket(try_acquire: Callable[[int], tuple[int | None, float]], tokens: int, *,
                    remaining_s: Callable[[], float | None],
                    sleep: Callable[[float], None] = time.sleep) -> int | None:
    """Ask ``try_acquire`` until it admits the request (sleeping the wait it names between
    tries); None once the run's time left is shorter than the wait."""
    while True:
        ticket, wait = try_acquire(tokens)
        if ticket is not None:
            return ticket
        remaining = remaining_s()
        if remaining is not None and remaining <= wait:
            return None
        _say_waiting(wait)
        sleep(wait)


#: a wait this long is worth a line on stderr (a run that goes quiet looks hung)
NOTICE_WAIT_S = 5.0
_notice_lock = threading.Lock()
_last_notice = [-math.inf]


def _say_waiting(wait: float, *, every_s: float = 30.0) -> None:
    """Warn that the rate limit holds requests back, at most once per ``every_s`` per process
    (many workers wait at once; one line says it)."""
    if wait < NOTICE_WAIT_S:
        return
    with _notice_lock:
        now = time.monotonic()
        if now - _last_notice[0] < every_s:
            return
        _last_notice[0] = now
    log.warning("the rate limit ([adapter] rpm/tpm) holds requests back: the next one goes "
                "in about %.0f s", wait)


class Ticket:
    """One admitted request: :meth:`done` settles it with the tokens it used."""

    __slots__ = ("_estimate", "_id", "_limiter")

    def __init__(self, limiter: Any, ticket_id: int | None, estimate: int) -> None:
        self._limiter = limiter
        self._id = ticket_id
        self._estimate = estimate

    def done(self, tokens: int | None) -> None:
        """Settle with the tokens used (None: unknown, the reservation stands)."""
        if self._limiter is None:
            return
        self._limiter.settle(self._id, tokens)
        if tokens:
            self._limiter.learn(self._estimate, tokens)


_NO_LIMIT = Ticket(None, None, 0)


def take_ticket(limiter: Any, prompt_tokens: int,
                remaining_s: Callable[[], float | None]) -> Ticket | None:
    """Wait for ``limiter``'s room for one request (a no-op ticket without a limiter); None if
    the run's time ran out first. ``limiter`` is a :class:`RateLimiter` or a proxy with the
    same methods (the ray executor's actor client)."""
    if limiter is None:
        return _NO_LIMIT
    estimate = max(1, prompt_tokens)
    ticket_id = limiter.acquire(limiter.estimate(estimate), remaining_s=remaining_s)
    if ticket_id is None:
        return None
    return Ticket(limiter, ticket_id, estimate)
