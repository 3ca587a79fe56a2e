"""``ponder optimize``: search a variable space for the config that scores best on a dataset.

``ponder optimize DATASET --space FILE [--optimizer tpe] …`` runs a study (``ponder optimize
run`` is the same command spelled out); ``ponder optimize space FILE`` prints a space;
``ponder optimize show STUDY`` prints a study's trials, best and Pareto front. Exit codes: 0
done (also when a budget cap stopped the search: that is the plan working), 2 bad input or an
estimate over the budget without ``--yes``, 1 failure.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ponder.cli.app import AppState, echo_json, run_store
from ponder.errors import ConfigError


class _OptimizeGroup(click.Group):
    """``ponder optimize DATASET …`` means ``ponder optimize run DATASET …``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("optimize", cls=_OptimizeGroup)
def optimize_group() -> None:
    """Search config variables (and prompts) for the best score within a budget.

    \b
    Examples:
      ponder optimize space space.toml
      ponder optimize qa.jsonl --space space.toml --optimizer tpe --trials 40 --max-cost 2
      ponder optimize qa.jsonl --space space.toml --objectives score,cost --dry-run
      ponder optimize qa.jsonl --pipeline explain.toml --space stages.toml --trials 20
      ponder optimize --resume my-study
      ponder optimize show my-study
    """


# --- space -----------------------------------------------------------------------------------
@optimize_group.command("space")
@click.argument("file")
@click.option("--pipeline", "pipeline_path", metavar="FILE",
              help="The pipeline whose pipeline.stages.* keys the space addresses.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def space_command(state: AppState, file: str, pipeline_path: str | None, as_json: bool) -> None:
    """Print the space declared in FILE: variables, size, conditional variables."""
    from ponder.optimize.checks import load_space

    base, _ = _pipeline_base(state, pipeline_path, file)
    space = load_space(file, plugins=state.plugins, base=base)
    data = space.to_dict()
    if as_json:
        echo_json(data)
        return
    click.echo(f"space {file}: {len(space.variables)} variables")
    width = max(len(v.key) for v in space.variables)
    for variable in space.variables:
        condition = variable.condition_text()
        click.echo(f"  {variable.key:<{width}}  {variable.describe()}"
                   + (f"   when {condition}" if condition else ""))
    for constraint in space.constraints:
        click.echo(f"  constraint: {constraint.text}")
    size = f"{data['size']}" if data["finite"] else (
        f"{data['size']} grid points (continuous floats: infinite)")
    click.echo(f"size: {size}")
    conditional = data["conditional"]
    click.echo("conditional: " + (", ".join(conditional) if conditional else "none"))


# --- run --------------------------------------------------------------------------------------
def _finite_limit(ctx: click.Context, param: click.Parameter, value: float | None) -> Any:
    """A study's --max-cost / --timeout: finite and not negative. ``nan`` compares false with
    everything, so the budget would never be reached (the limit silently off), as ``ask``'s
    limits refuse it too."""
    import math

    if value is not None and (not math.isfinite(value) or value < 0):
        what = "a finite number" if not math.isfinite(value) else "a number >= 0"
        raise click.BadParameter(f"expected {what}, got {value!r}", ctx=ctx, param=param)
    return value


@optimize_group.command("run")
@click.argument("dataset", required=False)
@click.option("--space", "space_path", metavar="FILE",
              help="The space: a TOML file with [optimize.space] (default: ponder.toml's).")
@click.option("--pipeline", "pipeline_path", metavar="FILE",
              help="Optimize this pipeline: each example's question is its ${input.question}, "
                   "the answer its output (default: the space file's [optimize] pipeline).")
@click.option("--stage-cache", "stage_cache", is_flag=True,
              help="With --pipeline: reuse unchanged stages across trials (cheaper; a "
                   "trial's cost then depends on the trials before it).")
@click.option("--optimizer", help="Optimizer plugin: tpe, random, grid (default tpe).")
@click.option("--trials", type=click.IntRange(min=1), help="Trials to run (default 40).")
@click.option("--metric", "metrics", multiple=True,
              help="Metric plugin(s); the first is the score (default contains).")
@click.option("--objectives", help="Comma-separated: score, cost, calls, latency, tokens.")
@click.option("--max-cost", type=float, callback=_finite_limit,
              help="Stop the study after this much (USD).")
@click.option("--max-calls", type=click.IntRange(min=1), help="Stop after this many LM calls.")
@click.option("--timeout", type=float, callback=_finite_limit,
              help="Stop the study after this many seconds.")
@click.option("--seed", type=int, help="Seed of the split, the stream order and the sampler.")
@click.option("--val-fraction", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
              help="Share of examples held out for val without a split column (0.3).")
@click.option("--concurrency", type=click.IntRange(min=1), help="Examples and calls at once.")
@click.option("--name", help="The study's name (default: derived from dataset and space).")
@click.option("--resume", "resume", metavar="STUDY", help="Continue a study by name.")
@click.option("--dry-run", is_flag=True, help="Print the estimate only; run no trial.")
@click.option("--yes", is_flag=True, help="Start even when the estimate exceeds the budget.")
@click.option("--out", "out", metavar="FILE", help="Write the best program (TOML) here.")
@click.option("--report", "report_dir", metavar="DIR", help="Write plots of the study here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.pass_obj
def run_command(state: AppState, dataset: str | None, **params: Any) -> None:
    """Optimize the config for DATASET over the variables of --space."""
    from ponder.evaluate.dataset import load_dataset
    from ponder.optimize import run as runner
    from ponder.optimize.checks import load_space
    from ponder.optimize.study import Budget, check_objectives

    as_json, quiet = params["as_json"], params["quiet"] or params["as_json"]
    storage = run_store(state)
    if params["resume"]:
        plan = runner.load_plan(storage, params["resume"])
        plan = _override_plan(plan, dataset, params)
    else:
        if not params["space_path"]:
            params["space_path"] = _space_in_config(state.config)
        if dataset is None or not params["space_path"]:
            raise click.UsageError("name a DATASET and --space FILE (or declare "
                                   "[optimize.space] in ponder.toml, or --resume STUDY)")
        objectives = check_objectives(
            [o.strip() for o in (params["objectives"] or "score").split(",") if o.strip()])
        if objectives[0] != "score" and "score" not in objectives:
            raise ConfigError("--objectives: include score (the metric)")
        plan = runner.RunPlan(
            name=params["name"] or _default_name(dataset, params["space_path"]),
            dataset_path=dataset, space_path=params["space_path"],
            optimizer=params["optimizer"] or "tpe", trials=params["trials"] or 40,
            metrics=tuple(params["metrics"] or ("contains",)), objectives=objectives,
            seed=params["seed"] if params["seed"] is not None else 0,
            val_fraction=params["val_fraction"] or 0.3,
            budget=Budget(params["max_cost"], params["max_calls"], params["timeout"]),
            concurrency=params["concurrency"],
            pipeline=_pipeline_source(state.config, params["pipeline_path"],
                                      params["space_path"]),
            stage_cache=params["stage_cache"])
    plugins = state.plugins
    config, _ = _pipeline_base(state, plan.pipeline, plan.space_path, flag="--pipeline"
                               if params["pipeline_path"] else "pipeline",
                               stage_cache=plan.stage_cache)
    data = load_dataset(plan.dataset_path)
    train, val = runner.split_dataset(data, seed=plan.seed, val_fraction=plan.val_fraction)
    space = load_space(plan.space_path, plugins=plugins, base=config)
    optimizer = runner.build_optimizer(plan.optimizer, plugins, config, space)
    progress = None if quiet else _progress
    study = runner.make_study(plan, space=space, train=train, plugins=plugins, storage=storage,
                              on_trial=progress)
    estimate = runner.estimate(study, config, len(val), optimizer)
    if not quiet:
        _print_estimate(estimate, plan, len(train), len(val))
    if estimate.allowed_trials is not None and estimate.allowed_trials < estimate.min_trials \
            and not params["quiet"]:  # a warning: on stderr with --json too
        click.echo(f"ponder: warning: the budget allows about {estimate.allowed_trials} trials; "
                   f"{plan.optimizer} needs at least {estimate.min_trials} to learn anything",
                   err=True)
    if params["dry_run"]:
        if as_json:
            echo_json({"study": plan.name, "dry_run": True, "estimate": estimate.to_dict(),
                        "train": len(train), "val": len(val)})
        return
    if estimate.over_budget and not params["yes"] and not params["resume"]:
        raise ConfigError("the estimate exceeds the budget (" + "; ".join(estimate.over_budget)
                          + "); lower --trials, raise the cap, or pass --yes to run until the "
                          "cap stops it")
    study.save_meta(plan=plan.to_dict(), status="running", dataset_digest=data.digest,
                    train=len(train), val=len(val), space=space.to_dict())
    started = time.monotonic()
    status = "done"
    try:
        optimizer.optimize(study)
        if not study.should_stop():  # the optimizer ran out of points (a small grid)
            study.stop_reason = f"{plan.optimizer} finished ({len(study.finished())} trials)"
    except KeyboardInterrupt:
        status = "interrupted"
        study.stop_reason = "interrupted (Ctrl-C); resume with --resume " + plan.name
    summary = runner.finish(study, base=config, val=val, dataset=data) \
        if status == "done" else {"study": plan.name, "stopped_by": study.stop_reason}
    summary.update(status=status, pipeline=plan.pipeline,
                   elapsed_s=round(time.monotonic() - started, 3),
                   spent={"cost": study.spent.cost, "calls": study.spent.calls,
                          "tokens": study.spent.tokens, "retries": study.spent.retries},
                   estimate=estimate.to_dict(),
                   calls_saved=sum(t.calls_saved for t in study.trials()),
                   pareto=[t.to_dict() for t in study.pareto()])
    study.save_meta(status=status, summary={k: v for k, v in summary.items() if k != "program"})
    if params["out"] and summary.get("program"):
        from pathlib import Path

        from ponder.support.fileutils import atomic_write

        atomic_write(Path(params["out"]), summary["program"])
    if params["report_dir"]:
        from ponder.optimize.report import write_report

        summary["report"] = write_report(study, params["report_dir"])
    if as_json:
        echo_json(summary)
    else:
        _print_summary(summary, study)
    if status == "interrupted":
        raise click.exceptions.Exit(130)


def _pipeline_source(config: Any, flag: str | None, space_path: str) -> str | None:
    """The pipeline a new study optimizes: ``--pipeline``, else the space file's ``[optimize]
    pipeline``, else, when the space addresses ``pipeline.stages.*`` keys, the ``[pipeline]``
    of the config file (ponder.toml)."""
    from pathlib import Path

    from ponder.optimize.pipeline_space import is_pipeline_key, pipeline_path_in

    if flag:
        return flag
    named = pipeline_path_in(space_path)
    if named:
        return named
    try:
        import tomllib

        table = tomllib.loads(Path(space_path).read_text(encoding="utf-8"))
        keys = list((table.get("optimize") or {}).get("space") or {})
    except (OSError, ValueError):
        return None  # load_space says what is wrong with the file
    origin = config.origin("pipeline.stages")
    if any(is_pipeline_key(str(k)) for k in keys) and Path(origin).is_file():
        return origin
    return None


def _pipeline_base(state: AppState, path: str | None, space_path: str, *,
                   flag: str = "--pipeline", stage_cache: bool = False) -> tuple[Any, Any]:
    """``(the base config of the study's trials, the checked pipeline plan or None)``: with a
    pipeline, the config whose evals ask it (:func:`ponder.optimize.pipeline_space
    .with_pipeline`)."""
    from ponder.optimize.pipeline_space import (
        check_executor,
        load_pipeline,
        pipeline_path_in,
        with_pipeline,
    )

    path = path or pipeline_path_in(space_path)
    if not path:
        return state.config, None
    plan = load_pipeline(path, state.plugins, flag=flag)
    check_executor(state.config, state.plugins)
    return with_pipeline(state.config, plan.pipeline, stage_cache=stage_cache), plan


def _space_in_config(config: Any) -> str | None:
    """The config file whose ``[optimize.space]`` the study uses when no --space is given."""
    from pathlib import Path

    for key, origin in config.origins.items():
        if key.startswith("optimize.space.") and Path(origin).is_file():
            return origin
    return None


def _override_plan(plan: Any, dataset: str | None, params: dict[str, Any]) -> Any:
    import attrs

    from ponder.optimize.study import Budget

    changes: dict[str, Any] = {}
    if dataset:
        changes["dataset_path"] = dataset  # a new or larger dataset warm-starts from the trials
    if params.get("pipeline_path"):
        changes["pipeline"] = params["pipeline_path"]
    for key in ("space_path", "trials", "concurrency"):
        if params.get(key):
            changes[key] = params[key]
    budget = plan.budget
    changes["budget"] = Budget(
        params["max_cost"] if params["max_cost"] is not None else budget.max_cost,
        params["max_calls"] if params["max_calls"] is not None else budget.max_calls,
        params["timeout"] if params["timeout"] is not None else budget.timeout)
    return attrs.evolve(plan, **changes)


def _default_name(dataset: str, space: str) -> str:
    from pathlib import Path

    return f"{Path(dataset).stem}-{Path(space).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _progress(result: Any, study: Any) -> None:
    best = study.best()
    best_text = f"{best.score:.3f} (trial {best.number})" if best and best.score is not None \
        else "-"
    score = "-" if result.score is None else f"{result.score:.3f}"
    if getattr(result, "minibatch", None):  # simba's steps: not comparable with the best
        score += f" on a mini-batch of {result.examples}"
    click.echo(f"trial {len(study.finished())}/{study.n_trials} #{result.number}: "
               f"{result.status} score {score}; best {best_text}; spent "
               f"${study.spent.cost:.4f}, {study.spent.calls} calls", err=True)


def _print_estimate(estimate: Any, plan: Any, n_train: int, n_val: int) -> None:
    e = estimate
    click.echo(f"estimate ({n_train} train, {n_val} val examples; pilot: 1 example): "
               f"per trial {e.per_trial['calls']:.0f} calls, {e.per_trial['tokens']:.0f} tokens, "
               f"${e.per_trial['cost']:.4f}, {e.per_trial['seconds']:.1f}s; "
               f"{plan.trials} trials + val"
               + (f" + {e.optimizer_calls} of the optimizer's own" if e.optimizer_calls else "")
               + f": {e.total['calls']:.0f} calls, ${e.total['cost']:.4f}, "
               f"{e.total['seconds']:.0f}s", err=True)
    if e.over_budget:
        click.echo("over budget: " + "; ".join(e.over_budget), err=True)


def _print_summary(summary: dict[str, Any], study: Any) -> None:
    click.echo(f"study {summary['study']}: {summary.get('trials', 0)} trials; "
               f"stopped by: {summary.get('stopped_by')}")
    best = summary.get("best")
    if summary.get("pipeline"):
        click.echo(f"pipeline: {summary['pipeline']} (the program holds it: `ponder pipeline "
                   "run` the --out file)")
    if best:
        click.echo(f"best: trial {best['number']} train score {best['score']:.3f} "
                   f"{json.dumps(best['assignment'])}")
        click.echo(f"val: baseline {_fmt(summary['baseline_val']['score'])} -> best "
                   f"{_fmt(summary['best_val']['score'])}"
                   + (f" ({summary['val_missing']})" if summary.get("val_missing") else ""))
    else:
        click.echo("no trial completed")
    if len(study.objectives) > 1:
        click.echo("pareto front (" + ", ".join(study.objectives) + "):")
        for trial in summary.get("pareto", []):
            click.echo(f"  trial {trial['number']}: score {_fmt(trial['score'])} cost "
                       f"${trial['cost']:.6f} calls {trial['calls']}")
    spent = summary["spent"]
    click.echo(f"spent: {spent['calls']} calls, {spent['tokens']} tokens, ${spent['cost']:.4f}, "
               f"{summary['elapsed_s']:.1f}s; pruning saved ~{summary['calls_saved']} calls")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


# --- show -------------------------------------------------------------------------------------
@optimize_group.command("show")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def show_command(state: AppState, name: str | None, as_json: bool) -> None:
    """Show study NAME: its trials, best and Pareto front (no NAME: list the studies)."""
    from ponder.optimize import run as runner

    storage = run_store(state)
    if name is None:
        rows = runner.studies(storage)
        if as_json:
            echo_json({"studies": rows})
            return
        for row in rows:
            click.echo(f"{row['name']}  {row.get('status')}  {row['plan']['optimizer']}  "
                       f"{row['plan']['dataset_path']}")
        return
    plan = runner.load_plan(storage, name, flag="optimize show")
    meta = storage.get_record("study", name) or {}
    from ponder.optimize.study import Study, pareto_front

    study = Study(name, None, [], metrics=plan.metrics, plugins=None, storage=storage,
                  trials=plan.trials, objectives=plan.objectives)
    trials = study.trials(every=True)
    best = study.best()
    front = pareto_front(trials, plan.objectives)
    if as_json:
        echo_json({"study": name, "status": meta.get("status"), "plan": plan.to_dict(),
                    "trials": [t.to_dict() for t in trials],
                    "best": best.to_dict() if best else None,
                    "pareto": [t.to_dict() for t in front], "summary": meta.get("summary")})
        return
    click.echo(f"study {name} ({meta.get('status')}): {plan.optimizer}, "
               f"{len(trials)}/{plan.trials} trials, objectives {', '.join(plan.objectives)}"
               + (f", pipeline {plan.pipeline}" if plan.pipeline else ""))
    click.echo(f"{'#':>4} {'status':<9} {'score':>6} {'cost':>10} {'calls':>6}  assignment")
    for t in trials:
        status = "running?" if t.status == "running" else t.status
        click.echo(f"{t.number:>4} {status:<9} {_fmt(t.score):>6} {t.cost:>10.6f} "
                   f"{t.calls:>6}  {json.dumps(t.assignment)}"
                   + (f"  (mini-batch of {t.examples})" if t.minibatch else ""))
    if best:
        click.echo(f"best: trial {best.number} score {_fmt(best.score)}")
    numbers = ", ".join(str(t.number) for t in front)
    click.echo(f"pareto front: trials {numbers or '-'}")


def add_optimize_commands(cli: click.Group) -> None:
    cli.add_command(optimize_group)

