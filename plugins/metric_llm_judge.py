"""The ``llm_judge`` metric: a model grades the answer against the gold answer with a rubric.

The judge is a predictor (``predict`` by default) on an adapter configuration of its own, not
the system's: judging with the model under test would grade it by its own lights. Each call goes
through :class:`ponder.engine.services.Services` (retries, usage tracking, the adapter's prices)
in a Services of its own per example, and what it spent is returned on the
:class:`ponder.evaluate.metric.Score` (``usage``): the eval reports it as ``judge`` usage, apart
from the system's calls, tokens and cost.

The reply has a ``score`` field (0 to 1; a 0-10 or 0-100 grade is scaled down, anything else is
an error on that example) and a ``feedback`` field (one sentence). A judge call that fails (past
its retries, or with a grade that does not parse) fails that example with a
:class:`ponder.evaluate.metric.MetricError` that carries what the attempt spent: it is reported
in the judge usage all the same.

Config example::

    [eval.metric.llm_judge]
    adapter = "openai_compatible"
    rubric = "1 if the answer states the same fact as the reference, 0.5 if partly, else 0."
    # predictor = "predict"
    # max_retries = 2
    [eval.metric.llm_judge.settings]       # the judge adapter's own settings
    base_url = "http://127.0.0.1:8080/v1"
    model = "judge-model"
"""

from __future__ import annotations

import re
import threading
from typing import Any

import attrs

from ponder import hookimpl
from ponder.errors import ConfigError
from ponder.evaluate.metric import (
    BaseMetric,
    MetricError,
    Score,
    answer_text,
    gold_answers,
    question_of,
)

PONDER_PLUGIN_API = 1

DEFAULT_RUBRIC = ("Score 1 if the answer states what the reference answer states (wording may "
                  "differ), 0.5 if it is partly right or hedged, 0 if it is wrong, missing or "
                  "says it does not know.")


@attrs.define
class LLMJudgeSettings:
    #: the adapter plugin the judge runs on
    adapter: str = attrs.field(default="openai_compatible",
                               validator=attrs.validators.instance_of(str))
    #: that adapter's settings (validated against its settings class when the judge starts)
    settings: dict[str, Any] = attrs.field(factory=dict)
    rubric: str = attrs.field(default=DEFAULT_RUBRIC, validator=attrs.validators.instance_of(str))
    predictor: str = attrs.field(default="predict", validator=attrs.validators.instance_of(str))
    max_retries: int = attrs.field(default=2, validator=attrs.validators.ge(0))


_signature: Any = None


def judge_signature() -> Any:
    """The judge's DSPy signature (built once: dspy is imported only when a judge runs)."""
    global _signature
    if _signature is None:
        import dspy

        class JudgeAnswer(dspy.Signature):
            """Grade the answer to the question against the reference answer, by the rubric."""

            question: str = dspy.InputField()
            reference: str = dspy.InputField(desc="the correct answer(s), separated by ' | '")
            answer: str = dspy.InputField(desc="the answer to grade")
            rubric: str = dspy.InputField()
            score: str = dspy.OutputField(desc="a number from 0 to 1")
            feedback: str = dspy.OutputField(desc="one sentence: why this score")

        _signature = JudgeAnswer
    return _signature


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_grade(text: Any) -> float:
    match = _NUMBER.search(str(text))
    if match is None:
        raise ValueError(f"llm_judge: the judge's score {str(text)[:40]!r} is not a number")
    value = float(match.group())
    for scale in (1.0, 10.0, 100.0):
        if 0.0 <= value <= scale:
            return value / scale
    raise ValueError(f"llm_judge: the judge's score {value} is outside 0-1 (or 0-10, 0-100)")


class LLMJudge(BaseMetric):
    name = "llm_judge"
    pass_threshold = 0.5

    def __init__(self, settings: LLMJudgeSettings | None = None) -> None:
        self.settings = settings or LLMJudgeSettings()
        self._plugins: Any = None
        self._parts: tuple[Any, Any, Any, Any] | None = None
        self._lock = threading.Lock()

    def bind(self, plugins: Any) -> None:
        """The plugin set to build the judge's adapter and predictor from."""
        self._plugins = plugins

    def _build(self) -> tuple[Any, Any, Any, Any]:
        from ponder.kernel.config import structure_settings

        with self._lock:
            if self._parts is None:
                plugins = self._plugins
                if plugins is None:
                    from ponder.kernel.loader import load_plugins

                    plugins = self._plugins = load_plugins()
                entry = plugins.get("adapter", self.settings.adapter)
                if entry.settings is None:
                    if self.settings.settings:
                        raise ConfigError(f"eval.metric.llm_judge.settings: adapter "
                                          f"{self.settings.adapter!r} takes no settings")
                    adapter = entry.factory()
                else:
                    adapter = entry.factory(structure_settings(
                        entry.settings, dict(self.settings.settings),
                        section="eval.metric.llm_judge.settings"))
                predictor_entry = plugins.get("predictor", self.settings.predictor)
                predictor = (predictor_entry.factory(predictor_entry.settings())
                             if predictor_entry.settings else predictor_entry.factory())
                dspy_adapter = getattr(adapter, "dspy_adapter", lambda: None)()
                self._parts = (adapter.build_lm(), adapter.model_info(), predictor, dspy_adapter)
            return self._parts

    def score(self, example: Any, prediction: Any) -> Score:
        from ponder.engine.services import Services
        from ponder.support.retry import RetryPolicy

        lm, model_info, predictor, dspy_adapter = self._build()
        services = Services(lm=lm, model_info=model_info, predictor=predictor,
                            retry=RetryPolicy(max_retries=self.settings.max_retries),
                            concurrency=1, progress_mode="silent", dspy_adapter=dspy_adapter,
                            names={"adapter": (self.settings.adapter, None)})
        try:
            reply = services.predict(judge_signature(), role="judge",
                                     question=question_of(example),
                                     reference=" | ".join(gold_answers(example)),
                                     answer=answer_text(prediction) or "(no answer)",
                                     rubric=self.settings.rubric)
            value = parse_grade(reply.score)
        except Exception as exc:
            # the requests were sent (and priced) even though no grade came of them: hand the
            # spend on with the error, so the eval's judge usage stays true
            message = str(exc) if str(exc).startswith("llm_judge:") else \
                f"llm_judge: {type(exc).__name__}: {exc}"
            raise MetricError(message, usage=_spent(services)) from exc
        feedback = str(getattr(reply, "feedback", "") or "").strip() or None
        return Score(value, feedback=feedback, usage=_spent(services))


def _spent(services: Any) -> dict[str, float]:
    usage = services.usage
    return {"calls": usage.calls, "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens, "cost": usage.cost_usd}


@hookimpl
def ponder_register_metrics(register):
    register("llm_judge", LLMJudge, settings=LLMJudgeSettings)
