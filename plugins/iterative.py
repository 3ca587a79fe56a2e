"""The ``iterative`` strategy: read the chunks in order, keeping running notes.

Each chunk is one ``refine`` call (``role="refine"``) that sees the question, the notes so far
and the chunk, and returns updated notes. The notes are cut to ``notes_tokens`` (keeping their
beginning and end, with a visible marker) before each call, and chunks are sized so that
instructions + question + notes + chunk always fit the window. After the last chunk one
``combine`` call (``role="answer"``) turns the notes into the answer.

Sequential by nature: slower than ``map_reduce`` (``n`` round trips in a row) but the model sees
what came before, which helps questions whose evidence builds up through the text.

**LM calls**, for ``n`` chunks: ``n + 1`` (no final call when the notes never found anything,
or when a limit stopped the run: the notes so far are the answer then).

A chunk whose call fails keeps the previous notes and is listed in ``failures``; when a limit
stops the run, the chunks not read are listed too.

Config example::

    [strategy]
    name = "iterative"
    # chunk_tokens = 3000   # default: the run's chunk size, capped to what the window leaves
    # overlap_tokens = 0
    # notes_tokens = 800    # default: a quarter of what the window leaves for inputs
"""

from __future__ import annotations

from typing import Any

import attrs

from ponder import hookimpl
from ponder.plugins._common import says_nothing

PONDER_PLUGIN_API = 1

_optional_positive = attrs.validators.optional(attrs.validators.ge(1))


@attrs.define
class IterativeSettings:
    #: tokens per chunk; None: ``services.chunk_tokens`` or the default, capped to fit
    chunk_tokens: int | None = attrs.field(default=None, validator=_optional_positive)
    overlap_tokens: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: the running notes are cut to this many tokens; None: a quarter of the room for inputs
    notes_tokens: int | None = attrs.field(default=None, validator=_optional_positive)


class IterativeStrategy:
    name = "iterative"

    def __init__(self, settings: IterativeSettings | None = None) -> None:
        self.settings = settings or IterativeSettings()

    def budgets(self, question: str, services: Any) -> tuple[int, int]:
        """(chunk_tokens, notes_tokens) for ``question``: together they fit the refine prompt."""
        from ponder.plugins._common import prompt_room, require_room, resolve_chunk_tokens
        from ponder.plugins._signatures import refine_signature

        room = require_room(prompt_room(services, refine_signature(), question),
                            "notes and a chunk", services)
        notes_tokens = min(self.settings.notes_tokens or room // 4, room // 2)
        chunk_tokens = resolve_chunk_tokens(services, self.settings.chunk_tokens,
                                            room - notes_tokens)
        return chunk_tokens, notes_tokens

    def run(self, question: str, context: Any, services: Any) -> Any:
        from ponder.context.chunking import chunk_context
        from ponder.engine.answer import Draft
        from ponder.engine.services import LimitReached
        from ponder.plugins._common import (
            NOTHING_FOUND,
            evidence_lines,
            nothing_read,
            prompt_room,
            read_spans,
            run_sequential,
            stop_reason,
            truncate_tokens,
        )
        from ponder.plugins._signatures import NOT_FOUND, combine_signature, refine_signature
        from ponder.support.observability import SpanType
        from ponder.support.results import FailedChunk

        chunk_tokens, notes_tokens = self.budgets(question, services)
        overlap = min(self.settings.overlap_tokens, chunk_tokens // 2)
        chunks = chunk_context(context, chunk_tokens=chunk_tokens, overlap_tokens=overlap)
        refine = refine_signature()
        notes = NOT_FOUND
        failures: list[FailedChunk] = []
        read = 0
        read_chunks: list[Any] = []
        #: (chunk, the notes it produced) for each chunk that added something to the notes
        contributed: list[tuple[Any, str]] = []

        def step(index: int, chunk: Any) -> bool:
            nonlocal notes, read
            if services.stopped_by is not None:
                failures.append(FailedChunk(f"not processed: {services.stopped_by}", index,
                                            kind=services.stopped_by))
                return False
            try:
                prediction = services.predict(
                    refine, role="refine", question=question,
                    notes=truncate_tokens(notes, notes_tokens, keep="both"),
                    chunk=chunk.render())
            except LimitReached as exc:
                failures.append(FailedChunk(str(exc), index, kind=exc.limit))
                return False
            except Exception as exc:  # one chunk's failure keeps the notes and goes on
                failures.append(FailedChunk.from_exception(index, exc))
                return False
            updated = str(prediction.updated_notes or "").strip()
            if updated and updated != notes and not says_nothing(updated):
                contributed.append((chunk, updated))
            if updated:
                notes = updated
            read += 1
            read_chunks.append(chunk)
            return True

        with services.tracker.span("iterative", SpanType.STRATEGY, chunks=len(chunks)):
            run_sequential(services, chunks, step, label="iterative")
            notes = truncate_tokens(notes, notes_tokens, keep="both")
            stopped = stop_reason(services, failures)
            if read == 0:
                text = nothing_read(len(chunks), failures, services)
            elif stopped is not None:
                text = self._partial(notes, read, len(chunks), stopped)
            elif says_nothing(notes):
                text = f"{NOTHING_FOUND}: nothing relevant was found in the {read} chunks read."
            else:
                combine = combine_signature()
                room = prompt_room(services, combine, question)
                try:
                    prediction = services.predict(
                        combine, role="answer", question=question,
                        partial_answers=truncate_tokens(notes, room, keep="both"))
                    text = str(prediction.answer or "").strip()
                except LimitReached as exc:
                    text = self._partial(notes, read, len(chunks), exc.limit)
        return Draft(
            text=text,
            failures=failures,
            chunks_total=len(chunks),
            chunks_read=read,
            strategy=self.name,
            largest_prompt_tokens=services.largest_prompt_tokens,
            read=read_spans(read_chunks),
            evidence=[citation for chunk, added in contributed
                      for citation in evidence_lines(added, [chunk], limit=2)],
        )

    @staticmethod
    def _partial(notes: str, read: int, total: int, limit: str) -> str:
        head = f"[partial: the run stopped ({limit}) after {read} of {total} chunks"
        if says_nothing(notes):
            return head + "; nothing relevant was found in them]"
        return f"{head}; these are the notes so far]\n\n{notes}"


@hookimpl
def ponder_register_strategies(register):
    register("iterative", IterativeStrategy, settings=IterativeSettings)
