"""An eval's examples on the executors: wall time and CPU of a 16-example eval, threads vs ray.

    .venv/bin/python bench/eval_executors.py [--quick] [--examples N] [--repeats R]

Each example asks "What is the value of MAGIC_PORT?" over a folder of 8 small files with
``map_reduce`` (8 map calls and one combine; the needle is in 12 of the 16 folders) through the
real ``openai_compatible`` adapter to the fake provider in its own process (oracle mode), at
zero latency (the client's CPU is the limit) and at 100 ms a request (the provider's latency
is). ``[limits] concurrency`` is 8 for both; ray runs 2 actors (this machine's CPUs) of 4
threads on a local cluster, and each example is one work item asked on an actor.

Per row: the eval's wall seconds and CPU seconds (the driver plus, for ray, its actors and
Ray's daemons, from /proc; the provider excluded), median of R passes of one Evaluator with
``resume=False`` after one warm-up pass (which starts the actors and builds their System); the
first pass under ray (the local cluster's start included) is reported apart. Every pass checks
that the eval's calls are the provider's requests. Results: ``bench/results/eval_executors.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ProviderProcess,
    fmt_range,
    isolated_ponder_dirs,
    load_average,
    quiet_logs,
    summary,
    table,
    write_result,
)
from executors import tree_cpu_seconds

CONCURRENCY = 8
RAY_WORKERS = 2
FILES = 8


def make_dataset(root: Path, examples: int) -> Path:
    rows = []
    for i in range(examples):
        folder = root / f"ex{i:02d}"
        folder.mkdir(parents=True)
        for f in range(FILES):
            body = "".join(f"def helper_{f}_{j}():\n    return {j}\n" for j in range(40))
            if i % 4 != 3 and f == FILES - 1:
                body += "MAGIC_PORT = 48213\n"
            (folder / f"m{f}.py").write_text(body)
        rows.append({"id": f"ex{i:02d}", "question": "What is the value of MAGIC_PORT?",
                     "sources": [str(folder)], "answer": "48213"})
    path = root / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp: Path, base_url: str, executor: str) -> Any:
    from ponder.kernel.config import CacheConfig, Component, Config, LimitsConfig

    options = {"num_workers": RAY_WORKERS, "threads_per_worker": CONCURRENCY // RAY_WORKERS} \
        if executor == "ray" else {}
    return Config(limits=LimitsConfig(concurrency=CONCURRENCY, max_retries=0),
                  cache=CacheConfig(enabled=False),
                  adapter=Component("openai_compatible", {"base_url": base_url,
                                                          "model": "fake-model"}),
                  strategy=Component("map_reduce", {"chunk_tokens": 300}),
                  executor=Component(executor, options),
                  storage=Component("sqlite", {"path": str(tmp / f"runs-{executor}.sqlite")}))


def _pass(evaluator: Any, dataset: Path, provider: ProviderProcess) -> dict[str, float]:
    provider.reset()
    exclude = {provider.proc.pid} if provider.proc else set()
    cpu0 = tree_cpu_seconds(os.getpid(), exclude)
    t0 = time.perf_counter()
    result = evaluator.run(dataset)
    wall = time.perf_counter() - t0
    cpu = tree_cpu_seconds(os.getpid(), exclude) - cpu0
    stats = provider.stats()
    assert result.failed == 0 and result.usage["calls"] == stats["requests"], \
        (result.failed, result.usage["calls"], stats["requests"])
    return {"wall_s": wall, "cpu_s": cpu, "calls": result.usage["calls"],
            "score": result.score}


def measure(*, examples: int = 16, repeats: int = 3, quick: bool = False) -> dict[str, Any]:
    import ray

    from ponder.evaluate import Evaluator

    if quick:
        repeats = 1
    quiet_logs()
    rows = []
    with isolated_ponder_dirs(), tempfile.TemporaryDirectory(prefix="ponder-bench-") as tmp_s:
        tmp = Path(tmp_s)
        dataset = make_dataset(tmp / "corpus", examples)
        for latency in (0.0, 0.1):
            with ProviderProcess(mode="oracle", needle=["port=48213"],
                                 latency=latency) as provider:
                for executor in ("threads", "ray"):
                    evaluator = Evaluator(_config(tmp, provider.base_url, executor),
                                          ["contains"], resume=False)
                    try:
                        first = _pass(evaluator, dataset, provider)  # warm-up (ray: start)
                        passes = [_pass(evaluator, dataset, provider) for _ in range(repeats)]
                    finally:
                        evaluator.close()  # ray: the local cluster it started is stopped
                    assert not ray.is_initialized()
                    rows.append({
                        "executor": executor, "latency_s": latency, "examples": examples,
                        "calls": passes[0]["calls"], "score": passes[0]["score"],
                        "first_pass_wall_s": round(first["wall_s"], 3),
                        "wall_s": summary([p["wall_s"] for p in passes]),
                        "cpu_s": summary([p["cpu_s"] for p in passes]),
                        "workers": RAY_WORKERS if executor == "ray" else 1})
    return {"parameters": {"examples": examples, "repeats": repeats, "files_per_example": FILES,
                           "concurrency": CONCURRENCY, "ray_workers": RAY_WORKERS,
                           "ray_version": ray.__version__},
            "results": rows}


def render(doc: dict[str, Any]) -> str:
    rows = [[r["executor"], f"{r['latency_s'] * 1000:.0f} ms", r["examples"], r["calls"],
             fmt_range(r["wall_s"], digits=2), fmt_range(r["cpu_s"], digits=2),
             f"{r['first_pass_wall_s']:.2f}"] for r in doc["results"]]
    return table(["executor", "latency", "examples", "calls", "wall s", "CPU s",
                  "first pass s"], rows,
                 title=f"eval: {doc['parameters']['examples']} map_reduce examples, "
                       f"concurrency {doc['parameters']['concurrency']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    started_load = load_average()
    doc = measure(examples=args.examples, repeats=args.repeats, quick=args.quick)
    print(render(doc))
    path = write_result("eval_executors", doc["parameters"], doc["results"],
                        load_at_start=started_load)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
