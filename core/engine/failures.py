"""What a provider's failure is, and how an auth failure is worded: the chain's vocabulary.

Why a module of its own: deciding what an exception *means* (an outage that moves on to the next
adapter, a refused key that opens its breaker for good, or the caller's own error that no other
provider would accept) and saying so without leaking a key are questions apart from routing. The
chain in :mod:`ponder.engine.fallback` asks :func:`failure_kind`; the metering and services layers
raise and catch :class:`AdapterAuthError` and :class:`EmptyReply` without needing the chain at all.
:func:`key_variable` lives here because it exists only to name, in those messages, the variable a
key came from (never its value). Everything here is re-exported by :mod:`ponder.engine.fallback`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from ponder.errors import PonderError
from ponder.support.retry import (
    _class_names,
    _status_code,
    is_empty_response,
    is_malformed_reply,
    is_missing_credentials,
    is_retryable,
)
from ponder.support.secrets import redact

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

    def __init__(self, adapter: str, status: int | None, key_variable: str | None, *,
                 missing: bool = False) -> None:
        self.adapter = adapter
        self.status = status
        self.key_variable = key_variable
        #: no key was found at all (litellm's "Missing credentials"), rather than one refused
        self.missing = missing
        super().__init__(describe_auth_error(adapter, MISSING_KEY if missing else status,
                                             key_variable))


#: stands for "no key at all" where :func:`describe_auth_error` takes a status
MISSING_KEY = -1


def describe_auth_error(adapter: str, exc_or_status: BaseException | int | None,
                        key_variable: str | None) -> str:
    """``adapter 'x': the provider rejected the API key (HTTP 401); check OPENAI_API_KEY``.

    ``exc_or_status`` is the provider's error (its status is read from it) or the status itself.
    The provider's own message is left out: some echo the key they were sent. The result goes
    through :func:`ponder.support.secrets.redact` all the same.
    """
    return redact(f"adapter {adapter!r}: {auth_text(exc_or_status, key_variable)}")


def auth_text(exc_or_status: BaseException | int | None, key_variable: str | None) -> str:
    """:func:`describe_auth_error` without the adapter's name (a chain's per-adapter line)."""
    where = f"; check {key_variable}" if key_variable else ""
    if exc_or_status == MISSING_KEY or (isinstance(exc_or_status, BaseException)
                                        and is_missing_credentials(exc_or_status)):
        # found no key at all: say which variable to set (litellm calls this an HTTP 500)
        hint = f"; set {key_variable}" if key_variable else "; set the adapter's api_key"
        return redact(f"no API key was found for the provider{hint}")
    status = exc_or_status if isinstance(exc_or_status, int) or exc_or_status is None \
        else _status_code(exc_or_status)
    if status == 403 or (isinstance(exc_or_status, BaseException)
                         and "PermissionDeniedError" in _class_names(exc_or_status)):
        what = f"the provider refused access with this API key (HTTP {status or 403})"
    else:
        what = f"the provider rejected the API key (HTTP {status or 401})"
    return redact(f"{what}{where}")


def is_auth_error(exc: BaseException) -> bool:
    return (bool(_class_names(exc) & AUTH_NAMES) or _status_code(exc) in AUTH_STATUS
            or is_missing_credentials(exc))


def failure_kind(exc: BaseException) -> str | None:
    """What kind of provider failure ``exc`` is, or None when it is not the provider's.

    ``"auth (HTTP 401)"``; ``"empty reply"``; ``"malformed reply"``; ``"rate limited (HTTP
    429)"``; ``"timeout"``; ``"connection error"``; ``"server error (HTTP 503)"``; ``"transient
    error"``. None for bad requests, context-window errors and anything not retryable.
    """
    if isinstance(exc, EmptyReply) or is_empty_response(exc):
        return "empty reply"
    if is_missing_credentials(exc):  # litellm says "500"; it is a key that was never set
        return "auth (no API key)"
    names = _class_names(exc)
    status = _status_code(exc)
    if names & AUTH_NAMES or status in AUTH_STATUS:
        return f"auth (HTTP {status})" if status else "auth"
    if names & MALFORMED_NAMES or is_malformed_reply(exc):
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


#: the most characters of one error text that is shown, stored or put in ``--json``
ERROR_TEXT_LIMIT = 2_000


def clip_error(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut.

    Why: some errors carry the model's whole reply (DSPy's ``AdapterParseError`` quotes the
    reply that did not parse), so a 20 MB reply in the wrong format became a 20 MB error on
    stderr, in every failed chunk of ``--json`` and in the run store. What the reply was is
    kept, capped, in the call record; an error only needs its start to say what happened.
    """
    if not isinstance(text, str) or len(text) <= limit:
        return text
    return f"{text[:limit]} [… {len(text) - limit:,} more characters cut by ponder]"


def summarize_error(exc: BaseException) -> str:
    """A one-line, redacted description of a provider error."""
    from ponder.support.retry import describe_error

    text = " ".join(describe_error(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def is_empty_reply(outputs: Any) -> bool:
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
        from ponder.support.secrets import Secret, is_secret_reference

        if is_secret_reference(api_key):  # settings built in Python may hold the text itself
            api_key = Secret(api_key)
        source = api_key.source if isinstance(api_key, Secret) else None
        return source or f"the api_key setting of adapter {adapter_name!r}"
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
