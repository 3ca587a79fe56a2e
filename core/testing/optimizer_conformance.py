"""The conformance suite of the ``optimizer`` kind.

An optimizer drives a study through four things: ``study.space`` (sample, grid, validate),
``study.should_stop()``, ``study.evaluate(assignment, number=…, report=…)`` and the study's
``seed``/``objectives``/``directions``/``name``/``optuna_url``. The suite hands it a
:class:`SyntheticStudy`, which has that interface over a known function instead of an eval, and
checks that the optimizer proposes only points of the space, stops when told, respects the
trials and returns::

    from ponder.testing.optimizer_conformance import OptimizerConformance

    class TestMyOptimizer(OptimizerConformance):
        name = "my_optimizer"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ponder.testing.conformance import ComponentConformance

#: the space every optimizer is tried on: a float, a stepped int, a choice, a condition
SPACE_TABLE: dict[str, Any] = {
    "adapter.temperature": {"float": [0.0, 1.0], "step": 0.1},
    "strategy.chunk_tokens": {"int": [200, 2000], "step": 200},
    "strategy.fan_in": {"int": [2, 16], "when": "strategy.chunk_tokens >= 1000"},
    "predictor": {"module": ["predict", "chain_of_thought"]},
}


def landscape(assignment: Mapping[str, Any]) -> float:
    """1 in the good region (temperature <= 0.3 and chunk_tokens >= 1400), else a slope."""
    if assignment["adapter.temperature"] <= 0.3 and assignment["strategy.chunk_tokens"] >= 1400:
        return 1.0
    temperature, chunk = assignment["adapter.temperature"], assignment["strategy.chunk_tokens"]
    return 0.5 * (1 - temperature) * chunk / 2000


class SyntheticStudy:
    """The study interface over ``score_fn``: every evaluation validated and counted."""

    def __init__(self, space: Any, *, trials: int, objectives: tuple[str, ...] = ("score",),
                 stop_after: int | None = None,
                 score_fn: Callable[[Mapping[str, Any]], float] = landscape,
                 name: str = "conformance", seed: int = 0) -> None:
        from ponder.optimize.study import OBJECTIVES

        self.space = space
        self.n_trials = trials
        self.objectives = objectives
        self.directions = tuple(OBJECTIVES[o] for o in objectives)
        self.stop_after = stop_after
        self.score_fn = score_fn
        self.name = name
        self.seed = seed
        self.optuna_url = None
        self.evaluated: list[dict[str, Any]] = []
        self.stop_reason: str | None = None

    def should_stop(self) -> bool:
        if self.stop_after is not None and len(self.evaluated) >= self.stop_after:
            self.stop_reason = "budget"
        elif len(self.evaluated) >= self.n_trials:
            self.stop_reason = "trials"
        return self.stop_reason is not None

    def evaluate(self, assignment: Mapping[str, Any], *, number: int | None = None,
                 report: Callable[[int, float], bool] | None = None) -> Any:
        from ponder.optimize.study import TrialResult, candidate_key

        assert self.stop_reason is None or not self.should_stop(), \
            "the optimizer evaluated a candidate after the study said stop"
        point = self.space.validate(assignment)
        self.evaluated.append(point)
        score = self.score_fn(point)
        status = "complete"
        if report is not None:
            for step in range(3):
                if report(step, score):
                    status = "pruned"
                    break
        return TrialResult(len(self.evaluated) - 1 if number is None else number, point,
                           candidate_key(point), status, score=score, cost=1.0 - score / 2,
                           calls=10, examples=3, evaluated=3)


class OptimizerConformance(ComponentConformance):
    kind: ClassVar[str] = "optimizer"
    trials: ClassVar[int] = 12

    def space(self) -> Any:
        from ponder.kernel.config import Component, Config
        from ponder.optimize.checks import build_space

        base = Config(strategy=Component("map_reduce"), adapter=Component("openai_compatible"))
        return build_space(SPACE_TABLE, source="<conformance>", plugins=self.load(), base=base)

    def test_min_trials_is_a_positive_int(self) -> None:
        assert isinstance(self.make().min_trials, int) and self.make().min_trials >= 1

    def test_proposes_points_of_the_space_within_the_trials(self) -> None:
        study = SyntheticStudy(self.space(), trials=self.trials)
        self.make().optimize(study)
        assert 1 <= len(study.evaluated) <= self.trials
        assert study.should_stop()

    def test_stops_when_the_study_says_stop(self) -> None:
        study = SyntheticStudy(self.space(), trials=self.trials, stop_after=3)
        self.make().optimize(study)
        assert len(study.evaluated) == 3

    def test_several_objectives(self) -> None:
        study = SyntheticStudy(self.space(), trials=4, objectives=("score", "cost"))
        self.make().optimize(study)
        assert 1 <= len(study.evaluated) <= 4
