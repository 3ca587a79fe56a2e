"""The services a strategy is handed: metered LM calls, limits, parallel map, spans, progress.

Strategies never import globals for these; the system builds one :class:`Services` per run.
Every LM call goes through :meth:`Services.predict`, which

- checks the limits first (cost, tokens, deadline, interrupt) and raises :class:`LimitReached`;
- retries retryable provider errors with :func:`ponder.support.retry.call_with_retry` (the only retry
  layer: adapters build their LMs with litellm/dspy retries off);
- records an ``LLM`` span on the run's :class:`ponder.support.observability.Tracker`;
- adds the call's tokens and cost (from dspy's usage tracking and the model's prices) to
  :attr:`Services.usage`.

:meth:`Services.map` runs a function over items (chunks) under the concurrency cap, drives the
:class:`ponder.support.progress.ProgressContext`, and returns a :class:`ponder.support.results.BatchResult`:
every item either succeeded or is listed as failed with its error, and a limit that stops the
run leaves the rest listed as not processed, never silently dropped.
"""

from __future__ import annotations

import concurrent.futures as futures
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ponder.engine.answer import Usage
from ponder.context.chunking import estimate_tokens
from ponder.errors import PonderError
from ponder.kernel.kinds import ModelInfo
from ponder.support.observability import SpanType, Tracker, in_current_context
from ponder.support.results import BatchResult, ChunkResult, FailedChunk
from ponder.support.retry import RetryPolicy, call_with_retry

log = logging.getLogger("ponder.run")
T = TypeVar("T")


class LimitReached(PonderError):
    """A run limit (cost, tokens, time, interrupt) stopped further LM calls."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


def _is_empty(prediction: Any) -> bool:
    """A prediction without fields: what DSPy makes of a reply with no choices. Counted as a
    success it would be cached, and fail later, unretried, when a strategy reads a field."""
    keys = getattr(prediction, "keys", None)
    return callable(keys) and not list(keys())


class Services:
    def __init__(
        self,
        *,
        lm: Any,
        model_info: ModelInfo,
        predictor: Any,
        retriever: Any = None,
        tracker: Tracker | None = None,
        retry: RetryPolicy | None = None,
        concurrency: int = 4,
        max_cost: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        progress_mode: str = "auto",
        chunk_tokens: int | None = None,
        plugin_set: Any = None,
        dspy_adapter: Any = None,
        context: Any = None,
        names: dict[str, tuple[str | None, Any]] | None = None,
        cache: Any = None,
        on_call: Callable[[dict[str, Any]], None] | None = None,
        storage: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lm = lm
        self.model_info = model_info
        self.predictor = predictor
        self.retriever = retriever
        self.tracker = tracker or Tracker()
        self.retry = retry or RetryPolicy()
        self.concurrency = max(1, concurrency)
        self.max_cost = max_cost
        self.max_tokens = max_tokens
        self.progress_mode = progress_mode
        self.chunk_tokens = chunk_tokens
        self.plugin_set = plugin_set
        #: the DSPy adapter (prompt format) to use; None = DSPy's default ChatAdapter
        self.dspy_adapter = dspy_adapter
        #: the run's loaded sources (tools and retrieval read it)
        self.context = context
        #: kind -> (plugin name, settings) of the run's components: call records and cache keys
        self.names = names or {}
        #: the LM response cache (:class:`ponder.engine.cache.ResponseCache`), or None when off
        self.cache = cache
        #: called with a record of every LM call made through :meth:`predict` (the run store)
        self.on_call = on_call
        #: the run store, for artifacts such as a retriever's index; None in bare services
        self.storage = storage
        self.usage = Usage()
        self.stopped_by: str | None = None
        self.largest_prompt_tokens = 0
        self._clock = clock
        self._deadline = clock() + timeout if timeout else None
        self._lock = threading.Lock()
        self._interrupted = threading.Event()
        self._modules: dict[Any, Any] = {}
        self._tools: dict[str, Callable[..., Any]] | None = None
        self._call_record_failed = False

    # --- limits --------------------------------------------------------------------------------
    def remaining_s(self) -> float | None:
        return None if self._deadline is None else self._deadline - self._clock()

    def interrupt(self) -> None:
        """Stop the run at the next check (Ctrl-C)."""
        self._interrupted.set()
        self._stop("interrupted")

    def _stop(self, limit: str) -> None:
        with self._lock:
            if self.stopped_by is None:
                self.stopped_by = limit

    def check_limits(self) -> None:
        """Raise LimitReached if any limit is exhausted; called before every LM call."""
        if self._interrupted.is_set():
            raise LimitReached("interrupted", "the run was interrupted")
        remaining = self.remaining_s()
        if remaining is not None and remaining <= 0:
            self._stop("timeout")
            raise LimitReached("timeout", "the time limit (--timeout) was reached")
        if self.max_cost is not None and self.usage.cost_usd >= self.max_cost:
            self._stop("max_cost")
            raise LimitReached("max_cost", f"the cost limit of ${self.max_cost:g} was reached")
        used = self.usage.input_tokens + self.usage.output_tokens
        if self.max_tokens is not None and used >= self.max_tokens:
            self._stop("max_tokens")
            raise LimitReached("max_tokens", f"the token limit of {self.max_tokens} was reached")

    def charge(self, *, calls: int = 0, input_tokens: int = 0, output_tokens: int = 0) -> None:
        """Count LM calls made outside :meth:`predict` (e.g. dspy.RLM's own root calls)."""
        cost = self.model_info.cost(input_tokens, output_tokens)
        with self._lock:
            self.usage.add(calls=calls, input_tokens=input_tokens, output_tokens=output_tokens,
                           cost_usd=cost)

    # --- LM calls ------------------------------------------------------------------------------
    def module_for(self, signature: Any) -> Any:
        """The predictor's DSPy module for ``signature``, built once per run."""
        with self._lock:
            module = self._modules.get(signature)
            if module is None:
                if getattr(self.predictor, "needs_tools", False):
                    module = self.predictor.build(signature, tools=self._bound_tools())
                else:
                    module = self.predictor.build(signature)
                self._modules[signature] = module
        return module

    @property
    def tools(self) -> dict[str, Callable[..., Any]]:
        """Every registered tool bound to the run's context, by name (for agent predictors)."""
        with self._lock:
            return dict(self._bound_tools())

    def _bound_tools(self) -> dict[str, Callable[..., Any]]:
        if self._tools is None:
            tools: dict[str, Callable[..., Any]] = {}
            if self.plugin_set is not None:
                for name in self.plugin_set.registry("tool").names():
                    entry = self.plugin_set.get("tool", name)
                    tool = entry.factory(entry.settings()) if entry.settings else entry.factory()
                    tools[name] = tool.make(self.context)
            self._tools = tools
        return self._tools

    # --- retrieval ------------------------------------------------------------------------------
    def index(self, chunks: Sequence[Any]) -> Any:
        """Index ``chunks`` with the run's retriever (None when none is configured).

        A retriever that can ``dump``/``load`` its index has it saved in the run store, keyed by
        the retriever, its settings and the chunks' text, so the next run over the same sources
        loads it instead of indexing again.
        """
        import hashlib
        import json

        retriever = self.retriever
        if retriever is None:
            return None
        name, settings = self.names.get("retriever", (None, None))
        with self.tracker.span("index", SpanType.RETRIEVE, retriever=name,
                               chunks=len(chunks)) as span:
            key = None
            if (self.storage is not None and callable(getattr(retriever, "dump", None))
                    and callable(getattr(retriever, "load", None))):
                from ponder.engine.cache import settings_identity

                digest = hashlib.sha256()
                identity = [name, settings_identity(settings)]
                digest.update(json.dumps(identity, default=repr).encode())
                for chunk in chunks:
                    text = chunk.render() if hasattr(chunk, "render") else str(chunk)
                    digest.update(f"{len(text)}:".encode())
                    digest.update(text.encode("utf-8", "surrogatepass"))
                key = digest.hexdigest()
                data = self.storage.get_artifact("retriever-index", key)
                if data is not None:
                    try:
                        retriever.load(data, chunks)
                        span.attributes["loaded_from_store"] = True
                        return retriever
                    except Exception as exc:  # a stale or damaged index is rebuilt
                        log.warning("rebuilding the %s index: the stored one failed to load "
                                    "(%s)", name, exc)
            retriever.index(chunks)
            span.attributes["loaded_from_store"] = False
            if key is not None:
                try:
                    self.storage.put_artifact("retriever-index", key, retriever.dump())
                except Exception as exc:  # saving is an optimisation, never a failure
                    log.warning("could not save the %s index: %s", name, exc)
        return retriever

    def predict(self, signature: Any, *, role: str, **inputs: Any) -> Any:
        """Run the predictor for ``signature`` on ``inputs`` with retry, limits and metering."""
        import dspy

        self.check_limits()
        module = self.module_for(signature)
        input_tokens_est = sum(estimate_tokens(str(v)) for v in inputs.values())
        # what the model reads: the inputs plus the signature's instructions and field texts
        prompt_tokens = input_tokens_est + _instruction_tokens(signature)
        with self._lock:
            self.largest_prompt_tokens = max(self.largest_prompt_tokens, prompt_tokens)

        key = self._cache_key(signature, inputs)
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                prediction = dspy.Prediction(**hit["fields"])
                with self._lock:
                    self.usage.add(cached_calls=1)
                self._record(role, inputs, prediction, started=None, retries=0, cached=True,
                             tokens=(0, 0), cost=0.0, error=None)
                return prediction

        retries = 0

        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            nonlocal retries
            retries += 1
            remaining = self.remaining_s()
            if remaining is not None and delay >= remaining:
                self._stop("timeout")
                raise LimitReached("timeout", "the time limit was reached while backing off")
            self.check_limits()
            log.info("retrying %s call in %.1fs after %s", role, delay, type(exc).__name__)

        def once() -> Any:
            # a fresh usage tracker per call: nested tracking would double-count
            settings: dict[str, Any] = {"lm": self.lm, "track_usage": True,
                                        "usage_tracker": None}
            if self.dspy_adapter is not None:
                settings["adapter"] = self.dspy_adapter
            with dspy.context(**settings):
                prediction = module(**inputs)
            if _is_empty(prediction):  # a bare LM (no FallbackLM around it) let one through
                from ponder.engine.fallback import EmptyReply

                raise EmptyReply(f"the provider sent an empty reply to the {role} call")
            return prediction

        started = time.perf_counter()
        with self.tracker.span(role, SpanType.LLM, role=role,
                               prompt_tokens=prompt_tokens) as span:
            try:
                prediction = call_with_retry(once, policy=self.retry, on_retry=on_retry)
            except BaseException as exc:
                # a call that failed after the model answered (a reply that did not validate)
                # still cost tokens: charge what the error carries
                tokens, cost = (0, 0), 0.0
                if callable(getattr(exc, "get_lm_usage", None)):
                    tokens = _usage_of(exc, 0)
                    cost = self._model_info_of(self._served_by()).cost(*tokens)
                    with self._lock:
                        self.usage.add(input_tokens=tokens[0], output_tokens=tokens[1],
                                       cost_usd=cost)
                self._record(role, inputs, None, started=started, retries=retries,
                             cached=False, tokens=tokens, cost=cost, error=exc)
                raise
            finally:
                with self._lock:
                    self.usage.add(retries=retries)
            input_tokens, output_tokens = _usage_of(prediction, prompt_tokens)
            served_by = self._served_by()
            cost = self._model_info_of(served_by).cost(input_tokens, output_tokens)
            with self._lock:
                self.usage.add(calls=1, input_tokens=input_tokens,
                               output_tokens=output_tokens, cost_usd=cost)
            span.attributes.update(input_tokens=input_tokens, output_tokens=output_tokens,
                                   retries=retries)
        self._record(role, inputs, prediction, started=started, retries=retries, cached=False,
                     tokens=(input_tokens, output_tokens), cost=cost, error=None)
        primary = self.names.get("adapter", (None, None))[0]
        # a reply a fallback adapter served is not the primary's: never cache it under its key
        if key is not None and (served_by is None or served_by == primary):
            self.cache.put(key, {"fields": _fields_of(prediction),
                                 "tokens": [input_tokens, output_tokens]})
        return prediction

    def _served_by(self) -> str | None:
        """The adapter that served this thread's latest call (a fallback chain says which)."""
        served_by = getattr(self.lm, "served_by", None)
        return served_by() if callable(served_by) else None

    def _model_info_of(self, adapter: str | None) -> ModelInfo:
        """The serving adapter's own model and prices (the chain's plan uses the primary's)."""
        model_info_of = getattr(self.lm, "model_info_of", None)
        if adapter is None or not callable(model_info_of):
            return self.model_info
        try:
            return model_info_of(adapter)
        except Exception:  # an LM without per-adapter info
            return self.model_info

    def _cache_key(self, signature: Any, inputs: dict[str, Any]) -> str | None:
        if self.cache is None or getattr(self.predictor, "needs_tools", False):
            return None
        from ponder.engine.cache import cache_key

        adapter, adapter_settings = self.names.get("adapter", ("", None))
        predictor, predictor_settings = self.names.get("predictor", ("", None))
        return cache_key(
            adapter=adapter or "", adapter_settings=adapter_settings,
            model=self.model_info.model, predictor=predictor or "",
            predictor_settings=predictor_settings,
            prompt_format=type(self.dspy_adapter).__name__ if self.dspy_adapter else "default",
            signature=signature, inputs=inputs)

    def _record(self, role: str, inputs: dict[str, Any], prediction: Any, *,
                started: float | None, retries: int, cached: bool, tokens: tuple[int, int],
                cost: float, error: BaseException | None) -> None:
        """Hand one call's record to ``on_call`` (the run store); never fails the run."""
        if self.on_call is None:
            return
        adapter = None if cached else self._served_by()
        fields = _fields_of(prediction) if prediction is not None else {}
        prompt = "\n\n".join(f"{k}: {v}" for k, v in inputs.items())
        reply = "\n\n".join(f"{k}: {v}" for k, v in fields.items())
        record = {
            "role": role,
            "adapter": adapter or self.names.get("adapter", ("", None))[0],
            "model": self._model_info_of(adapter).model,
            "prompt_chars": len(prompt),
            "reply_chars": len(reply),
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            "latency_s": 0.0 if started is None else round(time.perf_counter() - started, 6),
            "cost_usd": cost,
            "retries": retries,
            "cached": cached,
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "prompt": prompt,
            "reply": reply,
        }
        try:
            self.on_call(record)
        except Exception as exc:  # the record is secondary to the answer
            if not self._call_record_failed:
                self._call_record_failed = True
                log.warning("could not record LM calls: %s", exc)

    # --- parallel map ---------------------------------------------------------------------------
    def map(self, fn: Callable[[int, T], ChunkResult], items: Sequence[T], *,
            label: str = "chunks") -> BatchResult:
        """``fn(index, item)`` over ``items`` with the concurrency cap; never loses an item."""
        from ponder.support.progress import ProgressContext

        results: dict[int, ChunkResult] = {}
        failed: dict[int, FailedChunk] = {}
        with ProgressContext(total=len(items), model=self.model_info.model, description=label,
                             mode=self.progress_mode) as progress:

            def run_one(index: int, item: T) -> ChunkResult:
                with self.tracker.span(f"{label}[{index}]", SpanType.CHUNK, index=index):
                    return fn(index, item)

            pool = _DaemonPool(self.concurrency, thread_name_prefix="ponder")
            pending: dict[futures.Future[ChunkResult], int] = {}
            next_index = 0
            try:
                while next_index < len(items) or pending:
                    # keep at most `concurrency` in flight, so a limit stops new submissions
                    while (next_index < len(items) and len(pending) < self.concurrency
                           and self.stopped_by is None):
                        future = pool.submit(in_current_context(run_one), next_index,
                                             items[next_index])
                        pending[future] = next_index
                        next_index += 1
                    if not pending:
                        break
                    remaining = self.remaining_s()
                    done, _ = futures.wait(
                        pending, timeout=None if remaining is None else max(remaining, 0),
                        return_when=futures.FIRST_COMPLETED)
                    if not done:  # the deadline passed with calls in flight: cancel them
                        self._stop("timeout")
                        break
                    for future in done:
                        index = pending.pop(future)
                        try:
                            results[index] = future.result()
                            progress.update(advance=1, status="processing")
                        except LimitReached as exc:
                            failed[index] = FailedChunk(error=str(exc), index=index,
                                                        kind=exc.limit)
                            progress.fail()
                        except Exception as exc:  # one chunk's failure never ends the run
                            failed[index] = FailedChunk.from_exception(index, exc)
                            progress.fail()
            except KeyboardInterrupt:
                self.interrupt()
            finally:
                for future, index in pending.items():
                    # a call that finished as the run stopped was paid for: keep its result
                    if future.done() and not future.cancelled() and future.exception() is None:
                        results[index] = future.result()
                        progress.update(advance=1, status="processing")
                        continue
                    future.cancel()
                    failed.setdefault(index, FailedChunk(
                        error=f"cancelled: {self.stopped_by or 'stopped'}", index=index,
                        kind=self.stopped_by or "cancelled"))
                # never wait for abandoned in-flight calls: the deadline is hard (and the
                # workers are daemon threads, so they do not hold up the process's exit either)
                pool.shutdown()
            for index in range(next_index, len(items)):
                failed.setdefault(index, FailedChunk(
                    error=f"not processed: {self.stopped_by or 'stopped'}", index=index,
                    kind=self.stopped_by or "cancelled"))
            progress.update(status="done" if not failed else "failed")
        return BatchResult(results=[results[i] for i in sorted(results)],
                           failed=[failed[i] for i in sorted(failed)])


class _DaemonPool:
    """A minimal thread pool whose workers are daemon threads.

    ``concurrent.futures.ThreadPoolExecutor`` joins its workers at interpreter exit, so a call
    abandoned at the deadline (or on Ctrl-C) would keep ``ponder ask`` alive until the provider
    answered, up to the HTTP timeout. Here an abandoned call is left to die with the process.
    """

    def __init__(self, workers: int, *, thread_name_prefix: str) -> None:
        import queue

        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._workers = workers
        self._prefix = thread_name_prefix
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], *args: Any) -> futures.Future[T]:
        future: futures.Future[T] = futures.Future()
        with self._lock:
            self._queue.put((future, fn, args))
            # callers keep at most `workers` items in flight, so one thread per slot suffices
            if len(self._threads) < self._workers:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self._prefix}_{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed to the waiting side, as the stdlib does
                    future.set_exception(exc)

    def shutdown(self) -> None:
        """Stop the workers once the queued work is done or cancelled; never waits."""
        with self._lock:
            for _ in self._threads:
                self._queue.put(None)


@functools.lru_cache(maxsize=256)  # signatures are classes, built once per run: measure once
def _instruction_tokens(signature: Any) -> int:
    """Estimated tokens of a signature's instructions and field descriptions."""
    from ponder.engine.cache import signature_text

    try:
        return estimate_tokens(signature_text(signature))
    except Exception:  # a signature-like object without DSPy's attributes
        return 0


def _fields_of(prediction: Any) -> dict[str, Any]:
    """A prediction's output fields as a plain dict."""
    try:
        return dict(prediction.items()) if hasattr(prediction, "items") else dict(prediction)
    except (TypeError, ValueError):
        return {}


def _usage_of(prediction: Any, estimate: int) -> tuple[int, int]:
    """Input/output tokens of one prediction from dspy's usage tracking (estimate if absent)."""
    usage: dict[str, Any] = {}
    getter = getattr(prediction, "get_lm_usage", None)
    if callable(getter):
        usage = getter() or {}
    input_tokens = output_tokens = 0
    for per_model in usage.values():
        input_tokens += int(per_model.get("prompt_tokens") or 0)
        output_tokens += int(per_model.get("completion_tokens") or 0)
    if input_tokens == 0 and output_tokens == 0:
        input_tokens = estimate
        output_tokens = sum(estimate_tokens(str(v)) for v in dict(prediction).values()) \
            if hasattr(prediction, "keys") else 0
    return input_tokens, output_tokens
