"""The second question of a session: what it saves over a fresh ``ask`` on a 10 MB corpus.

Three ways to ask two questions over the same sources, each over the loopback fake provider (in
this process, latency 0: the model's time is not what is measured):

* ``ask, ask``: two independent ``System.ask`` calls (each loads, chunks and indexes; the
  second finds the retriever index in the run store);
* ``session``: one ``ponder.Session``, two ``ask`` s (the second reuses the loaded context, its
  chunking and the stored index);

with the ``retrieve_then_read`` strategy over ``bm25``, so every question chunks the corpus and
needs the index. Per question it reports the wall time, the time loading the sources, and the
``index`` span and where the index came from (built, loaded from the store, or kept in
memory by the session). Run: ``python bench/sessions.py [--mb 10]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import isolated_ponder_dirs, quiet_logs, table, write_result


def _index_span(tracker) -> tuple[float, str | None]:
    """(seconds in the ``index`` span, how the index came: built, store or memory)."""
    for span in tracker.spans:
        if span.name == "index":
            how = ("memory" if span.attributes.get("kept_in_memory") else
                   "store" if span.attributes.get("loaded_from_store") else "built")
            return span.duration_s or 0.0, how
    return 0.0, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from corpus import generate

    import ponder
    from ponder.support.observability import Tracker
    from ponder.testing.fake_provider import FakeProvider

    quiet_logs()
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp, isolated_ponder_dirs(), \
            FakeProvider(default_reply="NOT FOUND") as fake:
        root = generate(int(args.mb * 1_000_000)).write(Path(tmp) / "corpus")
        builder = (ponder.build()
                   .adapter("openai_compatible", base_url=fake.base_url, model="m",
                            context_window=32768)
                   .strategy("retrieve_then_read", top_k=8).retriever("bm25")
                   .cache(enabled=False))
        questions = ["Where is the retry policy?", "And who calls it?"]
        timings: dict[str, list[list[float]]] = {"ask, ask": [], "session": []}
        details: dict[str, list[dict]] = {"ask, ask": [], "session": []}
        for repeat in range(args.repeat):
            # a fresh run store each time: the first question indexes for real
            system = builder.storage("sqlite", path=f"{tmp}/ask-{repeat}.sqlite").system()
            walls, info = [], []
            for question in questions:
                tracker = Tracker()
                started = time.perf_counter()
                system.ask(question, [str(root)], tracker=tracker)
                index_s, loaded = _index_span(tracker)
                walls.append(time.perf_counter() - started)
                info.append({"index_s": index_s, "index_loaded": loaded})
            timings["ask, ask"].append(walls)
            details["ask, ask"].append(info)

            system = builder.storage("sqlite", path=f"{tmp}/session-{repeat}.sqlite").system()
            walls, info = [], []
            with ponder.Session(None, [str(root)], system=system) as session:
                for question in questions:
                    tracker = Tracker()
                    started = time.perf_counter()
                    session.ask(question, tracker=tracker)
                    index_s, loaded = _index_span(tracker)
                    walls.append(time.perf_counter() - started)
                    info.append({"index_s": index_s, "index_loaded": loaded,
                                 "load_s": session.last_load_s})
            timings["session"].append(walls)
            details["session"].append(info)
        for mode, runs in timings.items():
            first = statistics.median(r[0] for r in runs)
            second = statistics.median(r[1] for r in runs)
            index2 = statistics.median(d[1]["index_s"] for d in details[mode])
            how = "/".join(sorted({d[1]["index_loaded"] or "-" for d in details[mode]}))
            rows.append([mode, f"{first:.2f}s", f"{second:.2f}s", f"{index2:.3f}s", how,
                         f"{first - second:.2f}s"])
            results.append({"mode": mode, "first_s": first, "second_s": second,
                            "second_index_s": index2, "runs": runs, "details": details[mode]})
    print(table(["mode", "question 1", "question 2", "q2 index", "q2 index from", "q1 - q2"], rows,
                title=f"two questions over a {args.mb:g} MB corpus (retrieve_then_read, bm25)"))
    path = write_result("sessions", {"mb": args.mb, "repeat": args.repeat,
                                     "strategy": "retrieve_then_read", "retriever": "bm25"},
                        results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
