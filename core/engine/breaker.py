"""The circuit breaker that guards each adapter of a fallback chain.

Why a module of its own: the breaker is a small state machine (closed -> open -> half-open)
with its own lock and an injectable clock, and it knows nothing of providers, errors or dspy.
The chain in :mod:`ponder.engine.fallback` decides *when* a failure counts against an adapter
(see :mod:`ponder.engine.failures`); this module only keeps the count and the cooldown, so it
can be read and tested on its own (tests/unit/test_circuit_breaker.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]

#: Breaker states.
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failures -> half-open after ``cooldown``.

    :meth:`allow` says whether a call may go to the adapter. Closed: always. Open: no, until
    ``cooldown`` seconds have passed since it opened; then the breaker is half-open and exactly
    one trial call is let through (other callers are refused while it is in flight). The trial's
    :meth:`record_success` closes the breaker; its :meth:`record_failure` opens it again for
    another cooldown. :meth:`trip` opens it at once; ``permanent=True`` (an auth error) keeps it
    open until :meth:`reset`. :meth:`release` gives back a trial that ended neither way (the call
    failed for a reason that says nothing about the provider). Thread-safe; ``clock`` is
    injectable (``time.monotonic`` by default).
    """

    def __init__(self, failures: int = 3, cooldown: float = 30.0, *,
                 clock: Clock = time.monotonic, name: str = "") -> None:
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures!r}")
        if cooldown < 0:
            raise ValueError(f"cooldown must be >= 0, got {cooldown!r}")
        self.failures = failures
        self.cooldown = float(cooldown)
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial = False
        self._permanent = False
        #: why the breaker last opened (for messages)
        self.reason: str | None = None

    def _cooled(self) -> bool:
        return not self._permanent and self._clock() - self._opened_at >= self.cooldown

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (an open breaker whose cooldown has passed)."""
        with self._lock:
            if self._state == OPEN and self._cooled():
                return HALF_OPEN
            return self._state

    @property
    def permanent(self) -> bool:
        with self._lock:
            return self._permanent

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._consecutive

    def retry_in(self) -> float | None:
        """Seconds until an open breaker lets a trial through; 0 when it would now, None when it
        is closed or open for good."""
        with self._lock:
            if self._state == CLOSED or self._permanent:
                return None
            if self._state == HALF_OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.cooldown - self._clock())

    def allow(self) -> bool:
        """Whether a call may go through now; a True from a cooled-down breaker is its trial."""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN:
                if not self._cooled():
                    return False
                self._state = HALF_OPEN
                self._trial = False
            if self._trial:  # half-open: one trial at a time
                return False
            self._trial = True
            return True

    def record_success(self) -> None:
        with self._lock:
            if self._permanent:
                return
            self._state = CLOSED
            self._consecutive = 0
            self._trial = False
            self.reason = None

    def record_failure(self, reason: str | None = None) -> None:
        with self._lock:
            self._consecutive += 1
            if self._state == HALF_OPEN or self._consecutive >= self.failures:
                self._open_locked(reason)

    def trip(self, reason: str | None = None, *, permanent: bool = False) -> None:
        """Open at once (``permanent``: until :meth:`reset`)."""
        with self._lock:
            self._consecutive += 1
            self._permanent = self._permanent or permanent
            self._open_locked(reason)

    def release(self) -> None:
        """End a call that neither succeeded nor failed as an outage (e.g. a bad request)."""
        with self._lock:
            self._trial = False

    def reset(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._consecutive = 0
            self._trial = False
            self._permanent = False
            self.reason = None

    def _open_locked(self, reason: str | None) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        self._trial = False
        if reason is not None:
            self.reason = reason

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name or '?'} {self.state}>"
