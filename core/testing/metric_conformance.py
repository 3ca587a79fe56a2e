"""The conformance suite for metric plugins (kind ``metric``).

Subclass it in a pytest module; set the samples your metric understands and, where you know
them, the values it must give::

    from ponder.testing.metric_conformance import MetricConformance

    class TestMyMetric(MetricConformance):
        name = "my_metric"
        plugins = (my_metric_module,)          # omit to use the installed entry points
        right = ({"question": "Port?", "answer": ["48213"]}, {"answer": "It is 48213."})
        wrong = ({"question": "Port?", "answer": ["48213"]}, {"answer": "I do not know."})

``right``/``wrong`` are ``(example, prediction)`` pairs as dicts; the suite checks the metric
scores ``right`` above ``wrong``, returns a :class:`ponder.evaluate.metric.Score` in [0, 1] (or
None: not applicable), reads ponder's ``Example``/``Prediction`` and DSPy's ``Example``/
``Prediction`` alike, and works as a DSPy metric (``metric(example, prediction, trace=None)``:
a float without a trace, a bool with one).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ponder.evaluate.dataset import Example
from ponder.evaluate.metric import Score, as_score
from ponder.evaluate.results import Prediction
from ponder.testing.conformance import ComponentConformance


def _example(data: dict[str, Any]) -> Example:
    known = {"id", "question", "sources", "answer", "evidence", "tags", "split"}
    answer = data.get("answer", ())
    return Example(id=str(data.get("id", "1")), question=data.get("question", "?"),
                   sources=data.get("sources", ()),
                   answer=(answer,) if isinstance(answer, str) else tuple(answer),
                   evidence=data.get("evidence", ()), tags=data.get("tags", ()),
                   metadata={k: v for k, v in data.items() if k not in known})


class MetricConformance(ComponentConformance):
    """A metric scores a prediction against an example: a value in [0, 1] or None."""

    kind: ClassVar[str] = "metric"
    right: ClassVar[tuple[dict[str, Any], dict[str, Any]]] = (
        {"question": "Which port?", "answer": ["48213"]}, {"answer": "48213"})
    wrong: ClassVar[tuple[dict[str, Any], dict[str, Any]]] = (
        {"question": "Which port?", "answer": ["48213"]}, {"answer": "I could not find it."})

    def _score(self, pair: tuple[dict[str, Any], dict[str, Any]]) -> Score:
        example, prediction = pair
        return as_score(self.make().score(_example(example), Prediction(**prediction)))

    def test_scores_are_in_range(self) -> None:
        for pair in (self.right, self.wrong):
            score = self._score(pair)
            assert isinstance(score, Score)
            assert score.value is None or 0.0 <= score.value <= 1.0

    def test_right_scores_above_wrong(self) -> None:
        right, wrong = self._score(self.right), self._score(self.wrong)
        assert right.value is not None and wrong.value is not None
        assert right.value > wrong.value

    def test_reads_dspy_examples_and_predictions(self) -> None:
        import dspy

        example, prediction = self.right
        dspy_example = dspy.Example(**example).with_inputs("question")
        ours = self._score(self.right).value
        theirs = as_score(self.make().score(dspy_example, dspy.Prediction(**prediction))).value
        assert theirs == ours

    def test_is_a_dspy_metric(self) -> None:
        metric = self.make()
        example, prediction = _example(self.right[0]), Prediction(**self.right[1])
        value = metric(example, prediction)
        assert isinstance(value, float) and 0.0 <= value <= 1.0
        assert isinstance(metric(example, prediction, trace=[]), bool)
