"""The ``contains`` metric: the answer contains one of the gold answers.

Both sides are normalised like SQuAD's (lower case, no articles) with punctuation turned into
spaces, and the gold must appear as whole words: ``48213`` is found in ``"The port is 48213
(service/config.py:6)."``, ``7`` is not found in ``1700``. Two optional metadata
fields of the example tighten it: ``must_include`` (every text must appear too) and
``must_not_include`` (none may appear: the confusable needles of ``ponder eval make-dataset``
list the look-alike values here). Binary: 1 or 0, with feedback saying what was missing.

Config example::

    [eval.metric.contains]
    # normalize = true   # false: plain case-sensitive substring tests
"""

from __future__ import annotations

from typing import Any

import attrs

from ponder import hookimpl
from ponder.evaluate.metric import (
    BaseMetric,
    Score,
    answer_text,
    gold_answers,
    metadata_of,
    normalize,
)

PONDER_PLUGIN_API = 1


@attrs.define
class ContainsSettings:
    normalize: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


class Contains(BaseMetric):
    name = "contains"
    binary = True

    def __init__(self, settings: ContainsSettings | None = None) -> None:
        self.settings = settings or ContainsSettings()

    def _norm(self, text: str) -> str:
        return normalize(text, spaced=True) if self.settings.normalize else text

    def _has(self, answer: str, text: str) -> bool:
        needle = self._norm(text)
        if not needle:
            return False
        # whole words only once normalised: "7" is not in "1700"
        return f" {needle} " in f" {answer} " if self.settings.normalize else needle in answer

    def score(self, example: Any, prediction: Any) -> Score:
        answer = self._norm(answer_text(prediction))
        golds = gold_answers(example)
        if not any(self._has(answer, gold) for gold in golds):
            return Score(0.0, feedback=f"the answer contains none of {golds!r}")
        missing = [t for t in _texts(metadata_of(example, "must_include")) if not self._has(
            answer, t)]
        if missing:
            return Score(0.0, feedback=f"the answer lacks {missing!r}")
        wrong = [t for t in _texts(metadata_of(example, "must_not_include"))
                 if self._has(answer, t)]
        if wrong:
            return Score(0.0, feedback=f"the answer also contains {wrong!r}")
        return Score(1.0)


@hookimpl
def ponder_register_metrics(register):
    register("contains", Contains, settings=ContainsSettings)
