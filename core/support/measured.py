"""Adapter performance measured from the recorded LM calls, and a fallback order built on it.

Every LM call is recorded in the run store with the adapter that served it (``adapter``,
``model``, ``latency_s``, ``error``, tokens, ``cost_usd``, ``cached``), and a finished run keeps
its chain's per-adapter counts (``adapters``: ``served``, ``failed``), since a request that
failed over to the next adapter has no call record of its own. :func:`collect` reads the calls
of the last ``window`` runs (optionally only those started after ``since``), adding one failed
attempt per failed-over request, and
:func:`adapter_stats` sums them per (adapter, model): calls, success rate, latency p50/p95 of
the successful calls, tokens, cost and cost per 1k tokens. Calls served from the response cache
are left out: they say nothing about the adapter.

**The ``measured`` order** (``[adapter] order = "measured"``, :func:`measured_order`): the
adapters of a fallback chain, sorted by

1. success rate, in steps of :data:`RATE_STEP` (5 points), highest first — a real difference in
   reliability wins over any latency;
2. then p50 latency, lowest first;
3. then the configured order (a stable sort).

An adapter with fewer than ``min_calls`` recorded calls is *unmeasured*: it counts as fully
reliable with an unknown (infinite) latency, so it goes after the measured adapters of the top
step and before any measured adapter that fails more, and it is tried — and so measured — once
the better ones fail. With no record at all the order is the configured one.

Pure functions over plain dicts: no ponder type, no import, so any layer may use them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: success rates are compared in steps of this size
RATE_STEP = 0.05
#: calls an adapter needs before its numbers count
MIN_CALLS = 5


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation, like numpy's default: the one
    definition of p50/p95 that ``ponder runs stats`` and ``ponder eval`` both report."""
    data = sorted(float(v) for v in values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def collect(storage: Any, *, window: int = 200, since: float | None = None) -> list[dict]:
    """The recorded calls of the newest ``window`` runs (started after ``since``, epoch
    seconds, when given), each with its run's ``started_at``."""
    import datetime

    calls: list[dict] = []
    for run in storage.list_runs(window):
        started = run.get("started_at")
        if since is not None and started is not None:
            try:
                moment = (float(started) if isinstance(started, int | float)
                          else datetime.datetime.fromisoformat(str(started)).timestamp())
            except ValueError:
                moment = None
            if moment is not None and moment < since:
                continue
        full = storage.get_run(run["id"]) or {}
        chain = full.get("adapters") if isinstance(full.get("adapters"), dict) else None
        for call in full.get("calls") or ():
            if chain is not None and call.get("error"):
                continue  # counted below, as the failed attempts of the adapters tried
            calls.append({**call, "run_started_at": started})
        for name, counts in (chain or {}).items():
            # a request that failed over to the next adapter is no call record of its own
            failed = int((counts or {}).get("failed") or 0)
            calls.extend({"adapter": name, "model": _model_of(full, name), "error": "failed",
                          "failed_over": True, "run_started_at": started}
                         for _ in range(failed))
    return calls


def _model_of(run: Mapping[str, Any], adapter: str) -> str:
    models = {c.get("model") for c in run.get("calls") or () if c.get("adapter") == adapter}
    if len(models) == 1:
        return str(models.pop())
    return str(run.get("model") or "?") if adapter == run.get("adapter") else "?"


def adapter_stats(calls: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (adapter, model): calls, errors, success rate, latency p50/p95, tokens, cost."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for call in calls:
        if call.get("cached"):
            continue
        key = (str(call.get("adapter") or "?"), str(call.get("model") or "?"))
        groups.setdefault(key, []).append(call)
    out = []
    for (adapter, model), group in sorted(groups.items()):
        ok = [c for c in group if not c.get("error")]
        latencies = [float(c.get("latency_s") or 0.0) for c in ok]
        tokens = sum(int(c.get("input_tokens") or 0) + int(c.get("output_tokens") or 0)
                     for c in group)
        cost = sum(float(c.get("cost_usd") or 0.0) for c in group)
        out.append({
            "adapter": adapter, "model": model, "calls": len(group),
            "errors": len(group) - len(ok), "success_rate": len(ok) / len(group),
            "latency_p50": percentile(latencies, 50), "latency_p95": percentile(latencies, 95),
            "tokens": tokens, "cost": cost,
            "cost_per_1k_tokens": cost / tokens * 1000 if tokens else None,
        })
    return out


def by_adapter(stats: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Stats summed over models, per adapter (what a fallback chain orders)."""
    merged: dict[str, dict[str, Any]] = {}
    for row in stats:
        entry = merged.setdefault(row["adapter"], {"calls": 0, "ok": 0, "p50s": []})
        entry["calls"] += row["calls"]
        entry["ok"] += row["calls"] - row["errors"]
        if row["latency_p50"] is not None:
            entry["p50s"].append((row["latency_p50"], row["calls"] - row["errors"]))
    out = {}
    for name, entry in merged.items():
        weight = sum(w for _, w in entry["p50s"])
        p50 = sum(v * w for v, w in entry["p50s"]) / weight if weight else None
        out[name] = {"calls": entry["calls"], "success_rate": entry["ok"] / entry["calls"],
                     "latency_p50": p50}
    return out


def measured_order(names: Sequence[str], stats: Iterable[Mapping[str, Any]], *,
                   min_calls: int = MIN_CALLS) -> list[str]:
    """``names`` ordered by the rule in the module docstring."""
    measured = by_adapter(stats)

    def key(item: tuple[int, str]) -> tuple[float, float, int]:
        index, name = item
        row = measured.get(name)
        if row is None or row["calls"] < min_calls:
            return (-1.0, math.inf, index)
        step = math.floor(row["success_rate"] / RATE_STEP + 1e-9) * RATE_STEP
        latency = row["latency_p50"] if row["latency_p50"] is not None else math.inf
        return (-step, latency, index)

    return [name for _, name in sorted(enumerate(names), key=key)]


def order_from_store(names: Sequence[str], storage: Any, *, window: int = 200) -> list[str]:
    """:func:`measured_order` over the calls recorded in ``storage`` (closed afterwards); the
    configured order when there is no store or it cannot be read (ordering must never cost a
    run)."""
    import logging

    if storage is None:
        return list(names)
    try:
        if len(names) < 2:
            return list(names)
        order = measured_order(names, adapter_stats(collect(storage, window=window)))
    except Exception as exc:
        logging.getLogger("ponder.run").warning("adapter order: the run store could not be "
                                                "read (%s); using the configured order", exc)
        return list(names)
    finally:
        close = getattr(storage, "close", None)
        if callable(close):
            close()
    if order != list(names):
        logging.getLogger("ponder.run").info("adapter order (measured): %s", " -> ".join(order))
    return order
