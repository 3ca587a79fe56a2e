"""The ``map_reduce`` strategy: read every chunk in parallel, then combine what was found.

**Map.** The context is cut into chunks (:func:`ponder.context.chunking.chunk_context`) sized so
that one chunk, the question and the instructions fit the model's window. Each chunk is one
``extract`` call (``role="map"``), run through ``services.map`` under the concurrency cap, giving a
:class:`ponder.support.results.ChunkResult` (``relevant_info``, ``confidence``, and the chunk's
first ``path:line`` in ``metadata["citation"]``). A chunk whose call fails is listed in the draft's
``failures`` and the others still count. With ``skip_empty`` (the default) results that found
nothing (confidence ``none``, or a bare ``NOT FOUND``) are dropped before the reduce.

**Reduce.** The kept findings are combined ``fan_in`` at a time, level after level, until one
answer is left; a group also closes early when its findings would not fit the window, so no prompt
exceeds it; one finding still goes through one combine call, so the answer is phrased for the
question (see :mod:`ponder.plugins._common`).

**One call when it fits.** With ``single_read`` (the default) and no chunk size asked for, a
context whose rendered text fits the room one ``answer`` call leaves (the window less the reply
and the instructions) is one chunk, read and answered in that call, as ``direct`` does: the
extract call and the combine call would read the same text in two rounds. The same holds when a
configured chunk size gives one chunk. ``single_read = false`` keeps extract + combine.

**LM calls**, for ``n`` chunks of which ``m`` found something (all ``n`` without ``skip_empty``)
and fan-in ``k``, when nothing fails and no window split happens::

    calls = n + R(m),   R(m) = sum(ceil(m / k**i) for i in 1..L),  L = max(1, ceil(log_k m)),
    R(0) = 0 (nothing found: the draft says so without a combine call)

For example n = 27, m = 1: 27 + 1 = 28 calls; n = 27, m = 27, k = 3: 27 + 9 + 3 + 1 = 40;
n = 1 with ``single_read``: 1 call.

**Limits.** When a limit (cost, tokens, time) stops the run, the chunks not read are listed as
failures, no combine call is made, and the draft holds the findings so far under a note saying
the run stopped.

**Retrieval.** With ``top_k`` set and a retriever configured (``[retriever] name = "bm25"`` or
``"embeddings"``), the chunks are indexed with :meth:`ponder.engine.services.Services.index`
(which loads the index from the run store when the same chunks were indexed before with the same
retriever settings) and only the ``top_k`` chunks the retriever ranks best are read, in document
order: then ``n = top_k`` in the formula above, ``chunks_total`` still counts every chunk and
``chunks_read`` the chunks read. Without a retriever ``top_k`` is ignored. To read the best
chunks in as few calls as fit the window instead of one call each, use ``retrieve_then_read``.

Config example::

    [strategy]
    name = "map_reduce"
    # chunk_tokens = 4000     # default: the run's chunk size, else half of what the window leaves
    # overlap_tokens = 0      # lines repeated across chunk boundaries (at most chunk_tokens / 2)
    # fan_in = 8              # findings combined per reduce call
    # top_k = 20              # with a retriever: read only the 20 best chunks
    # skip_empty = true       # drop chunk results that found nothing before reducing
    # single_read = true      # a context that fits one call: answered in that call
"""

from __future__ import annotations

from typing import Any

import attrs

from ponder import hookimpl

PONDER_PLUGIN_API = 1

_optional_positive = attrs.validators.optional(attrs.validators.ge(1))


@attrs.define
class MapReduceSettings:
    #: tokens per chunk; None: ``services.chunk_tokens``, else ``default_chunk_tokens(window)``
    chunk_tokens: int | None = attrs.field(default=None, validator=_optional_positive)
    #: tokens of lines repeated at a chunk boundary
    overlap_tokens: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: findings per combine call (k)
    fan_in: int = attrs.field(default=8, validator=attrs.validators.ge(2))
    #: with a retriever: read only this many best-ranked chunks (ignored without one)
    top_k: int | None = attrs.field(default=None, validator=_optional_positive)
    #: drop chunk results that found nothing before the reduce
    skip_empty: bool = True
    #: a context that fits one call is read and answered in that call (as ``direct`` does)
    single_read: bool = True


class MapReduceStrategy:
    name = "map_reduce"

    def __init__(self, settings: MapReduceSettings | None = None) -> None:
        self.settings = settings or MapReduceSettings()

    def plan_chunks(self, question: str, context: Any, services: Any) -> list[Any]:
        """The chunks this strategy would read for ``question`` (before retrieval): one when
        :meth:`reads_in_one_call`, else chunks of the configured or default size."""
        from ponder.context.chunking import chunk_context
        from ponder.plugins._common import prompt_room, require_room, resolve_chunk_tokens
        from ponder.plugins._signatures import extract_signature

        whole = self._whole_room(question, context, services)
        if whole is not None:
            return chunk_context(context, chunk_tokens=whole)
        room = require_room(prompt_room(services, extract_signature(), question), "a chunk",
                            services)
        chunk_tokens = resolve_chunk_tokens(services, self.settings.chunk_tokens, room)
        overlap = min(self.settings.overlap_tokens, chunk_tokens // 2)
        return chunk_context(context, chunk_tokens=chunk_tokens, overlap_tokens=overlap)

    def _whole_room(self, question: str, context: Any, services: Any) -> int | None:
        """The answer prompt's room when the whole context fits it and no chunk size was asked
        for (setting or ``--chunk-tokens``); else None."""
        if (not self.settings.single_read or self.settings.chunk_tokens
                or services.chunk_tokens or self.settings.top_k):
            return None
        from ponder.plugins._common import fits_rendered, prompt_room
        from ponder.plugins._signatures import answer_signature

        room = prompt_room(services, answer_signature(), question)
        return room if fits_rendered(context, room) else None

    def reads_in_one_call(self, question: str, context: Any, services: Any) -> bool:
        """Whether :meth:`run` answers in a single call: the chunking gives one chunk (the
        context fits one call, or one chunk of the configured size) and ``single_read`` is on.
        The plan (``ponder ask --dry-run``) counts 1 call then."""
        if not self.settings.single_read:
            return False
        return len(self.plan_chunks(question, context, services)) == 1

    def run(self, question: str, context: Any, services: Any) -> Any:
        from ponder.engine.answer import Draft
        from ponder.plugins._common import (
            NOTHING_FOUND,
            evidence_lines,
            format_finding,
            nothing_read,
            read_spans,
            reduce_answers,
            says_nothing,
            stop_reason,
            stopped_note,
        )
        from ponder.plugins._signatures import extract_signature
        from ponder.support.observability import SpanType
        from ponder.support.results import ChunkResult

        settings = self.settings
        signature = extract_signature()
        with services.tracker.span("map_reduce", SpanType.STRATEGY) as span:
            chunks = self.plan_chunks(question, context, services)
            total = len(chunks)
            selected = self._retrieve(question, chunks, services)
            span.attributes.update(chunks=total, selected=len(selected))
            if settings.single_read and total == 1:
                return self._read_one(question, chunks[0], services)

            def extract_one(_: int, chunk: Any) -> ChunkResult:
                prediction = services.predict(signature, role="map", question=question,
                                              chunk=chunk.render())
                return ChunkResult(
                    chunk.index,
                    str(prediction.relevant_info or "").strip(),
                    confidence=prediction.confidence or "low",
                    metadata={"citation": chunk.first_citation, "paths": chunk.paths},
                )

            problems: list[str] = []
            batch = services.map(extract_one, selected, label="map")
            # services.map numbers items by position; report the chunks' own indices
            failures = [attrs.evolve(f, index=selected[f.index].index) for f in batch.failed]
            kept = [r for r in batch.results
                    if not (settings.skip_empty and says_nothing(r.relevant_info, r.confidence))]
            span.attributes.update(read=batch.succeeded, failed=len(failures), relevant=len(kept))
            # what the model read, and where each kept finding came from (for citations)
            by_index = {chunk.index: chunk for chunk in selected}
            read = read_spans([by_index[r.index] for r in batch.results])
            evidence = [citation for r in kept
                        for citation in evidence_lines(r.relevant_info, [by_index[r.index]],
                                                       limit=2)]

            if not batch.results:
                text = nothing_read(total, failures, services)
            elif not kept and stop_reason(services, failures) is not None:
                text = (f"[partial: the run stopped ({stop_reason(services, failures)}) after "
                        f"reading {batch.succeeded} of {total} chunks; none of them had anything "
                        "relevant]")
            elif not kept:
                text = (f"{NOTHING_FOUND}: none of the {batch.succeeded} chunks read had "
                        "anything relevant.")
            else:
                partials = [
                    format_finding(number, r.relevant_info,
                                   source=f"chunk {r.index}, from {r.metadata['citation']}",
                                   confidence=r.confidence)
                    for number, r in enumerate(kept, 1)
                ]
                reduced = reduce_answers(services, question, partials, fan_in=settings.fan_in)
                problems = reduced.problems
                text = reduced.text
                if reduced.stopped:
                    text = f"{stopped_note(services, failures)}\n\n{text}"
        return Draft(
            text=text,
            failures=failures,
            problems=problems,
            chunks_total=total,
            chunks_read=batch.succeeded,
            strategy=self.name,
            largest_prompt_tokens=services.largest_prompt_tokens,
            read=read,
            evidence=evidence,
        )

    def _read_one(self, question: str, chunk: Any, services: Any) -> Any:
        """One chunk: one ``answer`` call over it, as ``direct`` makes, instead of an extract
        call and a combine call (a round and a call fewer, the same text read). A failed call
        is listed in the draft's failures, as a failed map call is."""
        from ponder.engine.answer import Draft
        from ponder.plugins._common import evidence_lines, nothing_read, read_spans
        from ponder.plugins._signatures import answer_signature

        signature = answer_signature()

        def answer_one(_: int, item: Any) -> str:
            prediction = services.predict(signature, role="answer", question=question,
                                          context=item.render())
            return str(prediction.answer or "").strip()

        batch = services.map(answer_one, [chunk], label="read")
        failures = [attrs.evolve(f, index=chunk.index) for f in batch.failed]
        text = batch.results[0] if batch.results else nothing_read(1, failures, services)
        return Draft(
            text=text,
            failures=failures,
            chunks_total=1,
            chunks_read=batch.succeeded,
            strategy=self.name,
            largest_prompt_tokens=services.largest_prompt_tokens,
            read=read_spans([chunk]) if batch.results else [],
            evidence=evidence_lines(text, [chunk]) if batch.results and text else [],
        )

    def _retrieve(self, question: str, chunks: list[Any], services: Any) -> list[Any]:
        """The chunks to read: all, or with ``top_k`` and a retriever the ``top_k`` it ranks
        best (in document order)."""
        top_k = self.settings.top_k
        if not top_k or getattr(services, "retriever", None) is None or top_k >= len(chunks):
            return chunks
        from ponder.support.observability import SpanType

        retriever = services.index(chunks)  # built, or loaded from the run store
        if retriever is None:
            return chunks
        with services.tracker.span("search", SpanType.RETRIEVE, top_k=top_k) as span:
            hits = retriever.search(question, top_k)
            span.attributes["hits"] = len(hits)
        best = {chunk.index: chunk for chunk, _score in hits}
        return [best[index] for index in sorted(best)]


@hookimpl
def ponder_register_strategies(register):
    register("map_reduce", MapReduceStrategy, settings=MapReduceSettings)
