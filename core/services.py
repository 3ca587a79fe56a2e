"""The services a strategy is handed: metered LM calls, limits, parallel map, spans, progress.

Strategies never import globals for these; the system builds one :class:`Services` per run.
Every LM call goes through :meth:`Services.predict`, which

- checks the limits first (cost, tokens, deadline, interrupt) and raises :class:`LimitReached`;
- retries retryable provider errors with :func:`ponder.retry.call_with_retry` (the only retry
  layer: adapters build their LMs with litellm/dspy retries off);
- records an ``LLM`` span on the run's :class:`ponder.observability.Tracker`;
- adds the call's tokens and cost (from dspy's usage tracking and the model's prices) to
  :attr:`Services.usage`.

:meth:`Services.map` runs a function over items (chunks) under the concurrency cap, drives the
:class:`ponder.progress.ProgressContext`, and returns a :class:`ponder.results.BatchResult`:
every item either succeeded or is listed as failed with its error, and a limit that stops the
run leaves the rest listed as not processed, never silently dropped.
"""

from __future__ import annotations

import concurrent.futures as futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ponder.answer import Usage
from ponder.chunking import estimate_tokens
from ponder.errors import PonderError
from ponder.kinds import ModelInfo
from ponder.observability import SpanType, Tracker, in_current_context
from ponder.results import BatchResult, ChunkResult, FailedChunk
from ponder.retry import RetryPolicy, call_with_retry

log = logging.getLogger("ponder.run")
T = TypeVar("T")


class LimitReached(PonderError):
    """A run limit (cost, tokens, time, interrupt) stopped further LM calls."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


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
        self.usage = Usage()
        self.stopped_by: str | None = None
        self.largest_prompt_tokens = 0
        self._clock = clock
        self._deadline = clock() + timeout if timeout else None
        self._lock = threading.Lock()
        self._interrupted = threading.Event()
        self._modules: dict[Any, Any] = {}

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
                module = self._modules[signature] = self.predictor.build(signature)
        return module

    def predict(self, signature: Any, *, role: str, **inputs: Any) -> Any:
        """Run the predictor for ``signature`` on ``inputs`` with retry, limits and metering."""
        import dspy

        self.check_limits()
        module = self.module_for(signature)
        prompt_tokens = sum(estimate_tokens(str(v)) for v in inputs.values())
        with self._lock:
            self.largest_prompt_tokens = max(self.largest_prompt_tokens, prompt_tokens)
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
                return module(**inputs)

        with self.tracker.span(role, SpanType.LLM, role=role,
                               prompt_tokens=prompt_tokens) as span:
            try:
                prediction = call_with_retry(once, policy=self.retry, on_retry=on_retry)
            finally:
                with self._lock:
                    self.usage.add(retries=retries)
            input_tokens, output_tokens = _usage_of(prediction, prompt_tokens)
            cost = self.model_info.cost(input_tokens, output_tokens)
            with self._lock:
                self.usage.add(calls=1, input_tokens=input_tokens,
                               output_tokens=output_tokens, cost_usd=cost)
            span.attributes.update(input_tokens=input_tokens, output_tokens=output_tokens,
                                   retries=retries)
        return prediction

    # --- parallel map ---------------------------------------------------------------------------
    def map(self, fn: Callable[[int, T], ChunkResult], items: Sequence[T], *,
            label: str = "chunks") -> BatchResult:
        """``fn(index, item)`` over ``items`` with the concurrency cap; never loses an item."""
        from ponder.progress import ProgressContext

        results: dict[int, ChunkResult] = {}
        failed: dict[int, FailedChunk] = {}
        with ProgressContext(total=len(items), model=self.model_info.model, description=label,
                             mode=self.progress_mode) as progress:

            def run_one(index: int, item: T) -> ChunkResult:
                with self.tracker.span(f"{label}[{index}]", SpanType.CHUNK, index=index):
                    return fn(index, item)

            pool = futures.ThreadPoolExecutor(max_workers=self.concurrency,
                                              thread_name_prefix="ponder")
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
                    future.cancel()
                    failed.setdefault(index, FailedChunk(
                        error=f"cancelled: {self.stopped_by or 'stopped'}", index=index,
                        kind=self.stopped_by or "cancelled"))
                # never wait for abandoned in-flight calls: the deadline is hard
                pool.shutdown(wait=False, cancel_futures=True)
            for index in range(next_index, len(items)):
                failed.setdefault(index, FailedChunk(
                    error=f"not processed: {self.stopped_by or 'stopped'}", index=index,
                    kind=self.stopped_by or "cancelled"))
            progress.update(status="done" if not failed else "failed")
        return BatchResult(results=[results[i] for i in sorted(results)],
                           failed=[failed[i] for i in sorted(failed)])


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
