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

When every adapter failed or is open, :class:`AllAdaptersFailed` lists each adapter and why. It is
retryable (``retryable = True``, which :func:`ponder.support.retry.is_retryable` reads first) when at
least one adapter failed transiently or only waits for its cooldown, so ponder's single retry
layer (``call_with_retry`` in :meth:`ponder.engine.services.Services.predict`, around the whole chain;
litellm's retries are off) backs off and tries the chain again. An auth error with no adapter
left raises :class:`AdapterAuthError` at once: it names the adapter and the variable its key came
from, never the key (messages go through :func:`ponder.support.secrets.redact`).

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

from ponder.errors import PonderError
from ponder.kernel.kinds import ModelInfo
from ponder.support.retry import _class_names, _status_code, is_retryable, retry_after
from ponder.support.secrets import redact

log = logging.getLogger("ponder.engine.fallback")

Clock = Callable[[], float]

#: Breaker states.
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

#: Class names that mean "this key is not accepted" (litellm/openai, dspy >= 3.4).
AUTH_NAMES: frozenset[str] = frozenset(
    {"AuthenticationError", "PermissionDeniedError", "LMAuthError"}
)
AUTH_STATUS: frozenset[int] = frozenset({401, 403})
#: A provider reply that could not be read: as much an outage as a 500.
MALFORMED_NAMES: frozenset[str] = frozenset(
    {"JSONDecodeError", "APIResponseValidationError", "LMStreamAssemblyError"}
)

#: The variable each first-party adapter reads its key from when ``api_key`` is not set.
DEFAULT_KEY_VARIABLES: dict[str, tuple[str, ...]] = {
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}
#: litellm's key variable per provider prefix (``openai/gpt-4o`` -> OPENAI_API_KEY); a provider
#: not listed reads ``<PROVIDER>_API_KEY``.
LITELLM_KEY_VARIABLES: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "text-completion-openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "azure": "AZURE_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "fireworks_ai": "FIREWORKS_AI_API_KEY",
    "huggingface": "HF_TOKEN",
}


# --- the circuit breaker -------------------------------------------------------------------------
class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failures -> half-open after ``cooldown``.

    :meth:`allow` says whether a call may go to the adapter. Closed: always. Open: no, until
    ``cooldown`` seconds have passed since it opened; then the breaker is half-open and exactly
    one trial call is let through (other callers are refused while it is in flight). The trial's
    :meth:`record_success` closes the breaker; its :meth:`record_failure` opens it again for
    another cooldown. :meth:`trip` opens it at once; ``permanent=True`` (an auth error) keeps it
    open until :meth:`reset`. :meth:`release` gives back a trial that ended neither way (the call
    failed for a reason that says nothing about the provider). Thread-safe; ``clock`` is
    injectable (``time.monotonic`` by default).
    """

    def __init__(self, failures: int = 3, cooldown: float = 30.0, *,
                 clock: Clock = time.monotonic, name: str = "") -> None:
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures!r}")
        if cooldown < 0:
            raise ValueError(f"cooldown must be >= 0, got {cooldown!r}")
        self.failures = failures
        self.cooldown = float(cooldown)
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial = False
        self._permanent = False
        #: why the breaker last opened (for messages)
        self.reason: str | None = None

    def _cooled(self) -> bool:
        return not self._permanent and self._clock() - self._opened_at >= self.cooldown

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (an open breaker whose cooldown has passed)."""
        with self._lock:
            if self._state == OPEN and self._cooled():
                return HALF_OPEN
            return self._state

    @property
    def permanent(self) -> bool:
        with self._lock:
            return self._permanent

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._consecutive

    def retry_in(self) -> float | None:
        """Seconds until an open breaker lets a trial through; 0 when it would now, None when it
        is closed or open for good."""
        with self._lock:
            if self._state == CLOSED or self._permanent:
                return None
            if self._state == HALF_OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.cooldown - self._clock())

    def allow(self) -> bool:
        """Whether a call may go through now; a True from a cooled-down breaker is its trial."""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN:
                if not self._cooled():
                    return False
                self._state = HALF_OPEN
                self._trial = False
            if self._trial:  # half-open: one trial at a time
                return False
            self._trial = True
            return True

    def record_success(self) -> None:
        with self._lock:
            if self._permanent:
                return
            self._state = CLOSED
            self._consecutive = 0
            self._trial = False
            self.reason = None

    def record_failure(self, reason: str | None = None) -> None:
        with self._lock:
            self._consecutive += 1
            if self._state == HALF_OPEN or self._consecutive >= self.failures:
                self._open_locked(reason)

    def trip(self, reason: str | None = None, *, permanent: bool = False) -> None:
        """Open at once (``permanent``: until :meth:`reset`)."""
        with self._lock:
            self._consecutive += 1
            self._permanent = self._permanent or permanent
            self._open_locked(reason)

    def release(self) -> None:
        """End a call that neither succeeded nor failed as an outage (e.g. a bad request)."""
        with self._lock:
            self._trial = False

    def reset(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._consecutive = 0
            self._trial = False
            self._permanent = False
            self.reason = None

    def _open_locked(self, reason: str | None) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        self._trial = False
        if reason is not None:
            self.reason = reason

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name or '?'} {self.state}>"


# --- failures ------------------------------------------------------------------------------------
class EmptyReply(PonderError):
    """The provider answered 200 with no choices, or only empty ones: an outage, retried."""

    retryable = True


@attrs.frozen
class AdapterFailure:
    """One adapter's part in a failed call."""

    adapter: str
    #: "server error (HTTP 503)", "timeout", "auth (HTTP 401)", "circuit open", …
    kind: str
    #: a readable, redacted message
    message: str
    #: whether this adapter's failure is worth retrying later (an outage, or a cooldown)
    retryable: bool
    #: the Retry-After the provider sent, or the seconds until the breaker half-opens
    retry_after: float | None = None

    def line(self) -> str:
        return f"{self.adapter}: {self.message}"


class AllAdaptersFailed(PonderError):
    """Every adapter of the chain failed or was open; ``failures`` says each one's story.

    ``retryable`` is True when at least one failure was transient (an outage or a cooldown), so
    :func:`ponder.support.retry.is_retryable` lets the retry layer back off and try the chain again;
    ``retry_after`` is the soonest hint (a provider's Retry-After, or a breaker's cooldown).
    """

    def __init__(self, failures: Sequence[AdapterFailure]) -> None:
        self.failures = list(failures)
        self.retryable = any(f.retryable for f in self.failures)
        hints = [f.retry_after for f in self.failures if f.retryable]
        known = [hint for hint in hints if hint is not None]
        # one transient failure without a hint: the retry policy's own backoff decides
        self.retry_after: float | None = min(known) if known and len(known) == len(hints) \
            else None
        lines = "\n".join(f"  - {f.line()}" for f in self.failures)
        super().__init__(f"every adapter failed:\n{lines}")


class AdapterAuthError(PonderError):
    """The provider refused the adapter's key (HTTP 401/403) and no adapter is left to try.

    Never retried: a key does not start working by waiting. The message names the adapter and
    where its key came from, never the key (nor the provider's message: some echo the key), and
    the provider's error is not chained to it.
    """

    retryable = False

    def __init__(self, adapter: str, status: int | None, key_variable: str | None) -> None:
        self.adapter = adapter
        self.status = status
        self.key_variable = key_variable
        super().__init__(describe_auth_error(adapter, status, key_variable))


def describe_auth_error(adapter: str, exc_or_status: BaseException | int | None,
                        key_variable: str | None) -> str:
    """``adapter 'x': the provider rejected the API key (HTTP 401); check OPENAI_API_KEY``.

    ``exc_or_status`` is the provider's error (its status is read from it) or the status itself.
    The provider's own message is left out: some echo the key they were sent. The result goes
    through :func:`ponder.support.secrets.redact` all the same.
    """
    return redact(f"adapter {adapter!r}: {_auth_text(exc_or_status, key_variable)}")


def _auth_text(exc_or_status: BaseException | int | None, key_variable: str | None) -> str:
    status = exc_or_status if isinstance(exc_or_status, int) or exc_or_status is None \
        else _status_code(exc_or_status)
    if status == 403 or (isinstance(exc_or_status, BaseException)
                         and "PermissionDeniedError" in _class_names(exc_or_status)):
        what = f"the provider refused access with this API key (HTTP {status or 403})"
    else:
        what = f"the provider rejected the API key (HTTP {status or 401})"
    where = f"; check {key_variable}" if key_variable else ""
    return redact(f"{what}{where}")


def is_auth_error(exc: BaseException) -> bool:
    return bool(_class_names(exc) & AUTH_NAMES) or _status_code(exc) in AUTH_STATUS


def failure_kind(exc: BaseException) -> str | None:
    """What kind of provider failure ``exc`` is, or None when it is not the provider's.

    ``"auth (HTTP 401)"``; ``"empty reply"``; ``"malformed reply"``; ``"rate limited (HTTP
    429)"``; ``"timeout"``; ``"connection error"``; ``"server error (HTTP 503)"``; ``"transient
    error"``. None for bad requests, context-window errors and anything not retryable.
    """
    if isinstance(exc, EmptyReply):
        return "empty reply"
    names = _class_names(exc)
    status = _status_code(exc)
    if names & AUTH_NAMES or status in AUTH_STATUS:
        return f"auth (HTTP {status})" if status else "auth"
    if names & MALFORMED_NAMES:
        return "malformed reply"
    if not is_retryable(exc):
        return None
    if status == 429 or names & {"RateLimitError", "LMRateLimitError"}:
        return "rate limited (HTTP 429)"
    if names & {"Timeout", "APITimeoutError", "LMTimeoutError", "TimeoutError",
                "TimeoutException"} or status == 408:
        return "timeout"
    if names & {"APIConnectionError", "LMTransportError", "ConnectionError", "TransportError"}:
        return "connection error"
    if status is not None and 500 <= status <= 599:
        return f"server error (HTTP {status})"
    return "transient error"


def _summary(exc: BaseException) -> str:
    """A one-line, redacted description of a provider error."""
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _is_empty(outputs: Any) -> bool:
    """No choices, or only empty ones (no text, no tool calls)."""
    if outputs is None:
        return True
    text = getattr(outputs, "text", None)
    if hasattr(outputs, "message") and hasattr(outputs, "finish_reason"):  # an lm15.Response
        return not (text or "").strip() and not getattr(outputs, "tool_calls", None)
    if not isinstance(outputs, list):
        return False
    if not outputs:
        return True
    for output in outputs:
        if isinstance(output, str):
            if output.strip():
                return False
        elif isinstance(output, dict):
            if (output.get("text") or "").strip() or output.get("tool_calls"):
                return False
        else:
            return False
    return True


# --- key variables -------------------------------------------------------------------------------
def key_variable(adapter_name: str, settings: Any = None, *, adapter: Any = None,
                 environ: Any = None) -> str | None:
    """Where ``adapter_name``'s key comes from, for messages: a variable name, never a value.

    In order: the adapter's own ``key_variable()`` (a hook for third-party adapters); the
    settings' ``api_key`` (``$env:NAME`` -> ``NAME``, ``$file:PATH`` -> ``the key file PATH``, a
    literal -> ``the api_key setting``); the adapter's default variable (gemini: the first of
    GEMINI_API_KEY / GOOGLE_API_KEY that is set; litellm: the provider's, e.g. OPENAI_API_KEY);
    None when nothing is known.
    """
    import os

    environ = os.environ if environ is None else environ
    hook = getattr(adapter, "key_variable", None)
    if callable(hook):
        try:
            named = hook()
        except Exception:  # a hook's bug must not hide the auth error it describes
            named = None
        if named:
            return str(named)
    settings = settings if settings is not None else getattr(adapter, "settings", None)
    api_key = getattr(settings, "api_key", None)
    if api_key is not None:
        reference = getattr(api_key, "reference", None)
        if reference is None and isinstance(api_key, str) and api_key.startswith("$"):
            reference = api_key
        if isinstance(reference, str) and reference.startswith("$env:"):
            return reference[len("$env:"):].strip()
        if isinstance(reference, str) and reference.startswith("$file:"):
            return f"the key file {reference[len('$file:'):].strip()}"
        return f"the api_key setting of adapter {adapter_name!r}"
    if adapter_name in DEFAULT_KEY_VARIABLES:
        names = DEFAULT_KEY_VARIABLES[adapter_name]
        return next((n for n in names if environ.get(n)), names[0])
    if adapter_name == "openai_compatible":
        return "the api_key setting (none is set, so a dummy key was sent)"
    model = getattr(settings, "model", None)
    if adapter_name == "litellm" and isinstance(model, str) and model:
        provider = model.split("/", 1)[0] if "/" in model else "openai"
        return LITELLM_KEY_VARIABLES.get(provider, f"{provider.upper()}_API_KEY")
    return None


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
                outputs = invoke(link)
                if _is_empty(outputs):
                    raise EmptyReply(f"adapter {link.name!r}: the provider sent an empty reply")
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
                outputs = await invoke(link)
                if _is_empty(outputs):
                    raise EmptyReply(f"adapter {link.name!r}: the provider sent an empty reply")
            except Exception as exc:
                attempt.failed(link, exc)
                continue
            except BaseException:
                attempt.abandoned(link)
                raise
            attempt.succeeded(link)
            return outputs
        raise attempt.exhausted()


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
            message = _auth_text(exc, link.key_variable)
            if breaker is not None:
                breaker.trip(kind, permanent=True)
            if len(chain.links) == 1:
                raise AdapterAuthError(link.name, _status_code(exc), link.key_variable) from None
            self.failures.append(AdapterFailure(link.name, kind, message, retryable=False))
        else:
            if breaker is not None:
                breaker.record_failure(kind)
            if len(chain.links) == 1:
                raise exc  # a chain of one is transparent: the retry layer sees the original
            self.failures.append(AdapterFailure(link.name, kind, f"{kind}: {_summary(exc)}",
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
            """A ``dspy.BaseLM`` over a chain of adapters' LMs; see :mod:`ponder.engine.fallback`."""

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
