"""The ``litellm`` adapter: any model litellm knows, as a DSPy language model.

Config example::

    [adapter]
    name = "litellm"
    model = "anthropic/claude-3-5-haiku-latest"   # any litellm model string
    api_key = "$env:ANTHROPIC_API_KEY"             # optional: litellm reads the usual env var
    # api_base = "https://my-gateway.example/v1"
    # context_window = 200000                      # default: litellm's bundled model map
    # max_output_tokens = 1024
    # temperature = 0.0
    # timeout_s = 120
    # extra = { top_p = 0.9 }                      # passed to dspy.LM as-is

This module also holds the helpers the ``gemini`` and ``openai_compatible`` adapters are built
on: :func:`build_litellm_lm` (the one place a litellm-backed ``dspy.LM`` is constructed) and
:func:`litellm_model_info` (window and prices from litellm's bundled model map).

Retries: ponder wraps every LM call in its own retry policy (:mod:`ponder.support.retry`), so the
LM is built with ``num_retries=0`` and litellm's own retries off: one retry layer only. DSPy's
response cache is off too (ponder has its own caching and a cached reply would hide a failure).

Importing this module is cheap: dspy and litellm are imported inside the functions that use them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs

from ponder import hookimpl
from ponder.errors import ConfigError
from ponder.kernel.kinds import ModelInfo
from ponder.plugins._native_lm import RESERVED_EXTRA, build_dspy_lm
from ponder.support.secrets import Secret

if TYPE_CHECKING:  # pragma: no cover
    import dspy

PONDER_PLUGIN_API = 1

logger = logging.getLogger(__name__)

#: Used when neither the settings nor litellm's model map give a context window.
FALLBACK_CONTEXT_WINDOW = 8192



def positive_or_none(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"'{attribute.name}' must be > 0 (or left unset), got {value!r}")


def non_negative_or_none(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"'{attribute.name}' must be >= 0 (or left unset), got {value!r}")


def check_extra(instance: Any, attribute: attrs.Attribute, value: dict[str, Any]) -> None:
    reserved = sorted(RESERVED_EXTRA.intersection(value))
    if reserved:
        raise ValueError(
            f"'{attribute.name}' may not set {reserved}: ponder owns retries and caching "
            "(configure [retry] instead) and the model is its own setting"
        )


def _ensure_local_cost_map() -> None:
    """Make litellm read its bundled model/price map instead of fetching one from the web."""
    from ponder.support.offline import use_bundled_model_map

    use_bundled_model_map()


def reveal_key(api_key: Secret | str | None) -> str | None:
    """The plain value of a configured key, or None.

    Accepts a :class:`~ponder.support.secrets.Secret` or a str (a literal or a ``$env:``/``$file:``
    reference, for settings built in Python rather than by the kernel).
    """
    if api_key is None:
        return None
    secret = api_key if isinstance(api_key, Secret) else Secret(str(api_key))
    return secret.reveal() or None


def lookup_litellm_model(model: str) -> dict[str, Any] | None:
    """litellm's bundled map entry for ``model`` (window, prices…), or None when unknown."""
    _ensure_local_cost_map()
    import litellm

    try:
        return dict(litellm.get_model_info(model))
    except Exception:  # litellm raises a bare Exception for a model it does not map
        return None


def litellm_model_info(
    model: str,
    *,
    context_window: int | None = None,
    max_output_tokens: int = 1024,
    input_cost_per_token: float | None = None,
    output_cost_per_token: float | None = None,
    lookup: bool = True,
) -> ModelInfo:
    """A :class:`ModelInfo` from explicit settings, filling the gaps from litellm's model map.

    ``None`` means "ask litellm"; when litellm does not know the model (or ``lookup`` is False)
    the window falls back to :data:`FALLBACK_CONTEXT_WINDOW` with a logged note, and unknown
    prices to 0.
    """
    known = lookup_litellm_model(model) if lookup else None
    known = known or {}
    if context_window is None:
        context_window = known.get("max_input_tokens") or known.get("max_tokens")
        if not context_window:
            context_window = FALLBACK_CONTEXT_WINDOW
            logger.warning(
                "litellm does not know the context window of %r; assuming %d tokens "
                "(set `context_window` in [adapter] to the real value)",
                model,
                FALLBACK_CONTEXT_WINDOW,
            )
    model_max_output = known.get("max_output_tokens")
    if model_max_output:
        max_output_tokens = min(max_output_tokens, int(model_max_output))
    if input_cost_per_token is None:
        input_cost_per_token = known.get("input_cost_per_token") or 0.0
    if output_cost_per_token is None:
        output_cost_per_token = known.get("output_cost_per_token") or 0.0
    return ModelInfo(
        model=model,
        context_window=int(context_window),
        max_output_tokens=int(max_output_tokens),
        input_cost_per_token=float(input_cost_per_token),
        output_cost_per_token=float(output_cost_per_token),
    )


def build_litellm_lm(model: str, **options: Any) -> dspy.LM:
    """The one place ponder builds a litellm-backed ``dspy.LM``: :func:`build_dspy_lm` (same
    ``options``, same ``num_retries=0``/``cache=False``) with ``engine="litellm"``.

    DSPy 3.4's "auto" engine may otherwise bypass litellm with its native HTTP client for some
    providers; these adapters promise litellm's provider coverage and error types.
    """
    return build_dspy_lm(model, engine="litellm", **options)


@attrs.define
class LiteLLMSettings:
    """Settings of the ``litellm`` adapter (the ``[adapter]`` config section)."""

    #: A litellm model string, e.g. "openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest".
    model: str | None = None
    #: A key or a ``$env:NAME`` / ``$file:path`` reference; None: litellm reads the provider's
    #: usual environment variable (OPENAI_API_KEY, ANTHROPIC_API_KEY, …).
    api_key: Secret | None = None
    api_base: str | None = None
    temperature: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    max_output_tokens: int = attrs.field(default=1024, validator=attrs.validators.gt(0))
    timeout_s: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    #: None: the model's window from litellm's bundled map (8192 with a logged note if unknown).
    context_window: int | None = attrs.field(default=None, validator=positive_or_none)
    #: None: litellm's bundled price for the model (0 if unknown).
    input_cost_per_token: float | None = attrs.field(default=None, validator=non_negative_or_none)
    output_cost_per_token: float | None = attrs.field(default=None, validator=non_negative_or_none)
    #: Extra keyword arguments for ``dspy.LM`` (e.g. top_p, stop, extra_headers).
    extra: dict[str, Any] = attrs.field(factory=dict, validator=check_extra)


class LiteLLMAdapter:
    """Builds a ``dspy.LM`` for any litellm model string."""

    def __init__(self, settings: LiteLLMSettings | None = None):
        self.settings = settings or LiteLLMSettings()

    def _model(self) -> str:
        model = self.settings.model
        if not model:
            raise ConfigError(
                "the litellm adapter needs a model: set [adapter] model = "
                '"<provider>/<model>", e.g. "openai/gpt-4o-mini"'
            )
        return model

    def model_info(self) -> ModelInfo:
        s = self.settings
        return litellm_model_info(
            self._model(),
            context_window=s.context_window,
            max_output_tokens=s.max_output_tokens,
            input_cost_per_token=s.input_cost_per_token,
            output_cost_per_token=s.output_cost_per_token,
        )

    def build_lm(self) -> dspy.LM:
        s = self.settings
        return build_litellm_lm(
            self._model(),
            api_key=reveal_key(s.api_key),
            api_base=s.api_base,
            temperature=s.temperature,
            max_tokens=s.max_output_tokens,
            timeout_s=s.timeout_s,
            extra=s.extra,
        )


@hookimpl
def ponder_register_adapters(register):
    register("litellm", LiteLLMAdapter, settings=LiteLLMSettings)
