"""Runs a dataset through ``System.ask`` and scores every answer: :class:`Evaluator`.

**On the configured executor.** The examples are handed to ``[executor]`` (the one each ask's
map calls use too; :mod:`ponder.evaluate.dispatch`): under ``threads`` each example runs whole on
a thread of this process; under ``ray`` each example to ask is one work item, asked on a Ray
actor that builds the System once (:mod:`ponder.evaluate.remote`), and its usage and run record
come back to be recorded and scored here.

**One concurrency budget.** Under ``threads`` the examples run on at most ``concurrency``
threads, and each holds a slot of one :class:`ponder.engine.budget.ConcurrencyBudget` while it
runs; the budget is handed to the System, so an ask's own parallel calls (``Services.map``)
borrow free slots of the same budget instead of opening a pool of their own. Examples x chunks
never multiply: at most ``concurrency`` threads work and at most that many requests are in
flight. Several Evaluators (an optimizer's parallel trials) may share one budget. Under
``ray`` the driver has at most ``concurrency`` examples out and each worker's examples share a
budget of the worker's threads.

**Resumable.** Every example's outcome is recorded the moment it finishes (see
:mod:`ponder.evaluate.store`), keyed by the resolved config's digest and the example's prompt
digest; an eval that meets a recorded prediction uses it instead of asking again, so a rerun of
a killed eval asks only what had not finished. ``resume=False`` asks everything again.

**Failures are listed, not zeroed**: see :mod:`ponder.evaluate.results`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from ponder.engine.budget import ConcurrencyBudget
from ponder.errors import ConfigError
from ponder.evaluate.asking import UNUSABLE, ask_example, unusable_provider
from ponder.evaluate.dataset import Dataset, Example, load_dataset
from ponder.evaluate.metric import MetricError, as_score, build_metrics
from ponder.evaluate.progress import EvalStatus
from ponder.evaluate.results import (
    EvalResult,
    ExampleResult,
    Prediction,
    add_usage,
    empty_usage,
    usage_of,
)
from ponder.evaluate.store import NAMESPACE, EvalStore, now

log = logging.getLogger("ponder.eval")

#: config keys that do not change an answer, left out of the config digest: how many run at
#: once, where things are recorded, how plugins are found
_NOT_IN_DIGEST = (("limits", "concurrency"), ("storage",), ("cache",), ("plugins",),
                  ("eval",), ("executor",), ("telemetry",))


@attrs.define
class EvalSettings:
    """``[eval]``: defaults for ``ponder eval`` (flags win)."""

    #: examples (and the LM calls inside them) at once; None = ``[limits] concurrency``
    concurrency: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1)))
    #: metrics when no ``--metric`` is given
    metrics: list[str] = attrs.field(factory=lambda: ["contains"])
    #: seed of ``--sample`` and of the bootstrap
    seed: int = 0
    #: per-metric settings: ``[eval.metric.numeric] rel_tol = 0.01``
    metric: dict[str, dict[str, Any]] = attrs.field(factory=dict)


def config_digest(config: Any) -> str:
    """A digest of the resolved config (secrets masked) without the keys that do not change an
    answer (concurrency, storage, cache, plugins, eval, executor, telemetry)."""
    data = config.to_dict(masked=True)
    for path in _NOT_IN_DIGEST:
        node = data
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _metric_identity(name: str, metric: Any) -> str:
    settings = getattr(metric, "settings", None)
    try:
        data = attrs.asdict(settings) if attrs.has(type(settings)) else repr(settings)
    except Exception:
        data = repr(settings)
    return hashlib.sha256(json.dumps([name, data], sort_keys=True,
                                     default=str).encode()).hexdigest()[:12]


class Evaluator:
    """Evaluates one configuration on datasets; see the module docstring."""

    def __init__(self, config_or_system: Any, metrics: Sequence[str] | Mapping[str, Any] = (
            "contains",), *, plugins: Any = None, concurrency: int | None = None,
                 storage: Any = None, progress: str = "silent", resume: bool = True,
                 budget: ConcurrencyBudget | None = None, label: str | None = None,
                 default_sources: Sequence[str] = (), seed: int | None = None) -> None:
        from ponder.engine.system import System
        from ponder.evaluate.variant_system import VariantSystem
        from ponder.kernel.config import Config, load_config

        if isinstance(config_or_system, System):
            config, plugins = config_or_system.config, plugins or config_or_system.plugins
        elif isinstance(config_or_system, Config):
            config = config_or_system
        elif config_or_system is None:
            config = load_config()
        else:  # a path to a TOML file
            config = load_config(os.fspath(config_or_system))
            label = label or os.path.splitext(os.path.basename(os.fspath(config_or_system)))[0]
        #: whether the plugins were handed in (a worker process must be sent them) or loaded
        #: from the config (a worker loads them again)
        self._plugins_given = plugins is not None
        if plugins is None:
            from ponder.kernel.loader import load_plugins

            p = config.plugins
            plugins = load_plugins(modules=p.load, allow=p.allow, disable=p.disable,
                                   strict=p.strict)
        settings = config.section("eval", EvalSettings)
        self.config = config
        self.plugins = plugins
        self.label = label or "default"
        self.seed = settings.seed if seed is None else seed
        slots = budget.slots if budget is not None else (
            concurrency or settings.concurrency or config.limits.concurrency)
        if slots < 1:
            raise ConfigError(f"--concurrency: must be at least 1, got {slots}")
        self.budget = budget or ConcurrencyBudget(slots)
        self.concurrency = self.budget.slots
        # each ask may widen to the whole budget when few examples are left
        run_config = attrs.evolve(config, limits=attrs.evolve(config.limits,
                                                              concurrency=self.budget.slots))
        # one System for every example of this variant: plugins, executor and the run store
        # (opened once, shared by the asks) are reused, not rebuilt per ask
        self.system = VariantSystem(run_config, plugins=plugins, budget=self.budget)
        if isinstance(metrics, Mapping):
            self.metrics = dict(metrics)
        else:
            self.metrics = build_metrics(list(metrics), plugins, settings.metric,
                                         origins=config.origins)
        self._metric_ids = {n: _metric_identity(n, m) for n, m in self.metrics.items()}
        self.config_digest = config_digest(config)
        self.progress = progress
        self.resume = resume
        self.default_sources = tuple(os.path.abspath(s) for s in default_sources)
        self._stop = threading.Event()
        #: the pass of :meth:`iter` under way (:class:`ponder.evaluate.dispatch.ExampleRun`)
        self._current: Any = None
        self._last: Any = None
        #: process id -> examples asked there in the last pass (this process under threads,
        #: the executor's worker processes under ray); read back ones are not counted
        self.asked_in: dict[int, int] = {}
        #: why the eval stopped handing out examples by itself (a provider that cannot be
        #: used), or None
        self.stop_reason: str | None = None
        self.store: EvalStore | None = None
        #: ``store`` wraps a storage handed in (closed here too, as before), not the System's
        self._close_given_store = storage is not None and storage is not False
        if storage is False:
            self.store = None
        elif storage is not None:
            self.store = EvalStore(storage)
        else:
            opened = self.system.shared_storage()
            self.store = EvalStore(opened) if opened is not None else None

    # --- identity -----------------------------------------------------------------------------
    def eval_id(self, dataset: Dataset) -> str:
        """Stable id of this eval: the dataset's digest, the config's and the metrics, plus the
        default SOURCES when there are any (the same dataset over another folder is another
        eval; without them the id is what it always was)."""
        parts: list[Any] = [dataset.digest, self.config_digest, list(self.metrics)]
        if self.default_sources:
            parts.append(list(self.default_sources))
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]

    def stop(self) -> None:
        """Hand out no further examples (those running finish and are recorded)."""
        self._stop.set()
        current = self._current
        if current is not None:  # the executor starts nothing new
            current.stop()

    def _give_up(self, reason: str) -> None:
        """The provider cannot be used (no server at the base URL, a refused key): every
        further example would fail the same way after the same retries, so none is handed
        out; they are listed as not run, and a rerun (the provider fixed) asks them."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.warning("stopping the eval: %s", reason)
        self.stop()

    def close(self) -> None:
        """Close the run store(s) and free the executor's workers (idempotent)."""
        if self.store is not None and self._close_given_store:
            self.store.close()
        self.system.close()
        executor = self.system._executor
        if executor is not None:
            if self._last is not None and self._last.remote:
                # after Ctrl-C the feeder leaves the executor within a wake-up (0.5 s): wait,
                # so its workers are not closed under it and taken for lost
                self._last.wait(timeout=5.0)
            executor.close()

    # --- one example --------------------------------------------------------------------------
    def _sources(self, example: Example) -> tuple[str, ...]:
        return example.sources or self.default_sources

    def _record_key(self, example: Example) -> str:
        if example.sources:
            return example.prompt_digest
        return attrs.evolve(example, sources=self.default_sources).prompt_digest

    def _ask(self, example: Example) -> tuple[Prediction | None, dict[str, Any]]:
        """Ask the system here; (prediction or None, the facts to record)."""
        prediction, facts, unusable = ask_example(self.system, example.question,
                                                  self._sources(example))
        if unusable:
            self._give_up(facts["failure"])
        return prediction, facts

    def _score(self, example: Example, prediction: Prediction,
               stored: Mapping[str, Any]) -> tuple[dict[str, Any], str | None, bool]:
        """Each metric's stored score when it still holds, else a fresh one; (scores, failure,
        whether anything was scored anew)."""
        from ponder.support.secrets import redact

        scores: dict[str, Any] = {}
        failure = None
        fresh = False
        for name, metric in self.metrics.items():
            old = stored.get(name)
            if (old and old.get("gold") == example.gold_digest
                    and old.get("metric") == self._metric_ids[name] and "error" not in old):
                scores[name] = old
                continue
            fresh = True
            try:
                score = as_score(metric.score(example, prediction))
            except Exception as exc:
                # a MetricError carries what the metric spent trying (a judge call that failed
                # was still sent and priced): kept with the error, so judge usage stays true
                text = str(exc) if isinstance(exc, MetricError) else \
                    f"{type(exc).__name__}: {exc}"
                message = redact(f"metric {name}: {text}")
                scores[name] = {"value": None, "error": message, "gold": example.gold_digest,
                                "metric": self._metric_ids[name],
                                "usage": getattr(exc, "usage", None)}
                failure = failure or message
                continue
            scores[name] = {"value": score.value, "feedback": score.feedback,
                            "parts": dict(score.parts), "usage": score.usage,
                            "gold": example.gold_digest, "metric": self._metric_ids[name]}
        return scores, failure, fresh

    def _lookup(self, example: Example) -> tuple[str, dict[str, Any] | None, bool]:
        """The example's record key, its record (when resuming) and whether it holds a
        prediction to read back instead of asking."""
        key = self._record_key(example)
        record = None
        if self.store is not None and self.resume:
            record = self.store.get_example(self.config_digest, key)
        return key, record, bool(record and record.get("prediction") is not None)

    def run_example(self, example: Example) -> ExampleResult:
        """Ask (or read back) and score one example; records it before returning."""
        key, record, resumed = self._lookup(example)
        if resumed:
            return self._finish(example, key, record, resumed=True)
        prediction, facts = self._ask(example)
        return self._finish(example, key, record, resumed=False, prediction=prediction,
                            facts=facts)

    def _finish(self, example: Example, key: str, record: dict[str, Any] | None, *,
                resumed: bool, prediction: Prediction | None = None,
                facts: dict[str, Any] | None = None) -> ExampleResult:
        """Score an asked (or read back) example and record it; wherever it was asked, this
        runs in the driver, against the driver's store."""
        if resumed:
            assert record is not None
            prediction = Prediction(**record["prediction"])
            facts = {k: record.get(k) for k in ("usage", "run_id", "latency_s")}
            facts["failure"] = None
        assert facts is not None
        record = record if resumed else {}
        scores: dict[str, Any] = {}
        failure = facts["failure"]
        fresh = not resumed
        if prediction is not None:
            scores, failure, scored = self._score(example, prediction, record.get("scores", {}))
            fresh = fresh or scored
        if self.store is not None and fresh:
            self.store.put_example(self.config_digest, key, {
                "example_id": example.id, "question": example.question,
                "prediction": None if prediction is None else attrs.asdict(prediction),
                "usage": facts["usage"], "run_id": facts["run_id"],
                "latency_s": facts["latency_s"], "failure": facts["failure"],
                "scores": scores})
        judge = empty_usage()
        for entry in scores.values():
            add_usage(judge, entry.get("usage"))
        return ExampleResult(
            id=example.id, example=example,
            scores={n: s.get("value") for n, s in scores.items()},
            feedback={n: s["feedback"] for n, s in scores.items() if s.get("feedback")},
            parts={n: s["parts"] for n, s in scores.items() if s.get("parts")},
            answer="" if prediction is None else prediction.answer,
            citations=() if prediction is None else prediction.citations,
            usage=dict(facts["usage"] or empty_usage()), judge_usage=judge,
            latency_s=float(facts["latency_s"] or 0.0), failure=failure,
            partial=bool(prediction is not None and prediction.partial),
            run_id=facts["run_id"], resumed=resumed)

    # --- many examples ------------------------------------------------------------------------
    def _examples(self, data: Any) -> tuple[Dataset, list[Example]]:
        if isinstance(data, Dataset):
            return data, list(data.examples)
        if isinstance(data, str | os.PathLike):
            dataset = load_dataset(data)
            return dataset, list(dataset.examples)
        examples = list(data)
        return Dataset.from_examples(examples), examples

    def iter(self, data: Any) -> Iterator[ExampleResult]:
        """Each example's result as it finishes (completion order), the examples run on the
        configured executor (:mod:`ponder.evaluate.dispatch`). Closing the generator early
        stops handing out examples; the ones running finish and are recorded."""
        from ponder.evaluate.dispatch import ExampleRun

        _, examples = self._examples(data)
        self._stop.clear()
        self.stop_reason = None
        run = self._current = self._last = ExampleRun(self, examples)
        try:
            yield from run.results()
        finally:
            self._current = None

    def lost_usage(self) -> dict[str, float]:
        """The requests of the last :meth:`iter`/:meth:`run` that were lost with a worker (a
        killed Ray actor) and counted from its request journal: no example's, still spent."""
        return _lost_usage(self._last)

    def run(self, data: Any) -> EvalResult:
        """Every example of ``data`` (a Dataset, a path, or Examples), recorded as it finishes."""
        from ponder.support.progress import ProgressContext

        dataset, examples = self._examples(data)
        eval_id = self.eval_id(dataset)
        self._record_eval(eval_id, dataset, examples, status="running")
        results: dict[str, ExampleResult] = {}
        status = "done"
        # the rich bar has a time-remaining column of its own; the plain lines carry the ETA
        shown = EvalStatus(len(examples), next(iter(self.metrics)),
                           eta=self.progress == "plain")
        with ProgressContext(total=len(examples), description=f"eval {self.label}",
                             model=self.system.config.adapter.name or "",
                             mode=self.progress) as progress:  # type: ignore[arg-type]
            try:
                for result in self.iter(examples):
                    results[result.id] = result
                    shown.add(result)
                    progress.update(advance=1, failed=0 if result.ok else 1,
                                    status=shown.text())
            except KeyboardInterrupt:
                self.stop()
                status = "interrupted"
            if len(results) < len(examples):  # the progress line's last word says why
                progress.update(status="cancelled by Ctrl-C" if status == "interrupted"
                                else "cancelled: the provider cannot be used"
                                if self.stop_reason else "cancelled: stopped")
        ordered = [results[e.id] for e in examples if e.id in results]
        not_run = [e.id for e in examples if e.id not in results]
        if not_run and status == "done":
            status = "stopped"
        result = EvalResult(
            eval_id=eval_id, label=self.label, dataset=dataset.path,
            dataset_digest=dataset.digest, config_digest=self.config_digest,
            metrics=list(self.metrics), per_example=ordered,
            binary={n: bool(getattr(m, "binary", False)) for n, m in self.metrics.items()},
            not_run=not_run, config=self.config.to_dict(masked=True), seed=self.seed,
            status=status, stop_reason=self.stop_reason if not_run else None,
            lost_usage=self.lost_usage())
        self._record_eval(eval_id, dataset, examples, status=status, result=result)
        return result

    def _record_eval(self, eval_id: str, dataset: Dataset, examples: list[Example], *,
                     status: str, result: EvalResult | None = None) -> None:
        if self.store is None:
            return
        record: dict[str, Any] = {
            "id": eval_id, "label": self.label, "status": status, "dataset": dataset.path,
            "dataset_digest": dataset.digest, "config_digest": self.config_digest,
            "config": self.config.to_dict(masked=True), "metrics": list(self.metrics),
            "binary": {n: bool(getattr(m, "binary", False)) for n, m in self.metrics.items()},
            "seed": self.seed,
            "examples": [{**e.to_dict(), "line": e.line, "key": self._record_key(e)}
                         for e in examples],
        }
        try:
            old = self.store.storage.get_record(NAMESPACE, f"eval/{eval_id}") or {}
        except Exception:
            old = {}
        record["started_at"] = old.get("started_at") or now()
        record["updated_at"] = now()
        record["runs"] = int(old.get("runs", 0)) + (1 if result is None else 0)
        if result is not None:
            record["finished_at"] = now()
            summary = result.to_dict()
            summary.pop("per_example")
            record["summary"] = summary
        try:
            self.store.put_eval(eval_id, record)
        except Exception as exc:  # recording is secondary to the results
            log.warning("could not record eval %s: %s", eval_id, exc)


#: moved to :mod:`ponder.evaluate.asking`; the old names still work
_UNUSABLE, _unusable_provider = UNUSABLE, unusable_provider


def _lost_usage(run: Any) -> dict[str, float]:
    """What the executor counted for asks lost with their worker (it adds them to the services
    it was handed, :func:`ponder.evaluate.dispatch.driver_services`): calls, tokens, cost."""
    usage = getattr(getattr(run, "services", None), "usage", None)
    return empty_usage() if usage is None else usage_of(usage)


def evaluate(system_or_config: Any, dataset: Any, metrics: Sequence[str] = ("contains",), *,
             concurrency: int | None = None, **kwargs: Any) -> EvalResult:
    """Evaluate a System (or Config, or config file) on ``dataset`` (a Dataset, a path, or a
    list of Examples) with ``metrics``; ``kwargs`` go to :class:`Evaluator`."""
    evaluator = Evaluator(system_or_config, metrics, concurrency=concurrency, **kwargs)
    try:
        return evaluator.run(dataset)
    finally:
        evaluator.close()
