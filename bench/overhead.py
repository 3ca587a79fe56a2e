"""Kernel overhead per LM call: ponder's Services.predict (and map_reduce) vs a bare dspy loop.

    .venv/bin/python bench/run.py --only overhead [--quick | --full]

The same prompts (``question`` + one rendered chunk each, from the synthetic codebase) go through
the same LM, sequentially, five ways:

- ``bare dspy.Predict``: ``dspy.Predict(extract)(question=..., chunk=...)`` in a loop under
  ``dspy.context(lm=lm)``: the floor;
- ``bare + track_usage``: the same, each call in its own ``dspy.context(track_usage=True,
  usage_tracker=None)``, as Services.predict does (dspy's usage tracking, attributed separately);
- ``Services.predict``: ponder's metered call (limits, retry wrapper, span, usage, call record);
- ``map_reduce``: the ``map_reduce`` strategy over the same N chunks at concurrency 1 (chunking,
  rendering, the thread pool, progress and result bookkeeping included), per map call; the
  scripted model finds nothing, so there is no reduce call;

with two LMs: the in-process ``scripted`` LM (no I/O: the pure Python cost) and the real
``openai_compatible`` adapter (litellm) against the loopback fake provider with zero latency,
running in its own process. Each repeat runs every variant once, in the same order, after a
discarded warm-up; figures are µs per call, median (min–max) over repeats, and the difference is
the median of the per-repeat differences (paired, so slow moments hit both sides).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ProviderProcess, fmt_range, openai_adapter, quiet_logs, summary, table

QUESTION = "What is the value of MAGIC_PORT?"
TARGET_US = 1000.0  # <= 1 ms per call above bare dspy


def make_chunks(n: int, chunk_tokens: int = 600) -> tuple[Any, list[Any]]:
    """A context that chunks into exactly ``n`` chunks of about ``chunk_tokens`` tokens."""
    import corpus

    from ponder.context.chunking import chunk_context
    from ponder.context.sources import Context, Document

    generated = corpus.generate(max(n * 2600, 50_000), seed=1)
    text = "\n".join(line for lines in generated.files.values() for line in lines)
    lines = text.split("\n")
    docs, at = [], 0
    for i in range(n):  # one document per chunk: ~2 KB of lines each
        take, size = [], 0
        while size < 1800 and at < len(lines):
            take.append(lines[at])
            size += len(lines[at]) + 1
            at += 1
        docs.append(Document(path=f"src/part_{i:04d}.py", text="\n".join(take) + "\n"))
    context = Context(documents=docs, sources=["src"])
    chunks = chunk_context(context, chunk_tokens=chunk_tokens)
    assert len(chunks) == n, (len(chunks), n)
    return context, chunks


def _services(lm: Any, model_info: Any, concurrency: int = 1) -> Any:
    from ponder.engine.services import Services
    from ponder.plugins import map_reduce, predict
    from ponder.plugins.predict import PredictPredictor
    from ponder.testing import plugin_set

    return Services(lm=lm, model_info=model_info, predictor=PredictPredictor(),
                    concurrency=concurrency, progress_mode="silent",
                    plugin_set=plugin_set(map_reduce, predict))


def _variants(lm: Any, model_info: Any, context: Any, chunks: list[Any]) -> dict[str, Any]:
    import dspy

    from ponder.plugins._signatures import extract_signature
    from ponder.plugins.map_reduce import MapReduceSettings, MapReduceStrategy

    signature = extract_signature()
    inputs = [{"question": QUESTION, "chunk": chunk.render()} for chunk in chunks]
    bare_module = dspy.Predict(signature)

    def bare() -> int:
        with dspy.context(lm=lm):
            for item in inputs:
                bare_module(**item)
        return len(inputs)

    def bare_usage() -> int:
        for item in inputs:
            with dspy.context(lm=lm, track_usage=True, usage_tracker=None):
                bare_module(**item)
        return len(inputs)

    def services_predict() -> int:
        services = _services(lm, model_info)
        for item in inputs:
            services.predict(signature, role="map", **item)
        assert services.usage.calls == len(inputs)
        return len(inputs)

    def map_reduce() -> int:
        services = _services(lm, model_info)
        tokens = max(c.tokens for c in chunks)
        strategy = MapReduceStrategy(MapReduceSettings(chunk_tokens=tokens))
        draft = strategy.run(QUESTION, context, services)
        assert draft.chunks_total == len(chunks) and not draft.failures, draft
        return services.usage.calls

    return {"bare dspy.Predict": bare, "bare + track_usage": bare_usage,
            "Services.predict": services_predict, "map_reduce (C=1)": map_reduce}


def _measure(label: str, lm: Any, model_info: Any, n: int, repeats: int,
             reset: Any = None) -> dict[str, Any]:
    context, chunks = make_chunks(n)
    variants = _variants(lm, model_info, context, chunks)
    for fn in variants.values():  # warm-up: imports, signature caches, connections
        fn()
        if reset:
            reset()
    per_call: dict[str, list[float]] = {name: [] for name in variants}
    calls: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in variants.items():
            started = time.perf_counter()
            made = fn()
            per_call[name].append((time.perf_counter() - started) / made * 1e6)
            calls[name] = made
            if reset:
                reset()
    base = per_call["bare dspy.Predict"]
    rows = []
    for name, values in per_call.items():
        diffs = [v - b for v, b in zip(values, base, strict=True)]
        rows.append({"lm": label, "variant": name, "calls_per_repeat": calls[name],
                     "us_per_call": summary(values),
                     "us_above_bare": summary(diffs) if name != "bare dspy.Predict" else None,
                     # robust to load spikes: the fastest repeat of each, compared
                     "us_above_bare_of_minimums": min(values) - min(base),
                     "ratio_to_bare": statistics.median(
                         [v / b for v, b in zip(values, base, strict=True)])})
    return {"lm": label, "n": n, "repeats": repeats, "rows": rows}


def measure(*, quick: bool = False, full: bool = False) -> dict[str, Any]:
    quiet_logs()
    from ponder.plugins.scripted import ScriptedAdapter, ScriptedSettings

    n_scripted, n_http, repeats = (20, 10, 2) if quick else (200, 100, 5)
    if full:
        n_scripted, n_http, repeats = 500, 200, 7
    scripted = ScriptedAdapter(ScriptedSettings(
        default={"relevant_info": "NOT FOUND", "confidence": "none"}, context_window=8192))
    lm = scripted.build_lm()
    sections = [_measure("scripted (in process)", lm, scripted.model_info(), n_scripted, repeats,
                         reset=lm.reset)]
    with ProviderProcess(mode="rules", default_reply="NOT FOUND", max_lifetime=900) as provider:
        adapter = openai_adapter(provider.base_url, window=8192)
        sections.append(_measure("openai_compatible -> loopback fake (0 latency)",
                                 adapter.build_lm(), adapter.model_info(), n_http, repeats))
        stats = provider.stats()
    ponder_rows = [r for s in sections for r in s["rows"] if r["variant"] == "Services.predict"]
    return {"parameters": {"question": QUESTION, "chunk_tokens": 600,
                           "n_scripted": n_scripted, "n_http": n_http, "repeats": repeats,
                           "sequential": True, "target_us_above_bare": TARGET_US},
            "results": sections,
            "targets": {f"Services.predict <= {TARGET_US:.0f} us above bare ({r['lm']})":
                        r["us_above_bare"]["median"] <= TARGET_US for r in ponder_rows},
            "provider_stats": stats}


def render(doc: dict[str, Any]) -> str:
    rows = []
    for section in doc["results"]:
        for r in section["rows"]:
            above = r["us_above_bare"]
            rows.append([r["lm"], r["variant"], r["calls_per_repeat"],
                         fmt_range(r["us_per_call"], digits=0),
                         fmt_range(above, digits=0) if above else "-",
                         f"{r['us_above_bare_of_minimums']:.0f}" if above else "-",
                         f"{r['ratio_to_bare']:.2f}x"])
    p = doc["parameters"]
    out = table(["LM", "variant", "calls", "us/call", "us above bare (paired)",
                 "min - min", "ratio"], rows,
                title=f"overhead: sequential LM calls, median (min-max) of {p['repeats']} repeats")
    out += "\n" + "\n".join(f"target {k}: {'met' if v else 'MISSED'}"
                            for k, v in doc["targets"].items())
    return out
