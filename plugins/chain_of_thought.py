"""The ``chain_of_thought`` predictor: ``dspy.ChainOfThought`` for every signature.

The model first writes a ``reasoning`` field, then the signature's outputs: better answers on
questions that need a few steps (two hops across files, comparisons), at the price of more output
tokens per call. Strategies read only the signature's own output fields, so any strategy works
with it.

Config example::

    [predictor]
    name = "chain_of_thought"
    # temperature = 0.0
    # max_tokens = 1024
"""

from __future__ import annotations

from typing import Any

from ponder import hookimpl
from ponder.plugins._common import PredictorSettings

PONDER_PLUGIN_API = 1


class ChainOfThoughtPredictor:
    """Builds ``dspy.ChainOfThought(signature)``."""

    def __init__(self, settings: PredictorSettings | None = None) -> None:
        self.settings = settings or PredictorSettings()

    def build(self, signature: Any) -> Any:
        import dspy

        return dspy.ChainOfThought(signature, **self.settings.lm_config())


@hookimpl
def ponder_register_predictors(register):
    register("chain_of_thought", ChainOfThoughtPredictor, settings=PredictorSettings)
