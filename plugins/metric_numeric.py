"""The ``numeric`` metric: a number in the answer equals a gold number, within a tolerance.

Numbers are read from the answer after removing ``path:line`` citations (a line number is not an
answer); ``1,200``, ``-3.5`` and ``2e3`` are numbers. A number matches a gold one when
``|x - gold| <= max(abs_tol, rel_tol * |gold|)``. ``pick`` chooses which numbers of the answer
count: ``any`` (default), ``first`` or ``last``. Gold answers that are not one number are
ignored; an example with none that is does not get this metric at all (value None, left out of
its mean, like ``citations`` without evidence), so ``--metric contains --metric numeric`` works
on a dataset that mixes numeric and other questions. Binary: 1 or 0.

Config example::

    [eval.metric.numeric]
    rel_tol = 0.01    # within 1 %
    # abs_tol = 0.0
    # pick = "any"
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from ponder import hookimpl
from ponder.evaluate.metric import BaseMetric, Score, answer_text, gold_answers

PONDER_PLUGIN_API = 1

_CITATION = re.compile(r"[\w./\\-]+\.\w+:\d+(?:-\d+)?")
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def numbers_in(text: str) -> list[float]:
    text = _CITATION.sub(" ", text)
    return [float(m.group().replace(",", "")) for m in _NUMBER.finditer(text)]


@attrs.define
class NumericSettings:
    abs_tol: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    rel_tol: float = attrs.field(default=1e-9, validator=attrs.validators.ge(0))
    pick: str = attrs.field(default="any",
                            validator=attrs.validators.in_(("any", "first", "last")))


class Numeric(BaseMetric):
    name = "numeric"
    binary = True

    def __init__(self, settings: NumericSettings | None = None) -> None:
        self.settings = settings or NumericSettings()

    def score(self, example: Any, prediction: Any) -> Score:
        golds = []
        for gold in gold_answers(example):
            found = numbers_in(gold)
            if len(found) == 1:
                golds.append(found[0])
        if not golds:
            # a question whose answer is not a number: the metric does not apply, as
            # citations does not to an example without evidence (left out of the mean; the
            # example still counts for the other metrics rather than failing)
            return Score(None, feedback=f"not applicable: no gold answer is one number "
                                        f"({gold_answers(example)[:3]!r})")
        found = numbers_in(answer_text(prediction))
        if self.settings.pick == "first":
            found = found[:1]
        elif self.settings.pick == "last":
            found = found[-1:]
        for value in found:
            for gold in golds:
                if abs(value - gold) <= max(self.settings.abs_tol,
                                            self.settings.rel_tol * abs(gold)):
                    return Score(1.0)
        return Score(0.0, feedback=f"no number in the answer matches {golds!r} "
                                   f"(found {found[:5]!r})")


@hookimpl
def ponder_register_metrics(register):
    register("numeric", Numeric, settings=NumericSettings)
