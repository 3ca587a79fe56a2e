"""The ``predict`` predictor: one plain ``dspy.Predict`` per signature (the default).

It asks the model for the signature's output fields directly, with no reasoning step: the
cheapest choice, and the right one for extraction and combining over many chunks.

Config example::

    [predictor]
    name = "predict"
    # temperature = 0.0   # passed to the model with every call (omit: the adapter's default)
    # max_tokens = 512    # cap on each reply (omit: the adapter's max_output_tokens)
"""

from __future__ import annotations

from typing import Any

from ponder import hookimpl
from ponder.plugins._common import PredictorSettings

PONDER_PLUGIN_API = 1


class PredictPredictor:
    """Builds ``dspy.Predict(signature)``."""

    def __init__(self, settings: PredictorSettings | None = None) -> None:
        self.settings = settings or PredictorSettings()

    def build(self, signature: Any) -> Any:
        import dspy

        return dspy.Predict(signature, **self.settings.lm_config())


@hookimpl
def ponder_register_predictors(register):
    register("predict", PredictPredictor, settings=PredictorSettings)
