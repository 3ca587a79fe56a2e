"""Running a checked pipeline: every stage as soon as its inputs are ready, under one budget.

:func:`run_pipeline` loads the sources once, builds the run's
:class:`ponder.engine.services.Services` (the limits, usage, call records and response cache of the
whole pipeline), and hands the stage graph to :func:`run_graph`: ``graphlib`` says which stages are
ready, each ready stage starts in its own thread as soon as it gets a slot of the run's one
:class:`ponder.engine.budget.ConcurrencyBudget` (``[limits] concurrency`` slots, or an eval's
shared budget), and a stage's ``for_each`` items and a strategy's chunks go through
``services.map`` (the run's parallel map: an ``[executor]`` plugin that replaces it applies here
too), which lends the stage's slot and borrows free ones. So stage threads and their workers
together never do more at once than the budget allows, and one semaphore of the same size bounds
the LM calls in flight.

A stage that fails makes its dependants *skipped* (each lists the stage it waited for), while the
other branches finish; the result is partial and says which stages are missing. A limit that
stops the run (cost, tokens, the deadline over the whole pipeline) fails the stages in flight and
skips the rest.

**Stage cache.** With ``[pipeline] cache`` on (the default) a stage that succeeded is stored in
the run store (records namespace ``pipeline``) under a hash of its config, the values of the
references it reads, the model, and for a strategy stage the sources' digest; a re-run serves
it from there without a call, so after a change only the changed stages and their dependants
run again.

The run is recorded in the run store like ``ask``'s (strategy ``pipeline``), with a ``stage:NAME``
span per stage; the result reports the wall time, the sum of the stage times and the speedup.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ponder.engine.budget import ConcurrencyBudget
from ponder.engine.services import LimitReached
from ponder.errors import ConfigError
from ponder.pipeline.check import Plan, StagePlan, critical_path
from ponder.pipeline.model import Ref, references, render_template
from ponder.pipeline.stages import run_one, stage_services
from ponder.support.observability import SpanType, Tracker, in_current_context

log = logging.getLogger("ponder.pipeline")

__all__ = ["PipelineResult", "StageResult", "run_graph", "run_pipeline"]

#: records namespace of the stage cache
NAMESPACE = "pipeline"
USABLE = ("ok", "cached", "partial")
#: what a stage skipped by a limit (not by a failed stage) waited for
LIMITS = ("timeout", "max_cost", "max_tokens", "interrupted")


@attrs.define
class StageResult:
    name: str
    status: str  # ok, cached, partial, failed, skipped
    outputs: dict[str, Any] = attrs.Factory(dict)
    error: str | None = None
    #: for a skipped stage: the stages (or the limit) it could not do without
    waited_for: list[str] = attrs.Factory(list)
    elapsed_s: float = 0.0
    start: float | None = None
    end: float | None = None
    items: int | None = None
    failed_items: list[dict[str, Any]] = attrs.Factory(list)
    citations: list[dict[str, Any]] = attrs.Factory(list)
    calls: int = 0
    cache_key: str | None = None

    @property
    def why_skipped(self) -> str:
        """``needs risk`` (a stage it reads failed) or ``stopped by timeout`` (a limit)."""
        limits = [w for w in self.waited_for if w in LIMITS]
        stages = [w for w in self.waited_for if w not in LIMITS]
        parts = ([f"needs {', '.join(stages)}"] if stages else []) + \
            [f"stopped by {limit}" for limit in limits]
        return "; ".join(parts)


@attrs.define
class PipelineResult:
    name: str
    stages: dict[str, StageResult]
    #: the outputs of the stages nothing else reads (the pipeline's results)
    outputs: dict[str, dict[str, Any]]
    usage: Any
    #: from the first stage's start to the last one's end (what parallelism shortens)
    wall_s: float
    run_id: str
    #: the whole call: loading the sources and building the LM too
    elapsed_s: float = 0.0
    stopped_by: str | None = None
    critical_path: list[str] = attrs.Factory(list)

    @property
    def stage_sum_s(self) -> float:
        return sum(s.elapsed_s for s in self.stages.values() if s.status != "cached")

    @property
    def speedup(self) -> float:
        """Sum of stage times over the wall time; 1.0 when no stage ran (all cached)."""
        if self.wall_s <= 0 or self.stage_sum_s <= 0:
            return 1.0
        return self.stage_sum_s / self.wall_s

    @property
    def missing(self) -> list[str]:
        return [n for n, s in self.stages.items() if s.status in ("failed", "skipped")]

    @property
    def partial(self) -> bool:
        return any(s.status not in ("ok", "cached") for s in self.stages.values())

    @property
    def note(self) -> str | None:
        if not self.partial:
            return None
        parts = []
        for name, stage in self.stages.items():
            if stage.status == "failed":
                parts.append(f"{name} failed ({first_line(stage.error or '')})")
            elif stage.status == "skipped":
                parts.append(f"{name} skipped ({stage.why_skipped})")
            elif stage.status == "partial":
                parts.append(f"{name} partial ({len(stage.failed_items)} item(s) failed)")
        done = sum(s.status in ("ok", "cached") for s in self.stages.values())
        return f"{done} of {len(self.stages)} stages complete; " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.name,
            "run_id": self.run_id,
            "outputs": self.outputs,
            "stages": {name: attrs.asdict(stage) for name, stage in self.stages.items()},
            "partial": self.partial,
            "missing": self.missing,
            "note": self.note,
            "stopped_by": self.stopped_by,
            "usage": {**attrs.asdict(self.usage), "cost_usd": round(self.usage.cost_usd, 6)},
            "wall_s": round(self.wall_s, 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "stage_sum_s": round(self.stage_sum_s, 3),
            "speedup": round(self.speedup, 2),
            "critical_path": self.critical_path,
        }


def first_line(text: str, limit: int = 160) -> str:
    """The first line of an error, cut to ``limit`` characters: what a table row or a note shows
    (a provider's parse error runs to a dozen lines; ``--json`` and the run store keep it all)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    more = line != text.strip()
    if len(line) > limit:
        line, more = line[:limit].rstrip(), True
    return line + (" …" if more else "")


# --- the scheduler (one function, so an executor can replace it) -----------------------------
def run_graph(graph: Mapping[str, set[str]], run: Callable[[str], StageResult], *,
              skip: Callable[[str, dict[str, StageResult]], StageResult | None],
              remaining_s: Callable[[], float | None], budget: Any = None,
              holds_slot: bool = False) -> dict[str, StageResult]:
    """Run every node of ``graph`` (node -> the nodes it needs) as soon as those are done.

    ``skip(name, results)`` may return a result instead of running the node (a dependency
    failed, a limit was reached). Nodes run in daemon threads, so a deadline that passes with a
    stage in flight returns at once: that stage is failed as cancelled and the rest skipped.

    With a ``budget`` (:class:`ponder.engine.budget.ConcurrencyBudget`, the run's one cap) a
    ready stage starts only when it gets a slot, held until it ends, so a wide pipeline never
    has more stage threads working than ``[limits] concurrency``; a stage's own parallel map
    lends that slot to its first worker and borrows free ones (the budget's protocol). When the
    caller holds a slot itself (``holds_slot``: an eval example running a pipeline), the first
    stage works on it instead of taking another.
    """
    import graphlib

    sorter = graphlib.TopologicalSorter(graph)
    sorter.prepare()
    results: dict[str, StageResult] = {}
    finished: queue.SimpleQueue[tuple[str, StageResult]] = queue.SimpleQueue()
    running: set[str] = set()
    pending: list[str] = []  # ready, waiting for a slot
    started: dict[str, float] = {}  # when each running stage began (a cancelled one keeps it)
    lent: str | None = None  # the stage working on the caller's slot

    def work(name: str, slot: bool) -> None:
        try:
            result = run(name)
        except BaseException as exc:  # run() reports its own failures; this is a bug guard
            result = StageResult(name, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            if slot:
                budget.release()
        finished.put((name, result))

    def timed_out() -> dict[str, StageResult]:
        now = time.time()
        for name in running:
            results[name] = StageResult(name, "failed", error="cancelled: timeout",
                                        start=started[name], end=now,
                                        elapsed_s=now - started[name])
        for name in graph:
            results.setdefault(name, StageResult(name, "skipped", waited_for=["timeout"]))
        return results

    while sorter.is_active():
        for name in sorter.get_ready():
            skipped = skip(name, results)
            if skipped is not None:
                results[name] = skipped
                sorter.done(name)
                continue
            pending.append(name)
        while pending:
            slot = False
            if budget is not None:
                if holds_slot and lent is None:
                    lent = pending[0]
                elif budget.try_acquire():
                    slot = True
                elif running:
                    break  # a slot comes back when a running stage ends
                else:  # nothing of ours runs: wait for a slot another run holds
                    remaining = remaining_s()
                    if not budget.acquire(None if remaining is None else max(remaining, 0)):
                        return timed_out()
                    slot = True
            name = pending.pop(0)
            running.add(name)
            started[name] = time.time()
            threading.Thread(target=in_current_context(work), args=(name, slot), daemon=True,
                             name=f"ponder-stage-{name}").start()
        if not running:
            continue  # the skipped nodes made others ready
        remaining = remaining_s()
        try:
            name, result = finished.get(timeout=None if remaining is None else max(remaining, 0))
        except queue.Empty:  # the deadline passed with stages in flight
            return timed_out()
        running.discard(name)
        if lent == name:
            lent = None
        results[name] = result
        sorter.done(name)
    return results


# --- one run ------------------------------------------------------------------------------------
def _identity_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode()).hexdigest()


class _Run:
    """The state of one pipeline run, shared by its stage threads."""

    def __init__(self, plan: Plan, system: Any, context: Any, inputs: dict[str, Any],
                 services: Any, storage: Any) -> None:
        self.plan = plan
        self.system = system
        self.context = context
        self.inputs = inputs
        self.root = services
        self.storage = storage
        self.slots = threading.BoundedSemaphore(services.concurrency)
        self.results: dict[str, StageResult] = {}
        self.views: list[Any] = []
        self._lock = threading.Lock()

    # --- components of a stage ------------------------------------------------------------
    def _view(self, stage: StagePlan) -> tuple[Any, Any]:
        """(the stage's services view, its strategy or None)."""
        system, root = self.system, self.root
        changes: dict[str, Any] = {"names": dict(root.names)}
        if stage.stage.adapter is not None or stage.stage.adapter_settings:
            from ponder.engine.system import System

            config, name = _stage_adapter_config(system.config, stage)
            lm, model_info, adapter = System(config, plugins=system.plugins)._build_lm(name)
            changes.update(lm=lm, model_info=model_info,
                           dspy_adapter=getattr(adapter, "dspy_adapter", lambda: None)())
            changes["names"]["adapter"] = (name, stage.adapter_settings
                                           or stage.stage.adapter_settings)
        component = None
        if stage.kind == "predictor":
            entry = system.plugins.get("predictor", stage.stage.uses)
            predictor = entry.factory(stage.settings) if entry.settings else entry.factory()
            changes["names"]["predictor"] = (stage.stage.uses, stage.settings)
        else:
            name = stage.stage.predictor or system.config.predictor.name or "predict"
            predictor = system.build("predictor", name)
            changes["names"]["predictor"] = (name, getattr(predictor, "settings", None))
            entry = system.plugins.get("strategy", stage.stage.uses)
            component = entry.factory(stage.settings) if entry.settings else entry.factory()
            # an index is state: two strategy stages at once must not share one retriever
            changes["retriever"] = system.build("retriever")
        changes["predictor"] = predictor
        changes["_stage"] = stage.name
        view = stage_services(root, self.slots, **changes)
        with self._lock:
            self.views.append(view)
        return view, component

    def _system_identity(self) -> str:
        """What of the run's config changes a stage's answer besides the stage's own keys: the
        run's adapter settings (a temperature), the retriever's, the compiled prompts. Masked:
        a key's value never reaches the cache key, only its presence."""
        from ponder.support.secrets import clean_secrets

        data = self.system.config.to_dict(masked=True)
        return _identity_hash(clean_secrets({
            key: data.get(key) for key in ("adapter", "adapters", "retriever")
        } | {"prompts": (data.get("optimize") or {}).get("prompts")}))

    def _resolve(self, ref: Ref, item: Any = None) -> Any:
        if ref.scope == "input":
            return self.inputs[ref.name]
        if ref.scope == "item":
            return item
        return self.results[ref.name].outputs[ref.field]

    def _cache_key(self, stage: StagePlan, view: Any) -> str:
        refs = {ref.text: self._resolve(ref) for ref in
                references([stage.stage.inputs, stage.stage.for_each]) if ref.scope != "item"}
        config = self.system.config
        identity = {
            "stage": stage.stage.config_dict(),
            "references": refs,
            "model": view.model_info.model,
            "adapter": view.names.get("adapter", (None, None))[0],
            "predictor": [config.predictor.name, config.predictor.options]
            if stage.kind == "strategy" and stage.stage.predictor is None else None,
            "sources": self.context.digest() if stage.kind == "strategy" else None,
            "system": self._system_identity(),
        }
        return _identity_hash(identity)

    # --- running a stage ------------------------------------------------------------------
    def skip(self, name: str, results: dict[str, StageResult]) -> StageResult | None:
        self.results = results
        needs = self.plan.stages[name].needs
        missing = [n for n in self.plan.pipeline.stages if n.name in needs
                   and results[n.name].status not in USABLE]
        if missing:
            return StageResult(name, "skipped", waited_for=[s.name for s in missing])
        try:
            self.root.check_limits()
        except LimitReached as exc:
            return StageResult(name, "skipped", waited_for=[exc.limit])
        return None

    def run(self, name: str) -> StageResult:
        stage = self.plan.stages[name]
        tracker = self.root.tracker
        with tracker.span(f"stage:{name}", SpanType.STRATEGY, stage=name, kind=stage.kind,
                          uses=stage.stage.uses) as span:
            result = self._run(stage)
            span.attributes.update(status=result.status, items=result.items)
        result.start, result.end = span.start, span.end
        result.elapsed_s = span.duration_s or 0.0
        return result

    def _run(self, stage: StagePlan) -> StageResult:
        from ponder.support.secrets import redact

        name = stage.name
        try:
            view, component = self._view(stage)
            key = self._cache_key(stage, view)
            if self.plan.pipeline.cache and self.storage is not None:
                hit = self._cached(key)
                if hit is not None:
                    return StageResult(name, "cached", outputs=hit["outputs"],
                                       items=hit.get("items"), citations=hit.get("citations", []),
                                       cache_key=key)
            if stage.stage.for_each is None:
                inputs = render_template(stage.stage.inputs, self._resolve)
                outputs, details = run_one(stage, component, inputs, self.context, view)
                status = "partial" if details.get("failures") else "ok"
                result = StageResult(name, status, outputs=outputs,
                                     citations=details.get("citations", []), cache_key=key,
                                     failed_items=details.get("failures", []))
            else:
                result = self._fan_out(stage, view, component, key)
        except LimitReached as exc:
            return StageResult(name, "failed", error=f"stopped by {exc.limit}: {exc}")
        except Exception as exc:
            message = str(exc).strip() or type(exc).__name__
            return StageResult(name, "failed", error=redact(f"{type(exc).__name__}: {message}"))
        if result.status == "ok" and self.plan.pipeline.cache and self.storage is not None:
            self._store(key, result)
        return result

    def _fan_out(self, stage: StagePlan, view: Any, component: Any, key: str) -> StageResult:
        items = render_template(stage.stage.for_each, self._resolve)
        if not isinstance(items, list):
            raise TypeError(f"for_each gave {type(items).__name__}, not a list")

        def one(index: int, item: Any) -> Any:
            inputs = render_template(stage.stage.inputs,
                                     lambda ref: self._resolve(ref, item))
            outputs, details = run_one(stage, component, inputs, self.context, view)
            return index, outputs, details

        batch = view.map(one, items, label=stage.name)  # the run's parallel map
        done = sorted(batch.results, key=lambda r: r[0])
        outputs = {field.name: [r[1][field.name] for r in done]
                   for field in stage.signature.outputs}
        failed = [{"index": f.index, "item": items[f.index], "error": f.error, "kind": f.kind}
                  for f in batch.failed]
        if not done and failed:
            raise RuntimeError(f"every one of the {len(items)} items failed "
                               f"(first: {failed[0]['error']})")
        citations = [c for r in done for c in r[2].get("citations", [])]
        return StageResult(stage.name, "partial" if failed else "ok", outputs=outputs,
                           items=len(items), failed_items=failed, citations=citations,
                           cache_key=key)

    def _cached(self, key: str) -> dict[str, Any] | None:
        try:
            return self.storage.get_record(NAMESPACE, f"stage/{key}")
        except Exception as exc:  # the cache is an optimisation: run the stage
            log.warning("the stage cache could not be read: %s", exc)
            return None

    def _store(self, key: str, result: StageResult) -> None:
        record = {"stage": result.name, "outputs": result.outputs, "items": result.items,
                  "citations": result.citations, "at": time.time()}
        try:
            self.storage.put_record(NAMESPACE, f"stage/{key}", record)
        except Exception as exc:
            log.warning("the stage cache could not be written: %s", exc)


def _stage_adapter_config(config: Any, stage: StagePlan) -> tuple[Any, str]:
    """(the config a stage's own LM is built from, its adapter's name).

    ``adapter = "gemini"`` / ``{ name = "gemini", … }``: that adapter with those settings. A
    table without a name changes settings of the run's own adapter: its configured settings
    (``[adapter]``, or ``[adapters.<name>]``) with the stage's on top, fallbacks kept."""
    from ponder.engine.system import choose_adapter
    from ponder.kernel.config import Component

    settings = dict(stage.stage.adapter_settings)
    if stage.stage.adapter is not None:
        return attrs.evolve(config, adapter=Component(stage.stage.adapter, settings)), \
            stage.stage.adapter
    name, _ = choose_adapter(config)
    base = config.adapter.options if config.adapter.name == name and config.adapter.options \
        else config.adapters.get(name, {})
    adapter = attrs.evolve(config.adapter, name=name, options={**base, **settings})
    adapters = {k: v for k, v in config.adapters.items() if k != name}
    return attrs.evolve(config, adapter=adapter, adapters=adapters), name


def _pipeline_inputs(plan: Plan, given: Mapping[str, Any]) -> dict[str, Any]:
    from ponder.kernel.registry import did_you_mean

    values = {name: value for name, value in plan.pipeline.inputs.items() if value is not None}
    values.update(given)
    known = sorted(set(plan.inputs) | set(plan.pipeline.inputs))
    unknown = sorted(set(given) - set(known))
    if unknown:  # before "missing": a misspelt --input is both, and this says why
        close = did_you_mean(unknown[0], known)
        hint = f"; did you mean {close!r}?" if close else ""
        raise ConfigError(f"--input {unknown[0]}: the pipeline reads no input {unknown[0]!r}"
                          f"{hint} (it reads: {', '.join(known) or 'none'})")
    missing = [name for name in plan.inputs if name not in values]
    if missing:
        raise ConfigError(f"the pipeline needs input(s) {', '.join(missing)}: give "
                          + " ".join(f'--input {name}="..."' for name in missing))
    return values


def _count_calls(results: dict[str, StageResult], tracker: Tracker) -> None:
    """Each stage's LM calls: the LLM spans under its ``stage:NAME`` span."""
    spans = tracker.spans
    by_id = {span.id: span for span in spans}
    for span in spans:
        if span.type != SpanType.LLM:
            continue
        parent = by_id.get(span.parent_id or "")
        while parent is not None and not parent.name.startswith("stage:"):
            parent = by_id.get(parent.parent_id or "")
        if parent is not None and parent.name[6:] in results:
            results[parent.name[6:]].calls += 1


def run_pipeline(plan: Plan, system: Any, *, sources: Sequence[str] | Any = (),
                 inputs: Mapping[str, Any] | None = None, include: Sequence[str] = (),
                 exclude: Sequence[str] = (), tracker: Tracker | None = None) -> PipelineResult:
    """Run ``plan`` with ``system``'s config and plugins over ``sources``."""
    from ponder.context.sources import Context, load_sources
    from ponder.engine.system import RunRecorder, choose_adapter

    started = time.perf_counter()
    values = _pipeline_inputs(plan, inputs or {})
    strategy_stages = [p.name for p in plan.stages.values() if p.kind == "strategy"]
    if isinstance(sources, Context):
        context = sources
    elif sources:
        context = load_sources(list(sources), include=include, exclude=exclude)
    elif strategy_stages:
        raise ConfigError(f"stage {strategy_stages[0]!r} runs a strategy over the sources: "
                          "name them (ponder pipeline run FILE SOURCES…)")
    else:
        context = Context(documents=[])

    adapter_name, _ = choose_adapter(system.config)
    lm, model_info, adapter = system._build_lm(adapter_name)
    limits = system.config.limits
    tracker = tracker or Tracker()
    run_id = uuid.uuid4().hex[:12]
    recorder = RunRecorder(system.open_storage(), run_id)
    question = f"pipeline {plan.pipeline.name}" + (f": {json.dumps(values)}" if values else "")
    recorder.begin(question=question, context=context, config=system.config,
                   model=model_info.model, adapter=adapter_name, strategy="pipeline")
    cache = system.open_cache(adapter)
    # the run's one concurrency cap: stage threads and their maps' workers all draw from it; an
    # eval's shared budget (system.budget) when there is one, its caller holding a slot
    budget = system.budget if getattr(system, "budget", None) is not None else \
        ConcurrencyBudget(limits.concurrency)
    # the run's [adapter] rpm/tpm limiter and [executor]; an executor whose workers are other
    # processes (ray) builds each item's module from the run's predictor and adapter, not from
    # a stage's own, so a pipeline's maps stay on this process's threads under it
    shared = system.executor_services(adapter_name, system.config.predictor.name or "predict",
                                       None)
    if shared.get("worker_spec") is not None:
        log.info("pipeline: stage maps run on threads here (the %s executor's workers cannot "
                 "build a stage's own predictor or adapter)", system.config.executor.name)
        shared = {"rate_limiter": shared["rate_limiter"]}
    services = system.services_for_run(
        lm=lm, model_info=model_info, adapter=adapter, adapter_name=adapter_name,
        predictor=system.build("predictor"), retriever=system.build("retriever"),
        tracker=tracker, context=context, recorder=recorder, cache=cache, budget=budget,
        names={"retriever": (system.config.retriever.name, None)}, **shared)
    state = _Run(plan, system, context, values, services, recorder.storage)
    graph = {name: set(stage.needs) for name, stage in plan.stages.items()}
    with recorder.guard(services, tracker, started, cache):
        try:
            with tracker.span("pipeline", SpanType.RUN, run_id=run_id,
                              pipeline=plan.pipeline.name) as span:
                results = run_graph(graph, state.run, skip=state.skip,
                                    remaining_s=services.remaining_s, budget=budget,
                                    holds_slot=budget is getattr(system, "budget", None))
        except KeyboardInterrupt:
            services.interrupt()  # the views share the flag: every stage stops at its next call
            raise
    results = {name: results[name] for name in plan.stages}  # plan order
    _count_calls(results, tracker)
    read = {stage for p in plan.stages.values() for stage in p.needs}
    outputs = {name: r.outputs for name, r in results.items()
               if name not in read and r.status in USABLE}
    stopped = next((v.stopped_by for v in state.views if v.stopped_by), services.stopped_by)
    durations = {name: r.elapsed_s for name, r in results.items()}
    result = PipelineResult(
        name=plan.pipeline.name, stages=results, outputs=outputs, usage=attrs.evolve(
            services.usage), wall_s=span.duration_s or 0.0, run_id=run_id,
        elapsed_s=time.perf_counter() - started,
        stopped_by=stopped, critical_path=critical_path(plan, durations)[0])
    _finish(recorder, result, tracker)
    return result


def _finish(recorder: Any, result: PipelineResult, tracker: Tracker) -> None:
    data = result.to_dict()
    done = [s for s in result.stages.values() if s.status in USABLE]
    status = "ok" if not result.partial else ("partial" if done else "failed")
    record = {
        "status": status,
        "answer": json.dumps(result.outputs, default=str),
        "usage": data["usage"],
        "cost_usd": data["usage"]["cost_usd"],
        "elapsed_s": data["elapsed_s"],
        "failures": [{"error": s.error or f"skipped: {s.why_skipped}",
                      "kind": s.status, "stage": n}
                     for n, s in result.stages.items() if s.status in ("failed", "skipped")],
        "stopped_by": result.stopped_by,
        "strategy": "pipeline",
        "note": result.note,
        "spans": [span.to_dict() for span in tracker.spans],
        "pipeline": {k: data[k] for k in ("pipeline", "stages", "missing", "stage_sum_s",
                                          "speedup", "critical_path")},
    }
    try:
        recorder._safely("finish the run",
                         lambda: recorder.storage.finish_run(recorder.run_id, record))
    finally:
        recorder.close()
