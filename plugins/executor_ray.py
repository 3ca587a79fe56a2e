"""The ``ray`` executor: a run's parallel items on a pool of Ray actors, on one machine or more.

Each actor is a worker process that builds the run's LM client, predictor and DSPy modules once
(from a :class:`ponder.engine.remote.WorkerSpec`) and keeps them warm for every item it runs;
``threads_per_worker`` items run at once in each (LM calls mostly wait on the network). The
driver hands out at most ``[limits] concurrency`` items at a time, each with the run's remaining
budget, and yields results as they finish, so progress stays live; every result carries the
item's usage and call records (:mod:`ponder.engine.remote`), which the driver counts, prices and
records exactly as its own calls.

**A lost worker** (its process killed, its node gone): the items it held are handed to a fresh
actor, up to ``max_item_retries`` times each, and the answer lists the loss among its problems;
an item lost more often fails with :class:`WorkerLost`. The requests the dead worker made for
them are still counted: every worker journals each request on its node's disk as it leaves
and as its reply comes (:mod:`ponder.plugins._ray_ledger`), and the driver reads a lost item's
events from there: finished requests with their usage, a request whose reply never came as an
attempted call with estimated prompt tokens (docs/executors.md).

**Limits**: a limit spent stops the hand-out at once; items in flight finish (within their
budget) or, at the deadline, are abandoned; what is queued is cancelled (``ray.cancel``).
``[adapter] rpm``/``tpm`` live in one actor (a :class:`ponder.engine.ratelimit.RateLimiter`)
that every worker and the driver ask before each request.

Config::

    [executor]
    name = "ray"
    # address = "auto"            # a running cluster (`ray start --head`), or "ray://host:10001"
    # num_cpus = 4                # without an address: the local cluster's size
    # num_workers = 4             # actors (default: the cluster's CPUs, at most the concurrency)
    # threads_per_worker = 2      # items at once per actor (default: concurrency / workers)

Ray is an optional extra: ``pip install -e '.[ray]'`` (``pip install -e '.[ray]'``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from ponder import hookimpl
from ponder.errors import ConfigError

PONDER_PLUGIN_API = 1

log = logging.getLogger("ponder.run")

INSTALL_HINT = ("the ray executor needs Ray, an optional extra; install it with "
                "pip install -e '.[ray]'")

_optional_positive = attrs.validators.optional(attrs.validators.ge(1))


@attrs.define
class RaySettings:
    #: a running cluster: "auto" (found on this machine) or "ray://host:port"; None starts a
    #: local cluster of ``num_cpus`` (or joins the one this process already started)
    address: str | None = None
    #: the local cluster's CPUs when no address is given (None: Ray counts this machine's)
    num_cpus: int | None = attrs.field(default=None, validator=_optional_positive)
    #: actors in the pool (None: the cluster's CPUs, at most ``[limits] concurrency``)
    num_workers: int | None = attrs.field(default=None, validator=_optional_positive)
    #: items one actor runs at once (None: ``concurrency`` spread over the workers)
    threads_per_worker: int | None = attrs.field(default=None, validator=_optional_positive)
    #: times an item is handed to a new worker after the one running it was lost
    max_item_retries: int = attrs.field(default=3, validator=attrs.validators.ge(0))


class WorkerLost(RuntimeError):
    """An item's worker died more often than ``max_item_retries`` allows."""


def import_ray() -> Any:
    """``ray``, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    return ray


#: the logger and opening words of Ray's notice that a new local cluster uses token auth
_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"
_TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"


class _DropTokenNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TOKEN_NOTICE)


@contextlib.contextmanager
def _quiet_token_auth_notice() -> Iterator[None]:
    """Start a local cluster without Ray's stderr notice about token authentication.

    Ray 2.5x turns token authentication on for every cluster ``ray.init()`` starts, unless
    ``RAY_AUTH_MODE`` says otherwise, and warns that it did on every run. For the private
    cluster ponder starts and stops itself that is the safe choice and nothing to act on, so
    ponder says it once at ``-v`` in its own words; a user who set ``RAY_AUTH_MODE`` gets
    Ray's behaviour unchanged (Ray says nothing then).
    """
    if os.environ.get("RAY_AUTH_MODE") is not None:
        yield
        return
    notice = _DropTokenNotice()
    logger = logging.getLogger(_TOKEN_LOGGER)
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)
    log.info("ray: the local cluster ponder started accepts only clients holding its token "
             "(Ray's token authentication, token in ~/.ray/auth_token); nothing to do, set "
             "RAY_AUTH_MODE to choose otherwise")


# --- the actors ---------------------------------------------------------------------------------
def _build_runtime(spec: Any, reporter: Any = None) -> Any:
    """A worker's warm components for ``spec``, built the way the driver's System built them;
    with a ledger ``reporter``, every LM request and call record is also reported there."""
    from ponder.engine.remote import WorkerRuntime
    from ponder.plugins._ray_ledger import watched_runtime

    if spec is None:
        return WorkerRuntime(None)
    from ponder.engine.system import System

    system = System(spec.config, plugins=spec.plugins, progress="silent")
    lm, model_info, adapter = system._build_lm(spec.adapter)
    predictor = system.build("predictor", spec.predictor)
    names = {"adapter": (spec.adapter, getattr(adapter, "settings", None)),
             "predictor": (spec.predictor, getattr(predictor, "settings", None)),
             "retriever": (spec.config.retriever.name, None)}
    runtime = WorkerRuntime(spec, lm=lm, model_info=model_info, predictor=predictor,
                            dspy_adapter=getattr(adapter, "dspy_adapter", lambda: None)(),
                            cache=system.open_cache(adapter) if spec.cache else None,
                            plugins=system.plugins, names=names)
    return watched_runtime(runtime, reporter)


class PonderWorker:
    """One actor: runtimes by spec key (one warm LM client per run configuration)."""

    def __init__(self, journal: str | None = None) -> None:
        from ponder.plugins._ray_ledger import LedgerReporter

        self._runtimes: dict[str, Any] = {}
        self._lock = threading.Lock()
        #: journals every request and call record (None: not journaled)
        self._reporter = LedgerReporter(journal) if journal is not None else None
        if self._reporter is not None:  # every LM built here: map items' and eval examples'
            from ponder.engine.system import watch_built_lms

            watch_built_lms(self._reporter.watch)

    def pid(self) -> int:
        return os.getpid()

    def where(self) -> tuple[int, str]:
        """``(pid, node id)``: where this worker's journal is."""
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def run(self, spec_key: str, spec_box: list[Any], key: str, task_box: list[Any],
            index: int, item: Any, budget: Any, token: str | None = None) -> Any:
        import ray

        from ponder.plugins._ray_ledger import CURRENT_ITEM

        with self._lock:  # built once, by the first item; the others wait for it
            runtime = self._runtimes.get(spec_key)
            if runtime is None:
                spec = ray.get(spec_box[0]) if spec_box[0] is not None else None
                runtime = self._runtimes[spec_key] = _build_runtime(spec, self._reporter)
        # the item's requests are reported under its token (a nested map's threads copy it)
        reset = CURRENT_ITEM.set(token)
        try:
            return runtime.run(key, lambda: ray.get(task_box[0]), index, item, budget)
        finally:
            CURRENT_ITEM.reset(reset)


class RayRateLimiter:
    """A client of the run's RateLimiter actor, with the RateLimiter's methods; it pickles
    (an actor handle), so the driver and every worker share the one actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def estimate(self, prompt_tokens: int) -> int:
        import ray

        return ray.get(self.actor.estimate.remote(prompt_tokens))

    def try_acquire(self, tokens: int) -> tuple[int | None, float]:
        import ray

        return tuple(ray.get(self.actor.try_acquire.remote(tokens)))  # type: ignore[return-value]

    def acquire(self, tokens: int, *, remaining_s: Callable[[], float | None] = lambda: None,
                sleep: Callable[[float], None] = time.sleep) -> int | None:
        from ponder.engine.ratelimit import wait_for_ticket

        return wait_for_ticket(self.try_acquire, tokens, remaining_s=remaining_s, sleep=sleep)

    def settle(self, ticket: int | None, tokens: int | None) -> None:
        self.actor.settle.remote(ticket, tokens)  # in order per caller; no need to wait

    def learn(self, prompt_estimate: int, actual_tokens: int) -> None:
        self.actor.learn.remote(prompt_estimate, actual_tokens)

    def stats(self) -> dict[str, Any]:
        import ray

        return ray.get(self.actor.stats.remote())


# --- the executor -------------------------------------------------------------------------------
class RayExecutor:
    """Runs items on Ray actors (``[executor] name = "ray"``)."""

    name = "ray"
    #: the run's services travel as a WorkerSpec (``System`` builds one for this executor)
    needs_worker_spec = True

    def __init__(self, settings: RaySettings | None = None) -> None:
        self.settings = settings or RaySettings()
        import_ray()  # a missing extra is a configuration error, reported before any work
        self._workers: list[Any] = []
        self._threads = 0
        self._spec_refs: dict[str, Any] = {}
        self._started_ray = False
        self._warned: set[str] = set()
        #: the workers' request journals (:mod:`ponder.plugins._ray_ledger`), under this id
        import uuid

        self._id = uuid.uuid4().hex[:12]
        self._ledger: Any = None
        #: what happened to workers over this executor's life (the run's record, the tests)
        self.lost_workers = 0
        self.resubmitted = 0
        #: requests of lost items taken from the ledger: ``absorbed`` (their usage reported),
        #: ``in_flight`` (counted with ``estimated_tokens``), ``records`` (finished calls)
        self.lost_requests = {"absorbed": 0, "in_flight": 0, "estimated_tokens": 0,
                              "records": 0}

    # --- cluster and pool ------------------------------------------------------------------------
    def _ray(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "logging_level": logging.WARNING}
            if self.settings.address:
                ray.init(address=self.settings.address, **options)
            else:
                with _quiet_token_auth_notice():
                    ray.init(num_cpus=self.settings.num_cpus, **options)
            self._started_ray = True
        return ray

    def _pool(self, ray: Any, size: int, threads: int) -> list[Any]:
        if self._workers and threads != self._threads:  # a different shape: start afresh
            self._kill_workers(ray)
        self._threads = threads
        while len(self._workers) < size:
            self._workers.append(self._new_worker(ray))
        return self._workers

    def _new_worker(self, ray: Any) -> Any:
        # no CPU reserved (a worker mostly waits on the network); SPREAD puts the actors on
        # different nodes of a cluster instead of packing them onto the head
        from ponder.plugins._ray_ledger import journal_root

        worker = ray.remote(PonderWorker).options(
            max_concurrency=self._threads, num_cpus=0, scheduling_strategy="SPREAD").remote(
            journal_root(self._id))
        self.ledger(ray).where[id(worker)] = worker.where.remote()  # its first task
        return worker

    def ledger(self, ray: Any) -> Any:
        """Where the workers' request journals are (:class:`ponder.plugins._ray_ledger.Ledger`)."""
        if self._ledger is None:
            from ponder.plugins._ray_ledger import Ledger

            self._ledger = Ledger(ray, self._id)
        return self._ledger

    def _replace(self, ray: Any, slot: int, dead: Any) -> None:
        if slot < len(self._workers) and self._workers[slot] is dead:
            self.lost_workers += 1
            with contextlib.suppress(Exception):  # already gone
                ray.kill(dead, no_restart=True)
            if self._ledger is not None:
                self._ledger.where.pop(id(dead), None)
            self._workers[slot] = self._new_worker(ray)

    def worker_pids(self) -> list[int]:
        """The process ids of the pool's actors (a test kills one)."""
        ray = self._ray()
        return list(ray.get([worker.pid.remote() for worker in self._workers]))

    def _spec_ref(self, ray: Any, spec: Any) -> Any:
        ref = self._spec_refs.get(spec.key)
        if ref is None:
            ref = self._spec_refs[spec.key] = ray.put(spec)
        return ref

    def rate_limiter(self, rpm: float | None, tpm: int | None, *,
                     window_s: float = 60.0) -> Any:
        ray = self._ray()
        from ponder.engine.ratelimit import RateLimiter

        # the run's one RateLimiter, as an actor of its own: every worker asks it
        actor = ray.remote(RateLimiter).options(num_cpus=0)
        return RayRateLimiter(actor.remote(rpm, tpm, window_s=window_s))

    # --- map -------------------------------------------------------------------------------------
    def map(self, task: Callable[[int, Any], Any], items: Sequence[Any], *, services: Any,
            concurrency: int) -> Iterator[Any]:
        from ponder.engine.executor import ThreadExecutor
        from ponder.engine.remote import dumps_task, task_key

        if not items:
            return
        spec = getattr(services, "worker_spec", None)
        try:
            data, uses_services = dumps_task(task)
            if uses_services and spec is None:
                raise TypeError("these services were not built by a System, so a worker "
                                "cannot rebuild them")
            ray = self._ray()
            spec_box = [self._spec_ref(ray, spec) if spec is not None else None]
        except Exception as exc:  # what cannot travel runs here, as it always did
            reason = f"{type(exc).__name__}: {exc}"
            if reason not in self._warned:
                self._warned.add(reason)
                log.warning("the ray executor runs this map on threads instead: %s", reason)
            yield from ThreadExecutor().map(task, items, services=services,
                                            concurrency=concurrency)
            return
        concurrency = max(1, concurrency)
        size, threads = self._shape(ray, concurrency)
        self._pool(ray, size, threads)
        run = _Run(self, ray, services, items, concurrency=concurrency, size=size,
                   spec_key=spec.key if spec is not None else "", spec_box=spec_box,
                   key=task_key(data), task_box=[ray.put(data)])
        yield from run.outcomes()

    def _shape(self, ray: Any, concurrency: int) -> tuple[int, int]:
        """(actors, items at once per actor) for a map of ``concurrency``."""
        size = self.settings.num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        size = max(1, min(size, concurrency))
        return size, self.settings.threads_per_worker or -(-concurrency // size)

    def worker_threads(self, concurrency: int) -> int:
        """Items one actor runs at once in a map of ``concurrency`` (an eval's examples share
        that many slots in each worker: ``ponder.evaluate.remote``)."""
        return self._shape(self._ray(), max(1, concurrency))[1]

    def _kill_workers(self, ray: Any) -> None:
        from ponder.plugins._ray_ledger import wait_gone

        pids = self._ledger.local_pids(self._workers) if self._ledger is not None else []
        for worker in self._workers:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(worker, no_restart=True)
        self._workers = []
        wait_gone(pids)  # none of them sends a request after this (see wait_gone)

    def close(self) -> None:
        """Stop the actors (and the local cluster, if this executor started it)."""
        try:
            import ray
        except ImportError:
            return
        if ray.is_initialized():
            self._kill_workers(ray)
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None
            self._spec_refs.clear()
            if self._started_ray:
                ray.shutdown()
                self._started_ray = False


class _Run:
    """One map's hand-out loop: queue, in-flight refs, lost-worker retries, the journals."""

    def __init__(self, executor: RayExecutor, ray: Any, services: Any, items: Sequence[Any], *,
                 concurrency: int, size: int, spec_key: str, spec_box: list[Any], key: str,
                 task_box: list[Any]) -> None:
        import uuid

        self.executor = executor
        self.ray = ray
        self.services = services
        self.items = items
        self.concurrency = concurrency
        self.size = size
        self.spec_key = spec_key
        self.spec_box = spec_box
        self.key = key
        self.task_box = task_box
        self.queue: deque[int] = deque(range(len(items)))
        #: ref -> (index, slot, worker, ledger token)
        self.pending: dict[Any, tuple[int, int, Any, str]] = {}
        self.load = [0] * size
        self.lost: dict[int, int] = {}
        # every hand-out of an item has its own ledger token: map/index/hand-out
        self.map_id = uuid.uuid4().hex[:12]
        self.handouts = itertools.count()
        self.ledger = executor.ledger(ray)
        #: requests of this map's lost items, taken from the ledger (see RayExecutor)
        self.taken = {"absorbed": 0, "in_flight": 0, "estimated_tokens": 0, "records": 0}
        # the span the map runs in (the strategy's): the workers' item spans hang under it
        current = services.tracker.current_span()
        self.parent_id = current.id if current is not None else None

    def _submit(self) -> None:
        from ponder.engine.remote import budget_of

        workers = self.executor._workers
        while (self.queue and len(self.pending) < self.concurrency
               and self.services.stopped_by is None):
            index = self.queue.popleft()
            slot = min(range(self.size), key=self.load.__getitem__)
            worker = workers[slot]
            token = f"{self.map_id}/{index}/{next(self.handouts)}"
            ref = worker.run.remote(self.spec_key, self.spec_box, self.key, self.task_box, index,
                                    self.items[index], budget_of(self.services), token)
            self.pending[ref] = (index, slot, worker, token)
            self.load[slot] += 1

    def outcomes(self) -> Iterator[Any]:
        from ponder.engine.executor import Outcome

        ray = self.ray
        try:
            try:
                while self.queue or self.pending:
                    self._submit()
                    if not self.pending:
                        break
                    remaining = self.services.remaining_s()
                    if remaining is not None and remaining <= 0:
                        break
                    # wake at least twice a second, so Ctrl-C and the deadline are noticed
                    wait = 0.5 if remaining is None else min(0.5, remaining)
                    ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=wait)
                    for ref in ready:
                        outcome = self._collect(ref, retry=True)
                        if outcome is not None:
                            yield outcome
            except KeyboardInterrupt:
                self.services.interrupt()
            # stopped: keep what finished (it was paid for), cancel the rest
            if self.pending:
                ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
                for ref in ready:
                    outcome = self._collect(ref, retry=False)
                    if outcome is not None and outcome.status == "done" and \
                            outcome.error is None:
                        yield outcome
                    elif outcome is not None:
                        yield Outcome(outcome.index, status="cancelled")
                abandoned = list(self.pending.items())
                self.pending.clear()
                for ref, (index, _slot, _worker, _token) in abandoned:
                    self._cancel(ref)
                    yield Outcome(index, status="cancelled")
                # what they sent so far is counted from the journals (their results never come)
                self._take([(token, worker) for _ref, (*_, worker, token) in abandoned],
                           "the run stopped")
        finally:  # the caller stopped reading (or an error): cancel, count what was sent
            left = [(token, worker) for *_, worker, token in self.pending.values()]
            for ref in self.pending:
                self._cancel(ref)
            self.pending.clear()
            with contextlib.suppress(Exception):
                self._take(left, "the run stopped")
            self._end_map()
            self._note_losses()

    def _cancel(self, ref: Any) -> None:
        with contextlib.suppress(Exception):  # finished meanwhile, or its worker is gone
            self.ray.cancel(ref)

    def _collect(self, ref: Any, *, retry: bool) -> Any:
        """The outcome of a finished ref (None: its item was queued again)."""
        from ponder.engine.executor import Outcome
        from ponder.engine.remote import RemoteError, absorb, rebuild_error

        ray = self.ray
        index, slot, worker, token = self.pending.pop(ref)
        self.load[slot] -= 1
        try:
            status, payload, report = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.ObjectLostError) as exc:
            self._take([(token, worker)], "its worker was lost")
            self.executor._replace(ray, slot, worker)
            self.lost[index] = self.lost.get(index, 0) + 1
            if retry and self.lost[index] <= self.executor.settings.max_item_retries \
                    and self.services.stopped_by is None:
                log.warning("a ray worker was lost running item %d; running it again", index)
                self.executor.resubmitted += 1
                self.queue.appendleft(index)
                return None
            return Outcome(index, error=WorkerLost(
                f"the ray worker running item {index} was lost {self.lost[index]} time(s): "
                f"{type(exc).__name__}"))
        except ray.exceptions.TaskCancelledError:
            self._take([(token, worker)], "it was cancelled")
            return Outcome(index, status="cancelled")
        except ray.exceptions.RayTaskError as exc:  # the worker failed outside the item
            self._take([(token, worker)], "its worker failed")
            return Outcome(index, error=RemoteError(str(exc).strip().splitlines()[-1]))
        # the result holds what the journal has; a journal is read only for a lost item
        absorb(self.services, report, self.parent_id)
        if status == "ok":
            return Outcome(index, value=payload)
        return Outcome(index, error=rebuild_error(payload))

    # --- the journals ---------------------------------------------------------------------------
    def _end_map(self) -> None:
        with contextlib.suppress(Exception):
            self.ledger.end_map(self.map_id)

    def _take(self, lost: list[tuple[str, Any]], reason: str) -> None:
        """Count what the items ``lost`` (token, worker) journaled before their result was
        lost (:func:`ponder.plugins._ray_ledger.take_lost`)."""
        from ponder.plugins._ray_ledger import take_lost

        by_node: dict[str | None, list[str]] = {}
        for token, worker in lost:
            by_node.setdefault(self.ledger.node_of(worker), []).append(token)
        for node, tokens in by_node.items():
            counts = take_lost(self.ledger, self.map_id, tokens, node, self.services,
                               self.parent_id, reason=reason)
            for name, value in counts.items():
                self.taken[name] += value
                self.executor.lost_requests[name] += value

    def _note_losses(self) -> None:
        taken = self.taken
        if taken["in_flight"]:
            note = (f"{taken['in_flight']} request(s) were in flight on ray workers that were "
                    f"lost or stopped: counted as attempted calls with "
                    f"{taken['estimated_tokens']} estimated prompt tokens and no reply tokens "
                    "(see docs/executors.md)")
            problems = getattr(self.services, "problems", None)
            if isinstance(problems, list):
                problems.append(note)
        if not self.lost:
            return
        problems = getattr(self.services, "problems", None)
        note = (f"{sum(self.lost.values())} ray worker loss(es) hit {len(self.lost)} item(s); "
                "they were run again on a new worker (the requests the lost workers had made "
                f"for them are counted from their journals: {taken['absorbed']} with their "
                f"reported usage, {taken['in_flight']} in flight with an estimate; see "
                "docs/executors.md)")
        if isinstance(problems, list):
            problems.append(note)
        log.warning(note)


@hookimpl
def ponder_register_executors(register):
    register("ray", RayExecutor, settings=RaySettings)
