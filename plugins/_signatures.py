"""The DSPy signatures every first-party strategy shares, defined once.

Each function builds its ``dspy.Signature`` class on first call and returns the same class after
that (so a run's predictor builds one module per signature). dspy is imported only then, which
keeps importing a strategy plugin light.

Every instruction asks the model for the same two things: cite evidence as ``path:line`` using the
line numbers shown in the text, and say plainly when the text does not contain the answer.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Literal

#: What chunk extraction writes when a chunk holds nothing relevant.
NOT_FOUND = "NOT FOUND"

#: The confidence levels a chunk result may carry (the same set as ``ponder.support.results``).
Confidence = Literal["high", "medium", "low", "none"]

CITE_RULE = (
    "Cite every piece of evidence as `path:line`, using the file paths in the "
    "`=== path (lines a-b) ===` headers and the line numbers shown at the start of each line "
    "(for example `src/app.py:12`)."
)
MISSING_RULE = (
    "If the text does not contain the answer, say so plainly (for example \"The text does not "
    "say ...\") instead of guessing."
)

_TEXT_DESC = (
    "source text: `=== path (lines a-b) ===` headers, each line prefixed with its line number "
    "and `| `"
)

_lock = threading.RLock()


def _cached(build: Any) -> Any:
    """Build once (thread-safe): signatures are dict keys for the run's module cache."""
    cached = functools.cache(build)

    @functools.wraps(build)
    def get() -> Any:
        with _lock:
            return cached()

    return get


@_cached
def answer_signature() -> Any:
    """question, context -> answer: one call over text that fits the window."""
    import dspy

    class Answer(dspy.Signature):
        __doc__ = (
            "Answer the question using only the source text given.\n"
            f"{CITE_RULE}\n{MISSING_RULE}"
        )

        question: str = dspy.InputField()
        context: str = dspy.InputField(desc=_TEXT_DESC)
        answer: str = dspy.OutputField(desc="the answer, with `path:line` citations")

    return Answer


@_cached
def extract_signature() -> Any:
    """question, chunk -> relevant_info, confidence: the map step over one chunk."""
    import dspy

    class Extract(dspy.Signature):
        __doc__ = (
            "You see one part of a larger body of text. Write down everything in this part that "
            "helps answer the question: facts, values, names, quoted lines.\n"
            f"{CITE_RULE}\n"
            f"If nothing in this part is relevant, write exactly {NOT_FOUND} and give confidence "
            "none; do not guess from outside knowledge."
        )

        question: str = dspy.InputField()
        chunk: str = dspy.InputField(desc=_TEXT_DESC)
        relevant_info: str = dspy.OutputField(
            desc=f"relevant facts with `path:line` citations, or {NOT_FOUND}"
        )
        confidence: Confidence = dspy.OutputField(
            desc="how much this part tells about the question (none: nothing)"
        )

    return Extract


@_cached
def combine_signature() -> Any:
    """question, partial_answers -> answer: the reduce step."""
    import dspy

    class Combine(dspy.Signature):
        __doc__ = (
            "Combine partial answers, each found in a different part of a larger body of text, "
            "into one answer to the question. Keep every relevant fact and its `path:line` "
            "citations; drop parts that found nothing; when partial answers disagree, say so and "
            "cite both.\n"
            f"{CITE_RULE}\n{MISSING_RULE}"
        )

        question: str = dspy.InputField()
        partial_answers: str = dspy.InputField(
            desc="findings from different parts of the text, each under a `---` header"
        )
        answer: str = dspy.OutputField(desc="the answer, with `path:line` citations")

    return Combine


@_cached
def refine_signature() -> Any:
    """question, notes, chunk -> notes: one step of the iterative strategy."""
    import dspy

    class Refine(dspy.Signature):
        __doc__ = (
            "You read a large body of text one part at a time, keeping notes of what helps answer "
            "the question. Return the updated notes: keep the earlier notes that still matter, add "
            "what this part contributes, and stay brief.\n"
            f"{CITE_RULE}\n"
            "If this part adds nothing, return the notes unchanged; if nothing relevant has been "
            f"found yet, write {NOT_FOUND}."
        )

        question: str = dspy.InputField()
        notes: str = dspy.InputField(desc="notes so far, with `path:line` citations")
        chunk: str = dspy.InputField(desc=_TEXT_DESC)
        updated_notes: str = dspy.OutputField(desc="the notes after reading this part")

    return Refine


@_cached
def rlm_signature() -> Any:
    """context, question -> answer: what the ``rlm`` strategy asks ``dspy.RLM`` to produce."""
    import dspy

    class Explore(dspy.Signature):
        __doc__ = (
            "Answer the question about the source text in `context`. `context` is too large to "
            "read at once: search and slice it with code, and use `llm_query` on the relevant "
            "slices.\n"
            f"{CITE_RULE}\n{MISSING_RULE}"
        )

        context: str = dspy.InputField(desc=_TEXT_DESC)
        question: str = dspy.InputField()
        answer: str = dspy.OutputField(desc="the answer, with `path:line` citations")

    return Explore


@_cached
def sub_query_signature() -> Any:
    """prompt -> response: a sub-call made by code the ``rlm`` strategy runs."""
    import dspy

    class SubQuery(dspy.Signature):
        __doc__ = (
            "Follow the request in the prompt. It may quote source text with line numbers.\n"
            f"{CITE_RULE}\n{MISSING_RULE}"
        )

        prompt: str = dspy.InputField()
        response: str = dspy.OutputField()

    return SubQuery
