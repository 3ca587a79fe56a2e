"""The ``retrieve_then_read`` strategy: rank the chunks with the retriever, read only the best.

**Retrieve.** The context is cut into chunks (:func:`ponder.context.chunking.chunk_context`),
smaller than ``map_reduce``'s by default (at most :data:`DEFAULT_CHUNK_TOKENS`, since a retriever
ranks small chunks more sharply), and indexed with the run's retriever through
:meth:`ponder.engine.services.Services.index`, which loads a stored index when the same sources
were indexed before with the same retriever settings. ``retriever.search(question, top_k)`` then
ranks them; hits below ``min_score`` (when set) are dropped.

**Read.** The hits are packed, best first, into as few ``answer`` calls (``role="read"``) as fit
the window: each call gets as many whole chunks as its prompt has room for, shown in document
order with their ``=== path (lines a-b) ===`` headers and line numbers so the model cites
``path:line``. With one call its answer is the answer; with several, the answers are combined
with the reduce tree of :mod:`ponder.plugins._common` (``fan_in`` per combine call).

**LM calls**, for ``g`` read calls of which ``m`` succeed (no window split in the reduce)::

    calls = g                 when g == 1
    calls = g + R(m)          when g > 1,  R(m) = sum(ceil(m / k**i) for i in 1..L)  (k = fan_in)

So with a window that holds all ``top_k`` chunks, the whole run is one call.

**Counts.** The draft's ``chunks_total`` is every chunk the retriever considered and
``chunks_read`` the chunks in read calls that succeeded; a failed read call lists each of its
chunks in ``failures``.

Needs a retriever; without one the run stops with an error that says how to configure one.

Config example::

    [strategy]
    name = "retrieve_then_read"
    # top_k = 8               # chunks read
    # chunk_tokens = 1024     # default: min(the run's chunk size, 1024)
    # overlap_tokens = 0      # lines repeated across chunk boundaries
    # min_score = 0.5         # drop hits scoring lower (the scale depends on the retriever)
    # fan_in = 8              # answers combined per reduce call, when several reads were needed

    [retriever]
    name = "bm25"             # or "embeddings"
"""

from __future__ import annotations

from typing import Any

import attrs

from ponder import hookimpl

PONDER_PLUGIN_API = 1

#: The largest chunk this strategy makes unless ``chunk_tokens`` (or the run's) says otherwise.
DEFAULT_CHUNK_TOKENS = 1024

NO_RETRIEVER = (
    "the retrieve_then_read strategy needs a retriever to rank the chunks; configure one, e.g. "
    'in ponder.toml:\n\n    [retriever]\n    name = "bm25"        # or "embeddings"\n\n'
    "or use strategy map_reduce, which reads every chunk"
)


@attrs.define
class RetrieveThenReadSettings:
    #: how many of the best-ranked chunks are read
    top_k: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    #: tokens per chunk; None: the run's chunk size capped at DEFAULT_CHUNK_TOKENS
    chunk_tokens: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1)))
    #: tokens of lines repeated at a chunk boundary
    overlap_tokens: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: hits scoring lower than this are not read (None: read all top_k)
    min_score: float | None = None
    #: answers per combine call when the reads took several calls
    fan_in: int = attrs.field(default=8, validator=attrs.validators.ge(2))


class RetrieveThenReadStrategy:
    name = "retrieve_then_read"

    def __init__(self, settings: RetrieveThenReadSettings | None = None) -> None:
        self.settings = settings or RetrieveThenReadSettings()

    def read_room(self, question: str, services: Any) -> int:
        """Tokens one read call has for chunks."""
        from ponder.plugins._common import prompt_room, require_room
        from ponder.plugins._signatures import answer_signature

        return require_room(prompt_room(services, answer_signature(), question),
                            "the retrieved chunks", services)

    def chunk_sizes(self, question: str, services: Any) -> tuple[int, int]:
        """``(chunk_tokens, overlap_tokens)`` of :meth:`plan_chunks`, without cutting anything
        (``auto`` bounds the chunk count of a large context from its size)."""
        from ponder.plugins._common import resolve_chunk_tokens

        configured = self.settings.chunk_tokens
        tokens = resolve_chunk_tokens(services, configured, self.read_room(question, services))
        if configured is None and services.chunk_tokens is None:
            tokens = min(tokens, DEFAULT_CHUNK_TOKENS)
        return tokens, min(self.settings.overlap_tokens, tokens // 2)

    def plan_chunks(self, question: str, context: Any, services: Any) -> list[Any]:
        """The chunks the retriever ranks."""
        from ponder.context.chunking import chunk_context

        tokens, overlap = self.chunk_sizes(question, services)
        return chunk_context(context, chunk_tokens=tokens, overlap_tokens=overlap)

    def retrieve(self, question: str, chunks: list[Any], services: Any) -> list[Any]:
        """The chunks to read, best first."""
        from ponder.support.observability import SpanType

        settings = self.settings
        if settings.top_k >= len(chunks) and settings.min_score is None:
            return list(chunks)  # everything is read anyway: no need to rank
        retriever = services.index(chunks)
        if retriever is None:
            from ponder.errors import ConfigError

            raise ConfigError(NO_RETRIEVER)
        with services.tracker.span("search", SpanType.RETRIEVE, top_k=settings.top_k) as span:
            hits = retriever.search(question, settings.top_k)
            if settings.min_score is not None:
                hits = [(chunk, score) for chunk, score in hits if score >= settings.min_score]
            span.attributes.update(hits=len(hits),
                                   best=[getattr(c, "index", None) for c, _ in hits[:10]])
        return [chunk for chunk, _score in hits]

    def run(self, question: str, context: Any, services: Any) -> Any:
        from ponder.engine.answer import Draft
        from ponder.errors import ConfigError
        from ponder.plugins._common import (
            NOTHING_FOUND,
            evidence_lines,
            format_finding,
            plan_groups,
            read_spans,
            reduce_answers,
            says_nothing,
            stop_reason,
            stopped_note,
        )
        from ponder.plugins._signatures import answer_signature
        from ponder.support.observability import SpanType
        from ponder.support.results import ChunkResult

        if getattr(services, "retriever", None) is None:
            raise ConfigError(NO_RETRIEVER)
        signature = answer_signature()
        with services.tracker.span("retrieve_then_read", SpanType.STRATEGY) as span:
            chunks = self.plan_chunks(question, context, services)
            total = len(chunks)
            selected = self.retrieve(question, chunks, services) if chunks else []
            span.attributes.update(chunks=total, selected=len(selected))

            shown: list[Any] = []  # the chunks of the read calls that answered
            evidence: list[Any] = []

            def draft(text: str, read: int = 0, failures: list[Any] | None = None) -> Draft:
                return Draft(text=text, failures=failures or [], chunks_total=total,
                             chunks_read=read, strategy=self.name,
                             largest_prompt_tokens=services.largest_prompt_tokens,
                             read=read_spans(shown), evidence=evidence)

            if not chunks:
                return draft("No answer: the context holds no text to read.")
            if not selected:
                return draft(f"{NOTHING_FOUND}: the retriever ranked none of the {total} chunks "
                             f"at or above min_score={self.settings.min_score}.")

            # best first into calls that fit; each call shows its chunks in document order
            room = self.read_room(question, services)
            groups = [sorted((selected[i] for i in group), key=lambda c: c.index)
                      for group in plan_groups([c.tokens + 1 for c in selected],
                                               len(selected), room)]

            def read_one(index: int, group: list[Any]) -> ChunkResult:
                text = "\n\n".join(chunk.render() for chunk in group)
                prediction = services.predict(signature, role="read", question=question,
                                              context=text)
                return ChunkResult(index, str(prediction.answer or "").strip(), metadata={
                    "chunks": [c.index for c in group], "citation": group[0].first_citation})

            batch = services.map(read_one, groups, label="read")
            failures = [attrs.evolve(f, index=chunk.index)
                        for f in batch.failed for chunk in groups[f.index]]
            read = sum(len(groups[r.index]) for r in batch.results)
            for r in batch.results:
                shown.extend(groups[r.index])
                if not says_nothing(r.relevant_info):
                    evidence.extend(evidence_lines(r.relevant_info, groups[r.index], limit=2))
            span.attributes.update(read_calls=len(groups), read=read, failed=len(failures))

            if not batch.results:
                reason = stop_reason(services, failures)
                if reason is not None:
                    text = (f"No answer: the run stopped ({reason}) before any of the "
                            f"{len(selected)} retrieved chunks was read.")
                else:
                    text = (f"No answer: none of the {len(selected)} retrieved chunks could be "
                            f"read ({batch.failed[0].error}).")
                return draft(text, 0, failures)
            if len(groups) == 1:
                return draft(batch.results[0].relevant_info, read, failures)

            partials = [
                format_finding(number, r.relevant_info,
                               source=f"chunks {', '.join(map(str, r.metadata['chunks']))}, "
                                      f"from {r.metadata['citation']}")
                for number, r in enumerate(batch.results, 1)
            ]
            reduced = reduce_answers(services, question, partials, fan_in=self.settings.fan_in)
            text = reduced.text
            if reduced.stopped:
                text = f"{stopped_note(services, failures)}\n\n{text}"
        return draft(text, read, failures)


@hookimpl
def ponder_register_strategies(register):
    register("retrieve_then_read", RetrieveThenReadStrategy, settings=RetrieveThenReadSettings)
