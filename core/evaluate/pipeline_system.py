"""Asking a pipeline instead of a strategy: how an eval (and so an optimizer's trial) scores one.

Why through the config and not a flag of the Evaluator: a study turns every candidate into a
config (``Space.to_config``) and hands it to :class:`ponder.evaluate.Evaluator`, which keys each
example's record by the config's digest. With the pipeline in the config's raw ``[pipeline]``
section (its stages, with the candidate's values applied) and ``[optimize] evaluate =
"pipeline"`` saying that the examples go through it, the digest covers every stage key, the
per-(candidate, example) records and resume work unchanged, and nothing else in the eval has
to know about pipelines: :class:`ponder.evaluate.variant_system.VariantSystem` answers
``ask(question, sources)`` with :func:`ask_pipeline`.

**How an example feeds the pipeline.** The example's ``question`` is the pipeline input
``question`` (``${input.question}``); its sources are the pipeline's sources (what strategy
stages read). Other inputs take their ``[pipeline] inputs`` defaults. The answer scored is the
value of :attr:`ponder.pipeline.check.Plan.output` (``[pipeline] output = "STAGE.FIELD"``, else
the last stage's ``answer`` or first output field): a list is one item per line, anything else
its text. Every stage's calls are the example's usage (counted, priced, under the study's caps).
The pipeline's stage cache is off in these runs unless ``[optimize] stage_cache = true``: with
it, a stage another candidate ran with the same keys and inputs costs nothing, which is cheaper
but makes a candidate's cost depend on what ran before it (the best trial by cost, the Pareto
front). Per-(candidate, example) results are reused either way (the eval records).
A failed or skipped stage makes the answer partial and is listed; when the output stage has no
value, the example has no answer and its failure says which stages are missing.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import Any

from ponder.errors import ConfigError

#: ``[optimize] evaluate = "pipeline"``: an eval of this config asks its ``[pipeline]``
EVALUATE_KEY = "evaluate"
PIPELINE = "pipeline"
#: ``[optimize] stage_cache = true``: the pipeline's stage cache serves unchanged stages across
#: the examples' runs (off unless set: each run then pays for every stage, so what a candidate
#: costs does not depend on which candidates ran before it)
STAGE_CACHE_KEY = "stage_cache"
#: the pipeline input an example's question fills
QUESTION_INPUT = "question"

_KIND = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::|$)")


def evaluates_pipeline(config: Any) -> bool:
    """Whether an eval of ``config`` runs its ``[pipeline]`` (see the module docstring)."""
    return config.section("optimize").get(EVALUATE_KEY) == PIPELINE


class PipelineAsker:
    """The checked plan of one config's ``[pipeline]``, built once and run per example."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: Any = None

    def plan(self, system: Any) -> Any:
        from ponder.pipeline.check import check_pipeline
        from ponder.pipeline.model import Pipeline

        with self._lock:
            if self._plan is None:
                import attrs

                pipeline = Pipeline.from_config(system.config)
                if not system.config.section("optimize").get(STAGE_CACHE_KEY):
                    pipeline = attrs.evolve(pipeline, cache=False)
                self._plan = check_pipeline(pipeline, system.plugins)
            return self._plan

    def ask(self, system: Any, question: str, sources: Sequence[str] | Any) -> Any:
        from ponder.pipeline.run import run_pipeline

        if not question or not question.strip():
            raise ConfigError("the question is empty")
        plan = self.plan(system)
        inputs = {QUESTION_INPUT: question} if QUESTION_INPUT in plan.inputs else {}
        result = run_pipeline(plan, system, sources=sources, inputs=inputs)
        return answer_of(plan, result)


def answer_text(value: Any) -> str:
    """What the metric reads of an output value: text as is, a list one item per line."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "\n".join(answer_text(item) for item in value)
    if isinstance(value, (int, float, bool)):
        return str(value)
    return json.dumps(value, default=str)


def answer_of(plan: Any, result: Any) -> Any:
    """The pipeline's result as an :class:`ponder.engine.answer.Answer` of its output field."""
    from ponder.engine.answer import Answer, Citation
    from ponder.pipeline.run import USABLE, first_line
    from ponder.support.results import FailedChunk

    stage_name, field = plan.output or (None, None)
    text, citations = "", []
    stage = result.stages.get(stage_name) if stage_name else None
    if stage is not None and stage.status in USABLE:
        text = answer_text(stage.outputs.get(field))
        citations = [Citation(str(c["path"]), int(c["line"])) for c in stage.citations
                     if isinstance(c, dict) and "path" in c and "line" in c]
    failures = []
    for index, (name, one) in enumerate(result.stages.items()):
        if one.status in ("failed", "skipped"):
            error = one.error or f"skipped: {one.why_skipped}"
            match = _KIND.match(error)
            failures.append(FailedChunk(f"stage {name}: {first_line(error)}", index,
                                        kind=match.group(1) if match else one.status))
        elif one.status == "partial":
            failures.append(FailedChunk(
                f"stage {name}: {len(one.failed_items)} item(s) failed", index, kind="partial"))
    note = result.note
    if stage_name and not text:
        note = f"no value for the pipeline's output {stage_name}.{field}" + (
            f"; {note}" if note else "")
    return Answer(answer=text, citations=citations, strategy=PIPELINE,
                  model="", usage=result.usage, elapsed_s=result.elapsed_s,
                  failures=failures, stopped_by=result.stopped_by, run_id=result.run_id,
                  note=note)
