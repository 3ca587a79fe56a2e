"""The plan of a run before it runs: strategy, chunks, LM calls, prompt tokens, cost and time.

``ponder ask --dry-run`` prints it and stops (no LM is built, no call is made); a plain
``ponder ask`` prints it on stderr first when the run looks long or expensive
(:data:`LONG_RUN_S`, :data:`EXPENSIVE_USD`), so a 30-minute run on a slow local model is never
a surprise.

What is counted, per strategy (``n`` chunks, fan-in ``k``, ``R(m)`` the reduce tree of
:mod:`ponder.plugins._common`: ``sum(ceil(m / k**i))`` over its levels)::

    direct              1
    map_reduce          n + R(n)           (at most: every chunk reports a finding)
    hierarchical        n + R(n)           (about: one reduce tree per directory, then one)
    iterative           n + 1              (one after another: n + 1 latencies)
    retrieve_then_read  g (+ R(g))         g = read calls the top_k chunks need (usually 1)
    auto                its delegate's; retrieval first: 1 (+ 1 when widened) + the full
                        map's when nothing is found (both bounds are shown)
    follow_up           its base's + 1

Prompt tokens are the rendered chunks' tokens plus each call's instructions (measured per
signature); cost uses the adapter's prices (input tokens, and every call's
``max_output_tokens`` as the output upper bound). **Time** uses the median latency of this
model's calls recorded in the run store (the last runs that used it), divided over the
concurrency for the parallel steps; without recorded calls it says so instead of guessing.

The formulas live in the plugin layer (``ponder.plugins.auto``'s ``plan_for``, which knows
every first-party strategy; a strategy with its own ``plan`` method states its own), reached
through the plugin registry: this module imports no plugin and never builds an LM.
"""

from __future__ import annotations

import statistics
from typing import Any

import attrs

#: A run planned to take longer than this (seconds) announces its plan before it starts.
LONG_RUN_S = 120.0
#: ... or to cost more than this (USD).
EXPENSIVE_USD = 0.50
#: ... or, on the embedded model with no recorded latency, to make more calls than this.
LOCAL_CALLS = 10
#: Runs of the run store read for this model's recorded latency (the newest small ones) ...
RECENT_RUNS = 3
#: ... of at most this many calls (each call's prompt is in the record)
SMALL_RUN_CALLS = 64


@attrs.define
class Plan:
    """What a run would do (see the module docstring for how each figure is found)."""

    question: str
    strategy: str
    reason: str
    model: str
    adapter: str
    chunks: int
    calls_min: int
    calls_max: int
    formula: str
    prompt_tokens: int
    cost_usd_max: float
    concurrency: int
    waves: int
    latency_s: float | None = None
    latency_source: str = ""
    notes: list[str] = attrs.Factory(list)

    @property
    def seconds(self) -> float | None:
        """Estimated wall time: ``waves x latency`` (None without a recorded latency)."""
        return None if self.latency_s is None else self.waves * self.latency_s

    @property
    def long(self) -> bool:
        """Whether to announce the plan before running: long, expensive, or many calls on the
        embedded model whose speed is not known yet (seconds to minutes a call)."""
        unknown_local = (self.seconds is None and self.adapter == "local"
                         and self.calls_max > LOCAL_CALLS)
        return ((self.seconds or 0.0) > LONG_RUN_S or self.cost_usd_max > EXPENSIVE_USD
                or unknown_local)

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["estimated_seconds"] = self.seconds
        return data

    def render(self) -> str:
        calls = (f"{self.calls_min}" if self.calls_min == self.calls_max
                 else f"{self.calls_min}–{self.calls_max}")
        if self.seconds is None:
            time_line = f"time: unknown ({self.latency_source})"
        else:
            rounds = "1 round" if self.waves == 1 else f"{self.waves} sequential rounds"
            time_line = (f"time: ≈ {_duration(self.seconds)} ({rounds} x "
                         f"{self.latency_s:.2f} s per call, {self.latency_source})")
        lines = [
            f"plan: {self.strategy} on {self.model} ({self.adapter})",
            f"  why: {self.reason}",
            f"  chunks: {self.chunks:,}; LM calls: {calls} ({self.formula}); "
            f"concurrency {self.concurrency}",
            f"  prompt tokens: ≈ {self.prompt_tokens:,}; cost: ≤ ${self.cost_usd_max:.4f}",
            f"  {time_line}",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def recorded_latency(system: Any, model: str) -> tuple[float | None, str]:
    """Median seconds per call of ``model`` in the run store's recent runs, and where from.

    Cheap on purpose (it runs before every ask): the store records each call's prompt, so
    only small runs (at most :data:`SMALL_RUN_CALLS` calls, the newest :data:`RECENT_RUNS`) are
    read, and the result is kept as a ``latency`` record keyed by the model, reused until the
    model's newest run changes.
    """
    try:
        storage = system.open_storage()
    except Exception:  # an unreadable store only means no calibration
        storage = None
    if storage is None:
        return None, "no run store to calibrate from"
    try:
        runs = [r for r in storage.list_runs(limit=50) if r.get("model") == model]
        if not runs:
            return None, f"no recorded calls of {model} yet; one run calibrates it"
        newest = runs[0].get("id")
        kept = _get_record(storage, model)
        if kept and kept.get("newest") == newest and kept.get("median"):
            return float(kept["median"]), f"median of {kept['n']} recorded calls of {model}"
        latencies: list[float] = []
        small = [r for r in runs if 0 < int(r.get("call_count") or 0) <= SMALL_RUN_CALLS]
        for run in small[:RECENT_RUNS]:
            full = storage.get_run(run["id"]) or {}
            latencies += [float(c["latency_s"]) for c in full.get("calls", [])
                          if c.get("latency_s") and not c.get("cached") and not c.get("error")]
        if not latencies:
            return None, f"no recorded calls of {model} yet; one run calibrates it"
        median = statistics.median(latencies)
        put = getattr(storage, "put_record", None)
        if callable(put):
            put("latency", model, {"newest": newest, "median": median, "n": len(latencies)})
        return median, f"median of {len(latencies)} recorded calls of {model}"
    finally:
        close = getattr(storage, "close", None)
        if callable(close):
            close()


def _get_record(storage: Any, key: str) -> dict[str, Any] | None:
    get = getattr(storage, "get_record", None)
    if not callable(get):
        return None
    try:
        return get("latency", key)
    except Exception:  # a store without records, or a damaged one: recompute
        return None


def _services(system: Any, model_info: Any, adapter: Any, adapter_name: str,
              chunk_tokens: int | None, context: Any) -> Any:
    from ponder.engine.services import Services

    predictor = system.build("predictor", system.config.predictor.name or "predict")
    # a retriever is not built to plan (bm25 imports numpy and scipy); a configured one still
    # counts as available to auto's rule, which only asks whether one is there
    retriever = _Configured(system.config.retriever.name) if system.config.retriever.name \
        else None
    return Services(lm=None, model_info=model_info, predictor=predictor, retriever=retriever,
                    concurrency=system.config.limits.concurrency, progress_mode="silent",
                    chunk_tokens=chunk_tokens, plugin_set=system.plugins,
                    dspy_adapter=getattr(adapter, "dspy_adapter", lambda: None)(),
                    context=context,
                    names={"adapter": (adapter_name, getattr(adapter, "settings", None)),
                           "retriever": (system.config.retriever.name, None)})


@attrs.frozen
class _Configured:
    """Stands for the configured retriever while planning (it is never asked to search)."""

    name: str


def make_plan(system: Any, question: str, context: Any, *,
              chunk_tokens: int | None = None) -> Plan:
    """The plan of ``system.run(question, context)``; builds no LM and calls no model.

    The figures come from the strategy's own ``plan(question, context, services)`` when it has
    one; otherwise from the ``auto`` strategy's ``plan_for`` (found through the plugin registry:
    it knows the formula of every first-party strategy), which reads the strategy's
    ``plan_chunks`` when it has one.
    """
    from ponder.engine.system import build_adapter, choose_adapter

    adapter_name, _why = choose_adapter(system.config)
    adapter, _settings = build_adapter(system.config, system.plugins, adapter_name)
    info = adapter.model_info()
    services = _services(system, info, adapter, adapter_name, chunk_tokens, context)
    name = system.config.strategy.name or "auto"
    strategy = system.build("strategy", name)
    if callable(getattr(strategy, "plan", None)):
        figures = strategy.plan(question, context, services)
    else:
        auto = system.plugins.get("strategy", "auto")
        planner = auto.factory(auto.settings()) if auto.settings is not None else auto.factory()
        figures = planner.plan_for(name, strategy, question, context, services)
    concurrency = max(1, system.config.limits.concurrency)
    notes = list(figures.get("notes", []))
    waves = int(figures["waves"])
    if adapter_name == "local":
        notes.append("the embedded demo model runs one call at a time on the CPU")
        concurrency = 1
        waves = max(waves, int(figures.get("sequential_calls", figures["calls_max"])))
    cost = (figures["prompt_tokens"] * info.input_cost_per_token
            + figures["calls_max"] * info.max_output_tokens * info.output_cost_per_token)
    latency, source = recorded_latency(system, info.model)
    reason = figures.get("reason") or (
        f"strategy {name} as configured ({system.config.origin('strategy.name')})")
    return Plan(question=question, strategy=figures["strategy"], reason=reason,
                model=info.model, adapter=adapter_name, chunks=int(figures["chunks"]),
                calls_min=int(figures["calls_min"]), calls_max=int(figures["calls_max"]),
                formula=figures["formula"], prompt_tokens=int(figures["prompt_tokens"]),
                cost_usd_max=cost, concurrency=concurrency, waves=waves, latency_s=latency,
                latency_source=source, notes=notes)


def probe_context(context: Any, chars: int) -> Any:
    """The first ``chars`` characters of ``context`` (whole lines, documents in order): what
    one call of the plan reads, for :func:`probe`."""
    from ponder.context.documents import Context, Document

    documents, left = [], max(1, chars)
    for document in context.documents:
        if left <= 0:
            break
        text = document.text
        if len(text) > left:
            cut = text.rfind("\n", 0, left)
            text = text[: cut + 1 if cut > 0 else left]
        documents.append(Document(document.path, text, document.start_line, document.language))
        left -= len(text)
    return Context(documents=documents, sources=list(context.sources))


def probe(system: Any, question: str, context: Any, plan: Plan) -> Plan:
    """Time the plan with one real call when no latency is recorded (``--dry-run --probe``).

    The call is the question over the first call's worth of the sources (the plan's prompt
    tokens over its calls, so a local model's prefill is timed at the right size), asked with
    the ``direct`` strategy and no response cache. It is a real run: counted, priced, recorded in
    the run store, so later plans read its latency as a recorded call.
    """
    from ponder.context.tokens import CHARS_PER_TOKEN
    from ponder.engine.system import System
    from ponder.kernel.config import Component

    per_call = plan.prompt_tokens / max(1, plan.calls_max)
    config = attrs.evolve(system.config, strategy=Component("direct"),
                          cache=attrs.evolve(system.config.cache, enabled=False))
    prober = System(config, plugins=system.plugins, progress="silent")
    answer = prober.run(question, probe_context(context, int(per_call * CHARS_PER_TOKEN)))
    if answer.usage.calls == 0:
        return attrs.evolve(plan, latency_source=f"the one-call probe failed: {answer.note}")
    # the call's own latency as recorded (the run's elapsed time includes building the LM);
    # without a run store, the run's time
    recorded, _ = recorded_latency(prober, plan.model)
    seconds = recorded if recorded is not None else answer.elapsed_s
    source = (f"one-call probe just now: {answer.usage.input_tokens:,} prompt tokens in "
              f"{seconds:.2f} s, ${answer.usage.cost_usd:.4f}, run {answer.run_id}")
    return attrs.evolve(plan, latency_s=seconds, latency_source=source)


def preflight(system: Any, question: str, sources: list[str], params: dict[str, Any]) -> Any:
    """For ``ponder ask``: load the sources and make the plan; print it and return None for
    ``--dry-run``; print it on stderr when the run looks long or expensive; return the loaded
    Context for the run otherwise."""
    import json
    import sys

    from ponder.context.sources import load_sources
    from ponder.support.secrets import clean_secrets, redact

    context = load_sources(sources, include=params.get("include") or (),
                           exclude=params.get("exclude") or ())
    if not params.get("dry_run"):
        try:
            plan = make_plan(system, question, context, chunk_tokens=params.get("chunk_tokens"))
        except Exception:  # planning is advice: the run itself reports real errors
            return context
        if plan.long and not params.get("quiet"):
            print(redact(plan.render()) + "\n  (running; --dry-run prints this and stops)",
                  file=sys.stderr, flush=True)
        return context
    plan = make_plan(system, question, context, chunk_tokens=params.get("chunk_tokens"))
    if params.get("probe") and plan.latency_s is None:
        plan = probe(system, question, context, plan)
    if params.get("as_json"):
        print(redact(json.dumps(clean_secrets({"dry_run": True, "plan": plan.to_dict()}),
                                indent=2, default=str)))
    else:
        print(redact(plan.render()))
    sys.stdout.flush()
    return None
