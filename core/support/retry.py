"""Retry with exponential backoff for transient provider errors (rate limits, 5xx, time-outs).

Provider exceptions (litellm, openai) are recognised by class name so this module never imports
them: ``import ponder.support.retry`` stays cheap and works without either installed.
"""

from __future__ import annotations

import functools
import inspect
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, overload

import attrs

T = TypeVar("T")

# Checked before anything else: these are the caller's fault, and retrying only burns quota.
# litellm's ContextWindowExceededError subclasses BadRequestError, and some gateways raise
# subclasses of a retryable class for auth problems, so a name here always wins.
NON_RETRYABLE_NAMES: frozenset[str] = frozenset(
    {
        "AuthenticationError",
        "PermissionDeniedError",
        "BadRequestError",
        "NotFoundError",
        "ContextWindowExceededError",
        "ContentPolicyViolationError",
        "UnprocessableEntityError",
        "UnsupportedParamsError",
        "UnsupportedProtocol",  # httpx: a bad URL scheme never starts working
        # dspy >= 3.4 wraps provider errors in its own classes
        "LMAuthError",
        "LMInvalidRequestError",
        "LMConfigurationError",
        "LMUnsupportedFeatureError",
        "LMBillingError",
        "LMUnsupportedModelError",
        "LMNotConfiguredError",
    }
)
RETRYABLE_NAMES: frozenset[str] = frozenset(
    {
        "RateLimitError",
        "APIConnectionError",
        "Timeout",
        "APITimeoutError",
        "ServiceUnavailableError",
        "InternalServerError",
        "LMRateLimitError",
        "LMServerError",
        "LMTimeoutError",
        "LMTransportError",
    }
)
NON_RETRYABLE_STATUS: frozenset[int] = frozenset({400, 401, 403, 404, 422})
RETRYABLE_STATUS: frozenset[int] = frozenset({408, 409, 425, 429})


class _Uniform(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


def _status_code(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:  # dspy's LM errors call it `status`
        status = getattr(exc, "status", None)
    if status is None:
        # httpx.HTTPStatusError and friends keep it on the response
        status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, bool):
        return None
    if isinstance(status, int):
        return status
    if isinstance(status, str) and status.isdigit():
        return int(status)
    return None


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it (``__cause__``, else ``__context__``), nearest first.

    dspy >= 3.4 wraps a provider's error several times (LMServerError <- lm15 <- litellm <- openai
    <- httpx <- the OS error); what the error *is* often shows only at the bottom. Bounded and
    cycle-safe.
    """
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < _MAX_CAUSE_DEPTH:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


#: Class names, anywhere in an error's cause chain, that mean the server could not be reached at
#: all (nothing listens, or the name does not resolve). litellm reports these as a "500
#: InternalServerError: Connection error.", so the status alone would call it a server error.
CONNECTION_NAMES: frozenset[str] = frozenset(
    {"ConnectError", "ConnectionRefusedError", "gaierror"}
)
#: Texts by which the openai SDK (under litellm) says it found no API key at all. litellm reports
#: this as a "500 InternalServerError" too, which would otherwise be retried as an outage.
MISSING_CREDENTIALS_TEXTS: tuple[str, ...] = (
    "Missing credentials",
    "api_key client option must be set",
)


def is_connection_error(exc: BaseException) -> bool:
    """True when the server could not be reached (refused, unresolvable), at any cause depth."""
    return any(_class_names(cause) & CONNECTION_NAMES for cause in causes(exc))


#: Class names, anywhere in an error's cause chain, that mean the reply could not be read (dspy's
#: native engine raises LMProviderError, HTTP 200, from the JSONDecodeError): transient, like a 500.
MALFORMED_NAMES: frozenset[str] = frozenset(
    {"JSONDecodeError", "APIResponseValidationError", "LMStreamAssemblyError"}
)


def is_malformed_reply(exc: BaseException) -> bool:
    """True when the provider's reply could not be parsed, at any cause depth."""
    return any(_class_names(cause) & MALFORMED_NAMES for cause in causes(exc))


#: dspy's words when a reply carried no text at all (no choices, an empty message)
_EMPTY_RESPONSE_TEXT = "returned an empty or null response"


def is_empty_response(exc: BaseException) -> bool:
    """True when dspy's adapters got no text at all from the provider: a reply with no choices
    or an empty message, what a provider sends in a passing fault. dspy's ChatAdapter tries once
    more through its JSON fallback and then raises ``AdapterParseError``, which would otherwise
    read as the model ignoring the output format (not retried); it is transient, like a
    malformed reply, and ponder's own :class:`~ponder.engine.failures.EmptyReply`."""
    return any("AdapterParseError" in _class_names(cause) and _EMPTY_RESPONSE_TEXT in str(cause)
               for cause in causes(exc))


def is_missing_credentials(exc: BaseException) -> bool:
    """True when the provider library found no API key (an auth/config error, not an outage)."""
    return any(text in str(cause) for cause in causes(exc) for text in MISSING_CREDENTIALS_TEXTS)


#: Where lm15 (vendored by dspy) appends its "To fix:" advice to an error's text. Its advice for a
#: 429 says "lm15 never retries for you", which is untrue under ponder: ponder's words replace it.
_LM15_GUIDANCE = "\n\n  To fix:"


def describe_error(exc: BaseException) -> str:
    """``exc``'s message in ponder's words: the provider's text without lm15's "To fix:" advice,
    and for a rate limit what ponder did about it. Not redacted (callers redact)."""
    text = str(exc)
    cut = text.find(_LM15_GUIDANCE)
    if cut >= 0:
        text = text[:cut]
    text = text.strip() or type(exc).__name__
    names = _class_names(exc)
    if _status_code(exc) == 429 or names & {"RateLimitError", "LMRateLimitError"}:
        text += (" (ponder retries rate-limited calls with backoff, honouring Retry-After, up "
                 "to [limits] max_retries times; lower --concurrency or raise max_retries)")
    return text


def reached_provider(exc: BaseException) -> bool:
    """True when the request behind ``exc`` got to the provider: it answered with an HTTP
    error or a reply that could not be read, or it timed out waiting for one. A refused
    connection or a missing key never left this process (litellm's "500" for those included)."""
    if is_connection_error(exc) or is_missing_credentials(exc):
        return False
    chain = causes(exc)
    if any(_status_code(cause) is not None for cause in chain) or is_malformed_reply(exc) \
            or is_empty_response(exc):
        return True
    return any(isinstance(cause, TimeoutError) or "Timeout" in type(cause).__name__
               for cause in chain)


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` is transient: rate limit, 5xx, time-out or connection error.

    Order: an explicit ``exc.retryable`` bool; missing credentials (never retried, whatever
    status litellm gives them); non-retryable class names (auth, bad request, not found, context
    window); non-retryable status codes (400/401/403/404/422); retryable class names; retryable
    status codes (408/409/425/429/5xx); builtin and httpx time-out/connection errors. Everything
    else is not retried.
    """
    flag = getattr(exc, "retryable", None)
    if isinstance(flag, bool):
        return flag
    if is_missing_credentials(exc):
        return False
    names = _class_names(exc)
    if names & NON_RETRYABLE_NAMES:
        return False
    status = _status_code(exc)
    if status in NON_RETRYABLE_STATUS:
        return False
    if names & RETRYABLE_NAMES:
        return True
    if status is not None and (status in RETRYABLE_STATUS or 500 <= status <= 599):
        return True
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if is_malformed_reply(exc) or is_empty_response(exc):
        return True
    # an httpx exception can only exist if httpx was imported, so never import it here
    httpx = sys.modules.get("httpx")
    return httpx is not None and isinstance(exc, httpx.TransportError)


def _header(headers: Any, name: str) -> Any:
    if headers is None:
        return None
    try:
        items = headers.items() if hasattr(headers, "items") else ()
        for key, value in items:
            if isinstance(key, bytes):
                key = key.decode("latin-1")
            if isinstance(key, str) and key.lower() == name:
                return value
    except Exception:  # odd header objects must never turn a retry into a crash
        return None
    return None


def _parse_retry_after(value: Any, *, millis: bool = False) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            if millis:
                return None
            # an HTTP date: rare, so its (slow-to-import) parser loads only here
            import datetime
            import email.utils

            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            if when is None:
                return None
            if when.tzinfo is None:  # "-0000" parses naive; HTTP dates are always UTC
                when = when.replace(tzinfo=datetime.UTC)
            seconds = when.timestamp() - time.time()
            millis = False
    if seconds != seconds:  # NaN
        return None
    if millis:
        seconds /= 1000.0
    return max(0.0, seconds)


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait, from ``exc.retry_after`` or a Retry-After header.

    Headers are looked up case-insensitively on ``exc.response.headers``, ``exc.headers`` and
    ``exc.litellm_response_headers``; ``retry-after-ms`` (OpenAI) is honoured too. The value may
    be seconds or an HTTP date. Never negative; None when absent or unparsable. When ``exc``
    carries none, its causes (``__cause__``, else ``__context__``) are asked in turn.
    """
    # dspy >= 3.4 wraps the provider's error (LMRateLimitError <- litellm <- openai <- httpx)
    # and drops its headers: look down the cause chain, nearest first (bounded, cycle-safe)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CAUSE_DEPTH:
        seen.add(id(current))
        found = _own_retry_after(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


_MAX_CAUSE_DEPTH = 16


def _own_retry_after(exc: BaseException) -> float | None:
    direct = _parse_retry_after(getattr(exc, "retry_after", None))
    if direct is not None:
        return direct
    try:
        response_headers = getattr(getattr(exc, "response", None), "headers", None)
    except Exception:  # some SDK responses raise on attribute access when absent
        response_headers = None
    for headers in (
        response_headers,
        getattr(exc, "headers", None),
        getattr(exc, "litellm_response_headers", None),
        getattr(exc, "rate_limit_headers", None),
    ):
        ms = _parse_retry_after(_header(headers, "retry-after-ms"), millis=True)
        if ms is not None:
            return ms
        seconds = _parse_retry_after(_header(headers, "retry-after"))
        if seconds is not None:
            return seconds
    return None


def _non_negative(_inst: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """How many times to retry and how long to wait: ``base_delay * 2**attempt + jitter``."""

    max_retries: int = attrs.field(default=3, validator=_non_negative)
    base_delay: float = attrs.field(default=2.0, validator=_non_negative)
    jitter: float = attrs.field(default=2.0, validator=_non_negative)
    max_delay: float = attrs.field(default=60.0, validator=_non_negative)

    def delay(
        self, attempt: int, exc: BaseException | None = None, rng: _Uniform | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

        A Retry-After carried by ``exc`` wins over the computed backoff. Always within
        ``[0, max_delay]``.
        """
        if exc is not None:
            asked = retry_after(exc)
            if asked is not None:
                return min(asked, self.max_delay)
        rng = random if rng is None else rng
        jitter = rng.uniform(0, self.jitter) if self.jitter else 0.0
        try:
            backoff = self.base_delay * 2 ** max(0, attempt)
        except OverflowError:  # huge attempt numbers: the cap applies anyway
            backoff = self.max_delay
        return max(0.0, min(backoff + jitter, self.max_delay))


def _policy(
    policy: RetryPolicy | None,
    max_retries: int,
    base_delay: float,
    jitter: float,
    max_delay: float,
) -> RetryPolicy:
    if policy is not None:
        return policy
    return RetryPolicy(
        max_retries=max_retries, base_delay=base_delay, jitter=jitter, max_delay=max_delay
    )


def _retry_delay(
    policy: RetryPolicy,
    attempt: int,
    exc: BaseException,
    retry_on: Callable[[BaseException], bool],
    rng: _Uniform | None,
) -> float | None:
    """Seconds to wait before retrying after ``exc`` failed retry number ``attempt`` (0 for the
    first call), or None to give up: retries spent, or an error ``retry_on`` rejects.

    The one decision shared by the async loop and the sync one; the caller re-raises on None
    (a bare ``raise`` in its ``except``, so the traceback stays the caller's).
    """
    if attempt >= policy.max_retries or not retry_on(exc):
        return None
    return policy.delay(attempt, exc, rng)


async def retry_with_backoff(
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    max_retries: int = 3,
    base_delay: float = 2.0,
    jitter: float = 2.0,
    max_delay: float = 60.0,
    policy: RetryPolicy | None = None,
    retry_on: Callable[[BaseException], bool] = is_retryable,
    on_retry: Callable[[int, BaseException, float], Any] | None = None,
    sleep: Callable[[float], Any] | None = None,
    rng: _Uniform | None = None,
    **kwargs: Any,
) -> T:
    """Await ``fn(*args, **kwargs)``, retrying retryable errors with exponential backoff.

    ``policy`` (when given) replaces the four numeric settings. ``on_retry(attempt, exc, delay)``
    is called before each sleep with the 1-based retry number; it may be async. After
    ``max_retries`` retries the last error is re-raised unchanged; a non-retryable error is
    re-raised at once. ``sleep`` defaults to ``asyncio.sleep`` (imported only when needed, to
    keep this module cheap). The keyword names used here are not passed on to ``fn``.
    """
    if sleep is None:
        import asyncio

        sleep = asyncio.sleep
    pol = _policy(policy, max_retries, base_delay, jitter, max_delay)
    attempt = 0
    while True:
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result  # type: ignore[return-value]
        except Exception as exc:
            wait = _retry_delay(pol, attempt, exc, retry_on, rng)
            if wait is None:
                raise
            attempt += 1
            if on_retry is not None:
                notified = on_retry(attempt, exc, wait)
                if inspect.isawaitable(notified):
                    await notified
            slept = sleep(wait)
            if inspect.isawaitable(slept):
                await slept


def call_with_retry(
    fn: Callable[..., T],
    *args: Any,
    policy: RetryPolicy,
    retry_on: Callable[[BaseException], bool] = is_retryable,
    on_retry: Callable[[int, BaseException, float], Any] | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    rng: _Uniform | None = None,
    **kwargs: Any,
) -> T:
    """Call ``fn(*args, **kwargs)`` synchronously with the same semantics as
    :func:`retry_with_backoff`."""
    attempt = 0
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            wait = _retry_delay(policy, attempt, exc, retry_on, rng)
            if wait is None:
                raise
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            sleep(wait)


@overload
def retry_sync(max_retries: Callable[..., T]) -> Callable[..., T]: ...


@overload
def retry_sync(
    max_retries: int = 3,
    base_delay: float = 2.0,
    jitter: float = 2.0,
    max_delay: float = 60.0,
    *,
    policy: RetryPolicy | None = None,
    retry_on: Callable[[BaseException], bool] = is_retryable,
    on_retry: Callable[[int, BaseException, float], Any] | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    rng: _Uniform | None = None,
) -> Callable[[Callable[..., T]], Callable[..., T]]: ...


def retry_sync(
    max_retries: int | Callable[..., Any] = 3,
    base_delay: float = 2.0,
    jitter: float = 2.0,
    max_delay: float = 60.0,
    *,
    policy: RetryPolicy | None = None,
    retry_on: Callable[[BaseException], bool] = is_retryable,
    on_retry: Callable[[int, BaseException, float], Any] | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    rng: _Uniform | None = None,
) -> Any:
    """Decorator: retry a sync function on retryable errors (``@retry_sync`` or
    ``@retry_sync(max_retries=5)``). For coroutine functions use :func:`retry_with_backoff`."""
    if callable(max_retries):  # used bare: @retry_sync
        return retry_sync()(max_retries)
    pol = _policy(policy, max_retries, base_delay, jitter, max_delay)

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"retry_sync cannot wrap coroutine function {fn.__qualname__}; "
                "use retry_with_backoff"
            )

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            return call_with_retry(
                fn,
                *args,
                policy=pol,
                retry_on=retry_on,
                on_retry=on_retry,
                sleep=sleep,
                rng=rng,
                **kwargs,
            )

        wrapper.retry_policy = pol  # type: ignore[attr-defined]
        return wrapper

    return decorate
