"""The ``[batch]`` config section and the provider a batch job goes to.

A batch job talks to the provider behind the configured adapter, so the model, base URL and key
come from the adapter's own settings: ``litellm`` with an ``openai/…`` model (or ``azure/…``),
or ``openai_compatible`` (a server with OpenAI's Files and Batch endpoints), or ``litellm`` with
an ``anthropic/…`` model (Anthropic's Message Batches, through ponder's own thin client:
:mod:`ponder.batchjobs.anthropic_client`). Other providers (Gemini's batch mode…) are refused
with a message saying so, instead of failing later with a provider error.
"""

from __future__ import annotations

import os
from typing import Any

import attrs

from ponder.errors import ConfigError
from ponder.kernel.kinds import ModelInfo

#: litellm providers whose batch API has OpenAI's shape (litellm's create_batch covers them)
OPENAI_SHAPED = ("openai", "azure", "hosted_vllm")
#: providers ponder drives: the OpenAI-shaped ones, and Anthropic's Message Batches
BATCH_PROVIDERS = (*OPENAI_SHAPED, "anthropic")

#: where litellm looks for each provider's key when none is configured
KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "azure": "AZURE_API_KEY",
                 "hosted_vllm": "HOSTED_VLLM_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}

#: OpenAI and Anthropic both document batch jobs at 50% of the synchronous price (input and
#: output tokens): OpenAI's Batch API, Anthropic's Message Batches
DEFAULT_DISCOUNT = 0.5


def _fraction(_inst: Any, attr: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"'{attr.name}' must be in [0, 1), got {value!r}")


def _positive(_inst: Any, attr: attrs.Attribute, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"'{attr.name}' must be > 0, got {value!r}")


@attrs.define
class BatchSettings:
    """``[batch]``: how jobs are priced, polled and finished."""

    #: the provider's documented batch discount off the list price (OpenAI: 0.5)
    discount: float = attrs.field(default=DEFAULT_DISCOUNT, validator=_fraction)
    #: OpenAI accepts only "24h"
    completion_window: str = "24h"
    #: seconds between polls while waiting
    poll_interval: float = attrs.field(default=30.0, validator=_positive)
    #: give up waiting after this many seconds (the job keeps running at the provider)
    wait_timeout: float | None = attrs.field(default=None, validator=_positive)
    #: requests in the error file, expired or cancelled: answer them live (True) or list them
    retry_failed: bool = True


@attrs.frozen
class BatchTarget:
    """Where a job goes: the provider, model, base URL and key (never stored)."""

    adapter: str
    provider: str
    model: str
    api_base: str | None
    api_key: str | None = attrs.field(repr=False)
    model_info: ModelInfo
    discount: float
    #: the adapter's settings and its DSPy prompt format (None: ChatAdapter), which the
    #: response-cache key of a live call includes (``ponder ask --batch`` writes those keys)
    adapter_settings: Any = attrs.field(default=None, repr=False, eq=False)
    dspy_adapter: Any = attrs.field(default=None, repr=False, eq=False)

    @property
    def litellm_model(self) -> str:
        return f"{self.provider}/{self.model}"

    def batch_cost(self, input_tokens: int, output_tokens: int) -> float:
        """The cost at the batch price: the list price less the discount."""
        return self.model_info.cost(input_tokens, output_tokens) * (1.0 - self.discount)

    def describe_pricing(self) -> dict[str, Any]:
        info = self.model_info
        return {"mode": "batch", "discount": self.discount,
                "input_cost_per_token": info.input_cost_per_token * (1.0 - self.discount),
                "output_cost_per_token": info.output_cost_per_token * (1.0 - self.discount),
                "list_input_cost_per_token": info.input_cost_per_token,
                "list_output_cost_per_token": info.output_cost_per_token}


def resolve_target(config: Any, plugins: Any, *, adapter: str | None = None,
                   discount: float = DEFAULT_DISCOUNT) -> BatchTarget:
    """The batch target of ``adapter`` (default: the one a run would choose)."""
    from ponder.engine.system import choose_adapter

    name = adapter or choose_adapter(config)[0]
    entry = plugins.get("adapter", name)
    settings = config.adapter_settings(name, entry.settings)
    instance = entry.factory(settings) if entry.settings is not None else entry.factory()
    s = getattr(instance, "settings", None)
    base = getattr(s, "base_url", None) if name == "openai_compatible" else None
    model = str(getattr(s, "model", "") or "")
    if name == "openai_compatible":
        provider, model = "openai", model.removeprefix("openai/")
        if not base:
            raise ConfigError("batch jobs with the openai_compatible adapter need [adapter] "
                              "base_url (a server with /files and /batches endpoints)")
    elif name == "litellm" and "/" in model:
        provider, _, model = model.partition("/")
        base = getattr(s, "api_base", None)
    else:
        raise ConfigError(
            f"batch jobs need an adapter whose provider has a batch API ponder drives: litellm "
            f"with an {'/'.join(BATCH_PROVIDERS)} model, or openai_compatible; adapter {name!r} "
            f"(model {model or 'unset'!r}) has none ponder can drive")
    if provider not in BATCH_PROVIDERS:
        raise ConfigError(
            f"provider {provider!r} (adapter {name}, model {model!r}) has no batch API that "
            f"ponder drives (supported: {', '.join(BATCH_PROVIDERS)}); its batch mode is not "
            "supported yet")
    key = getattr(s, "api_key", None)
    revealed = key.reveal() if hasattr(key, "reveal") else (str(key) if key else None)
    # no key configured: the provider's usual variable, as litellm itself would read it (the
    # results download goes around litellm and needs the key too)
    revealed = revealed or os.environ.get(KEY_VARIABLES.get(provider, "")) or None
    if name == "openai_compatible" and not revealed:
        revealed = "sk-no-key"
    return BatchTarget(adapter=name, provider=provider, model=model, api_base=base,
                       api_key=revealed or None, model_info=instance.model_info(),
                       discount=discount, adapter_settings=s,
                       dspy_adapter=getattr(instance, "dspy_adapter", lambda: None)())
