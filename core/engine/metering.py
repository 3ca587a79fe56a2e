"""What :class:`ponder.engine.services.Services` needs to keep its figures true and its limits
binding (issue 15), apart from the services themselves.

- :func:`tracker_usage` reads the requests one attempt made from its own dspy usage tracker, so
  a reply that did not parse (and DSPy's JSON re-ask after it) is still counted;
- :class:`Reservations` holds each call's worst case against ``max_tokens``/``max_cost`` before
  it is sent: a call starts only while what was spent plus the worst case of every call in flight
  is below the limit, else it waits for one of them to settle; so a run ends less than one call
  past a limit however many calls are in flight;
- :class:`ProviderUnreachable` and :func:`unreachable_message` name the base URL when nothing
  answers there; :func:`fatal_copy` hands each later call its own copy of such a run-ending error;
- :func:`cap_fields` cuts a reply far beyond ``max_output_tokens``.

Light: nothing heavy is imported here (dspy only inside :func:`sent_tokens`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from ponder.context.tokens import tokens_for_chars
from ponder.errors import PonderError


class LimitReached(PonderError):
    """A run limit (cost, tokens, time, interrupt) stopped further LM calls."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


class ProviderUnreachable(PonderError):
    """The provider's server could not be reached after the retry policy's attempts; names the
    base URL. Not retried again: every later call of the run fails with it at once."""

    retryable = False


class Spent:
    """What one call's attempts have cost so far."""

    def __init__(self) -> None:
        self.requests = self.input_tokens = self.output_tokens = 0
        self.cost = 0.0

    def add(self, requests: int, input_tokens: int, output_tokens: int, cost: float) -> None:
        self.requests += requests
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost += cost


def tracker_usage(tracker: Any) -> tuple[int, int, int]:
    """``(requests, input_tokens, output_tokens)`` a dspy ``UsageTracker`` saw.

    A request counts when the provider reported usage for it; an entry of zero tokens (an empty
    reply) charged nothing and is no request served.
    """
    requests = input_tokens = output_tokens = 0
    for entries in getattr(tracker, "usage_data", {}).values():
        for entry in entries:
            inp = int(entry.get("prompt_tokens") or 0)
            out = int(entry.get("completion_tokens") or 0)
            if inp or out:
                requests += 1
                input_tokens += inp
                output_tokens += out
    return requests, input_tokens, output_tokens


def sent_tokens(dspy_adapter: Any, signature: Any, inputs: dict[str, Any], fallback: int) -> int:
    """Estimated tokens of the prompt as the DSPy adapter will format it (system message and
    field markers included, ≈4 characters a token); ``fallback`` when it cannot be formatted."""
    try:
        import dspy

        adapter = dspy_adapter or dspy.ChatAdapter()
        messages = adapter.format(signature, demos=[], inputs=inputs)
        chars = sum(len(str(m.get("content", ""))) for m in messages)
        return max(fallback, tokens_for_chars(chars))
    except Exception:  # a custom signature or adapter: the plain estimate will do
        return fallback


class Reservations:
    """The worst case of the calls in flight, held against the run's token and cost limits.

    ``lock`` is the services' own lock (usage is added under it), so a reservation and the usage
    it is checked against are read together.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self.settled = threading.Condition(lock)
        self.tokens = 0
        self.cost = 0.0
        self.in_flight = 0
        #: per thread, how many reservations it holds (a nested call must not wait for itself)
        self._holder = threading.local()

    def reserve(self, services: Any, tokens: int, cost: float) -> tuple[int, float]:
        """Hold ``tokens``/``cost`` for one call, waiting while the calls in flight may use what
        is left; :class:`LimitReached` once what was spent reaches a limit (the run stops)."""
        with self.settled:
            while True:
                usage = services.usage
                used, spent = usage.input_tokens + usage.output_tokens, usage.cost_usd
                limit = message = None
                if services.max_tokens is not None and used >= services.max_tokens:
                    limit = "max_tokens"
                    message = f"the token limit of {services.max_tokens} was reached ({used} used)"
                elif services.max_cost is not None and spent >= services.max_cost:
                    limit = "max_cost"
                    message = (f"the cost limit of ${services.max_cost:g} was reached "
                               f"(${spent:.4f} spent)")
                if limit is not None:
                    if services.stopped_by is None:
                        services.stopped_by = limit
                    raise LimitReached(limit, message or limit)
                fits = (services.max_tokens is None
                        or used + self.tokens < services.max_tokens) and \
                    (services.max_cost is None or spent + self.cost < services.max_cost)
                # a call made while this thread holds a reservation (a nested call) never
                # waits: the call it would wait for is its own caller
                nested = getattr(self._holder, "held", 0) > 0
                if fits or self.in_flight == 0 or nested:
                    self.tokens += tokens
                    self.cost += cost
                    self.in_flight += 1
                    self._holder.held = getattr(self._holder, "held", 0) + 1
                    return (tokens, cost)
                if services.stopping():  # interrupted, out of time, or the provider unusable
                    break
                remaining = services.remaining_s()
                self.settled.wait(0.2 if remaining is None else max(min(0.2, remaining), 0))
        services.check_limits()  # raises the reason it stopped
        raise LimitReached("timeout", "the time limit was reached")

    def release(self, reservation: tuple[int, float]) -> None:
        tokens, cost = reservation
        if tokens or cost:
            with self.settled:
                self.tokens -= tokens
                self.cost -= cost
                self.in_flight -= 1
                self._holder.held -= 1
                self.settled.notify_all()


def cap_fields(prediction: Any, cap: int, fields_of: Callable[[Any], dict[str, Any]]) -> int:
    """Cut every text field of ``prediction`` longer than ``cap`` characters, with a marker;
    returns the longest length found (0 when nothing was cut)."""
    long = {k: v for k, v in fields_of(prediction).items() if isinstance(v, str) and len(v) > cap}
    for name, value in long.items():
        cut = (f"{value[:cap]}\n[… cut by ponder: this reply field was {len(value):,} "
               f"characters, more than max_output_tokens allows …]")
        try:
            prediction[name] = cut
        except Exception:  # a prediction-like object without item assignment
            setattr(prediction, name, cut)
    return max((len(v) for v in long.values()), default=0)


def note_attempts(exc: BaseException, attempts: int) -> None:
    """Record on ``exc`` how many requests the failed call made (``FailedChunk.attempts``)."""
    # an exception type that refuses attributes: the count is secondary
    with contextlib.suppress(Exception):
        exc.ponder_attempts = attempts  # type: ignore[attr-defined]


def fatal_copy(fatal: BaseException) -> BaseException:
    """A fresh copy of a run's fatal error for one more call, which made no request (each failed
    chunk records its own attempts on its error, so calls must not share one object)."""
    from ponder.engine.failures import AdapterAuthError

    again: BaseException
    if isinstance(fatal, AdapterAuthError):
        again = AdapterAuthError(fatal.adapter, fatal.status, fatal.key_variable,
                                 missing=fatal.missing)
    else:
        again = ProviderUnreachable(str(fatal))
    note_attempts(again, 0)
    return again


def base_url_of(lm: Any, settings: Any) -> str | None:
    """The server the run's (primary) adapter talks to, for messages."""
    chain = getattr(lm, "chain", None)
    lms = [link.lm for link in getattr(chain, "links", [])] or [lm]
    kwargs = getattr(lms[0], "kwargs", None) or {}
    for name in ("api_base", "base_url"):
        if kwargs.get(name):
            return str(kwargs[name])
    for name in ("base_url", "api_base"):
        if getattr(settings, name, None):
            return str(getattr(settings, name))
    return None


def unreachable_message(exc: BaseException, url: str | None, attempts: int,
                        elapsed: float) -> str:
    """``cannot reach the provider at http://host:port/v1: connection refused (…); gave up after
    4 attempts over 14.2s`` (never the URL's user:password)."""
    from urllib.parse import urlsplit

    from ponder.support.retry import causes

    names = {type(c).__name__ for c in causes(exc)}
    if "ConnectionRefusedError" in names:
        why = "connection refused (is the server running, and is base_url right?)"
    elif "gaierror" in names:
        why = "the host name does not resolve"
    else:
        why = "the connection failed"
    where = "the provider"
    if url and "gaierror" in names and urlsplit(url).username is not None:
        # the message hides user:password@, so say it is what broke the host name (urllib,
        # under dspy's native engine, does not take credentials in the URL)
        why += (" (base_url holds user:password@, which the HTTP client cannot use: "
                "remove it and set api_key instead)")
    if url:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")  # never user:password@
        where = f"the provider at {parts._replace(netloc=netloc).geturl()}"
    return (f"cannot reach {where}: {why}; gave up after {attempts} attempt"
            f"{'s' if attempts != 1 else ''} over {elapsed:.1f}s ([limits] max_retries)")
