"""ponder.support.retry: what is retried, how long it waits, and how often."""

from __future__ import annotations

import asyncio
import email.utils
import time

import attrs
import httpx
import pytest

from ponder.support.retry import (
    RetryPolicy,
    call_with_retry,
    is_retryable,
    retry_after,
    retry_sync,
    retry_with_backoff,
)


class FixedRng:
    """Deterministic stand-in for ``random``: uniform(a, b) returns a + fraction * (b - a)."""

    def __init__(self, fraction: float = 0.5) -> None:
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + self.fraction * (b - a)


class ProviderError(Exception):
    def __init__(self, message: str = "", status_code: int | None = None, **attrs_: object):
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        for key, value in attrs_.items():
            setattr(self, key, value)


# fake provider classes, recognised by name like litellm's
class RateLimitError(ProviderError):
    pass


class AuthenticationError(ProviderError):
    pass


class ServiceUnavailableError(ProviderError):
    pass


class BadRequestError(ProviderError):
    pass


class ContextWindowExceededError(BadRequestError):
    pass


class SneakyAuthError(RateLimitError):
    """A gateway that made its auth error a subclass of a retryable one."""


SneakyAuthError.__name__ = "AuthenticationError"


class Timeout(ProviderError):
    pass


# -- is_retryable ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        RateLimitError("slow down", status_code=429),
        ServiceUnavailableError("busy", status_code=503),
        Timeout("took too long"),
        ProviderError("gateway", status_code=502),
        ProviderError("bad gateway as text", status_code="504"),
        ProviderError("request timeout", status_code=408),
        ProviderError("conflict", status_code=409),
        ProviderError("too early", status_code=425),
        TimeoutError("read timed out"),
        ConnectionResetError("reset by peer"),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        ProviderError("opted in", retryable=True),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_errors_are_retryable(exc: BaseException) -> None:
    assert is_retryable(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        AuthenticationError("bad key", status_code=401),
        AuthenticationError("bad key without a status"),
        BadRequestError("bad", status_code=400),
        ContextWindowExceededError("too long", status_code=400),
        ProviderError("forbidden", status_code=403),
        ProviderError("missing", status_code=404),
        ProviderError("unprocessable", status_code=422),
        # a retryable class name but a caller-error status: the status wins
        RateLimitError("odd gateway", status_code=401),
        ProviderError("opted out", status_code=503, retryable=False),
        ValueError("a bug"),
        KeyError("a bug"),
        httpx.UnsupportedProtocol("ftp://"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_caller_errors_are_not_retryable(exc: BaseException) -> None:
    assert is_retryable(exc) is False


def test_non_retryable_name_beats_retryable_base_class() -> None:
    exc = SneakyAuthError("bad key", status_code=429)
    assert isinstance(exc, RateLimitError)
    assert is_retryable(exc) is False


def test_status_code_on_response_is_used() -> None:
    request = httpx.Request("GET", "https://example.invalid/")
    err503 = httpx.HTTPStatusError(
        "boom", request=request, response=httpx.Response(503, request=request)
    )
    err401 = httpx.HTTPStatusError(
        "no", request=request, response=httpx.Response(401, request=request)
    )
    assert is_retryable(err503) is True
    assert is_retryable(err401) is False


# -- retry_after -------------------------------------------------------------------------------


def test_retry_after_from_attribute_and_headers() -> None:
    assert retry_after(ProviderError(retry_after=7)) == 7.0
    assert retry_after(ProviderError(headers={"Retry-After": "3"})) == 3.0
    assert retry_after(ProviderError(litellm_response_headers={"retry-after": "1.5"})) == 1.5
    assert retry_after(ProviderError(headers={"retry-after-ms": "250"})) == 0.25
    request = httpx.Request("GET", "https://example.invalid/")
    response = httpx.Response(429, headers={"RETRY-AFTER": "11"}, request=request)
    assert retry_after(ProviderError(response=response)) == 11.0
    assert retry_after(ProviderError("no header")) is None
    assert retry_after(ProviderError(headers={"Retry-After": "soon"})) is None


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = retry_after(ProviderError(headers={"Retry-After": when}))
    assert seconds is not None
    assert 25 <= seconds <= 31
    past = email.utils.formatdate(time.time() - 600, usegmt=True)
    assert retry_after(ProviderError(headers={"Retry-After": past})) == 0.0


# -- RetryPolicy.delay -------------------------------------------------------------------------


def test_delay_is_exponential_plus_jitter() -> None:
    policy = RetryPolicy(base_delay=2.0, jitter=2.0, max_delay=60.0)
    rng = FixedRng(0.5)
    assert [policy.delay(a, rng=rng) for a in range(4)] == [3.0, 5.0, 9.0, 17.0]
    assert policy.delay(0, rng=FixedRng(0.0)) == 2.0
    assert policy.delay(0, rng=FixedRng(1.0)) == 4.0


def test_delay_is_capped_and_never_negative() -> None:
    policy = RetryPolicy(base_delay=2.0, jitter=2.0, max_delay=10.0)
    assert policy.delay(10, rng=FixedRng(1.0)) == 10.0
    assert policy.delay(5000, rng=FixedRng(1.0)) == 10.0
    assert policy.delay(0, ProviderError(retry_after=-5)) == 0.0


def test_delay_honours_retry_after_capped() -> None:
    policy = RetryPolicy(base_delay=2.0, jitter=2.0, max_delay=60.0)
    assert policy.delay(0, ProviderError(headers={"Retry-After": "17"}), rng=FixedRng()) == 17.0
    assert policy.delay(3, ProviderError(retry_after=600)) == 60.0


def test_policy_rejects_negative_settings() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        RetryPolicy().max_retries = 5  # type: ignore[misc]


# -- retry_with_backoff ------------------------------------------------------------------------


class Flaky:
    """Raises the given errors in order, then returns ``value``."""

    def __init__(self, errors: list[BaseException], value: str = "ok") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls: list[tuple[tuple, dict]] = []

    async def acall(self, *args: object, **kwargs: object) -> str:
        return self(*args, **kwargs)

    def __call__(self, *args: object, **kwargs: object) -> str:
        self.calls.append((args, kwargs))
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def test_async_retries_then_succeeds_with_exact_delays() -> None:
    flaky = Flaky([RateLimitError(status_code=429), ServiceUnavailableError(status_code=503)])
    slept: list[float] = []
    retries: list[tuple[int, str, float]] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    result = asyncio.run(
        retry_with_backoff(
            flaky.acall,
            "q",
            top_k=3,
            base_delay=1.0,
            jitter=2.0,
            rng=FixedRng(0.25),
            sleep=fake_sleep,
            on_retry=lambda n, exc, d: retries.append((n, type(exc).__name__, d)),
        )
    )
    assert result == "ok"
    assert flaky.calls == [(("q",), {"top_k": 3})] * 3
    assert slept == [1.5, 2.5]
    assert retries == [(1, "RateLimitError", 1.5), (2, "ServiceUnavailableError", 2.5)]


def test_async_gives_up_after_max_retries_and_reraises_last() -> None:
    errors = [RateLimitError(f"try {i}", status_code=429) for i in range(5)]
    flaky = Flaky(errors)
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(RateLimitError, match="try 2"):
        asyncio.run(retry_with_backoff(flaky.acall, max_retries=2, jitter=0, sleep=fake_sleep))
    assert len(flaky.calls) == 3
    assert slept == [2.0, 4.0]


def test_async_auth_error_is_not_retried() -> None:
    flaky = Flaky([AuthenticationError("invalid api key", status_code=401)])
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(AuthenticationError):
        asyncio.run(retry_with_backoff(flaky.acall, sleep=fake_sleep))
    assert len(flaky.calls) == 1
    assert slept == []


def test_async_honours_retry_after_and_policy() -> None:
    flaky = Flaky([RateLimitError(status_code=429, headers={"Retry-After": "9"})])
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(max_retries=1, base_delay=100.0, jitter=0.0, max_delay=30.0)
    assert asyncio.run(retry_with_backoff(flaky.acall, policy=policy, sleep=fake_sleep)) == "ok"
    assert slept == [9.0]


def test_async_custom_retry_on_and_async_on_retry() -> None:
    flaky = Flaky([ValueError("flaky parse"), ValueError("again")])
    seen: list[int] = []

    async def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
        seen.append(attempt)

    async def fake_sleep(seconds: float) -> None:
        return None

    result = asyncio.run(
        retry_with_backoff(
            flaky.acall,
            retry_on=lambda e: isinstance(e, ValueError),
            on_retry=on_retry,
            sleep=fake_sleep,
        )
    )
    assert result == "ok"
    assert seen == [1, 2]


# -- sync ------------------------------------------------------------------------------------


def test_retry_sync_decorator() -> None:
    slept: list[float] = []
    flaky = Flaky([TimeoutError("t1"), ConnectionError("c1")], value="done")

    @retry_sync(max_retries=3, base_delay=0.5, jitter=1.0, rng=FixedRng(0.0), sleep=slept.append)
    def fetch(x: int) -> str:
        """Docstring kept."""
        return flaky(x)

    assert fetch(1) == "done"
    assert slept == [0.5, 1.0]
    assert fetch.__doc__ == "Docstring kept."
    assert fetch.retry_policy.max_retries == 3  # type: ignore[attr-defined]


def test_retry_sync_bare_and_auth_not_retried() -> None:
    calls = []

    @retry_sync
    def login() -> None:
        calls.append(1)
        raise AuthenticationError("nope", status_code=401)

    with pytest.raises(AuthenticationError):
        login()
    assert calls == [1]


def test_retry_sync_refuses_coroutine_functions() -> None:
    with pytest.raises(TypeError, match="retry_with_backoff"):

        @retry_sync()
        async def nope() -> None:
            return None


def test_call_with_retry_exhausts() -> None:
    slept: list[float] = []
    flaky = Flaky([ServiceUnavailableError(status_code=503)] * 4)
    retries: list[int] = []
    with pytest.raises(ServiceUnavailableError):
        call_with_retry(
            flaky,
            policy=RetryPolicy(max_retries=3, base_delay=1.0, jitter=0.0),
            sleep=slept.append,
            on_retry=lambda n, exc, d: retries.append(n),
        )
    assert slept == [1.0, 2.0, 4.0]
    assert retries == [1, 2, 3]
    assert len(flaky.calls) == 4
