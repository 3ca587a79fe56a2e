"""The fake provider's settings and fault vocabulary: :class:`FakeProviderConfig`, the fault and
reply-mode names, and the validators that reject a bad setting where it is declared.

This is its own module because everything else in the fake provider reads it and nothing in it
needs a socket: the server (:mod:`ponder.testing.fake_provider`), the reply builders, the fault
injection and the CLI all validate against the same names, and a test that only wants
``FAULT_KINDS`` or to check a configuration need not pull in the HTTP machinery. The fields are
documented in the :mod:`ponder.testing.fake_provider` docstring.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import attrs
from attrs import validators as v

__all__ = ["FAILURE_KINDS", "FAULT_KINDS", "MODES", "FakeProviderConfig"]

FAULT_KINDS: tuple[str, ...] = (
    "rate_limit",
    "server_error",
    "timeout",
    "malformed",
    "empty_choices",
)
MODES: tuple[str, ...] = ("rules", "oracle", "echo")
FAILURE_KINDS: tuple[str, ...] = (
    *FAULT_KINDS,
    "in_flight_cap",
    "tpm",
    "auth",
    "bad_request",
    "not_found",
)
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
_TPM_WINDOW_S = 60.0


# --------------------------------------------------------------------------------------- config


def _to_latency(value: Any) -> tuple[float, float, float]:
    if isinstance(value, int | float):
        value = (value,)
    parts = [float(x) for x in value]
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"latency takes 1 to 3 numbers (a, b, c), got {len(parts)}")
    return tuple(parts + [0.0] * (3 - len(parts)))  # type: ignore[return-value]


def _to_rules(value: Any) -> tuple[tuple[str, Any], ...]:
    if isinstance(value, Mapping):
        value = value.items()
    return tuple((str(p), r) for p, r in value)


def _check_rules(_inst: Any, _attr: Any, rules: tuple[tuple[str, Any], ...]) -> None:
    for pattern, reply in rules:
        try:
            re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise ValueError(f"rule pattern {pattern!r} is not a valid regex: {exc}") from exc
        if not isinstance(reply, str | Mapping):
            raise TypeError(f"rule reply must be a str or a dict of DSPy fields, got {reply!r}")


def _check_latency(_inst: Any, _attr: Any, value: tuple[float, float, float]) -> None:
    if any(x < 0 or not math.isfinite(x) for x in value):
        raise ValueError(f"latency terms must be finite and >= 0, got {value}")


def _check_kinds(_inst: Any, _attr: Any, kinds: tuple[str, ...]) -> None:
    if not kinds:
        raise ValueError("fault_kinds must not be empty")
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad:
        raise ValueError(f"unknown fault kinds {bad}; choose among {FAULT_KINDS}")


def _finite_ge0(_inst: Any, attr: attrs.Attribute, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attr.name} must be finite and >= 0, got {value}")


def _positive(_inst: Any, attr: attrs.Attribute, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attr.name} must be finite and > 0, got {value}")


_opt_pos_int = v.optional([v.instance_of(int), v.ge(1)])


def _check_regex(_inst: Any, attr: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{attr.name} must be a str, got {value!r}")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{attr.name} {value!r} is not a valid regex: {exc}") from exc


@attrs.frozen(kw_only=True)
class FakeProviderConfig:
    """Settings of a :class:`FakeProvider`; each field is validated where it is declared."""

    # network: loopback only, by design
    host: str = attrs.field(default="127.0.0.1", validator=v.in_(_LOOPBACK_HOSTS))
    port: int = attrs.field(default=0, validator=[v.instance_of(int), v.ge(0), v.le(65535)])
    model: str = attrs.field(default="fake-model", validator=[v.instance_of(str), v.min_len(1)])
    # replies
    mode: str = attrs.field(default="rules", validator=v.in_(MODES))
    rules: tuple[tuple[str, Any], ...] = attrs.field(
        default=(), converter=_to_rules, validator=_check_rules
    )
    default_reply: str = attrs.field(default="OK", validator=v.instance_of(str))
    needles: dict[str, str] = attrs.field(
        factory=dict,
        converter=dict,
        validator=v.deep_mapping(
            key_validator=v.instance_of(str), value_validator=v.instance_of(str)
        ),
    )
    oracle_miss: str = attrs.field(default="NOT FOUND", validator=v.instance_of(str))
    dspy_format: bool = attrs.field(default=True, validator=v.instance_of(bool))
    embedding_dim: int = attrs.field(
        default=64, validator=[v.instance_of(int), v.ge(1), v.le(4096)]
    )
    # latency: a + b*prompt_tokens + c*completion_tokens + uniform(0, jitter) seconds
    latency: tuple[float, float, float] = attrs.field(
        default=(0.0, 0.0, 0.0), converter=_to_latency, validator=_check_latency
    )
    jitter: float = attrs.field(default=0.0, converter=float, validator=_finite_ge0)
    # faults
    fault_rate: float = attrs.field(default=0.0, converter=float, validator=[v.ge(0.0), v.le(1.0)])
    fault_kinds: tuple[str, ...] = attrs.field(
        default=FAULT_KINDS, converter=tuple, validator=_check_kinds
    )
    seed: int = attrs.field(default=0, validator=v.instance_of(int))
    fail_first_n: int = attrs.field(default=0, validator=[v.instance_of(int), v.ge(0)])
    fail_first_kind: str = attrs.field(default="server_error", validator=v.in_(FAULT_KINDS))
    fault_header: bool = attrs.field(default=True, validator=v.instance_of(bool))
    retry_after: float = attrs.field(default=1.0, converter=float, validator=_positive)
    timeout_sleep: float = attrs.field(default=30.0, converter=float, validator=_finite_ge0)
    # auth and capacity
    api_key: str | None = attrs.field(
        default=None, repr=False, validator=v.optional([v.instance_of(str), v.min_len(1)])
    )
    max_in_flight: int | None = attrs.field(default=None, validator=_opt_pos_int)
    tpm: int | None = attrs.field(default=None, validator=_opt_pos_int)
    #: the rolling window ``tpm`` counts over (60 s like a provider; tests shorten it)
    tpm_window_s: float = attrs.field(default=_TPM_WINDOW_S, converter=float, validator=_positive)
    # lifetime
    max_lifetime: float = attrs.field(default=600.0, converter=float, validator=_positive)
    max_requests: int = attrs.field(default=100_000, validator=[v.instance_of(int), v.ge(1)])
    idle_timeout: float = attrs.field(default=15.0, converter=float, validator=_positive)
    max_body_bytes: int = attrs.field(
        default=256 * 1024 * 1024, validator=[v.instance_of(int), v.ge(1)]
    )
    # scripted dspy.RLM root (see the module docstring)
    rlm_root: bool = attrs.field(default=False, validator=v.instance_of(bool))
    rlm_pattern: str | None = attrs.field(default=None, validator=v.optional(_check_regex))
    rlm_max_hits: int = attrs.field(default=12, validator=[v.instance_of(int), v.ge(1)])
