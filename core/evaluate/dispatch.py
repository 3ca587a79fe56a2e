"""How an eval's examples reach the configured executor (``[executor] name``), driver side.

:meth:`ponder.evaluate.runner.Evaluator.iter` hands its examples to the System's executor
(:mod:`ponder.engine.executor`'s contract: ``map(task, items, services=..., concurrency=...)``
yielding one outcome per started item as it finishes), the executor that also runs each ask's
map calls. Two shapes, chosen by the executor, not by its name:

- **In this process** (``threads``): the task is the whole example (read back or asked, scored,
  recorded), exactly as the runner always ran it. Each task holds a slot of the eval's one
  :class:`ponder.engine.budget.ConcurrencyBudget` while it works, and the ask's own map
  borrows free slots of it, so examples x chunks never multiply; the pool itself has
  ``concurrency`` threads and no budget of its own.
- **In worker processes** (an executor with ``needs_worker_spec``: ``ray``): the driver reads
  back what it can (resume) and hands every other example to the executor as one item whose
  task, :class:`ponder.evaluate.remote.RemoteAsk`, asks in a worker on a System built there
  once. What comes back (prediction, usage, the run the worker captured) is recorded into the
  driver's run store and scored here, on a small pool of threads (an LLM judge's calls stay
  parallel), then recorded as the example's eval record.

Either way the executor runs on a feeder thread and results reach the caller through a queue,
so the caller's thread is the one that waits (Ctrl-C lands there) and a caller that stops
reading (:meth:`Evaluator.stop`, closing the generator, Ctrl-C) stops the hand-out through the
driver's services: the executor starts nothing new, what is running finishes and is recorded.
"""

from __future__ import annotations

import concurrent.futures as futures
import logging
import os
import queue
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from ponder.evaluate.dataset import Example
from ponder.evaluate.results import ExampleResult

log = logging.getLogger("ponder.eval")

_END = object()


def driver_services(executor: Any, concurrency: int) -> Any:
    """The services an executor is handed for an eval's examples: no LM and no limits of its
    own (each ask has its own), only the stop flag, the clock and a place to add reports."""
    from ponder.engine.services import Services
    from ponder.kernel.kinds import ModelInfo

    return Services(lm=None, model_info=ModelInfo(model="eval", context_window=1,
                                                  max_output_tokens=1),
                    predictor=None, concurrency=concurrency, progress_mode="silent",
                    executor=executor)


def _plugins_to_send(evaluator: Any) -> Any:
    """The plugin set a worker should use: None (it loads ``[plugins]`` from the config, as
    ``ponder eval`` did) unless the Evaluator was handed one, which is sent when it can travel;
    one that cannot (a lock inside) is not, and the workers load the config's."""
    if not evaluator._plugins_given:
        return None
    import cloudpickle

    try:
        cloudpickle.dumps(evaluator.plugins)
    except Exception as exc:
        log.info("the eval's plugin set cannot be sent to the workers (%s: %s); they load the "
                 "plugins the config names ([plugins])", type(exc).__name__, exc)
        return None
    return evaluator.plugins


def _failed(example: Example, exc: BaseException) -> ExampleResult:
    """An example lost to a bug or a worker is listed with the reason, never dropped."""
    from ponder.support.secrets import redact

    return ExampleResult(id=example.id, example=example,
                         failure=redact(f"{type(exc).__name__}: {exc}"))


class ExampleRun:
    """One pass of :meth:`Evaluator.iter` over ``examples``; :meth:`results` yields them."""

    def __init__(self, evaluator: Any, examples: Sequence[Example]) -> None:
        from ponder.engine.executor import ThreadExecutor

        self.ev = evaluator
        self.examples = list(examples)
        self.executor = evaluator.system.open_executor() or ThreadExecutor()
        self.services = driver_services(self.executor, evaluator.concurrency)
        self.remote = bool(getattr(self.executor, "needs_worker_spec", False))
        self.done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.feeder: threading.Thread | None = None
        evaluator.asked_in = {}

    def stop(self) -> None:
        self.services._stop("stopped")

    def results(self) -> Iterator[ExampleResult]:
        if self.remote:
            self._prepare_remote()
        self.feeder = threading.Thread(target=self._feed, name="ponder-eval-feed", daemon=True)
        self.feeder.start()
        try:
            while True:
                item = self.done.get()
                if item is _END:
                    break
                yield item
        except KeyboardInterrupt:
            self.abandon()
            raise
        finally:  # closed early: hand out nothing more; what runs finishes and is recorded
            self.stop()

    def abandon(self) -> None:
        """Ctrl-C: what is in flight is abandoned too, as an executor does at the deadline
        (the contract's "ends the same way"): the driver's deadline is now, so the executor
        cancels its queue and in-flight items within one wake-up, and the workers can be
        closed without being taken for lost."""
        services = self.services
        services.interrupt()
        with services._lock:
            services._deadline = services._clock()

    def wait(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for the feeder to leave the executor, before the
        executor's workers are closed."""
        if self.feeder is not None:
            self.feeder.join(timeout)

    # --- the feeder thread ----------------------------------------------------------------------
    def _feed(self) -> None:
        try:
            if self.remote:
                self._feed_remote()
            else:
                self._feed_local()
        except BaseException as exc:  # the executor itself failed (a cluster gone)
            from ponder.support.secrets import redact

            # after a stop (Ctrl-C, then the CLI closing the workers) that is expected
            (log.info if self._stopped() else log.warning)(
                "the eval's executor failed; the examples it had not finished are not run: %s",
                redact(f"{type(exc).__name__}: {exc}"))
        finally:
            self.done.put(_END)

    def _asked_in(self, pid: int) -> None:
        with self.lock:
            self.ev.asked_in[pid] = self.ev.asked_in.get(pid, 0) + 1

    def _stopped(self) -> bool:
        return self.ev._stop.is_set() or self.services.stopped_by is not None

    def _feed_local(self) -> None:
        ev = self.ev

        def task(index: int, example: Example) -> ExampleResult | None:
            with ev.budget.slot():
                if self._stopped():  # stopped while this one waited for a slot: not run
                    return None
                try:
                    result = ev.run_example(example)
                except BaseException as exc:  # never lose an example to a bug
                    return _failed(example, exc)
                if not result.resumed:
                    self._asked_in(os.getpid())
                return result

        for outcome in self.executor.map(task, self.examples, services=self.services,
                                         concurrency=ev.concurrency):
            if outcome.status == "cancelled":
                continue  # still running when the hand-out stopped: it records itself
            if outcome.error is not None:
                self.done.put(_failed(self.examples[outcome.index], outcome.error))
            elif outcome.value is not None:
                self.done.put(outcome.value)

    def _prepare_remote(self) -> None:
        """In the caller's thread, before the feeder starts: read back what the store holds
        and size the workers (which starts a local Ray cluster: Ray wants the main thread)."""
        from ponder.engine.executor import DaemonPool
        from ponder.evaluate.remote import ExampleSpec, worker_config

        ev = self.ev
        self.pool = DaemonPool(ev.concurrency, thread_name_prefix="ponder-eval-score")
        self.scoring: list[futures.Future[Any]] = []
        self.todo: list[tuple[Example, str, dict[str, Any] | None]] = []
        for example in self.examples:
            key, record, resumed = ev._lookup(example)
            if resumed:  # read back here: nothing to ask, only (maybe) to score
                self.scoring.append(self.pool.submit(self._score, example, key, record, None))
            else:
                self.todo.append((example, key, record))
        self.spec = None
        if self.todo:
            slots = ev.concurrency
            per_worker = getattr(self.executor, "worker_threads", None)
            if callable(per_worker):
                slots = per_worker(ev.concurrency)
            # one key per Evaluator: a second pass (resume=False, an optimizer's rerun) finds
            # the workers' System warm
            if getattr(ev, "_worker_key", None) is None:
                ev._worker_key = f"{uuid.uuid4().hex[:12]}-{ev.config_digest}"
            self.spec = ExampleSpec(key=f"{ev._worker_key}-{slots}",
                                    config=worker_config(ev.system.config, slots),
                                    plugins=_plugins_to_send(ev),
                                    slots=slots)

    def _feed_remote(self) -> None:
        from ponder.evaluate.remote import RemoteAsk

        ev = self.ev
        try:
            if self.spec is not None and not self._stopped():
                items = [(e.question, list(ev._sources(e))) for e, _, _ in self.todo]
                for outcome in self.executor.map(RemoteAsk(self.spec), items,
                                                 services=self.services,
                                                 concurrency=ev.concurrency):
                    example, key, record = self.todo[outcome.index]
                    if outcome.status == "cancelled":
                        continue  # never finished: not run (a rerun asks it)
                    if outcome.error is not None:
                        self.done.put(_failed(example, outcome.error))
                        continue
                    report = outcome.value
                    self._asked_in(report.pid)
                    if report.unusable:  # stop the hand-out now, before the next item goes
                        ev._give_up(report.facts["failure"])
                    self.scoring.append(self.pool.submit(self._score, example, key, record,
                                                         report))
        finally:
            futures.wait(self.scoring)
            self.pool.shutdown()

    def _score(self, example: Example, key: str, record: dict[str, Any] | None,
               report: Any) -> None:
        """Record a worker's run in the driver's store, then score and record the example."""
        from ponder.evaluate.remote import replay

        ev = self.ev
        try:
            if report is None:
                result = ev._finish(example, key, record, resumed=True)
            else:
                try:
                    replay(ev.system.open_storage(), report.run)
                except Exception as exc:  # recording is secondary to the result
                    log.warning("could not record the run of example %s: %s", example.id, exc)
                result = ev._finish(example, key, record, resumed=False,
                                    prediction=report.prediction, facts=report.facts)
        except BaseException as exc:  # never lose an example to a bug
            result = _failed(example, exc)
        self.done.put(result)
