"""Concurrency against the loopback fake provider: ponder's Services.map + Services.predict
through the real litellm path (``openai_compatible`` adapter), N requests at concurrency C with
a fixed provider latency L.

    .venv/bin/python bench/run.py --only concurrency [--quick | --full]

Per row: wall time, efficiency ``E = ceil(N/C)·L / wall`` (1.0 = every wave took exactly L),
the most requests the provider saw in flight at once (``GET /stats``), this process's CPU
seconds (``getrusage``: the client only, the provider runs in its own process), retries
(``Services.usage.retries``), failed items (``BatchResult.failed``) and the provider's failures
by kind. The retry policy is the one ``ponder ask`` uses (``RetryPolicy(max_retries=3)``: 2 s
base, 2 s jitter, or the server's Retry-After), so the fault row shows real back-off costs; the
``timeout`` fault holds a connection 2 s and then drops it.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ProviderProcess,
    cpu_seconds,
    fmt_range,
    openai_adapter,
    peak_rss_mb,
    quiet_logs,
    summary,
    table,
)

TARGET_E = 0.85  # at C=16
PROMPT = "Say whether this line sets a port:  12| RETRY_LIMIT = 3"


def _run_batch(base_url: str, n: int, concurrency: int, max_retries: int = 3) -> dict[str, Any]:
    from ponder.engine.services import Services
    from ponder.plugins._signatures import extract_signature
    from ponder.plugins.predict import PredictPredictor
    from ponder.support.results import ChunkResult
    from ponder.support.retry import RetryPolicy

    adapter = openai_adapter(base_url, window=8192, timeout_s=30.0)
    services = Services(lm=adapter.build_lm(), model_info=adapter.model_info(),
                        predictor=PredictPredictor(), concurrency=concurrency,
                        retry=RetryPolicy(max_retries=max_retries), progress_mode="silent")
    signature = extract_signature()
    items = [f"{PROMPT} (item {i})" for i in range(n)]

    def one(index: int, chunk: str) -> ChunkResult:
        prediction = services.predict(signature, role="map", question="Is a port set?",
                                      chunk=chunk)
        return ChunkResult(index, str(prediction.relevant_info or ""))

    cpu0, started = cpu_seconds(), time.perf_counter()
    batch = services.map(one, items, label="bench")
    wall = time.perf_counter() - started
    return {"wall_s": wall, "cpu_s": cpu_seconds() - cpu0, "succeeded": batch.succeeded,
            "failed": len(batch.failed), "retries": services.usage.retries,
            "calls": services.usage.calls,
            "failure_kinds": sorted({f.kind for f in batch.failed if f.kind}),
            "failure_samples": [f"{f.kind}: {f.error}"[:200] for f in batch.failed[:3]]}


def _row(provider: ProviderProcess, *, n: int, c: int, latency: float, fault_rate: float,
         repeats: int) -> dict[str, Any]:
    runs, stats = [], []
    for _ in range(repeats):
        provider.reset()
        runs.append(_run_batch(provider.base_url, n, c))
        stats.append(provider.stats())
    ideal = math.ceil(n / c) * latency
    walls = [r["wall_s"] for r in runs]
    return {
        "n": n, "c": c, "latency_s": latency, "fault_rate": fault_rate, "repeats": repeats,
        "ideal_wall_s": ideal,
        "wall_s": summary(walls),
        "efficiency": summary([ideal / w for w in walls]) if latency > 0 else None,
        "cpu_s": summary([r["cpu_s"] for r in runs]),
        "cpu_ms_per_request": summary([r["cpu_s"] / max(s["requests"], 1) * 1000
                                       for r, s in zip(runs, stats, strict=True)]),
        "max_in_flight": max(s["max_in_flight"] for s in stats),
        "requests": summary([s["requests"] for s in stats]),
        # answered 200s, and requests closed without a reply (timeout faults, client hang-ups)
        "provider_completed": summary([s["completed"] for s in stats]),
        "provider_aborted": summary([s["aborted"] for s in stats]),
        "slowest_repeat_s": max(walls),
        "retries": summary([r["retries"] for r in runs]),
        "failed_items": summary([r["failed"] for r in runs]),
        "provider_failures": {kind: sum(s["failures"][kind] for s in stats) // repeats
                              for kind in stats[0]["failures"]
                              if any(s["failures"][kind] for s in stats)},
        "failure_kinds": sorted({k for r in runs for k in r["failure_kinds"]}),
        "failure_samples": [m for r in runs for m in r["failure_samples"]][:3],
    }


def measure(*, quick: bool = False, full: bool = False) -> dict[str, Any]:
    quiet_logs()
    if quick:
        n, latency, cs, repeats = 20, 0.05, (1, 4, 16), {1: 1}
        fault_n = 20
    else:
        n, latency, cs, repeats = 200, 0.2, (1, 4, 16, 64), {1: 1}
        fault_n = 200
    default_repeats = 1 if quick else 3
    rows = []
    with ProviderProcess(mode="rules", default_reply="NOT FOUND", latency=latency,
                         max_lifetime=1800) as provider:
        _run_batch(provider.base_url, 4, 4)  # warm-up: imports, connections; discarded
        for c in cs:
            rows.append(_row(provider, n=n, c=c, latency=latency, fault_rate=0.0,
                             repeats=repeats.get(c, default_repeats)))
        if full:
            for c in (16, 64):
                rows.append(_row(provider, n=1000, c=c, latency=latency, fault_rate=0.0,
                                 repeats=1))
    fault_rates = (0.2,) if not full else (0.05, 0.2)
    for rate in fault_rates:
        with ProviderProcess(mode="rules", default_reply="NOT FOUND", latency=latency,
                             fault_rate=rate, timeout_sleep=2.0, seed=7,
                             max_lifetime=1800) as provider:
            _run_batch(provider.base_url, 2, 2, max_retries=6)
            rows.append(_row(provider, n=fault_n, c=16, latency=latency, fault_rate=rate,
                             repeats=1))
    if full:  # zero latency: the client's own ceiling, in requests per second
        with ProviderProcess(mode="rules", default_reply="NOT FOUND",
                             max_lifetime=1800) as provider:
            _run_batch(provider.base_url, 4, 4)
            for c in (1, 16, 64):
                rows.append(_row(provider, n=500, c=c, latency=0.0, fault_rate=0.0, repeats=1))
    c16 = next((r for r in rows if r["c"] == 16 and r["fault_rate"] == 0
                and r["latency_s"] > 0), None)
    targets = {}
    if c16 is not None:
        targets[f"E >= {TARGET_E} at C=16 (N={c16['n']}, L={c16['latency_s']} s)"] = \
            c16["efficiency"]["median"] >= TARGET_E
    return {"parameters": {"n": n, "latency_s": latency, "concurrency": list(cs),
                           "fault_rates": list(fault_rates), "fault_n": fault_n,
                           "retry_policy": "RetryPolicy(max_retries=3)", "client_timeout_s": 30,
                           "provider_timeout_sleep_s": 2.0, "prompt": PROMPT},
            "results": rows, "targets": targets, "client_peak_rss_mb": peak_rss_mb()}


def render(doc: dict[str, Any]) -> str:
    rows = []
    for r in doc["results"]:
        eff = fmt_range(r["efficiency"], digits=2) if r["efficiency"] else "-"
        fails = ",".join(f"{k}:{v}" for k, v in r["provider_failures"].items()) or "-"
        rows.append([f"N={r['n']} C={r['c']} L={r['latency_s']:g} f={r['fault_rate']:g}",
                     f"{r['ideal_wall_s']:.2f}", fmt_range(r["wall_s"], digits=2), eff,
                     r["max_in_flight"], fmt_range(r["cpu_s"], digits=2),
                     fmt_range(r["cpu_ms_per_request"], digits=1),
                     fmt_range(r["retries"], digits=0), fmt_range(r["failed_items"], digits=0),
                     fails])
    out = table(["run", "ideal s", "wall s", "E", "max in flight", "CPU s", "CPU ms/req",
                 "retries", "failed", "provider faults"], rows,
                title="concurrency: Services.map + Services.predict -> openai_compatible -> "
                      "fake provider (own process)")
    out += "\n" + "\n".join(f"target {k}: {'met' if v else 'MISSED'}"
                            for k, v in doc["targets"].items())
    return out
