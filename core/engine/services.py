"""The services a strategy is handed: metered LM calls, limits, parallel map, spans, progress.

Strategies never import globals for these; the system builds one :class:`Services` per run.
Every LM call goes through :meth:`Services.predict`, which

- checks the limits first (cost, tokens, deadline, interrupt) and raises :class:`LimitReached`;
- retries retryable provider errors with :func:`ponder.support.retry.call_with_retry` (the only
  retry layer: adapters build their LMs with litellm/dspy retries off);
- records an ``LLM`` span on the run's :class:`ponder.support.observability.Tracker`;
- adds the call's tokens and cost (from dspy's usage tracking and the model's prices) to
  :attr:`Services.usage`.

:meth:`Services.map` runs a function over items (chunks) under the concurrency cap, drives the
:class:`ponder.support.progress.ProgressContext`, and returns a
:class:`ponder.support.results.BatchResult`: every item either succeeded or is listed as failed
with its error, and a limit that stops the run leaves the rest listed as not processed, never
silently dropped.

Metering and limits (issue 15): every request that reached the provider is counted from the usage
it reported, even when what follows fails (a reply that does not parse); each call reserves its
worst case before it is sent, so ``max_tokens``/``max_cost`` are overshot by less than one call
(see :meth:`Services._reserve`); a provider that cannot be reached, or a missing API key, fails
every later call at once instead of retrying each one; a reply far beyond ``max_output_tokens`` is
cut (:meth:`Services._cap_reply`).

Reading a reply (fields, usage, size cap, the call record) lives in :mod:`ponder.engine.replies`,
indexing chunks in :mod:`ponder.engine.indexing`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ponder.context.tokens import estimate_tokens
from ponder.engine import replies
from ponder.engine.answer import Usage
from ponder.engine.executor import DaemonPool, ThreadExecutor
from ponder.engine.metering import (
    LimitReached,
    ProviderUnreachable,
    Reservations,
    Spent,
    base_url_of,
    fatal_copy,
    note_attempts,
    sent_tokens,
    tracker_usage,
    unreachable_message,
)
from ponder.engine.ratelimit import take_ticket
from ponder.kernel.kinds import ModelInfo
from ponder.support import gcpause
from ponder.support.observability import SpanType, Tracker, track
from ponder.support.results import BatchResult, ChunkResult, FailedChunk
from ponder.support.retry import RetryPolicy, call_with_retry, reached_provider

log = logging.getLogger("ponder.run")
T = TypeVar("T")


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
        budget: Any = None,
        executor: Any = None,
        rate_limiter: Any = None,
        worker_spec: Any = None,
        prompts: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lm is not None:  # the console's start-up is over: imports done, the LM built
            gcpause.resume()  # (a plan's services have no LM: it is not over yet)
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
        #: a :class:`ponder.engine.budget.ConcurrencyBudget` shared with other runs (an eval's
        #: examples): :meth:`map` then lends the caller's slot and borrows free ones instead of
        #: keeping a pool of its own; None = ``concurrency`` threads of its own
        self.budget = budget
        #: how :meth:`map` runs its items (``[executor]``; :mod:`ponder.engine.executor`)
        self.executor = executor if executor is not None else ThreadExecutor()
        #: the run's one requests/tokens-per-minute limiter (``[adapter] rpm``, ``tpm``), or None
        self.rate_limiter = rate_limiter
        #: how a worker process rebuilds these services (:mod:`ponder.engine.remote`), or None
        self.worker_spec = worker_spec
        #: demos/instructions per signature a prompt optimizer compiled
        #: (:class:`ponder.engine.prompts.PromptState`), laid onto each module as it is built
        self.prompts = prompts
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
        #: the worst case of the metered calls in flight, held against the limits
        self._reservations = Reservations(self._lock)
        #: an error that makes every further call pointless (no server, no key): raised at once
        self._fatal: BaseException | None = None
        #: run-level problems the answer reports (a reply cut to size), one line each
        self.problems: list[str] = []

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
        """Raise LimitReached if any limit is exhausted; called before every LM call.

        After a fatal provider error (see :meth:`_fatal_error`) that error is raised instead.
        """
        if self._fatal is not None:
            raise fatal_copy(self._fatal)
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
                if self.prompts:
                    module = self.prompts.apply(module, signature)
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
                    # @track: each call is a tool span in the run's tree (and its export)
                    tools[name] = track(f"tool {name}", SpanType.TOOL)(tool.make(self.context))
            self._tools = tools
        return self._tools

    # --- retrieval ------------------------------------------------------------------------------
    def index(self, chunks: Sequence[Any]) -> Any:
        """Index ``chunks`` with the run's retriever (None when none is configured), reusing an
        index the run store or a session's kept context holds (:mod:`ponder.engine.indexing`)."""
        from ponder.engine.indexing import index_chunks

        if self.retriever is None:
            return None
        name, settings = self.names.get("retriever", (None, None))
        return index_chunks(self.retriever, chunks, name=name, settings=settings,
                            context=self.context, storage=self.storage, tracker=self.tracker)

    def predict(self, signature: Any, *, role: str, **inputs: Any) -> Any:
        """Run the predictor for ``signature`` on ``inputs`` with retry, limits and metering.

        Every request that reached the provider is charged from the usage it reported, whatever
        happens after: each attempt runs under its own dspy usage tracker, read when the attempt
        ends, so a reply DSPy cannot parse (and DSPy's JSON re-ask after it), an empty reply that
        is retried, or a call abandoned by a limit still counts its requests, tokens and cost.
        Before the first attempt the call's estimated tokens and cost are reserved against
        ``max_tokens``/``max_cost`` (see :meth:`_reserve`).
        """
        import dspy

        self.check_limits()
        module = self.module_for(signature)
        input_tokens_est = sum(estimate_tokens(str(v)) for v in inputs.values())
        # what the model reads: the inputs plus the signature's instructions and field texts
        prompt_tokens = input_tokens_est + replies.instruction_tokens(signature)
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

        reservation = self._reserve(self._sent_tokens(signature, inputs, prompt_tokens))
        retries = 0
        attempts = 0
        spent = Spent()

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
            from dspy.utils.usage_tracker import UsageTracker

            nonlocal attempts
            if self._fatal is not None:  # another call found the provider unusable
                raise fatal_copy(self._fatal)
            # every request (each retry too) waits for the run's rpm/tpm limiter, if any
            ticket = take_ticket(self.rate_limiter, prompt_tokens, self.remaining_s)
            if ticket is None:
                self._stop("timeout")
                raise LimitReached("timeout", "the time limit was reached waiting for the "
                                   "rate limit")
            attempts += 1
            # a fresh usage tracker per attempt: nested tracking would double-count, and it is
            # read even when the attempt raises (a reply that did not parse was still served)
            tracker = UsageTracker()
            # neither dspy's history nor its trace: each keeps every call's inputs (the whole
            # chunk) or messages for the process's life, ~20 MB each at a 20 MB map_reduce;
            # ponder records calls itself (call records, prompts.TraceCollector's callback)
            settings: dict[str, Any] = {"lm": self.lm, "track_usage": True,
                                        "usage_tracker": tracker, "disable_history": True,
                                        "trace": None}
            if self.dspy_adapter is not None:
                settings["adapter"] = self.dspy_adapter
            used: int | None = None
            failed: BaseException | None = None
            try:
                with dspy.context(**settings):
                    prediction = module(**inputs)
            except BaseException as exc:
                failed = exc
                raise
            finally:
                used = self._charge_attempt(tracker, spent)
                ticket.done(used or None)
                if failed is not None and not used and reached_provider(failed):
                    with self._lock:
                        self.usage.add(failed_requests=1)
            if replies.is_empty(prediction):  # a bare LM (no FallbackLM around it) let one through
                from ponder.engine.failures import EmptyReply

                raise EmptyReply(f"the provider sent an empty reply to the {role} call")
            return prediction

        started = time.perf_counter()
        try:
            with self.tracker.span(role, SpanType.LLM, role=role,
                                   prompt_tokens=prompt_tokens) as span:
                try:
                    prediction = call_with_retry(once, policy=self.retry, on_retry=on_retry)
                except BaseException as exc:
                    error = self._fatal_error(exc, attempts, started)
                    note_attempts(error, attempts)
                    self._record(role, inputs, None, started=started, retries=retries,
                                 cached=False, tokens=(spent.input_tokens, spent.output_tokens),
                                 cost=spent.cost, error=error, span=span)
                    if error is not exc:
                        raise error from exc
                    raise
                finally:
                    with self._lock:
                        self.usage.add(retries=retries)
                if spent.requests == 0:
                    # an LM that reports no usage: count the call, estimate its tokens
                    input_tokens, output_tokens = replies.usage_of(prediction, prompt_tokens)
                    cost = replies.serving_model_info(
                        self.lm, replies.serving_adapter(self.lm),
                        self.model_info).cost(input_tokens, output_tokens)
                    with self._lock:
                        self.usage.add(calls=1, input_tokens=input_tokens,
                                       output_tokens=output_tokens, cost_usd=cost)
                    spent.add(1, input_tokens, output_tokens, cost)
                span.attributes.update(input_tokens=spent.input_tokens,
                                       output_tokens=spent.output_tokens, retries=retries,
                                       requests=spent.requests)
        finally:
            self._release(reservation)
        served_by = replies.serving_adapter(self.lm)
        prediction = self._cap_reply(prediction, role)
        self._record(role, inputs, prediction, started=started, retries=retries, cached=False,
                     tokens=(spent.input_tokens, spent.output_tokens), cost=spent.cost,
                     error=None, span=span)
        primary = self.names.get("adapter", (None, None))[0]
        # a reply a fallback adapter served is not the primary's: never cache it under its key
        if key is not None and (served_by is None or served_by == primary):
            self.cache.put(key, {"fields": replies.fields_of(prediction),
                                 "tokens": [spent.input_tokens, spent.output_tokens]})
        return prediction

    # --- metering, reservations, caps (the pieces live in ponder.engine.metering) ------------
    def _charge_attempt(self, tracker: Any, spent: Spent) -> int:
        """Add one attempt's requests (as its own dspy usage tracker saw them) to the run's
        usage; returns the tokens they used."""
        requests, input_tokens, output_tokens = tracker_usage(tracker)
        if not requests:
            return 0
        cost = replies.serving_model_info(self.lm, replies.serving_adapter(self.lm),
                                          self.model_info).cost(input_tokens, output_tokens)
        with self._lock:
            self.usage.add(calls=requests, input_tokens=input_tokens,
                           output_tokens=output_tokens, cost_usd=cost)
        spent.add(requests, input_tokens, output_tokens, cost)
        return input_tokens + output_tokens

    def _sent_tokens(self, signature: Any, inputs: dict[str, Any], fallback: int) -> int:
        if self.max_tokens is None and self.max_cost is None:
            return fallback  # nothing to reserve against: skip formatting the prompt
        return sent_tokens(self.dspy_adapter, signature, inputs, fallback)

    def _reserve(self, prompt_tokens: int) -> tuple[int, float]:
        """Reserve one call's worst case before it is sent: the prompt as sent plus a full
        ``max_output_tokens`` reply, at the model's prices (:class:`Reservations` waits or
        refuses). See docs/configuration.md on how far a limit can be overshot."""
        if self.max_tokens is None and self.max_cost is None:
            return (0, 0.0)
        output = max(int(self.model_info.max_output_tokens or 0), 0)
        return self._reservations.reserve(self, prompt_tokens + output,
                                          self.model_info.cost(prompt_tokens, output))

    def _release(self, reservation: tuple[int, float]) -> None:
        self._reservations.release(reservation)

    def stopping(self) -> bool:
        """Whether the run is ending (interrupted, out of time, or the provider unusable)."""
        remaining = self.remaining_s()
        return (self._interrupted.is_set() or self._fatal is not None
                or (remaining is not None and remaining <= 0))

    def reply_cap_chars(self) -> int:
        """The most characters of one output field kept from a reply (see
        :func:`ponder.engine.replies.reply_cap_chars`)."""
        return replies.reply_cap_chars(self.model_info.max_output_tokens)

    def _cap_reply(self, prediction: Any, role: str) -> Any:
        """``prediction`` with every text field cut to :meth:`reply_cap_chars`, and a problem
        saying so: a reply far beyond ``max_output_tokens`` (a runaway or hostile server) must
        not reach the output, the store or the next prompt unbounded."""
        problem = replies.cut_reply(prediction, role, self.reply_cap_chars(),
                                    self.model_info.max_output_tokens)
        if problem:
            with self._lock:
                if not any(p.startswith(f"the {role} call's reply was cut")
                           for p in self.problems):
                    self.problems.append(problem)
            log.warning("%s", problem)
        return prediction

    def _fatal_error(self, exc: BaseException, attempts: int, started: float) -> BaseException:
        """The error to raise for a call that failed for good; an unusable provider (no server
        at the base URL, no API key) becomes the run's fatal error, which every later call
        raises at once instead of retrying the same failure chunk after chunk."""
        from ponder.engine.failures import AdapterAuthError
        from ponder.support.retry import is_connection_error

        if isinstance(exc, ProviderUnreachable | AdapterAuthError):
            fatal = exc
        elif isinstance(exc, Exception) and is_connection_error(exc):
            url = base_url_of(self.lm, self.names.get("adapter", (None, None))[1])
            fatal = ProviderUnreachable(unreachable_message(
                exc, url, attempts, time.perf_counter() - started))
        else:
            return exc
        with self._lock:
            if self._fatal is None:
                self._fatal = fatal
                log.warning("%s", fatal)
        return fatal

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
            prompt_format=(type(self.dspy_adapter).__name__ if self.dspy_adapter else "default")
            + (self.prompts.cache_tag(signature) if self.prompts else ""),
            signature=signature, inputs=inputs)

    def _record(self, role: str, inputs: dict[str, Any], prediction: Any, *,
                started: float | None, retries: int, cached: bool, tokens: tuple[int, int],
                cost: float, error: BaseException | None, span: Any = None) -> None:
        """Hand one call's record to ``on_call`` (the run store); never fails the run.

        With ``[telemetry] capture_content`` (the tracker's ``capture_content``, set by
        ``ponder.engine.telemetry``) the LM span also keeps the prompt and reply text, which
        the exporters send as GenAI messages (redacted); otherwise spans hold no content."""
        if self.on_call is None:
            return
        adapter = None if cached else replies.serving_adapter(self.lm)
        record = replies.call_record(
            role, inputs, prediction, adapter=adapter or self.names.get("adapter", ("", None))[0],
            model=replies.serving_model_info(self.lm, adapter, self.model_info).model,
            started=started, retries=retries, cached=cached, tokens=tokens, cost=cost, error=error)
        if span is not None and getattr(self.tracker, "capture_content", False):
            from ponder.support.secrets import clean_secrets

            span.attributes["content"] = clean_secrets({"prompt": record["prompt"],
                                                        "reply": record["reply"]})
        try:
            self.on_call(record)
        except Exception as exc:  # the record is secondary to the answer
            if not self._call_record_failed:
                self._call_record_failed = True
                log.warning("could not record LM calls: %s", exc)

    # --- parallel map ---------------------------------------------------------------------------
    def map(self, fn: Callable[[int, T], ChunkResult], items: Sequence[T], *,
            label: str = "chunks") -> BatchResult:
        """``fn(index, item)`` over ``items`` with the concurrency cap; never loses an item.

        The items run on :attr:`executor` (``[executor]``: threads here, or Ray actors, which
        send each item's usage, call records and spans back with its result; see
        :mod:`ponder.engine.executor`); results, failures, progress and the stop reason are
        kept here, the same under every executor.
        """
        from ponder.support.progress import ProgressContext

        results: dict[int, ChunkResult] = {}
        failed: dict[int, FailedChunk] = {}
        with ProgressContext(total=len(items), model=self.model_info.model, description=label,
                             mode=self.progress_mode) as progress:

            def run_one(index: int, item: T) -> ChunkResult:
                with self.tracker.span(f"{label}[{index}]", SpanType.CHUNK, index=index):
                    return fn(index, item)

            # the executor yields each started item as it finishes (completion order)
            outcomes = self.executor.map(run_one, items, services=self,
                                         concurrency=self.concurrency)
            try:
                for outcome in outcomes:
                    index = outcome.index
                    if outcome.status == "cancelled":  # in flight when the run stopped
                        remaining = self.remaining_s()
                        if remaining is not None and remaining <= 0:
                            self._stop("timeout")
                        failed.setdefault(index, FailedChunk(
                            error=f"cancelled: {self.stopped_by or 'stopped'}", index=index,
                            kind=self.stopped_by or "cancelled"))
                    elif outcome.error is None:
                        results[index] = outcome.value
                        progress.update(advance=1, status="processing")
                    elif isinstance(outcome.error, LimitReached):
                        failed[index] = FailedChunk(error=str(outcome.error), index=index,
                                                    kind=outcome.error.limit)
                        progress.fail()
                    elif isinstance(outcome.error, Exception):  # one failure never ends the run
                        failed[index] = FailedChunk.from_exception(index, outcome.error)
                        progress.fail()
                    else:  # KeyboardInterrupt, SystemExit from the item: the run ends
                        raise outcome.error
            except KeyboardInterrupt:
                self.interrupt()
            finally:  # cancels what is queued or in flight (a no-op once it has ended)
                close = getattr(outcomes, "close", None)
                if callable(close):
                    close()
            for index in range(len(items)):  # never started: listed, not dropped
                if index in results:
                    continue
                failed.setdefault(index, FailedChunk(
                    error=f"not processed: {self.stopped_by or 'stopped'}", index=index,
                    kind=self.stopped_by or "cancelled"))
            progress.update(status="done" if not failed else "failed")
        return BatchResult(results=[results[i] for i in sorted(results)],
                           failed=[failed[i] for i in sorted(failed)])


#: the thread pool moved to :mod:`ponder.engine.executor`; the old name still works
_DaemonPool = DaemonPool


#: the reply helpers moved to :mod:`ponder.engine.replies`; the old names still work
_is_empty, _fields_of, _usage_of = replies.is_empty, replies.fields_of, replies.usage_of
_instruction_tokens = replies.instruction_tokens
