"""ACME gateway adapter: an OpenAI-compatible endpoint that requires a team header."""

from __future__ import annotations

import attrs

from ponder import ModelInfo, hookimpl
from ponder.support.secrets import Secret

PONDER_PLUGIN_API = 1


@attrs.define
class AcmeGatewaySettings:
    base_url: str = "http://127.0.0.1:8080/v1"
    team: str = attrs.field(default="default", validator=attrs.validators.min_len(1))
    model: str = "acme-large"
    api_key: Secret | None = None
    context_window: int = attrs.field(default=32_000, validator=attrs.validators.gt(0))


class AcmeGatewayAdapter:
    def __init__(self, settings: AcmeGatewaySettings) -> None:
        self.settings = settings

    def model_info(self) -> ModelInfo:
        return ModelInfo(model=f"acme/{self.settings.model}",
                         context_window=self.settings.context_window)

    def build_lm(self):
        import dspy  # heavy: only when a model is actually needed

        key = self.settings.api_key.reveal() if self.settings.api_key else "no-key"
        return dspy.LM(
            f"openai/{self.settings.model}",
            api_base=self.settings.base_url,
            api_key=key,
            extra_headers={"X-Acme-Team": self.settings.team},
            num_retries=0,  # ponder retries; one layer only
            cache=False,
        )


@hookimpl
def ponder_register_adapters(register):
    register("acme_gateway", AcmeGatewayAdapter, settings=AcmeGatewaySettings)
