"""Executors on this machine: throughput (LM calls/s) and CPU per call, ``threads`` vs ``ray``.

    .venv/bin/python bench/executors.py [--quick] [--calls N] [--repeats R]

Each run is one ``System.ask`` with ``map_reduce`` over N one-chunk files (N map calls; every
reply is "NOT FOUND", so no combine call) through the real ``openai_compatible`` adapter
(litellm over loopback HTTP) to the fake provider in its own process, at zero latency: the
client's CPU is the bottleneck, which is what a second process (or machine) should relieve.
``[limits] concurrency`` is 16 for both; ray runs 2 actors (this machine's CPUs) of 8 threads
each on a local cluster.

Per row: calls/s over the ask (median of R, after one warm-up ask that starts the workers and
builds their LM clients), and CPU seconds per call of every process the run used except the
provider: the driver plus, for ray, its actors and Ray's own daemons (raylet, GCS), read from
``/proc`` (the process tree under this one). Results: ``bench/results/executors.json``.
"""

from __future__ import annotations

import argparse
import os
import random
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

CONCURRENCY = 16
RAY_WORKERS = 2
_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int, exclude: set[int]) -> float:
    """User + system CPU seconds of ``root`` and every live descendant (from /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        pid = int(entry)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    total = 0.0
    for pid, cpu in times.items():
        seen, node = set(), pid
        while node not in (0, 1) and node not in seen:
            if node in exclude:
                break
            if node == root:
                total += cpu
                break
            seen.add(node)
            node = parents.get(node, 0)
    return total


def make_corpus(root: Path, files: int) -> Path:
    rng = random.Random(5)
    for i in range(files):
        lines = [f"# note {i:04d}"] + [f"entry_{i:04d}_{j} = {rng.randint(0, 99_999)}"
                                       for j in range(12)]
        path = root / f"part_{i // 100}" / f"note_{i:04d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _system(tmp: Path, base_url: str, executor: str) -> Any:
    from ponder.engine.system import System
    from ponder.kernel.config import load_config

    extra = (f"num_workers = {RAY_WORKERS}\nthreads_per_worker = "
             f"{CONCURRENCY // RAY_WORKERS}\n" if executor == "ray" else "")
    cfg = tmp / f"{executor}.toml"
    cfg.write_text(
        '[strategy]\nname = "map_reduce"\nchunk_tokens = 128\n'
        f"[limits]\nconcurrency = {CONCURRENCY}\nmax_retries = 0\n"
        '[cache]\nenabled = false\n[storage]\nname = "memory"\n'
        f'[executor]\nname = "{executor}"\n{extra}'
        f'[adapter]\nname = "openai_compatible"\nbase_url = "{base_url}"\n'
        'model = "fake-model"\n', encoding="utf-8")
    return System(load_config(str(cfg)), progress="silent")


def measure(*, calls: int = 400, repeats: int = 3, quick: bool = False,
            full: bool = False) -> dict[str, Any]:
    import ray

    if quick:
        calls, repeats = 60, 1
    quiet_logs()
    rows = []
    with isolated_ponder_dirs(), tempfile.TemporaryDirectory(prefix="ponder-bench-") as tmp_s, \
            ProviderProcess(mode="rules", default_reply="NOT FOUND") as provider:
        tmp = Path(tmp_s)
        corpus = make_corpus(tmp / "corpus", calls)
        ray.init(num_cpus=RAY_WORKERS, include_dashboard=False, log_to_driver=False)
        try:
            for executor in ("threads", "ray"):
                system = _system(tmp, provider.base_url, executor)
                system.ask("What is MAGIC_PORT?", [str(corpus)])  # warm-up: workers, clients
                rates, cpu_per_call = [], []
                for _ in range(repeats):
                    provider.reset()
                    exclude = {provider.proc.pid} if provider.proc else set()
                    cpu0 = tree_cpu_seconds(os.getpid(), exclude)
                    t0 = time.perf_counter()
                    answer = system.ask("What is MAGIC_PORT?", [str(corpus)])
                    wall = time.perf_counter() - t0
                    cpu = tree_cpu_seconds(os.getpid(), exclude) - cpu0
                    stats = provider.stats()
                    assert stats["completed"] == answer.usage.calls == calls, \
                        (stats["completed"], answer.usage.calls)
                    rates.append(answer.usage.calls / wall)
                    cpu_per_call.append(cpu / answer.usage.calls)
                system.open_executor().close()
                rows.append({"executor": executor, "calls": calls,
                             "calls_per_s": summary(rates),
                             "cpu_ms_per_call": summary([c * 1000 for c in cpu_per_call]),
                             "workers": RAY_WORKERS if executor == "ray" else 1})
        finally:
            ray.shutdown()
    return {"parameters": {"calls": calls, "repeats": repeats, "concurrency": CONCURRENCY,
                           "ray_workers": RAY_WORKERS, "provider_latency_s": 0.0,
                           "ray_version": ray.__version__},
            "results": rows}


def render(doc: dict[str, Any]) -> str:
    rows = [[r["executor"], r["workers"], r["calls"], fmt_range(r["calls_per_s"], digits=1),
             fmt_range(r["cpu_ms_per_call"], digits=2)] for r in doc["results"]]
    return table(["executor", "processes", "calls/ask", "calls/s", "CPU ms/call"], rows,
                 title=f"executors: map_reduce over loopback HTTP, concurrency "
                       f"{doc['parameters']['concurrency']}, zero provider latency")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    started_load = load_average()
    doc = measure(calls=args.calls, repeats=args.repeats, quick=args.quick)
    print(render(doc))
    path = write_result("executors", doc["parameters"], doc["results"],
                        load_at_start=started_load)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
