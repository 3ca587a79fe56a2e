"""One optimization run end to end: split, estimate, search, score on val, save the program.

What ``ponder optimize`` does, as a Python API (:func:`prepare`, :func:`estimate`,
:func:`run_study`, :func:`finish`), so tests and notebooks drive the same code as the command.

**Split.** When the dataset has a ``split`` column, ``train`` examples are searched on and
``val`` examples score the result; otherwise a seeded shuffle puts ``val_fraction`` of the
examples (at least one) in val and the rest in train.

**Estimate** (before any trial). The base config answers one train example (the *pilot*); its
calls, tokens, cost and time, times the train examples, are one trial; times the trials, plus
the val evals of the baseline and the best (two per val example), are the run. The pilot is a
real, recorded evaluation: the base config is a candidate like any other, so its result is
reused when a trial or the baseline meets it again.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import attrs

from ponder.errors import ConfigError
from ponder.optimize.study import (  # build_optimizer: re-exported, callers use run's
    NAMESPACE,
    Budget,
    Study,
    build_optimizer,  # noqa: F401
    check_objectives,
)


@attrs.define
class RunPlan:
    name: str
    dataset_path: str
    space_path: str
    optimizer: str
    trials: int
    metrics: tuple[str, ...]
    objectives: tuple[str, ...]
    seed: int = 0
    val_fraction: float = 0.3
    budget: Budget = attrs.field(factory=Budget)
    concurrency: int | None = None
    #: the pipeline file the study optimizes (``--pipeline``), None for a system study
    pipeline: str | None = None
    #: reuse a pipeline's unchanged stages across candidates (``--stage-cache``)
    stage_cache: bool = False

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class Estimate:
    per_example: dict[str, float]
    per_trial: dict[str, float]
    total: dict[str, float]
    trials: int
    allowed_trials: int | None
    over_budget: list[str]
    min_trials: int
    #: the optimizer's own LM calls at most (instruction proposals, rules), in ``total``
    optimizer_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def split_dataset(dataset: Any, *, seed: int, val_fraction: float) -> tuple[Any, Any]:
    splits = {example.split for example in dataset}
    if "train" in splits and "val" in splits:
        return dataset.split("train"), dataset.split("val")
    if len(dataset) < 2:
        raise ConfigError(f"{dataset.path}: an optimization needs at least 2 examples "
                          f"(train and val), got {len(dataset)}")
    from ponder.evaluate.dataset import Dataset

    shuffled = list(dataset.shuffled(seed))
    n_val = min(len(shuffled) - 1, max(1, round(len(shuffled) * val_fraction)))
    return (Dataset.from_examples(shuffled[n_val:], path=dataset.path),
            Dataset.from_examples(shuffled[:n_val], path=dataset.path))


def optuna_url(storage: Any) -> str | None:
    """``sqlite:///…/optuna.sqlite`` beside a file run store; None for an in-memory one."""
    location = getattr(storage, "location", ":memory:")
    if not location or location == ":memory:":
        return None
    return f"sqlite:///{Path(location).resolve().with_name('optuna.sqlite')}"


def make_study(plan: RunPlan, *, space: Any, train: Any, plugins: Any, storage: Any,
               on_trial: Any = None) -> Study:
    return Study(plan.name, space, train, metrics=plan.metrics, plugins=plugins,
                 storage=storage, trials=plan.trials, objectives=plan.objectives,
                 budget=plan.budget, seed=plan.seed, concurrency=plan.concurrency,
                 on_trial=on_trial, optuna_url=optuna_url(storage))


def estimate(study: Study, base: Any, val_size: int, optimizer: Any) -> Estimate:
    """Measure the base config on one train example and scale it (see the module docstring)."""
    from ponder.evaluate import Evaluator
    from ponder.evaluate.dataset import Dataset

    pilot = Dataset.from_examples([study.train[0]], path=getattr(study.train, "path", "<pilot>"))
    evaluator = Evaluator(base, metrics=study.metrics, plugins=study.plugins,
                          storage=study.storage, concurrency=study.concurrency,
                          label=f"{study.name} pilot")
    started = time.monotonic()
    results = list(evaluator.iter(pilot))
    wall = time.monotonic() - started
    usage = results[0].usage if results else {}
    if results and not results[0].resumed:
        study.spent.add(usage)
        study.spent.add(results[0].judge_usage or {})
    seconds = float(results[0].latency_s or wall) if results else wall
    per_example = {"calls": float(usage.get("calls", 0)), "tokens": float(usage.get("tokens", 0)),
                   "cost": float(usage.get("cost", 0.0)), "seconds": seconds}
    n = len(study.train)
    per_trial = {k: v * n for k, v in per_example.items()}
    total = {k: per_trial[k] * study.n_trials + per_example[k] * 2 * val_size
             for k in per_example}
    # a prompt optimizer's own calls (proposals, rules: ``own_calls``), priced at the pilot's
    # mean call; the signatures it writes for are the pilot's distinct call roles
    own = getattr(optimizer, "own_calls", None)
    extra = int(own(_pilot_roles(study, results[0] if results else None))) if callable(own) else 0
    if extra and per_example["calls"]:
        for key in ("calls", "tokens", "cost", "seconds"):
            total[key] += extra * per_example[key] / per_example["calls"]
    b = study.budget
    caps = [("cost", b.max_cost, "--max-cost"), ("calls", b.max_calls, "--max-calls"),
            ("seconds", b.timeout, "--timeout")]
    allowed = None
    over = []
    for key, cap, flag in caps:
        if cap is None:
            continue
        if per_trial[key] > 0:
            fits = math.floor(cap / per_trial[key])
            allowed = fits if allowed is None else min(allowed, fits)
        if total[key] > cap:
            over.append(f"{flag} {cap:g}: the estimate is {total[key]:.4g}")
    return Estimate(per_example, per_trial, total, study.n_trials, allowed, over,
                    int(getattr(optimizer, "min_trials", 1)), extra)


def _pilot_roles(study: Study, result: Any) -> int:
    """How many distinct call roles (``answer``; ``map`` and ``reduce``, …) the pilot's run
    made: the signatures a prompt optimizer writes for. 1 when the run cannot be read."""
    run_id = getattr(result, "run_id", None)
    try:
        run = study.storage.get_run(run_id) if run_id else None
    except Exception:  # advice only: a store that cannot be read counts one signature
        run = None
    roles = {call.get("role") for call in (run or {}).get("calls", [])}
    return max(1, len(roles))


def finish(study: Study, *, base: Any, val: Any, dataset: Any) -> dict[str, Any]:
    """Score the baseline and the best trial on val, save the best as a program."""
    from ponder.evaluate import Evaluator
    from ponder.optimize.pipeline_space import pipeline_of
    from ponder.optimize.program import render_program, save_program

    def on_val(config: Any, label: str) -> Any:
        evaluator = Evaluator(config, metrics=study.metrics, plugins=study.plugins,
                              storage=study.storage, concurrency=study.concurrency, label=label)
        result = evaluator.run(val)
        for example in result.per_example:  # the val evals are spent like the trials
            if not example.resumed:
                study.spent.add(example.usage or {})
                study.spent.add(example.judge_usage or {})
        return result

    best = study.best()
    summary: dict[str, Any] = {"study": study.name, "stopped_by": study.stop_reason,
                               "trials": len(study.trials()), "best": None, "program": None,
                               "baseline_val": {"score": None}, "best_val": {"score": None}}
    # the caps bind the val evals too: over budget, the result says what it could not score
    reason = study.over_budget()
    if reason is None:
        baseline = on_val(base, f"{study.name} baseline")
        summary["baseline_val"] = {"score": baseline.score, "usage": baseline.usage}
    if best is None:
        return summary
    config = study.config_for(best.assignment, trial=best.number)
    summary["best"] = best.to_dict()
    reason = reason or study.over_budget()
    if reason is None:
        result = on_val(config, f"{study.name} trial {best.number}")
        summary["best_val"] = {"score": result.score, "usage": result.usage}
    if reason is not None:
        summary["val_missing"] = f"not scored on val: {reason}"
    provenance = {
        "study": study.name, "trial": best.number, "dataset": str(dataset.path),
        "dataset_digest": dataset.digest, "metric": study.metrics[0],
        "train_score": best.score, "val_score": summary["best_val"]["score"],
        "baseline_val_score": summary["baseline_val"]["score"],
    }
    pipeline = pipeline_of(config)
    if pipeline is not None:
        provenance["pipeline"] = pipeline.origin
    prompts = study.prompts_of(best.assignment)
    text = render_program(study.space.overrides(best.assignment), provenance,
                          prompts=prompts.to_table() if prompts else None, pipeline=pipeline)
    save_program(study.storage, study.name, text, {
        **provenance, "assignment": best.assignment, "config": config.to_dict(masked=True)})
    summary["program"] = text
    return summary


def load_plan(storage: Any, name: str, flag: str = "--resume") -> RunPlan:
    meta = storage.get_record(NAMESPACE, name)
    if meta is None or "plan" not in meta:
        known = [key for key, record in storage.list_records(NAMESPACE) if "plan" in record]
        from ponder.kernel.registry import did_you_mean

        hint = did_you_mean(name, known)
        raise ConfigError(f"{flag} {name}: no such study in {storage.location}"
                          + (f"; did you mean {hint!r}?" if hint else "")
                          + (f" (studies: {', '.join(known)})" if known else ""))
    plan = dict(meta["plan"])
    plan["budget"] = Budget(**plan.get("budget") or {})
    plan["metrics"] = tuple(plan["metrics"])
    plan["objectives"] = check_objectives(plan["objectives"])
    return RunPlan(**plan)


def studies(storage: Any) -> list[dict[str, Any]]:
    return [record for _, record in storage.list_records(NAMESPACE) if "plan" in record]

