"""Asking one example's question: the step an executor's worker runs, in this process or not.

The Evaluator asks an example in one of two places: on a thread of this process (the
``threads`` executor) or in a worker process of an executor such as ``ray``
(:mod:`ponder.evaluate.remote`). Both call :func:`ask_example`, so a prediction, a failure's
text and the "this provider cannot be used at all" verdict read the same wherever the example
ran; only the Evaluator's reaction to that verdict (stop handing out examples) stays in the
driver.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ponder.errors import PonderError
from ponder.evaluate.results import Prediction, empty_usage, usage_of

#: failure kinds (exception class names) that no retry and no other example can get past
UNUSABLE = frozenset({"ProviderUnreachable", "AdapterAuthError"})


def unusable_provider(kinds: Sequence[str]) -> bool:
    """Whether every failure is one no other example could get past (no server, no key)."""
    return bool(kinds) and all(kind in UNUSABLE for kind in kinds)


def ask_example(system: Any, question: str, sources: Sequence[str]
                ) -> tuple[Prediction | None, dict[str, Any], bool]:
    """Ask ``system``; (prediction or None, the facts to record, whether the provider cannot
    be used at all). Never raises for the example's own failure: it is in ``facts``."""
    from ponder.support.secrets import redact

    started = time.perf_counter()
    facts: dict[str, Any] = {"usage": empty_usage(), "run_id": None, "failure": None}
    if not sources:
        facts["failure"] = "the example has no sources (give them in the dataset or on " \
                           "the command line)"
        return None, {**facts, "latency_s": 0.0}, False
    try:
        answer = system.ask(question, list(sources))
    except Exception as exc:  # a provider failing past the retries, a plugin's bug
        facts["failure"] = redact(str(exc) if isinstance(exc, PonderError)
                                  else f"{type(exc).__name__}: {exc}")
        run = getattr(exc, "ponder_run", None)  # a run that failed still spent what it spent
        if run:
            facts.update(usage=usage_of(run.get("usage") or {}), run_id=run.get("run_id"))
        unusable = isinstance(exc, PonderError) and unusable_provider([type(exc).__name__])
        return None, {**facts, "latency_s": time.perf_counter() - started}, unusable
    facts.update(usage=usage_of(answer.usage), run_id=answer.run_id, latency_s=answer.elapsed_s)
    prediction = Prediction(answer=answer.answer,
                            citations=[f"{c.path}:{c.line}" for c in answer.citations],
                            partial=answer.partial, note=answer.note)
    status = getattr(answer, "status", None)  # ok / partial / failed / interrupted
    if status in ("failed", "interrupted") or (answer.partial and not answer.answer):
        facts["failure"] = redact(f"no answer: {answer.note or answer.stopped_by or ''}"
                                  .strip())
        return None, facts, status == "failed" and unusable_provider(
            [f.kind for f in answer.failures])
    return prediction, facts, False
