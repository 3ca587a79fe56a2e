"""Indexing a run's chunks with its retriever, reusing an index built before.

:meth:`ponder.engine.services.Services.index` hands its work here. Building a retriever's index
(BM25 statistics, embeddings) can cost more than the questions asked of it, and two places can
spare it: the run store, which keeps the dumped index of a retriever that can ``dump``/``load``
it, keyed by the retriever, its settings and the chunks' text, so the next run over the same
sources loads it; and a session's kept context (:func:`ponder.context.chunking.keep_chunks`),
whose memo keeps the indexed retriever itself, so a later question over the very same chunk
objects gets it back without hashing 10 MB for the key or deserialising the index. This lives
apart from the services because none of it touches their limits, usage or LM calls: it needs
only the retriever, the store, the context and the tracker for its ``index`` span.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ponder.support.observability import SpanType, Tracker

log = logging.getLogger("ponder.run")


def index_chunks(retriever: Any, chunks: Sequence[Any], *, name: str | None, settings: Any,
                 context: Any, storage: Any, tracker: Tracker) -> Any:
    """``retriever`` with ``chunks`` indexed: kept in memory, loaded from ``storage``, or built
    (and then saved to ``storage`` and kept). Loading or saving a stored index never fails the
    run: a stale or damaged one is rebuilt, and an index that cannot be saved is only logged."""
    import hashlib
    import json

    from ponder.context import chunking
    from ponder.engine.cache import settings_identity

    # the kept context's memo (chunkings by size) also holds its indexed retrievers, so
    # both live exactly as long as the session keeps the context (keep_chunks(ctx, False))
    memo: Any = chunking.kept_memo(context)
    memo_key = ("index", name, json.dumps(settings_identity(settings), default=repr))
    with tracker.span("index", SpanType.RETRIEVE, retriever=name, chunks=len(chunks)) as span:
        hit = memo.get(memo_key) if memo is not None else None
        if hit is not None and len(hit[0]) == len(chunks) and all(
                a is b for a, b in zip(hit[0], chunks, strict=True)):
            span.attributes.update(loaded_from_store=False, kept_in_memory=True)
            return hit[1]
        key = None
        if (storage is not None and callable(getattr(retriever, "dump", None))
                and callable(getattr(retriever, "load", None))):
            digest = hashlib.sha256()
            identity = [name, settings_identity(settings)]
            digest.update(json.dumps(identity, default=repr).encode())
            for chunk in chunks:
                text = chunk.render() if hasattr(chunk, "render") else str(chunk)
                digest.update(f"{len(text)}:".encode())
                digest.update(text.encode("utf-8", "surrogatepass"))
            key = digest.hexdigest()
            data = storage.get_artifact("retriever-index", key)
            if data is not None:
                try:
                    retriever.load(data, chunks)
                    span.attributes["loaded_from_store"] = True
                    if memo is not None:
                        memo[memo_key] = (list(chunks), retriever)
                    return retriever
                except Exception as exc:  # a stale or damaged index is rebuilt
                    log.warning("rebuilding the %s index: the stored one failed to load "
                                "(%s)", name, exc)
        retriever.index(chunks)
        span.attributes["loaded_from_store"] = False
        if memo is not None:
            memo[memo_key] = (list(chunks), retriever)
        if key is not None:
            try:
                storage.put_artifact("retriever-index", key, retriever.dump())
            except Exception as exc:  # saving is an optimisation, never a failure
                log.warning("could not save the %s index: %s", name, exc)
    return retriever
