"""How a batch of independent work items runs: the contract every executor keeps, and threads.

:meth:`ponder.engine.services.Services.map` hands an executor (``[executor] name``, a plugin of
kind ``executor``) a task and the items; the executor yields one :class:`Outcome` per item it
started, as each finishes, and Services turns them into results, failures, progress and the
stop reason. So limits, partial results and progress behave the same under every executor.
An eval hands its examples to the same executor (``ponder.evaluate.dispatch``): whole examples
on threads, or, under an executor whose workers are other processes, each example's ask as one
item (``ponder.evaluate.remote``).

The contract (:class:`ponder.kernel.kinds.Executor`; ``ponder.testing.executor_conformance``
checks it):

- ``map(task, items, *, services, concurrency)`` calls ``task(index, item)`` with at most
  ``concurrency`` in flight, and yields ``Outcome(index, value=...)`` or ``Outcome(index,
  error=...)`` in completion order, each started item exactly once;
- it starts nothing new once ``services.stopped_by`` is set, and waits no longer than
  ``services.remaining_s()``: then every item still in flight is yielded as ``cancelled``
  (one that finished meanwhile is yielded with its value: it was paid for); items never started
  are not yielded, and Services lists them as not processed;
- Ctrl-C while waiting calls ``services.interrupt()`` and ends the same way;
- ``rate_limiter(rpm, tpm)`` gives the run's one :class:`ponder.engine.ratelimit.RateLimiter`
  (or a proxy every worker can reach), ``close()`` frees workers at the end of a run.

:class:`ThreadExecutor` is the default (``threads``): daemon threads in this process, the pool
ponder always had, so an abandoned call never holds up the process's exit.
"""

from __future__ import annotations

import concurrent.futures as futures
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import attrs

from ponder.support.observability import in_current_context

T = TypeVar("T")


@attrs.define
class Outcome:
    """What became of one started item."""

    index: int
    value: Any = None
    error: BaseException | None = None
    #: ``done`` (value or error) or ``cancelled`` (in flight when the run stopped)
    status: str = "done"


class ThreadExecutor:
    """Runs items on daemon threads of this process (``[executor] name = "threads"``)."""

    name = "threads"

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings

    def map(self, task: Callable[[int, Any], Any], items: Sequence[Any], *, services: Any,
            concurrency: int) -> Iterator[Outcome]:
        concurrency = max(1, concurrency)
        # with a shared concurrency budget (an eval's examples) the pool borrows free slots
        pool = DaemonPool(concurrency, thread_name_prefix="ponder",
                          budget=getattr(services, "budget", None))
        pending: dict[futures.Future[Any], int] = {}
        next_index = 0
        try:
            try:
                while next_index < len(items) or pending:
                    # keep at most `concurrency` in flight, so a limit stops new submissions
                    while (next_index < len(items) and services.stopped_by is None
                           and len(pending) < pool.capacity(len(pending) + 1)):
                        future = pool.submit(in_current_context(task), next_index,
                                             items[next_index])
                        pending[future] = next_index
                        next_index += 1
                    if not pending:
                        break
                    remaining = services.remaining_s()
                    done, _ = futures.wait(
                        pending, timeout=None if remaining is None else max(remaining, 0),
                        return_when=futures.FIRST_COMPLETED)
                    if not done:  # the deadline passed with calls in flight
                        break
                    for future in done:
                        index = pending.pop(future)
                        yield _outcome(index, future)
            except KeyboardInterrupt:
                services.interrupt()
            for future, index in list(pending.items()):
                # a call that finished as the run stopped was paid for: keep its result
                if future.done() and not future.cancelled() and future.exception() is None:
                    yield _outcome(index, future)
                    continue
                future.cancel()
                yield Outcome(index, status="cancelled")
            pending.clear()
        finally:
            for future in pending:
                future.cancel()
            # never wait for abandoned in-flight calls: the deadline is hard
            pool.shutdown()

    def rate_limiter(self, rpm: float | None, tpm: int | None, *,
                     window_s: float = 60.0) -> Any:
        from ponder.engine.ratelimit import RateLimiter

        return RateLimiter(rpm, tpm, window_s=window_s)

    def close(self) -> None:
        """Nothing to free: the threads of a map end with it."""


def _outcome(index: int, future: futures.Future[Any]) -> Outcome:
    error = future.exception()
    if error is not None:
        return Outcome(index, error=error)
    return Outcome(index, value=future.result())


class DaemonPool:
    """A minimal thread pool whose workers are daemon threads.

    ``concurrent.futures.ThreadPoolExecutor`` joins its workers at interpreter exit, so a call
    abandoned at the deadline (or on Ctrl-C) would keep ``ponder ask`` alive until the provider
    answered, up to the HTTP timeout. Here an abandoned call is left to die with the process.

    With a shared ``budget`` (:class:`ponder.engine.budget.ConcurrencyBudget`) the pool starts
    with one worker on the caller's slot and grows, up to ``workers``, only by slots it can take
    without waiting; each borrowed slot is given back at :meth:`shutdown` when its worker is
    idle, else (a call abandoned at a stop) when that call ends.
    """

    def __init__(self, workers: int, *, thread_name_prefix: str, budget: Any = None) -> None:
        import queue

        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._workers = workers
        self._prefix = thread_name_prefix
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._budget = budget
        self._borrowed = 0
        #: borrowed workers still holding their slot, and the workers running an item now
        self._owed: set[threading.Thread] = set()
        self._busy: set[threading.Thread] = set()

    def capacity(self, wanted: int | None = None) -> int:
        """How many items may be in flight now; a budgeted pool first borrows free slots, up to
        ``wanted`` (so a map of two items never holds sixteen)."""
        if self._budget is None:
            return self._workers
        cap = self._workers if wanted is None else max(1, min(self._workers, wanted))
        with self._lock:
            while 1 + self._borrowed < cap and self._budget.try_acquire():
                self._borrowed += 1
            return 1 + self._borrowed

    def submit(self, fn: Callable[..., T], *args: Any) -> futures.Future[T]:
        future: futures.Future[T] = futures.Future()
        with self._lock:
            self._queue.put((future, fn, args))
            # callers keep at most `capacity()` items in flight: one thread per slot suffices
            limit = self._workers if self._budget is None else 1 + self._borrowed
            if len(self._threads) < limit:
                borrowed = self._budget is not None and len(self._threads) > 0
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self._prefix}_{len(self._threads)}")
                self._threads.append(thread)
                if borrowed:
                    self._owed.add(thread)
                thread.start()
        return future

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            item = self._queue.get()
            if item is None:
                with self._lock:  # the slot this worker borrowed, unless shutdown gave it back
                    if me in self._owed:
                        self._owed.discard(me)
                        self._budget.release()
                return
            with self._lock:
                self._busy.add(me)
            future, fn, args = item
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:  # handed to the waiting side, as the stdlib
                        future.set_exception(exc)
            finally:
                with self._lock:
                    self._busy.discard(me)

    def shutdown(self) -> None:
        """Stop the workers once the queued work is done or cancelled; never waits."""
        with self._lock:
            for _ in self._threads:
                self._queue.put(None)
            if self._budget is not None:  # slots borrowed that no worker was started on
                for _ in range(self._borrowed - max(len(self._threads) - 1, 0)):
                    self._budget.release()
                self._borrowed = 0
                # idle workers have nothing left to run (what is queued was cancelled): their
                # slots go back now, so the next map can borrow them at once
                for thread in [t for t in self._owed if t not in self._busy]:
                    self._owed.discard(thread)
                    self._budget.release()
