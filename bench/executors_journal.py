"""The ray executor's request journal: what it costs, A/B on this machine.

    .venv/bin/python bench/executors_journal.py [--repeats R] [--rounds N]

Runs :func:`executors.measure` (``bench/executors.py``: 400 map calls through the real adapter
to the fake provider at zero latency, the CPU-bound case) in alternating rounds with the
workers' journal off (workers started without one, the way ponder ran before issue 13's
journal) and on, back to back, so both see the same load on a shared machine. Prints one table
per round; results: ``bench/results/executors_journal.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import executors as bench
from _common import write_result


def _without_journal(self: Any, ray: Any) -> Any:
    from ponder.plugins.executor_ray import PonderWorker

    return ray.remote(PonderWorker).options(max_concurrency=self._threads, num_cpus=0,
                                            scheduling_strategy="SPREAD").remote(None)


def main(argv: list[str] | None = None) -> int:
    from ponder.plugins import executor_ray

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    with_journal = executor_ray.RayExecutor._new_worker
    rounds = []
    load_at_start = list(os.getloadavg())
    for n in range(args.rounds):
        for journal in (False, True):
            executor_ray.RayExecutor._new_worker = with_journal if journal else _without_journal
            doc = bench.measure(calls=400, repeats=args.repeats)
            rounds.append({"round": n + 1, "journal": journal, "load": list(os.getloadavg()),
                           "results": doc["results"]})
            print(f"round {n + 1}, journal {'on' if journal else 'off'}, "
                  f"load {os.getloadavg()[0]:.1f}")
            print(bench.render(doc), flush=True)
    executor_ray.RayExecutor._new_worker = with_journal
    path = write_result("executors_journal", {"calls": 400, "repeats": args.repeats,
                                              "rounds": args.rounds}, rounds,
                        load_at_start=load_at_start)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
