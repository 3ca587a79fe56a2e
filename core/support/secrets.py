"""Keeping secrets out of logs, traces, the store and error messages.

Three layers: values under secret-looking keys are masked (:func:`clean_secrets`); every value
ponder learns is a secret (API keys read from the environment, :class:`Secret` values) is
registered process-wide and replaced wherever it appears in text (:func:`redact`); and strings
shaped like well-known API keys are redacted even when nobody registered them.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ponder.errors import ConfigError

#: Fixed length, so the mask does not reveal how long the secret is.
MASK = "********"

#: Registered values shorter than this are ignored: replacing "abc" everywhere would mangle text.
MIN_SECRET_LENGTH = 6


def mask_value(value: Any, *, show: int = 0) -> str:
    """Mask ``value``; with ``show > 0`` keep its last ``show`` characters, but only when the
    value is at least ``4 * show`` long (so most of it stays hidden)."""
    text = "" if value is None else str(value)
    if show > 0 and len(text) >= 4 * show:
        return MASK + text[-show:]
    return MASK


# ---------------------------------------------------------------------------------------------
# which keys hold secrets

# substrings that make a key secret wherever they appear ("openai_api_key", "clientsecret")
_SECRET_SUBSTRINGS = (
    "api_key",
    "apikey",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "credential",
    "private_key",
    "privatekey",
    "cookie",
    "authorization",
    "access_key",
)
# whole words only: "author", "tokens", "tokenizer", "oauth_flow" must stay visible
_SECRET_WORDS = frozenset({"token", "auth", "bearer"})
# words that turn "token" into a count or a setting: token_count, token_limit, token_type
_TOKEN_COUNT_WORDS = frozenset(
    {
        "count",
        "counts",
        "limit",
        "limits",
        "max",
        "min",
        "num",
        "number",
        "total",
        "usage",
        "used",
        "input",
        "output",
        "prompt",
        "completion",
        "cached",
        "reasoning",
        "budget",
        "per",
        "type",
        "estimate",
        "len",
        "length",
        "size",
        "id",
        "ids",
    }
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")


def is_secret_key(key: Any) -> bool:
    """Whether a mapping key names a secret (``api_key``, ``Authorization``, ``access_token``),
    but not a token count (``max_tokens``, ``token_count``, ``input_tokens``)."""
    if not isinstance(key, str) or not key:
        return False
    snake = _CAMEL.sub("_", key).lower()
    normalised = _SEPARATORS.sub("_", snake).strip("_")
    compact = normalised.replace("_", "")
    if any(s in normalised or s.replace("_", "") in compact for s in _SECRET_SUBSTRINGS):
        return True
    words = set(normalised.split("_"))
    if "token" in words:
        return not (words & _TOKEN_COUNT_WORDS)
    return bool(words & (_SECRET_WORDS - {"token"}))


# ---------------------------------------------------------------------------------------------
# registered values and key-shaped strings

_KEY_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # "Bearer <token>": keep the scheme so the text still reads sensibly. The token must hold a
    # digit, a symbol or mixed case, or be very long, so prose ("a bearer of bad news") is kept.
    (
        re.compile(
            r"\b((?i:bearer|basic))\s+"
            r"(?:(?=[A-Za-z0-9._~+/=-]*(?:[0-9._~+/=-]|[a-z][A-Z]))[A-Za-z0-9._~+/=-]{8,}"
            r"|[A-Za-z]{24,})"
        ),
        r"\1 " + MASK,
    ),
    # credentials in URL query strings (?key=AIza..., &access_token=...)
    (
        re.compile(
            r"([?&](?:key|api[_-]?key|access[_-]?token|token|secret|password|sig)=)[^&#\s\"']+",
            re.IGNORECASE,
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),  # OpenAI, Anthropic, OpenRouter
    (re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"), MASK),  # Google
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), MASK),  # GitHub tokens
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), MASK),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), MASK),  # Slack
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}"), MASK),  # Hugging Face
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), MASK),  # AWS access key id
)

_lock = threading.Lock()
_known: set[str] = set()
_known_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Remember ``value`` as a secret: :func:`redact` replaces it everywhere from now on.

    Values shorter than 6 characters are ignored (they would match ordinary text).
    """
    global _known_pattern
    if not isinstance(value, str):
        return
    value = value.strip()
    if len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if value not in _known:
            _known.add(value)
            _known_pattern = None  # rebuilt lazily on the next redact


def known_secrets() -> frozenset[str]:
    """The registered secret values (for tests and diagnostics; never log this)."""
    with _lock:
        return frozenset(_known)


def forget_secrets() -> None:
    """Clear the registry (tests use this to isolate themselves)."""
    global _known_pattern
    with _lock:
        _known.clear()
        _known_pattern = None


def _pattern() -> re.Pattern[str] | None:
    global _known_pattern
    with _lock:
        if _known_pattern is None and _known:
            # longest first, so a secret containing another is replaced as a whole
            ordered = sorted(_known, key=len, reverse=True)
            _known_pattern = re.compile("|".join(re.escape(v) for v in ordered))
        return _known_pattern


def redact(text: str) -> str:
    """Replace every registered secret and every key-shaped token in ``text`` by the mask."""
    if not isinstance(text, str) or not text:
        return text
    pattern = _pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for shape, replacement in _KEY_SHAPES:
        text = shape.sub(replacement, text)
    return text


def _mask_all(value: Any) -> Any:
    # everything under a secret key is hidden, but structure, None and booleans stay readable
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        return {redact(k) if isinstance(k, str) else k: _mask_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return _rebuild(value, [_mask_all(v) for v in value])
    if isinstance(value, str) and not value:
        return value
    return MASK


def _rebuild(original: Any, items: list[Any]) -> Any:
    if isinstance(original, list):
        return items
    if isinstance(original, tuple) and hasattr(original, "_fields"):  # namedtuple
        return type(original)(*items)
    if isinstance(original, tuple):
        return tuple(items)
    return type(original)(items) if isinstance(original, set | frozenset) else items


def clean_secrets(data: Any) -> Any:
    """A deep copy of ``data`` that is safe to log, trace or store.

    In mappings, values under secret-looking keys are masked (see :func:`is_secret_key`); every
    other string, at any depth, goes through :func:`redact`. Dicts, lists, tuples and sets are
    copied; other objects are returned as they are.
    """
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, Mapping):
        cleaned: dict[Any, Any] = {}
        for key, value in data.items():
            new_key = redact(key) if isinstance(key, str) else key
            cleaned[new_key] = _mask_all(value) if is_secret_key(key) else clean_secrets(value)
        return cleaned
    if isinstance(data, list | tuple | set | frozenset):
        return _rebuild(data, [clean_secrets(v) for v in data])
    return data


# ---------------------------------------------------------------------------------------------
# logging


class SecretsFilter(logging.Filter):
    """Redacts secrets from log records: the formatted message, exception text and stack.

    The message is formatted here (args merged in) because an argument's ``str()`` may hold the
    secret; ``record.args`` is then cleared.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logging's problem to report, not ours
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | str | None = None) -> SecretsFilter:
    """Add a :class:`SecretsFilter` to ``logger``'s handlers (the root logger by default).

    Handler filters see records propagated from child loggers, logger filters do not, so the
    filter goes on the handlers (on the logger itself only when it has no handler yet).
    Idempotent: a handler that already has one is left alone. Returns the filter.
    """
    if logger is None or isinstance(logger, str):
        logger = logging.getLogger(logger)
    targets: list[logging.Filterer] = list(logger.handlers) or [logger]
    secrets_filter = SecretsFilter()
    for target in targets:
        if not any(isinstance(f, SecretsFilter) for f in target.filters):
            target.addFilter(secrets_filter)
    return secrets_filter


# ---------------------------------------------------------------------------------------------
# reading keys


def get_api_key(
    env_vars: Sequence[str] | str = ("PONDER_API_KEY",), default: str | None = None
) -> str | None:
    """The first non-empty environment variable of ``env_vars`` (else ``default``).

    The value found is registered as a secret, so it is redacted from logs from now on.
    """
    names: Iterable[str] = (env_vars,) if isinstance(env_vars, str) else env_vars
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            register_secret(value)
            return value
    if default is not None:
        register_secret(default)
    return default


class MissingSecretError(ConfigError):
    """A secret reference points at an unset variable or a missing file.

    The message names where the reference came from and what is missing, never a value.
    """

    def __init__(
        self,
        message: str,
        *,
        origin: str | None = None,
        variable: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(f"{origin}: {message}" if origin else message)
        self.origin = origin
        self.variable = variable
        self.path = path


_ENV_PREFIX = "$env:"
_FILE_PREFIX = "$file:"


def is_secret_reference(value: Any) -> bool:
    """Whether ``value`` is config text naming a secret (``$env:NAME``, ``$file:path``)."""
    return isinstance(value, str) and value.strip().startswith((_ENV_PREFIX, _FILE_PREFIX))


@attrs.frozen(repr=False)
class Secret:
    """A secret value or a reference to one: ``$env:NAME`` or ``$file:path``.

    ``str()`` and ``repr()`` never show a value: a literal prints as the mask, a reference as its
    own (safe) text. :meth:`reveal` resolves it when it is actually needed. ``origin`` (e.g.
    ``"ponder.toml: adapter.api_key"``) prefixes error messages.
    """

    raw: str = attrs.field(converter=lambda v: str(v).strip())
    origin: str | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.is_reference:
            if not self._target:
                where = f"{self.origin}: " if self.origin else ""
                raise ConfigError(f"{where}secret reference {self.raw!r} names nothing")
        else:
            register_secret(self.raw)  # a literal from config must never reach a log either

    @classmethod
    def parse(cls, text: str, origin: str | None = None) -> Secret:
        """Make a Secret from config text: a literal value or a ``$env:`` / ``$file:`` reference."""
        return cls(text, origin=origin)

    @property
    def is_reference(self) -> bool:
        return self.raw.startswith((_ENV_PREFIX, _FILE_PREFIX))

    @property
    def reference(self) -> str | None:
        """The reference text (``$env:GEMINI_API_KEY``), or None for a literal."""
        return self.raw if self.is_reference else None

    @property
    def source(self) -> str | None:
        """Where a reference's value comes from, for a message: the variable's name, or "the
        key file PATH"; None for a literal."""
        if self.raw.startswith(_ENV_PREFIX):
            return self._target
        if self.raw.startswith(_FILE_PREFIX):
            return f"the key file {self._target}"
        return None

    @property
    def _target(self) -> str:
        for prefix in (_ENV_PREFIX, _FILE_PREFIX):
            if self.raw.startswith(prefix):
                return self.raw[len(prefix) :].strip()
        return ""

    def reveal(self) -> str:
        """The secret value, reading the variable or file now; registers it for redaction."""
        if self.raw.startswith(_ENV_PREFIX):
            name = self._target
            value = os.environ.get(name)
            if value is None:
                raise MissingSecretError(
                    f"environment variable {name} is not set", origin=self.origin, variable=name
                )
            if not value.strip():
                raise MissingSecretError(
                    f"environment variable {name} is empty", origin=self.origin, variable=name
                )
            value = value.strip()
        elif self.raw.startswith(_FILE_PREFIX):
            path = Path(self._target).expanduser()
            try:
                value = path.read_text(encoding="utf-8").rstrip("\r\n")
            except FileNotFoundError:
                raise MissingSecretError(
                    f"secret file {path} does not exist", origin=self.origin, path=str(path)
                ) from None
            except OSError as exc:
                where = f"{self.origin}: " if self.origin else ""
                reason = exc.strerror or type(exc).__name__
                raise ConfigError(f"{where}cannot read secret file {path}: {reason}") from None
            if not value.strip():
                raise MissingSecretError(
                    f"secret file {path} is empty", origin=self.origin, path=str(path)
                )
        else:
            value = self.raw
        register_secret(value)
        return value

    def __str__(self) -> str:
        return self.raw if self.is_reference else MASK

    def __repr__(self) -> str:
        return f"Secret({str(self)!r})"
