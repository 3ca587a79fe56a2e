"""What crosses the process boundary when an executor runs items in other processes (Ray).

A strategy's map function is a closure over the run's :class:`ponder.engine.services.Services`
(``services.predict(...)`` inside it). That object holds the LM client, locks, the run store and
the run's usage, none of which can (or should) be copied into a worker. So:

- **The task** is pickled with :func:`dumps_task`: every ``Services`` (and its ``Tracker``) it
  refers to is replaced by a reference to *the worker's own services for the current item*, and
  a DSPy signature built once by a ponder factory (``ponder.plugins._signatures``) travels as
  "call that factory", so the worker's module cache keys on the same class every time.
- **The worker's services** are built once per worker process from a :class:`WorkerSpec` (the
  config, the adapter chosen at run time, the predictor): the LM client stays warm across items.
  For each item they get a fresh :class:`Services` with the run's remaining :class:`Budget`
  (cost, tokens, seconds, taken when the item was handed out), so a worker never spends more
  than the driver had left: the limits bind across workers within one round of calls.
- **The result** comes back with a :class:`TaskReport`: the item's usage, every call record and
  the largest prompt. :func:`absorb` adds it to the driver's services, which records the calls in
  the run store, so every provider request made in a worker is counted, priced and recorded in
  the driver exactly as a local one is.

Errors cross as themselves when they pickle, else as a :class:`RemoteError` of the same class
name (so a failure's ``kind`` reads the same); a :class:`LimitReached` crosses as its limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import pickle
import sys
import threading
from collections.abc import Callable
from typing import Any

import attrs

from ponder.engine.services import LimitReached, Services
from ponder.support.observability import Tracker

log = logging.getLogger("ponder.run")


@attrs.define
class WorkerSpec:
    """How a worker process rebuilds the run's components (sent once per worker)."""

    #: identifies the spec: a worker keeps one runtime (one warm LM client) per key
    key: str
    #: the run's :class:`ponder.kernel.config.Config`
    config: Any
    #: the adapter chosen at run time (a provider key may have chosen it) and the predictor
    adapter: str
    predictor: str
    #: the driver's plugin set when it was not loaded from the config (tests); None: the worker
    #: loads plugins from ``config.plugins`` like ``ponder ask`` does
    plugins: Any = None
    chunk_tokens: int | None = None
    max_retries: int = 3
    #: parallel calls inside one item (a nested map), on the worker's own threads
    concurrency: int = 4
    #: whether workers use the LM response cache (a file on a disk they share)
    cache: bool = True
    #: the run's rate limiter, one every worker reaches (a Ray actor's client); None: no limit
    rate_limiter: Any = None


@attrs.frozen
class Budget:
    """What the run had left when an item was handed out (None: no such limit)."""

    max_cost: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    #: the run's fatal error (no server, no key), as :func:`_portable_error` sends it: the
    #: worker raises it at once instead of retrying the same failure item after item
    fatal: Any = None


@attrs.define
class TaskReport:
    """What one item cost and did in a worker, shipped back with its result."""

    usage: dict[str, Any] = attrs.field(factory=dict)
    calls: list[dict[str, Any]] = attrs.field(factory=list)
    largest_prompt_tokens: int = 0
    problems: list[str] = attrs.field(factory=list)
    #: the item's finished spans (its map item span, LM calls, tools), as ``Span.to_dict()``
    spans: list[dict[str, Any]] = attrs.field(factory=list)
    #: the fatal error this item found (portable), which the driver makes the run's
    fatal: Any = None
    pid: int = 0


class RemoteError(Exception):
    """An item's error that could not cross the process boundary as itself."""


# --- the driver's side ------------------------------------------------------------------------
def budget_of(services: Services) -> Budget:
    """The run's remaining cost, tokens and time, less what calls in flight have reserved."""
    with services._lock:
        usage = services.usage
        cost = usage.cost_usd + getattr(services, "_reserved_cost", 0.0)
        tokens = usage.input_tokens + usage.output_tokens + getattr(
            services, "_reserved_tokens", 0)
    remaining = services.remaining_s()
    fatal = getattr(services, "_fatal", None)
    return Budget(
        fatal=None if fatal is None else _portable_error(fatal),
        max_cost=None if services.max_cost is None else max(0.0, services.max_cost - cost),
        max_tokens=None if services.max_tokens is None else max(0, services.max_tokens - tokens),
        timeout=None if remaining is None else max(remaining, 1e-3),
    )


def absorb(services: Services, report: TaskReport, parent_id: str | None = None) -> None:
    """Add a worker's report to the driver's services: usage, the call records (to the run
    store, through ``on_call``), the spans (under ``parent_id``, the span the map ran in), the
    largest prompt; then stop the run if a limit is spent."""
    from ponder.support.observability import Span, SpanType

    for data in report.spans:
        span = Span(name=data["name"], type=SpanType(data["type"]), id=data["id"],
                    parent_id=data["parent_id"] or parent_id, start=data["start"],
                    end=data["end"], duration_s=data["duration_s"], status=data["status"],
                    error=data["error"], attributes=dict(data["attributes"]),
                    thread=f"{data['thread']}@pid{report.pid}")
        services.tracker.adopt(span)
    with services._lock:
        services.usage.add(**report.usage)
        services.largest_prompt_tokens = max(services.largest_prompt_tokens,
                                             report.largest_prompt_tokens)
    problems = getattr(services, "problems", None)
    if isinstance(problems, list):
        problems.extend(p for p in report.problems if p not in problems)
    if services.on_call is not None:
        for record in report.calls:
            try:
                services.on_call(record)
            except Exception as exc:  # the record is secondary to the answer
                log.warning("could not record an LM call from a worker: %s", exc)
                break
    if report.fatal is not None and getattr(services, "_fatal", False) is None:
        with services._lock:
            services._fatal = rebuild_error(report.fatal)
        log.warning("%s", services._fatal)
    with contextlib.suppress(Exception):  # marks the run stopped when a limit is spent
        services.check_limits()


def rebuild_error(payload: Any) -> BaseException:
    """The exception a worker sent back (see :func:`_portable_error`)."""
    kind, name, message, exc = payload
    if kind == "limit":
        return LimitReached(name, message)
    if exc is not None:
        return exc
    return type(name, (RemoteError,), {})(message)


# --- pickling the task --------------------------------------------------------------------------
_current = threading.local()


class _TaskServices:
    """Stands in, inside a worker, for the driver's services a task closed over: each attribute
    is the current item's worker services' (set per thread by :meth:`WorkerRuntime.run`)."""

    def __getattr__(self, name: str) -> Any:
        services = getattr(_current, "services", None)
        if services is None:
            raise RuntimeError("ponder's services are only usable inside an item run by an "
                               "executor worker")
        return getattr(services, name)


class _TaskTracker:
    """The current item's tracker, for a task that closed over ``services.tracker``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_TASK_SERVICES.tracker, name)


_TASK_SERVICES = _TaskServices()
_TASK_TRACKER = _TaskTracker()


def _task_services() -> Any:
    return _TASK_SERVICES


def _task_tracker() -> Any:
    return _TASK_TRACKER


def _call_factory(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)()


def _factory_of(cls: type) -> tuple[str, str] | None:
    """``(module, function)`` when ``cls`` is the class a cached factory function returns."""
    owner, sep, _ = cls.__qualname__.partition(".<locals>.")
    module = sys.modules.get(cls.__module__)
    if not sep or module is None or "." in owner:
        return None
    factory = getattr(module, owner, None)
    if not callable(factory) or getattr(factory, "__wrapped__", None) is None:
        return None
    try:
        return (cls.__module__, owner) if factory() is cls else None
    except Exception:
        return None


def dumps_task(task: Callable[..., Any]) -> tuple[bytes, bool]:
    """``task`` pickled (cloudpickle) for a worker, and whether it uses the run's services
    (then the worker needs a :class:`WorkerSpec`); raises if something in it cannot travel."""
    import cloudpickle

    uses_services = False

    class TaskPickler(cloudpickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            nonlocal uses_services
            if isinstance(obj, Services):
                uses_services = True
                return _task_services, ()
            if isinstance(obj, Tracker):
                return _task_tracker, ()
            if isinstance(obj, type):
                factory = _factory_of(obj)
                if factory is not None:
                    return _call_factory, factory
            return super().reducer_override(obj)

    buffer = io.BytesIO()
    TaskPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(task)
    return buffer.getvalue(), uses_services


def task_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# --- the worker's side ----------------------------------------------------------------------------
class WorkerRuntime:
    """One worker process's warm components for one :class:`WorkerSpec`; runs items."""

    def __init__(self, spec: WorkerSpec | None, *, lm: Any = None, model_info: Any = None,
                 predictor: Any = None,
                 dspy_adapter: Any = None, cache: Any = None, plugins: Any = None,
                 names: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.lm = lm
        self.model_info = model_info
        self.predictor = predictor
        self.dspy_adapter = dspy_adapter
        self.cache = cache
        self.plugins = plugins
        #: kind -> (plugin name, settings), as the driver's services have them (cache keys)
        self.names = names or {}
        #: one DSPy module per signature, shared by every item this worker runs
        self.modules: dict[Any, Any] = {}
        self._tasks: dict[str, Callable[..., Any]] = {}
        self._lock = threading.Lock()
        #: [telemetry] capture_content: LM spans made here keep their prompt and reply too
        self.capture_content = False
        if spec is not None:
            from ponder.engine.telemetry import captures_content

            self.capture_content = captures_content(spec.config)

    def _task(self, key: str, data: bytes | Callable[[], bytes]) -> Callable[..., Any]:
        with self._lock:
            task = self._tasks.get(key)
            if task is None:
                if len(self._tasks) > 64:  # one per map; old maps are done
                    self._tasks.clear()
                task = self._tasks[key] = pickle.loads(data() if callable(data) else data)
        return task

    def services(self, budget: Budget, calls: list[dict[str, Any]]) -> Services:
        """Fresh services for one item: its own usage, the run's remaining budget."""
        from ponder.engine.prompts import PromptState
        from ponder.support.retry import RetryPolicy

        services = Services(
            lm=self.lm, model_info=self.model_info, predictor=self.predictor,
            retry=RetryPolicy(max_retries=self.spec.max_retries),
            concurrency=self.spec.concurrency, max_cost=budget.max_cost,
            max_tokens=budget.max_tokens, timeout=budget.timeout, progress_mode="silent",
            chunk_tokens=self.spec.chunk_tokens, plugin_set=self.plugins,
            dspy_adapter=self.dspy_adapter, names=self.names, cache=self.cache,
            on_call=calls.append, rate_limiter=self.spec.rate_limiter,
            prompts=PromptState.from_config(self.spec.config))  # [optimize.prompts]
        services._modules = self.modules  # built once per worker, not once per item
        services.tracker.capture_content = self.capture_content
        if budget.fatal is not None and hasattr(services, "_fatal"):
            services._fatal = rebuild_error(budget.fatal)
        return services

    def run(self, key: str, data: bytes | Callable[[], bytes], index: int, item: Any,
            budget: Budget) -> tuple[str, Any, TaskReport]:
        """Run one item: ``("ok", value, report)`` or ``("error", payload, report)``.

        ``data`` is the pickled task, or a function fetching it (called only the first time a
        worker sees ``key``). Without a spec (a task that uses no services) nothing is metered.
        """
        calls: list[dict[str, Any]] = []
        services = self.services(budget, calls) if self.spec is not None else None
        _current.services = services
        try:
            task = self._task(key, data)
            status, payload = "ok", task(index, item)
        except Exception as exc:  # sent back as the item's failure
            status, payload = "error", _portable_error(exc)
        finally:
            _current.services = None
        if services is None:
            return status, payload, TaskReport(pid=os.getpid())
        report = TaskReport(usage=attrs.asdict(services.usage), calls=calls,
                            largest_prompt_tokens=services.largest_prompt_tokens,
                            problems=list(getattr(services, "problems", [])),
                            spans=[span.to_dict() for span in services.tracker.spans],
                            fatal=_fatal_found(services, budget), pid=os.getpid())
        return status, payload, report


def _fatal_found(services: Services, budget: Budget) -> Any:
    """The fatal error this item's services found (not the one the budget brought)."""
    fatal = getattr(services, "_fatal", None)
    if fatal is None or budget.fatal is not None:
        return None
    return _portable_error(fatal)


def _portable_error(exc: BaseException) -> tuple[str, str, str, BaseException | None]:
    if isinstance(exc, LimitReached):
        return ("limit", exc.limit, str(exc), None)
    try:
        copy = pickle.loads(pickle.dumps(exc))
    except Exception:
        copy = None
    return ("error", type(exc).__name__, str(exc), copy)
