"""The ``openai_compatible`` adapter: any server speaking OpenAI's chat-completions API.

Ollama, vLLM, llama.cpp's server, LM Studio, a company gateway… Config example::

    [adapter]
    name = "openai_compatible"
    base_url = "http://localhost:11434/v1"     # required; usually ends in /v1
    model = "qwen2.5:7b"                       # the name the server knows the model by
    # api_key = "$env:MY_GATEWAY_KEY"          # default: the dummy key "sk-no-key"
    context_window = 32768                     # such servers can't be asked: default 8192
    # input_cost_per_token = 0.0               # default 0 (self-hosted)

Without an ``api_key`` the adapter sends the dummy bearer key ``sk-no-key``: many servers ignore
the header but some (and the OpenAI client library underneath) insist one is present, and this
keeps an unrelated ``OPENAI_API_KEY`` from your environment from being sent to a third party.

Requests go through dspy's native engine (``dspy.lm15``), not litellm: the server is declared to
it once per base URL (:func:`ponder.plugins._native_lm.declare_openai_compatible`, the chat
completions wire with ``max_tokens``), which keeps ``import litellm`` (~2 s) off the path to the
first request and costs ~3 ms of CPU per call instead of ~10. A call the native route cannot carry
(an ``extra`` option it has no field for) falls back to litellm for that call, at the same
address with the same key. Retries are off: ponder retries.
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
    reveal_key,
)
from ponder.support.secrets import Secret

if TYPE_CHECKING:  # pragma: no cover
    import dspy

PONDER_PLUGIN_API = 1

#: Sent when no key is configured (see the module docstring).
NO_KEY = "sk-no-key"


def _url(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"'{attribute.name}' must be an http:// or https:// URL, got {value!r}")


@attrs.define
class OpenAICompatibleSettings:
    """Settings of the ``openai_compatible`` adapter."""

    #: The server's OpenAI-compatible root, e.g. "http://localhost:8000/v1" (required).
    base_url: str | None = attrs.field(default=None, validator=_url)
    #: The model name the server knows ("openai/" is added for litellm; don't add it yourself).
    model: str = "default"
    api_key: Secret | None = None
    temperature: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    max_output_tokens: int = attrs.field(default=1024, validator=attrs.validators.gt(0))
    timeout_s: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    context_window: int = attrs.field(default=8192, validator=attrs.validators.gt(0))
    input_cost_per_token: float = attrs.field(default=0.0, validator=non_negative_or_none)
    output_cost_per_token: float = attrs.field(default=0.0, validator=non_negative_or_none)
    extra: dict[str, Any] = attrs.field(factory=dict, validator=check_extra)


class OpenAICompatibleAdapter:
    """Builds a ``dspy.LM`` talking to an OpenAI-compatible base URL."""

    def __init__(self, settings: OpenAICompatibleSettings | None = None):
        self.settings = settings or OpenAICompatibleSettings()

    @property
    def litellm_model(self) -> str:
        """The model as litellm spells it (``openai/<model>``), for litellm-based tooling."""
        model = self.settings.model
        return model if model.startswith("openai/") else f"openai/{model}"

    def model_info(self) -> ModelInfo:
        s = self.settings
        return litellm_model_info(
            s.model,
            context_window=s.context_window,
            max_output_tokens=s.max_output_tokens,
            input_cost_per_token=s.input_cost_per_token,
            output_cost_per_token=s.output_cost_per_token,
            lookup=False,  # a self-hosted "llama3" is not litellm's idea of any priced model
        )

    def build_lm(self) -> dspy.LM:
        s = self.settings
        if not s.base_url:
            raise ConfigError(
                "the openai_compatible adapter needs a server: set [adapter] base_url, "
                'e.g. base_url = "http://localhost:11434/v1"'
            )
        from ponder.plugins._native_lm import (
            build_native_lm,
            declare_openai_compatible,
            report_truncation_once,
        )

        provider = declare_openai_compatible(s.base_url)
        report_truncation_once("openai_compatible", s.max_output_tokens)
        return build_native_lm(
            f"{provider}/{self.litellm_model.removeprefix('openai/')}",
            api_key=reveal_key(s.api_key) or NO_KEY,
            api_base=s.base_url,
            temperature=s.temperature,
            max_tokens=s.max_output_tokens,
            timeout_s=s.timeout_s,
            extra=s.extra,
        )


@hookimpl
def ponder_register_adapters(register):
    register("openai_compatible", OpenAICompatibleAdapter, settings=OpenAICompatibleSettings)
