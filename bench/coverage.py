"""Coverage and cost of the strategies: needles planted in a generated codebase, answered by an
*oracle* fake provider through the real ``openai_compatible`` adapter, for every strategy.

    .venv/bin/python bench/run.py --only coverage [--quick | --full]

**Corpus.** :mod:`corpus` generates a seeded codebase of the given size and plants the six
families of ``BENCHMARKS.md`` §5 at depths 0/25/50/75/100 %: a literal constant; a function
described in words; six confusable constants (five asked, one per depth); two hops across
files (A at depth d calls B, 50 % away, which holds the value); an aggregation (five functions
carrying ``@audit_trail(...)``, one per depth: "how many?"); and a pair of modules importing each
other (25 % and 75 %; every generated import points backwards, so it is the only such pair).

**The oracle** is the fake provider (own process, zero latency). It never guesses: a reply
carries evidence lines only when they are in *that* prompt, so a strategy scores only if it
routes the evidence through every step to the final answer.

- literal, function, confusable, aggregation: ``mode = "oracle"``; the needles are the
  evidence lines (the constant's line, the function's name, each decorator line), and a reply
  is every needle found in the prompt, joined, or ``NOT FOUND``;
- two hops (``mode = "rules"``): A's line alone gives A's line (it names the callee); B's line
  alone gives ``NOT FOUND`` (nothing in it says it matters to a question about A); A and B in
  one prompt give both lines. Correct = B's line reaches the answer;
- pairs (``rules``): one import line inside its file's piece (up to the next ``=== path``
  header) gives ``X imports Y``; both directions in one prompt (as lines or as such findings)
  give both findings. Correct = both findings reach the answer;
- aggregation is correct only when all five decorator lines reach the answer (a model that saw
  them all in one prompt could count them); ``found`` reports how many did;
- confusables: correct = the asked constant's line is in the answer and none of the other five.

``rlm``'s root model is the provider's scripted RLM root (``--rlm-root``; see
``ponder.testing.fake_provider``): a fixed search policy (identifiers in the question, else its
rarer words; 3 lines of context; one hop to the definitions of called functions), one
``llm_query`` sub-call answered by the oracle, then ``SUBMIT``. It measures that policy plus
ponder's plumbing, not a model.

**Per run**: accuracy; LM calls by role (rlm: root = calls not made through Services.predict);
input/output tokens (the provider's count, ``ceil(chars/4)``); the largest single prompt (must
fit the window with the reply); **waves**: the critical path in LM calls, derived from the
Tracker's spans: an LLM span is 1, a parent's children add up in sequence except the CHUNK
spans of one ``Services.map`` batch (run on its pool threads), which count as their longest
member; rlm adds its root turns (sequential). ``rounds@C`` is the same with a batch of g
items counted as ``ceil(g/C)`` x its longest member: under a latency L per call, wall ≈
rounds·L. Wall time is measured at zero provider latency (the kernel + dspy + litellm + HTTP
cost on this machine).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ProviderProcess, peak_rss_mb, quiet_logs, table

STRATEGIES = ("direct", "map_reduce", "iterative", "hierarchical", "auto", "rlm")
MB = 1_000_000
TARGET_STRATEGIES = ("map_reduce", "hierarchical")
TARGET_FAMILIES = ("literal", "confusable", "two_hop")


# --- critical path -----------------------------------------------------------------------------
def critical_path(spans: list[Any], concurrency: int) -> tuple[int, int]:
    """(waves, rounds at ``concurrency``) of a run's spans; see the module docstring."""
    from ponder.support.observability import SpanType

    children: dict[str | None, list[Any]] = defaultdict(list)
    ids = {span.id for span in spans}
    for span in spans:
        children[span.parent_id if span.parent_id in ids else None].append(span)

    def cost(span: Any) -> tuple[int, int]:
        waves = rounds = 1 if span.type == SpanType.LLM else 0
        batches: list[dict[Any, Any]] = []
        open_batch: dict[str, dict[Any, Any]] = {}
        for child in sorted(children.get(span.id, []), key=lambda s: s.start):
            if child.type == SpanType.CHUNK and child.thread.startswith("ponder"):
                # one Services.map call numbers its items 0..n-1 (pool threads may start them
                # slightly out of order): a repeated index under the same label is a new batch
                label = child.name.rsplit("[", 1)[0]
                index = child.attributes.get("index")
                current = open_batch.get(label)
                if current is None or index in current:
                    current = open_batch[label] = {}
                    batches.append(current)
                current[index] = child
            else:
                w, r = cost(child)
                waves, rounds = waves + w, rounds + r
        for batch in batches:
            costs = [cost(child) for child in batch.values()]
            waves += max(w for w, _ in costs)
            rounds += math.ceil(len(batch) / concurrency) * max(r for _, r in costs)
        return waves, rounds

    total_w = total_r = 0
    for root in children[None]:
        w, r = cost(root)
        total_w, total_r = total_w + w, total_r + r
    return total_w, total_r


# --- one run -----------------------------------------------------------------------------------
def _system(plugins: Any, base_url: str, strategy: str, window: int, concurrency: int) -> Any:
    from ponder.engine.system import System
    from ponder.kernel.config import CacheConfig, Component, Config, LimitsConfig

    config = Config(
        limits=LimitsConfig(concurrency=concurrency),
        cache=CacheConfig(enabled=False),
        adapter=Component("openai_compatible", {
            "base_url": base_url, "model": "fake-model", "context_window": window,
            "max_output_tokens": 1024, "timeout_s": 120}),
        strategy=Component(strategy, {}),
        storage=Component(None),
    )
    return System(config, plugins=plugins, progress="silent")


def run_one(plugins: Any, provider: ProviderProcess, question: Any, context: Any, strategy: str,
            *, window: int, concurrency: int) -> dict[str, Any]:
    from ponder.errors import PonderError
    from ponder.support.observability import SpanType, Tracker

    provider.reset()
    system = _system(plugins, provider.base_url, strategy, window, concurrency)
    tracker = Tracker()
    row: dict[str, Any] = {"strategy": strategy, "family": question.family, "key": question.key,
                           "depths": question.depths}
    started = time.perf_counter()
    try:
        answer = system.run(question.question, context, tracker=tracker)
    except Exception as exc:  # recorded, never fatal: one broken run must not hide the rest
        refused = isinstance(exc, PonderError) and "does not fit" in str(exc)
        row.update(status="refused" if refused else "error",
                   error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                   wall_s=time.perf_counter() - started, correct=False)
        return row
    row["wall_s"] = time.perf_counter() - started
    stats = provider.stats()
    llm = [s for s in tracker.spans if s.type == SpanType.LLM]
    roles = Counter(str(s.attributes.get("role")) for s in llm)
    root_calls = answer.usage.calls - len(llm)
    if root_calls:
        roles["root"] = root_calls
    waves, rounds = critical_path(tracker.spans, concurrency)
    largest = max([int(s.attributes.get("input_tokens") or 0) for s in llm]
                  + [int(answer.chunks.get("largest_prompt_tokens") or 0)])
    grade = question.grade(answer.answer)
    row.update(
        status="partial" if answer.partial else "ok",
        strategy_used=answer.strategy, **grade,
        calls=answer.usage.calls, calls_by_role=dict(roles),
        input_tokens=answer.usage.input_tokens, output_tokens=answer.usage.output_tokens,
        provider_requests=stats["requests"], provider_prompt_tokens=stats["prompt_tokens"],
        largest_prompt_tokens=largest, fits_window=largest + 1024 <= window,
        waves=waves + root_calls, rounds=rounds + root_calls,
        chunks=answer.chunks.get("total"), failures=len(answer.failures),
        answer_excerpt=answer.answer[:200],
    )
    return row


# --- the benchmark -----------------------------------------------------------------------------
def measure(*, quick: bool = False, full: bool = False, window: int = 131_072,
            concurrency: int = 16, strategies: tuple[str, ...] = STRATEGIES) -> dict[str, Any]:
    import corpus

    from ponder.context.sources import load_sources
    from ponder.kernel.loader import load_plugins

    quiet_logs()
    sizes = [100_000] if quick else [100_000, 1 * MB, 10 * MB]
    if full:
        sizes.append(50 * MB)
    plugins = load_plugins()
    rows: list[dict[str, Any]] = []
    corpora = []
    with tempfile.TemporaryDirectory(prefix="ponder-bench-coverage-") as tmp:
        for size in sizes:
            generated = corpus.generate(size, seed=11)
            questions = corpus.plant_coverage(generated)
            corpus.locate_planted(generated, questions)
            if quick:  # one depth per single-needle family, plus the two spread families
                questions = [q for q in questions if q.depths[0] == 0.5 or
                             q.family in ("aggregation", "pairs")]
            root = generated.write(Path(tmp) / f"corpus_{size}")
            context = load_sources([str(root)])
            corpora.append({"size_bytes": size, "chars": context.total_chars,
                            "files": len(context.documents), "tokens_est": context.estimated_tokens,
                            "planted": {f"{q.family}:{q.key}": q.planted for q in questions}})
            started = time.perf_counter()
            for question in questions:
                options = {**question.provider, "rlm_root": True}
                with ProviderProcess(**options, max_lifetime=1800) as provider:
                    for strategy in strategies:
                        row = run_one(plugins, provider, question, context, strategy,
                                      window=window, concurrency=concurrency)
                        row["size_bytes"] = size
                        rows.append(row)
            corpora[-1]["run_s"] = time.perf_counter() - started
            del generated, context
    return {"parameters": {"sizes_bytes": sizes, "window": window, "max_output_tokens": 1024,
                           "concurrency": concurrency, "strategies": list(strategies),
                           "provider_latency_s": 0.0, "seed": 11, "quick": quick},
            "corpora": corpora, "results": rows, "targets": _targets(rows),
            "client_peak_rss_mb": peak_rss_mb()}


def _targets(rows: list[dict[str, Any]]) -> dict[str, bool]:
    out = {}
    for strategy in TARGET_STRATEGIES:
        for family in TARGET_FAMILIES:
            these = [r for r in rows if r["strategy"] == strategy and r["family"] == family]
            if these:
                right = sum(r["correct"] for r in these)
                out[f"{strategy} {family}: 100% at every size ({right}/{len(these)})"] = \
                    right == len(these)
    return out


def _size(size: int) -> str:
    return f"{size / MB:g} MB" if size >= MB else f"{size / 1000:g} KB"


def render(doc: dict[str, Any]) -> str:
    import corpus

    rows = doc["results"]
    out = []
    for size in doc["parameters"]["sizes_bytes"]:
        here = [r for r in rows if r["size_bytes"] == size]
        acc_rows, cost_rows = [], []
        for strategy in doc["parameters"]["strategies"]:
            mine = [r for r in here if r["strategy"] == strategy]
            cells = []
            for family in corpus.FAMILIES:
                fam = [r for r in mine if r["family"] == family]
                if not fam:
                    cells.append("-")
                    continue
                refused = sum(r["status"] == "refused" for r in fam)
                errors = sum(r["status"] == "error" for r in fam)
                cell = f"{sum(r['correct'] for r in fam)}/{len(fam)}"
                cell += f" ({refused} refused)" if refused else ""
                cell += f" ({errors} errors)" if errors else ""
                cells.append(cell)
            acc_rows.append([strategy, *cells,
                             f"{sum(r['correct'] for r in mine)}/{len(mine)}"])
            ran = [r for r in mine if r["status"] not in ("refused", "error")]
            if not ran:
                label = "refused" if all(r["status"] == "refused" for r in mine) else "errors"
                cost_rows.append([strategy, label if mine else "-", "", "", "", "", "", "", ""])
                continue
            def mean(key: str, ran: list[dict[str, Any]] = ran) -> float:
                return sum(r[key] for r in ran) / len(ran)

            walls = sorted(r["wall_s"] for r in ran)
            roles = Counter()
            for r in ran:
                roles.update(r["calls_by_role"])
            role_text = " ".join(f"{k}:{v / len(ran):.0f}" for k, v in sorted(roles.items()))
            cost_rows.append([strategy, f"{mean('calls'):.1f}", role_text,
                              f"{mean('input_tokens'):,.0f}", f"{mean('output_tokens'):,.0f}",
                              f"{max(r['largest_prompt_tokens'] for r in ran):,}"
                              + ("" if all(r["fits_window"] for r in ran) else " OVER"),
                              f"{mean('waves'):.1f}", f"{mean('rounds'):.1f}",
                              f"{walls[len(walls) // 2]:.2f}"])
        out.append(table(["strategy", *corpus.FAMILIES, "all"], acc_rows,
                         title=f"coverage {_size(size)}: correct/asked (oracle fake provider)"))
        out.append(table(["strategy", "calls", "by role (mean)", "in tok", "out tok",
                          "largest prompt", "waves", "rounds@C", "wall s (median)"], cost_rows,
                         title=f"cost {_size(size)} (means over the questions run; window "
                               f"{doc['parameters']['window']:,}, C="
                               f"{doc['parameters']['concurrency']})"))
    out.append("\n".join(f"target {k}: {'met' if v else 'MISSED'}"
                         for k, v in doc["targets"].items()))
    return "\n\n".join(out)
