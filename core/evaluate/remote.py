"""An eval example asked in an executor's worker process (a Ray actor): the worker's side.

Under an executor whose workers are other processes (``needs_worker_spec``: ``ray``), the
Evaluator hands each example that needs asking to the executor as one work item: the task is a
:class:`RemoteAsk`, which travels once per eval (cloudpickle, like any task of
:mod:`ponder.engine.remote`) and holds an :class:`ExampleSpec`.

- **Built once per worker.** The first item a worker process runs builds a :class:`WorkerSystem`
  from the spec's config (the eval's resolved config with ``[executor] name = "threads"``: the
  ask's own map calls run on the worker's threads, not on another pool of actors) and keeps it
  for every later example of that spec: plugins, the LM client and the predictor's modules
  stay warm.
- **One budget per worker.** The worker's examples share one
  :class:`ponder.engine.budget.ConcurrencyBudget` of ``slots`` (the items the executor runs at
  once on one worker): each example holds a slot and its inner map borrows free ones, as under
  threads, so a worker never has more than ``slots`` requests in flight.
- **Nothing is recorded in the worker.** The worker's System records each ask into a
  :class:`RunCapture` instead of a store (the driver's SQLite file may be on another machine);
  the captured run (begun, every call, finished with its spans) comes back in the
  :class:`AskReport` with the prediction and usage, and the driver writes it into its run
  store (:func:`replay`). So every provider request an example made is counted in its usage
  and recorded in the driver's store under the example's ``run_id``, as under threads.
- Scoring stays in the driver: a metric (an LLM judge) may hold a client of its own, and the
  stored scores it can reuse are the driver's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import attrs

from ponder.engine.system import System


@attrs.define
class ExampleSpec:
    """What a worker needs to rebuild the eval's System (sent once per eval)."""

    #: one warm System per key in a worker process
    key: str
    #: the eval's resolved config, ``[executor] threads`` and ``[limits] concurrency = slots``
    config: Any
    #: the driver's plugin set when it was not loaded from the config; None: load it there
    plugins: Any = None
    #: examples (and their LM calls) at once in one worker
    slots: int = 1


@attrs.define
class AskReport:
    """One example's ask, from a worker: what :func:`ponder.evaluate.asking.ask_example`
    returned plus the run the worker's System recorded (``run``: begun, calls, result)."""

    prediction: Any
    facts: dict[str, Any]
    unusable: bool
    run: dict[str, Any] | None = None
    pid: int = 0


class WorkerArtifacts:
    """A worker's artifacts (a retriever's index), kept in memory for its later examples."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def put_artifact(self, kind: str, key: str, data: bytes) -> None:
        with self._lock:
            self._data[(kind, key)] = bytes(data)

    def get_artifact(self, kind: str, key: str) -> bytes | None:
        with self._lock:
            return self._data.get((kind, key))

    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        return []  # the history is the driver's (a planner reading it finds none here)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return None


class RunCapture:
    """A run store for one ask that keeps what it is told (begun, calls, finished) for the
    driver, and hands artifacts (a retriever's index) to the worker's :class:`WorkerArtifacts`
    so an index built for one example is reused by the next."""

    location = ":worker:"

    def __init__(self, artifacts: Any) -> None:
        self._artifacts = artifacts
        self.run: dict[str, Any] | None = None
        self.calls: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def begin_run(self, run: dict[str, Any]) -> str:
        import os
        import socket

        # the store stamps the driver's pid (its liveness check); where the ask ran is kept too
        self.run = {**run, "worker": {"pid": os.getpid(), "host": socket.gethostname()}}
        return str(run["id"])

    def record_call(self, run_id: str, call: dict[str, Any]) -> None:
        with self._lock:  # the ask's map records from several threads
            self.calls.append(dict(call))

    def finish_run(self, run_id: str, result: dict[str, Any]) -> None:
        self.result = dict(result)

    def captured(self) -> dict[str, Any] | None:
        if self.run is None:
            return None
        return {"run": self.run, "calls": list(self.calls), "result": self.result}

    def close(self) -> None:
        """Nothing: what was captured goes back with the example."""

    def __getattr__(self, name: str) -> Any:  # artifacts, records, reads
        return getattr(self._artifacts, name)


class WorkerSystem(System):
    """The eval's System in a worker: every ask records into a fresh :class:`RunCapture`,
    remembered per thread so :class:`RemoteAsk` can send it back."""

    def __init__(self, config: Any, *, plugins: Any, budget: Any) -> None:
        super().__init__(config, plugins=plugins, progress="silent", budget=budget)
        self._artifacts = WorkerArtifacts()
        self._local = threading.local()

    def open_storage(self) -> Any:
        capture = RunCapture(self._artifacts)
        self._local.capture = capture
        return capture

    def take_capture(self) -> dict[str, Any] | None:
        capture = getattr(self._local, "capture", None)
        self._local.capture = None
        return None if capture is None else capture.captured()


_WORKERS: dict[str, WorkerSystem] = {}
_WORKERS_LOCK = threading.Lock()


def _worker_system(spec: ExampleSpec) -> WorkerSystem:
    """This process's System for ``spec``, built by the first example that needs it."""
    from ponder.engine.budget import ConcurrencyBudget

    with _WORKERS_LOCK:
        system = _WORKERS.get(spec.key)
        if system is None:
            if len(_WORKERS) > 8:  # one per eval variant; old evals are done
                _WORKERS.clear()
            system = _WORKERS[spec.key] = WorkerSystem(
                spec.config, plugins=spec.plugins, budget=ConcurrencyBudget(spec.slots))
    return system


class RemoteAsk:
    """The task of a remote eval: ``task(index, (question, sources))`` asks in the worker."""

    def __init__(self, spec: ExampleSpec) -> None:
        self.spec = spec

    def __call__(self, index: int, item: tuple[str, Sequence[str]]) -> AskReport:
        import os

        from ponder.evaluate.asking import ask_example

        question, sources = item
        system = _worker_system(self.spec)
        with system.budget.slot():
            try:
                prediction, facts, unusable = ask_example(system, question, sources)
            finally:
                run = system.take_capture()
        return AskReport(prediction=prediction, facts=facts, unusable=unusable, run=run,
                         pid=os.getpid())


def worker_config(config: Any, slots: int) -> Any:
    """``config`` as a worker runs it: the ask's map on the worker's threads, ``slots`` wide."""
    from ponder.kernel.config import Component

    return attrs.evolve(config, executor=Component("threads"),
                        limits=attrs.evolve(config.limits, concurrency=slots))


def replay(storage: Any, run: dict[str, Any] | None) -> None:
    """Write a run a worker captured into the driver's run store (begun, calls, finished)."""
    if storage is None or run is None:
        return
    run_id = storage.begin_run(run["run"])
    for call in run["calls"]:
        storage.record_call(run_id, call)
    if run["result"] is not None:
        storage.finish_run(run_id, run["result"])
