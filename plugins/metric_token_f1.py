"""The ``token_f1`` metric: SQuAD's token-overlap F1 against the best-matching gold answer.

Answer and gold are normalised (lower case, no punctuation or articles) and split on
whitespace; precision is the share of answer tokens found in the gold (counted with
multiplicity), recall the share of gold tokens found in the answer, and the value their harmonic
mean, the best over the gold answers. Sub-scores: ``precision`` and ``recall`` of that best one.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ponder import hookimpl
from ponder.evaluate.metric import BaseMetric, Score, answer_text, gold_answers, tokens

PONDER_PLUGIN_API = 1


def token_f1(answer: str, gold: str) -> tuple[float, float, float]:
    """(f1, precision, recall) of ``answer`` against ``gold``, SQuAD-style."""
    predicted, expected = tokens(answer), tokens(gold)
    if not predicted or not expected:
        same = float(predicted == expected)
        return same, same, same
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0, 0.0, 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall), precision, recall


class TokenF1(BaseMetric):
    name = "token_f1"
    pass_threshold = 0.5

    def score(self, example: Any, prediction: Any) -> Score:
        answer = answer_text(prediction)
        best = max((token_f1(answer, gold) for gold in gold_answers(example)),
                   default=(0.0, 0.0, 0.0))
        return Score(best[0], parts={"precision": best[1], "recall": best[2]})


@hookimpl
def ponder_register_metrics(register):
    register("token_f1", TokenF1)
