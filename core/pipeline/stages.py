"""Running one stage: a strategy over the sources, or a predictor over other stages' outputs.

A **strategy stage** asks its strategy (``map_reduce``, ``direct``, …) the stage's ``question``
over the run's sources. When its signature wants more than ``answer: str`` (``files: list[str],
reasoning: str``), one more call fills those fields from the strategy's answer: the signature's
inputs plus ``findings`` (that answer) -> its outputs, so the typed outputs come from everything
the strategy read, not from one chunk.

A **predictor stage** makes one call: its predictor on its signature with its inputs.

Every output is validated against its declared type
(:func:`ponder.signatures.schema.validate_value`, which also coerces ``"0.8"`` to ``0.8``); a value
that does not fit fails the stage with the field named. Each stage runs on a :func:`stage_services`
view of the run's services: its own predictor, adapter and module cache, but the run's usage,
limits, deadline, call records and one concurrency budget.
"""

from __future__ import annotations

import threading
from typing import Any

import attrs

from ponder.engine.services import LimitReached, Services
from ponder.pipeline.check import StagePlan
from ponder.signatures.parse import Field, Signature

__all__ = ["run_one", "stage_services"]

SHAPE_INSTRUCTIONS = (
    "The findings answer the question over a body of source text. Fill in the output fields "
    "from the findings only; keep `path:line` citations in text fields, and leave a list empty "
    "rather than inventing items the findings do not name."
)


class StageServices(Services):
    """A stage's view of the run's :class:`Services`.

    It shares the run's state (usage, the lock that guards it, the deadline, the interrupt flag,
    the tracker, the response cache, the call records, the store) by sharing the same objects, so
    every limit counts the whole pipeline; it has its own predictor, LM and module cache. Every
    LM call holds one slot of the pipeline's semaphore, so independent stages and ``for_each``
    items together never have more calls in flight than ``[limits] concurrency``.
    """

    _slots: threading.BoundedSemaphore
    #: the stage's name: its strategy's calls are recorded as ``STAGE.ROLE`` (``port.answer``,
    #: ``entrypoints.map``), so ``ponder runs show`` says which stage made each call
    _stage: str | None = None

    def predict(self, signature: Any, *, role: str, **inputs: Any) -> Any:
        stage = self._stage
        if stage and role != stage and not role.startswith(f"{stage}."):
            role = f"{stage}.{role}"
        self.check_limits()
        remaining = self.remaining_s()
        if not self._slots.acquire(timeout=None if remaining is None else max(remaining, 0.0)):
            self._stop("timeout")
            raise LimitReached("timeout", "the time limit was reached waiting for a free slot")
        try:
            return super().predict(signature, role=role, **inputs)
        finally:
            self._slots.release()


def stage_services(root: Services, slots: threading.BoundedSemaphore, **changes: Any) -> Any:
    """A :class:`StageServices` sharing ``root``'s state, with ``changes`` (lm, predictor, …)."""
    view = StageServices.__new__(StageServices)
    view.__dict__.update(root.__dict__)  # the same usage, lock, deadline and records objects
    view._modules = {}  # another predictor builds other modules
    view._tools = None
    view._slots = slots
    view.stopped_by = None
    for key, value in changes.items():
        setattr(view, key, value)
    return view


def _validated(signature: Signature, prediction: Any, stage: str) -> dict[str, Any]:
    from ponder.signatures.schema import validate_value

    outputs = {}
    for field in signature.outputs:
        value = getattr(prediction, field.name, None)
        outputs[field.name] = validate_value(field.annotation, value,
                                             field=f"{stage}.{field.name}")
    return outputs


def run_one(plan: StagePlan, component: Any, inputs: dict[str, Any], context: Any,
            services: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(outputs, details) of one run of the stage on ``inputs``; raises when it fails.

    ``details`` says what else happened: the strategy's failed chunks (the stage is then
    partial) and the citations of its answer.
    """
    signature = plan.signature
    instructions = plan.stage.instructions
    if plan.kind == "predictor":
        prediction = services.predict(signature.to_dspy(instructions), role=plan.name, **inputs)
        return _validated(signature, prediction, plan.name), {}
    from ponder.engine.answer import extract_citations

    draft = component.run(str(inputs["question"]), context, services)
    text = draft.text.strip()
    details: dict[str, Any] = {
        "failures": [attrs.asdict(f) for f in draft.failures],
        "citations": [attrs.asdict(c) for c in extract_citations(text, context.documents)],
        "chunks": {"total": draft.chunks_total, "read": draft.chunks_read},
    }
    if not text:
        raise RuntimeError(draft.reason or "the strategy produced no answer")
    outputs = signature.outputs
    if len(outputs) == 1 and outputs[0].name == "answer" and outputs[0].annotation is str:
        return {"answer": text}, details
    shape = Signature(
        f"{signature.text} (shaped)",
        (*signature.inputs, Field("findings", str, "str")),
        signature.outputs,
    )
    text_instructions = SHAPE_INSTRUCTIONS + (f"\n{instructions}" if instructions else "")
    prediction = services.predict(shape.to_dspy(text_instructions), role=f"{plan.name}.shape",
                                  **inputs, findings=text)
    return _validated(signature, prediction, plan.name), details
