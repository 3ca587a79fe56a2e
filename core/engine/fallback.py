"""Adapter fallback chains: a circuit breaker per adapter, and clear auth errors.

Config (see docs/configuration.md, "Fallbacks and circuit breakers")::

    [adapter]
    name = "openai_compatible"
    base_url = "http://gateway.internal/v1"
    fallbacks = ["litellm"]            # tried in order when the adapter before them fails

    [adapters.litellm]                 # a fallback's settings: that plugin's own keys
    model = "openai/gpt-4o-mini"
    api_key = "$env:BACKUP_KEY"

    [limits]
    breaker_failures = 3               # consecutive failures that open an adapter's circuit
    breaker_cooldown = 30.0            # seconds before one trial call is let through again

:class:`FallbackLM` is the ``dspy.BaseLM`` the run uses. For each call it tries the adapters in
order, skipping those whose :class:`CircuitBreaker` is open:

- a **provider outage** (a retryable error per :func:`ponder.support.retry.is_retryable`: 429, 5xx,
  time-outs, connection errors; or a malformed or empty reply) counts against that adapter's
  breaker and moves on to the next adapter;
- an **auth error** (HTTP 401/403) opens that adapter's breaker for good (a key does not heal)
  and moves on;
- any other error (a 400 bad request, a context window exceeded, a local bug) is the caller's
  and is raised at once: another provider would refuse the same request.

When every adapter failed or is open, :class:`AllAdaptersFailed` lists each adapter and why. It
is retryable (``retryable = True``, which :func:`ponder.support.retry.is_retryable` reads first)
when at least one adapter failed transiently or only waits for its cooldown, so ponder's single
retry layer (``call_with_retry`` in :meth:`ponder.engine.services.Services.predict`, around the
whole chain; litellm's retries are off) backs off and tries the chain again. An auth error with no
adapter left raises :class:`AdapterAuthError` at once: it names the adapter and the variable its
key came from, never the key (messages go through :func:`ponder.support.secrets.redact`).

A chain of one adapter (no ``fallbacks``) is transparent: no breaker (there is nothing to fall back
to, so failing fast would only refuse calls the retry layer could still make), the adapter's own
errors are re-raised unchanged, except an auth error, which becomes :class:`AdapterAuthError`,
and an empty reply, which becomes the retryable :class:`EmptyReply`.

Why ``FallbackLM`` overrides ``__call__``/``acall`` instead of implementing an engine: it delegates
each call, exactly as DSPy's adapter made it, to the chosen adapter's own LM. That LM keeps its
engine, its usage accounting (under its own model name, once) and its history; an engine here
would convert the call to a ``lm15.Request`` and back, count usage twice, and wrap every error
the chain raises into ``LMUnexpectedError``. The deprecated ``forward()`` interface is not used.

Which adapter served a call: :meth:`FallbackLM.served_by` (the latest call on the current thread)
and :meth:`FallbackLM.stats` (per adapter: served, failed, skipped_open, state).

Planning: the chain's :class:`~ponder.kernel.kinds.ModelInfo` (:func:`chain_model_info`) has the
smallest context window and ``max_output_tokens`` of the chain, so a prompt planned for it fits
whichever adapter serves it, and the primary's model name and prices (what a healthy run costs;
:meth:`FallbackLM.model_info_of` gives each adapter's own).

The breaker is :mod:`ponder.engine.breaker`; what a failure is and how an auth error is worded
(:func:`failure_kind`, :class:`AdapterAuthError`, :func:`key_variable`, …) is
:mod:`ponder.engine.failures`. Both are re-exported here, so ``from ponder.engine.fallback import
…`` keeps working for every name it had; this module is the routing and the dspy LM.

This module never imports dspy at import time: ``FallbackLM`` is built on first access.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import attrs

from ponder.engine.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, Clock
from ponder.engine.failures import (
    AUTH_NAMES,
    AUTH_STATUS,
    DEFAULT_KEY_VARIABLES,
    LITELLM_KEY_VARIABLES,
    MALFORMED_NAMES,
    MISSING_KEY,
    AdapterAuthError,
    AdapterFailure,
    AllAdaptersFailed,
    EmptyReply,
    auth_text,
    describe_auth_error,
    failure_kind,
    is_auth_error,
    is_empty_reply,
    key_variable,
    summarize_error,
)
from ponder.kernel.kinds import ModelInfo
from ponder.support.retry import _status_code, is_missing_credentials, retry_after

#: the chain is this module's; the rest is re-exported from breaker.py and failures.py so
#: callers keep importing it from here (FallbackLM is lazy: see ``__getattr__`` below)
__all__ = [
    "AUTH_NAMES", "AUTH_STATUS", "CLOSED", "DEFAULT_KEY_VARIABLES", "HALF_OPEN",
    "LITELLM_KEY_VARIABLES", "MALFORMED_NAMES", "MISSING_KEY", "OPEN", "AdapterAuthError",
    "AdapterFailure", "AllAdaptersFailed", "ChainLink", "CircuitBreaker", "Clock", "EmptyReply",
    "FallbackChain", "build_fallback_lm", "chain_model_info", "describe_auth_error", "failure_kind",
    "is_auth_error", "key_variable",
]

log = logging.getLogger("ponder.engine.fallback")


# --- the chain -----------------------------------------------------------------------------------
@attrs.define
class ChainLink:
    """One adapter of a chain: its name, its LM, its model info, where its key comes from."""

    name: str
    lm: Any
    model_info: ModelInfo
    key_variable: str | None = None
    breaker: CircuitBreaker | None = None
    served: int = 0
    failed: int = 0
    skipped_open: int = 0


def chain_model_info(infos: Sequence[ModelInfo]) -> ModelInfo:
    """The chain's planning info: the smallest window and max_output_tokens, the primary's model
    name and prices (what a healthy run costs)."""
    if not infos:
        raise ValueError("a chain needs at least one adapter")
    primary = infos[0]
    return attrs.evolve(
        primary,
        context_window=min(i.context_window for i in infos),
        max_output_tokens=min(i.max_output_tokens for i in infos),
    )


class FallbackChain:
    """The routing, breakers and counters behind :class:`FallbackLM`; knows nothing of dspy.

    ``call(invoke)`` runs ``invoke(link)`` on the first adapter that succeeds (see the module
    docstring for what moves on and what is raised); ``acall`` is the same for coroutines.
    """

    def __init__(self, links: Sequence[ChainLink], *, breaker_failures: int = 3,
                 breaker_cooldown: float = 30.0, clock: Clock = time.monotonic) -> None:
        if not links:
            raise ValueError("a fallback chain needs at least one adapter")
        names = [link.name for link in links]
        if len(set(names)) != len(names):
            raise ValueError(f"an adapter may appear in a chain once, got {names}")
        self.links = list(links)
        if len(self.links) > 1:
            for link in self.links:
                if link.breaker is None:
                    link.breaker = CircuitBreaker(breaker_failures, breaker_cooldown,
                                                  clock=clock, name=link.name)
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- reading --------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [link.name for link in self.links]

    def served_by(self) -> str | None:
        """The adapter that served the latest successful call on this thread (None: none yet)."""
        return getattr(self._local, "served_by", None)

    def link(self, name: str) -> ChainLink:
        for link in self.links:
            if link.name == name:
                return link
        raise KeyError(name)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per adapter, in chain order: served, failed, skipped_open, state."""
        with self._lock:
            return {
                link.name: {
                    "served": link.served,
                    "failed": link.failed,
                    "skipped_open": link.skipped_open,
                    "state": link.breaker.state if link.breaker is not None else CLOSED,
                }
                for link in self.links
            }

    # -- one call -------------------------------------------------------------------------------
    def call(self, invoke: Callable[[ChainLink], Any]) -> Any:
        attempt = _Attempt(self)
        for link in attempt.candidates():
            try:
                outputs = _require_reply(link, invoke(link))
            except Exception as exc:
                attempt.failed(link, exc)  # raises when the error is not the provider's
                continue
            except BaseException:
                attempt.abandoned(link)
                raise
            attempt.succeeded(link)
            return outputs
        raise attempt.exhausted()

    async def acall(self, invoke: Callable[[ChainLink], Any]) -> Any:
        attempt = _Attempt(self)
        for link in attempt.candidates():
            try:
                outputs = _require_reply(link, await invoke(link))
            except Exception as exc:
                attempt.failed(link, exc)
                continue
            except BaseException:
                attempt.abandoned(link)
                raise
            attempt.succeeded(link)
            return outputs
        raise attempt.exhausted()


def _require_reply(link: ChainLink, outputs: Any) -> Any:
    """``outputs``, or :class:`EmptyReply` when the provider sent nothing: an empty reply fails
    over like an error (the sync and async call paths share this check)."""
    if is_empty_reply(outputs):
        raise EmptyReply(f"adapter {link.name!r}: the provider sent an empty reply")
    return outputs


class _Attempt:
    """The state of one call through a chain: what was tried, skipped and why."""

    def __init__(self, chain: FallbackChain) -> None:
        self.chain = chain
        self.failures: list[AdapterFailure] = []
        self._pending: tuple[str, str] | None = None  # (adapter, kind) awaiting "falling back to"

    def candidates(self) -> Iterator[ChainLink]:
        chain = self.chain
        for link in chain.links:
            breaker = link.breaker
            if breaker is not None and not breaker.allow():
                with chain._lock:
                    link.skipped_open += 1
                wait = breaker.retry_in()
                reason = breaker.reason or "earlier failures"
                if breaker.permanent:
                    message = f"circuit open for this run ({reason})"
                elif breaker.state == HALF_OPEN:
                    message = f"circuit half-open ({reason}; a trial call is in flight)"
                    wait = None
                else:
                    message = f"circuit open ({reason}; next trial in {wait or 0:.0f}s)"
                self.failures.append(AdapterFailure(link.name, "circuit open", message,
                                                    retryable=not breaker.permanent,
                                                    retry_after=wait))
                log.debug("adapter %s skipped: %s", link.name, message)
                continue
            if self._pending is not None:
                failed, kind = self._pending
                log.info("adapter %s failed (%s); falling back to %s", failed, kind, link.name)
                self._pending = None
            yield link

    def failed(self, link: ChainLink, exc: Exception) -> None:
        chain = self.chain
        kind = failure_kind(exc)
        breaker = link.breaker
        if kind is None:  # the caller's error: another adapter would refuse it too
            if breaker is not None:
                breaker.release()
            raise exc
        auth = kind.startswith("auth")
        with chain._lock:
            link.failed += 1
        if auth:
            message = auth_text(exc, link.key_variable)
            if breaker is not None:
                breaker.trip(kind, permanent=True)
            if len(chain.links) == 1:
                raise AdapterAuthError(link.name, _status_code(exc), link.key_variable,
                                       missing=is_missing_credentials(exc)) from None
            self.failures.append(AdapterFailure(link.name, kind, message, retryable=False))
        else:
            if breaker is not None:
                breaker.record_failure(kind)
            if len(chain.links) == 1:
                raise exc  # a chain of one is transparent: the retry layer sees the original
            self.failures.append(AdapterFailure(link.name, kind, f"{kind}: {summarize_error(exc)}",
                                                retryable=True, retry_after=retry_after(exc)))
        self._pending = (link.name, kind)

    def abandoned(self, link: ChainLink) -> None:
        if link.breaker is not None:
            link.breaker.release()

    def succeeded(self, link: ChainLink) -> None:
        chain = self.chain
        if link.breaker is not None:
            link.breaker.record_success()
        with chain._lock:
            link.served += 1
        chain._local.served_by = link.name

    def exhausted(self) -> AllAdaptersFailed:
        error = AllAdaptersFailed(self.failures)
        if self._pending is not None:
            failed, kind = self._pending
            log.info("adapter %s failed (%s); no adapter left to fall back to", failed, kind)
        return error


# --- the dspy LM ---------------------------------------------------------------------------------
_class_lock = threading.Lock()
_classes: dict[str, type] = {}
_MISSING = object()


def _adapter_message_call(lm: Any, messages: Any) -> AbstractContextManager[Any]:
    """Mark a call as DSPy's adapter's own (so the inner LM does not warn about ``messages=``).

    DSPy 3.4 warns when ``messages=`` dictionaries reach an LM from anywhere but its adapter; the
    chain passes on exactly the call the adapter made, so it hands the mark on with it.
    """
    if messages is None:
        return nullcontext()
    try:
        from dspy.clients._deprecation import _adapter_call, adapter_message_call
    except ImportError:  # pragma: no cover - the mark goes with the legacy interface in 3.5
        return nullcontext()
    origin = _adapter_call.get()
    if origin is None or origin[1] is not messages:
        return nullcontext()  # not the adapter's call: let DSPy warn as it would
    return adapter_message_call(lm, messages)


def _fallback_lm_class() -> type:
    with _class_lock:
        if "FallbackLM" in _classes:
            return _classes["FallbackLM"]
        import dataclasses

        import dspy

        class FallbackLM(dspy.BaseLM):
            """A ``dspy.BaseLM`` over a chain of adapters' LMs (:mod:`ponder.engine.fallback`)."""

            def __init__(self, links: Sequence[ChainLink | tuple[Any, ...]], *,
                         breaker_failures: int = 3, breaker_cooldown: float = 30.0,
                         clock: Clock = time.monotonic) -> None:
                chain_links = [link if isinstance(link, ChainLink) else ChainLink(*link)
                               for link in links]
                self.chain = FallbackChain(chain_links, breaker_failures=breaker_failures,
                                           breaker_cooldown=breaker_cooldown, clock=clock)
                primary = self.chain.links[0].lm
                primary_kwargs = getattr(primary, "kwargs", {}) or {}
                super().__init__(
                    getattr(primary, "model", self.chain.links[0].name),
                    model_type=getattr(primary, "model_type", "chat"),
                    temperature=primary_kwargs.get("temperature"),
                    max_tokens=primary_kwargs.get("max_tokens"),
                    cache=False,
                    num_retries=0,
                )
                # what copy(temperature=…) changes is passed on; the rest is each LM's own
                self._initial_kwargs = dict(self.kwargs)
                self.model_info = chain_model_info([link.model_info
                                                    for link in self.chain.links])

            # -- what ponder reads ----------------------------------------------------------
            @property
            def adapters(self) -> list[str]:
                return self.chain.names

            def served_by(self) -> str | None:
                """The adapter that served the latest call on this thread."""
                return self.chain.served_by()

            def stats(self) -> dict[str, dict[str, Any]]:
                """Per adapter: served, failed, skipped_open, state (closed/open/half_open)."""
                return self.chain.stats()

            def model_info_of(self, adapter: str) -> ModelInfo:
                """That adapter's own model info (prices, window)."""
                return self.chain.link(adapter).model_info

            def breaker(self, adapter: str) -> CircuitBreaker | None:
                return self.chain.link(adapter).breaker

            # -- capabilities: what every adapter of the chain can do -----------------------
            def _all(self, name: str) -> bool:
                return all(bool(getattr(link.lm, name, False)) for link in self.chain.links)

            @property
            def supports_function_calling(self) -> bool:
                return self._all("supports_function_calling")

            @property
            def supports_reasoning(self) -> bool:
                return self._all("supports_reasoning")

            @property
            def supports_response_schema(self) -> bool:
                return self._all("supports_response_schema")

            # -- calls ----------------------------------------------------------------------
            def _arguments(self, link: ChainLink, prompt: Any,
                           kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
                changed = {k: v for k, v in self.kwargs.items()
                           if v is not None and self._initial_kwargs.get(k, _MISSING) != v}
                call_kwargs = {**changed, **kwargs}
                model = getattr(link.lm, "model", None)
                request = call_kwargs.get("request")
                if dataclasses.is_dataclass(request) and hasattr(request, "model") and model:
                    call_kwargs["request"] = dataclasses.replace(request, model=model)
                if dataclasses.is_dataclass(prompt) and hasattr(prompt, "model") and model:
                    prompt = dataclasses.replace(prompt, model=model)  # a lm15.Request
                return prompt, call_kwargs

            def __call__(self, prompt: Any = None, *, messages: Any = None,
                         **kwargs: Any) -> Any:
                def invoke(link: ChainLink) -> Any:
                    call_prompt, call_kwargs = self._arguments(link, prompt, kwargs)
                    with _adapter_message_call(link.lm, messages):
                        return link.lm(call_prompt, messages=messages, **call_kwargs)

                return self.chain.call(invoke)

            async def acall(self, prompt: Any = None, *, messages: Any = None,
                            **kwargs: Any) -> Any:
                async def invoke(link: ChainLink) -> Any:
                    call_prompt, call_kwargs = self._arguments(link, prompt, kwargs)
                    with _adapter_message_call(link.lm, messages):
                        return await link.lm.acall(call_prompt, messages=messages,
                                                   **call_kwargs)

                return await self.chain.acall(invoke)

            def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
                raise NotImplementedError("FallbackLM delegates whole calls; call it instead")

            async def aforward(self, prompt: Any = None, messages: Any = None,
                               **kwargs: Any) -> Any:
                raise NotImplementedError("FallbackLM delegates whole calls; call it instead")

            def __getattr__(self, name: str) -> Any:
                # a chain is a drop-in for its primary LM: ScriptedLM.calls and the like
                if name.startswith("_") or name in ("chain", "model_info"):
                    raise AttributeError(name)
                return getattr(self.chain.links[0].lm, name)

            def __repr__(self) -> str:
                return f"FallbackLM({' -> '.join(self.chain.names)})"

        FallbackLM.__module__ = __name__
        FallbackLM.__qualname__ = "FallbackLM"
        _classes["FallbackLM"] = FallbackLM
        return FallbackLM


def __getattr__(name: str) -> Any:
    if name == "FallbackLM":
        cls = _fallback_lm_class()
        globals()["FallbackLM"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_fallback_lm(links: Sequence[ChainLink], *, breaker_failures: int = 3,
                      breaker_cooldown: float = 30.0, clock: Clock = time.monotonic) -> Any:
    """A :class:`FallbackLM` over ``links`` (primary first)."""
    return _fallback_lm_class()(links, breaker_failures=breaker_failures,
                                breaker_cooldown=breaker_cooldown, clock=clock)
