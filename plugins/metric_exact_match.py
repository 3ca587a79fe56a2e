"""The ``exact_match`` metric: the answer equals one of the gold answers, after normalising.

Normalising is SQuAD's (lower case, punctuation and articles dropped, whitespace collapsed), so
``"The 48213."`` matches ``"48213"``. Binary: 1 or 0.

Config example::

    [eval.metric.exact_match]
    # normalize = true   # false: compare the stripped texts exactly
"""

from __future__ import annotations

from typing import Any

import attrs

from ponder import hookimpl
from ponder.evaluate.metric import BaseMetric, Score, answer_text, gold_answers, normalize

PONDER_PLUGIN_API = 1


@attrs.define
class ExactMatchSettings:
    normalize: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))


class ExactMatch(BaseMetric):
    name = "exact_match"
    binary = True

    def __init__(self, settings: ExactMatchSettings | None = None) -> None:
        self.settings = settings or ExactMatchSettings()

    def _norm(self, text: str) -> str:
        return normalize(text) if self.settings.normalize else text.strip()

    def score(self, example: Any, prediction: Any) -> Score:
        answer = self._norm(answer_text(prediction))
        for gold in gold_answers(example):
            if answer == self._norm(gold):
                return Score(1.0)
        return Score(0.0, feedback=f"expected one of {gold_answers(example)!r}")


@hookimpl
def ponder_register_metrics(register):
    register("exact_match", ExactMatch, settings=ExactMatchSettings)
