"""Reading one LM call's reply, and the record the run keeps of the call.

:meth:`ponder.engine.services.Services.predict` turns a DSPy prediction into figures and a
record in several places (a served reply, a cached one, a failed call), and each must read the
prediction the same way: its output fields as a plain dict (:func:`fields_of`, also what the
response cache stores), the tokens it used when the LM reports no usage (:func:`usage_of`), and
whether it is an empty reply to retry (:func:`is_empty`), which adapter of a fallback chain
served it and at what prices (:func:`serving_adapter`, :func:`serving_model_info`), and how a
reply far beyond ``max_output_tokens`` is cut to size (:func:`cut_reply`). :func:`call_record`
builds the one dict per call that ``on_call`` hands to the run store, so its keys are spelled in
one place.
None of this holds state or touches the run's limits, which is why it lives apart from the
services: pure functions of a prediction are easier to read, and to test, on their own.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from ponder.context.tokens import estimate_tokens
from ponder.engine.metering import cap_fields
from ponder.kernel.kinds import ModelInfo
from ponder.support.retry import describe_error


def is_empty(prediction: Any) -> bool:
    """A prediction without fields: what DSPy makes of a reply with no choices. Counted as a
    success it would be cached, and fail later, unretried, when a strategy reads a field."""
    keys = getattr(prediction, "keys", None)
    return callable(keys) and not list(keys())


@functools.lru_cache(maxsize=256)  # signatures are classes, built once per run: measure once
def instruction_tokens(signature: Any) -> int:
    """Estimated tokens of a signature's instructions and field descriptions."""
    from ponder.engine.cache import signature_text

    try:
        return estimate_tokens(signature_text(signature))
    except Exception:  # a signature-like object without DSPy's attributes
        return 0


def fields_of(prediction: Any) -> dict[str, Any]:
    """A prediction's output fields as a plain dict."""
    try:
        return dict(prediction.items()) if hasattr(prediction, "items") else dict(prediction)
    except (TypeError, ValueError):
        return {}


def usage_of(prediction: Any, estimate: int) -> tuple[int, int]:
    """Input/output tokens of one prediction from dspy's usage tracking (estimate if absent)."""
    usage: dict[str, Any] = {}
    getter = getattr(prediction, "get_lm_usage", None)
    if callable(getter):
        usage = getter() or {}
    input_tokens = output_tokens = 0
    for per_model in usage.values():
        input_tokens += int(per_model.get("prompt_tokens") or 0)
        output_tokens += int(per_model.get("completion_tokens") or 0)
    if input_tokens == 0 and output_tokens == 0:
        input_tokens = estimate
        output_tokens = sum(estimate_tokens(str(v)) for v in dict(prediction).values()) \
            if hasattr(prediction, "keys") else 0
    return input_tokens, output_tokens


def serving_adapter(lm: Any) -> str | None:
    """The adapter that served this thread's latest call through ``lm`` (a fallback chain says
    which); None for an LM that does not say."""
    served_by = getattr(lm, "served_by", None)
    return served_by() if callable(served_by) else None


def serving_model_info(lm: Any, adapter: str | None, default: ModelInfo) -> ModelInfo:
    """The serving adapter's own model and prices (the chain's plan uses the primary's,
    ``default``)."""
    model_info_of = getattr(lm, "model_info_of", None)
    if adapter is None or not callable(model_info_of):
        return default
    try:
        return model_info_of(adapter)
    except Exception:  # an LM without per-adapter info
        return default


def reply_cap_chars(max_output_tokens: int | None) -> int:
    """The most characters of one output field kept from a reply: eight per token of
    ``max_output_tokens`` (a reply the provider capped cannot honestly be longer)."""
    return max(int(max_output_tokens or 0), 512) * 8


def cut_reply(prediction: Any, role: str, cap: int, max_output_tokens: int | None) -> str | None:
    """Cut every text field of ``prediction`` to ``cap`` characters, in place; returns the
    problem to report when something was cut (a runaway or hostile server must not send a
    reply to the output, the store or the next prompt unbounded), else None."""
    longest = cap_fields(prediction, cap, fields_of)
    if not longest:
        return None
    return (f"the {role} call's reply was cut to {cap:,} characters per field (it had "
            f"{longest:,}, far beyond max_output_tokens = {max_output_tokens})")


def call_record(role: str, inputs: dict[str, Any], prediction: Any, *, adapter: str | None,
                model: str, started: float | None, retries: int, cached: bool,
                tokens: tuple[int, int], cost: float,
                error: BaseException | None) -> dict[str, Any]:
    """The record of one LM call (``prediction`` is None for a call that failed), with its
    prompt and reply as text; ``started`` is its ``time.perf_counter()`` start, None when the
    reply came from the cache."""
    fields = fields_of(prediction) if prediction is not None else {}
    prompt = "\n\n".join(f"{k}: {v}" for k, v in inputs.items())
    reply = "\n\n".join(f"{k}: {v}" for k, v in fields.items())
    return {
        "role": role,
        "adapter": adapter,
        "model": model,
        "prompt_chars": len(prompt),
        "reply_chars": len(reply),
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "latency_s": 0.0 if started is None else round(time.perf_counter() - started, 6),
        "cost_usd": cost,
        "retries": retries,
        "cached": cached,
        "error": None if error is None else f"{type(error).__name__}: {describe_error(error)}",
        "prompt": prompt,
        "reply": reply,
    }
