"""One concurrency budget shared by a batch of runs and the parallel calls inside each.

An eval runs many ``System.ask`` calls at once, and each ask may fan out through
:meth:`ponder.engine.services.Services.map`. Two independent pools (examples × chunks) would
multiply: 16 examples each mapping with 16 workers is 256 threads and 256 requests in flight.
A :class:`ConcurrencyBudget` is the one cap both draw from instead:

- the thread that runs one item of the batch (an eval example) holds one slot while it works;
- ``Services.map`` inside it *lends* that slot to its first worker (the calling thread only
  waits while the map runs) and *borrows* further slots only when they are free, without ever
  blocking on them, so a map never waits for a slot another map holds and nothing deadlocks;
- a borrowed slot goes back when its worker thread ends.

So at most ``slots`` threads do work (and so at most ``slots`` LM calls are in flight) whatever
the nesting, and while few examples remain their maps widen into the slots the finished ones
left. Without a budget (a plain ``ponder ask``) ``Services.map`` keeps its own pool.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class ConcurrencyBudget:
    """``slots`` units of concurrency; thread-safe. ``peak`` is the most ever held at once."""

    def __init__(self, slots: int) -> None:
        if int(slots) < 1:
            raise ValueError(f"a concurrency budget needs at least 1 slot, got {slots}")
        self.slots = int(slots)
        self._cond = threading.Condition()
        self._held = 0
        self.peak = 0

    @property
    def held(self) -> int:
        return self._held

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for a free slot (at most ``timeout`` seconds); True once one is held."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._held < self.slots, timeout=timeout):
                return False
            self._take()
            return True

    def try_acquire(self) -> bool:
        """Take a free slot if there is one, never waiting."""
        with self._cond:
            if self._held >= self.slots:
                return False
            self._take()
            return True

    def _take(self) -> None:
        self._held += 1
        self.peak = max(self.peak, self._held)

    def release(self) -> None:
        with self._cond:
            if self._held <= 0:
                raise RuntimeError("released a concurrency slot that was not held")
            self._held -= 1
            self._cond.notify()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the ``with`` block."""
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def __repr__(self) -> str:
        return f"ConcurrencyBudget(slots={self.slots}, held={self._held}, peak={self.peak})"
