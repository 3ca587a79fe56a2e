"""The ``gemini`` adapter: Google's Gemini models (AI Studio API) on dspy's native engine.

Config example::

    [adapter]
    name = "gemini"
    # model = "gemini/gemini-2.5-flash"   # the default
    # api_key = "$env:MY_GEMINI_KEY"      # default: GEMINI_API_KEY, then GOOGLE_API_KEY
    # thinking_budget = 0                 # 0: thinking off (default); N > 0: up to N thinking
    #                                     # tokens; -1: the model decides (dynamic thinking)
    # max_output_tokens = 2048
    # temperature = 0.0
    # api_base = "https://my-proxy.example/v1beta"   # a proxy in front of the Gemini API

Requests go through dspy's native engine (``dspy.lm15``'s Gemini client: ``generateContent``,
key in ``x-goog-api-key``), not litellm: no ``import litellm`` (~2 s) before the first request and
~3 ms of CPU per call instead of ~10. One exception: a positive ``thinking_budget`` is a token
budget, and lm15's options only take an effort level, so those calls fall back to litellm (same
address, same key). See :mod:`ponder.plugins._native_lm`.

Window and prices come from the bundled model map (dspy's snapshot of litellm's;
gemini-2.5-flash: 1,048,576 input tokens, $0.30 / $2.50 per million input / output tokens).

**Thinking** is off by default: ponder runs many small map calls where hidden reasoning tokens
cost money and latency without improving extraction. ``thinking_budget = 0`` sends litellm's
``reasoning_effort="none"``, which becomes ``thinkingConfig.thinkingBudget = 0`` for Gemini 2.5
Flash / Flash-Lite (thinking really off) and the lowest ``thinkingLevel`` for Gemini 3 models
(which cannot switch thinking off). Gemini 2.5 Pro cannot switch it off either and rejects a
budget of 0: set ``thinking_budget = 128`` (its minimum) for it. Models without thinking get
no thinking parameter at all (and a positive budget for them is a configuration error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from ponder import hookimpl
from ponder.errors import ConfigError
from ponder.kernel.kinds import ModelInfo
from ponder.plugins.litellm_adapter import (
    check_extra,
    litellm_model_info,
    non_negative_or_none,
    positive_or_none,
    reveal_key,
)
from ponder.support.secrets import Secret, get_api_key

if TYPE_CHECKING:  # pragma: no cover
    import dspy

PONDER_PLUGIN_API = 1

DEFAULT_MODEL = "gemini/gemini-2.5-flash"
#: Checked in this order when ``api_key`` is not set (litellm's own order for Gemini).
KEY_ENV_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


def _budget(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < -1:
        raise ValueError(f"'{attribute.name}' must be -1 (dynamic), 0 (off) or a token count")


@attrs.define
class GeminiSettings:
    """Settings of the ``gemini`` adapter."""

    #: A litellm Gemini model string ("gemini/" is added when missing).
    model: str = DEFAULT_MODEL
    #: None: GEMINI_API_KEY, then GOOGLE_API_KEY from the environment.
    api_key: Secret | None = None
    api_base: str | None = None
    #: 0: off; N > 0: a thinking budget of N tokens; -1: dynamic (the model's default).
    thinking_budget: int = attrs.field(default=0, validator=_budget)
    temperature: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    max_output_tokens: int = attrs.field(default=2048, validator=attrs.validators.gt(0))
    timeout_s: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    #: None: litellm's map (1,048,576 for gemini-2.5-flash).
    context_window: int | None = attrs.field(default=None, validator=positive_or_none)
    input_cost_per_token: float | None = attrs.field(default=None, validator=non_negative_or_none)
    output_cost_per_token: float | None = attrs.field(default=None, validator=non_negative_or_none)
    extra: dict[str, Any] = attrs.field(factory=dict, validator=check_extra)


def known_model(model: str) -> dict[str, Any]:
    """The bundled metadata of ``model`` (a "gemini/…" string): window, prices, reasoning.

    Read from dspy's snapshot of litellm's model map (``dspy.clients.model_metadata``), the same
    figures without ``import litellm`` (~2 s) before the first request.
    """
    from ponder.plugins._native_lm import snapshot_model_info

    return snapshot_model_info("gemini", model.split("/", 1)[-1])


def supports_thinking(model: str) -> bool:
    """Whether ``model`` (a litellm "gemini/…" string) can think, per the model map or its name."""
    known = known_model(model)
    if "supports_reasoning" in known and known["supports_reasoning"] is not None:
        return bool(known["supports_reasoning"])
    name = model.split("/", 1)[-1]
    return not name.startswith(("gemini-1", "gemini-2.0", "gemini-pro", "gemma"))


def thinking_kwargs(model: str, thinking_budget: int) -> dict[str, Any]:
    """The litellm keyword arguments that set Gemini's thinking for ``thinking_budget``.

    0 -> ``reasoning_effort="none"`` (nothing for a model without thinking: litellm would refuse
    the parameter); N > 0 -> ``thinking={"type": "enabled", "budget_tokens": N}`` (Gemini 3
    models take no budget: litellm turns thoughts on at the model's default level); -1 -> nothing.
    """
    if thinking_budget == -1:
        return {}
    if thinking_budget > 0:
        if not supports_thinking(model):
            raise ConfigError(
                f"gemini adapter: {model} has no thinking mode; set [adapter] thinking_budget = 0"
            )
        return {"thinking": {"type": "enabled", "budget_tokens": thinking_budget}}
    return {"reasoning_effort": "none"} if supports_thinking(model) else {}


class GeminiAdapter:
    """Builds a ``dspy.LM`` for a Gemini model, thinking off unless asked."""

    def __init__(self, settings: GeminiSettings | None = None):
        self.settings = settings or GeminiSettings()

    @property
    def litellm_model(self) -> str:
        model = self.settings.model
        return model if model.startswith("gemini/") else f"gemini/{model}"

    def model_info(self) -> ModelInfo:
        s = self.settings
        known = known_model(self.litellm_model)
        max_output = s.max_output_tokens
        if known.get("max_output_tokens"):
            max_output = min(max_output, int(known["max_output_tokens"]))
        return litellm_model_info(
            self.litellm_model,
            context_window=s.context_window or known.get("max_input_tokens")
            or known.get("max_tokens"),
            max_output_tokens=max_output,
            input_cost_per_token=s.input_cost_per_token
            if s.input_cost_per_token is not None else known.get("input_cost_per_token") or 0.0,
            output_cost_per_token=s.output_cost_per_token
            if s.output_cost_per_token is not None else known.get("output_cost_per_token") or 0.0,
            lookup=False,
        )

    def api_key(self) -> str:
        """The key to send: the configured one, else GEMINI_API_KEY / GOOGLE_API_KEY."""
        key = reveal_key(self.settings.api_key) or get_api_key(env_vars=KEY_ENV_VARS)
        if not key:
            raise ConfigError(
                "the gemini adapter needs an API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) "
                'in the environment, or [adapter] api_key = "$env:YOUR_VARIABLE"'
            )
        return key

    def lm_kwargs(self) -> dict[str, Any]:
        """The keyword arguments :func:`~ponder.plugins._native_lm.build_native_lm` gets (the
        key included)."""
        s = self.settings
        return {
            "api_key": self.api_key(),
            "api_base": s.api_base,
            "temperature": s.temperature,
            "max_tokens": s.max_output_tokens,
            "timeout_s": s.timeout_s,
            "extra": {**thinking_kwargs(self.litellm_model, s.thinking_budget), **s.extra},
        }

    def build_lm(self) -> dspy.LM:
        from ponder.plugins._native_lm import build_native_lm, report_truncation_once

        report_truncation_once("gemini", self.settings.max_output_tokens)
        return build_native_lm(self.litellm_model, **self.lm_kwargs())


@hookimpl
def ponder_register_adapters(register):
    register("gemini", GeminiAdapter, settings=GeminiSettings)
