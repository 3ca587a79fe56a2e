"""``ponder eval``: run a dataset through one or more configurations, score, compare, report.

    ponder eval DATASET [SOURCES…] [--metric contains …] [--config a.toml --config b.toml]
                [--matrix strategy.name=map_reduce,hierarchical] [--limit N] [--sample N]
                [--seed S] [--tag T] [--split test] [--json] [--report DIR]
    ponder eval list | show ID | compare ID ID | make-dataset DIR

Exit codes: 0 every example ran, 3 some failed or were not run (listed), 1 none ran, 2 bad
input (the dataset, a flag, a config). Nothing here imports dspy: the engine does, when the
first example is asked.
"""

from __future__ import annotations

from typing import Any

import click

from ponder.cli.app import AppState, echo_json, run_store
from ponder.cli.app import console as make_console
from ponder.errors import ConfigError

EXIT_PARTIAL = 3
#: subcommands; anything else as the first argument is a dataset for ``run``
SUBCOMMANDS = ("run", "list", "show", "compare", "make-dataset")


class EvalGroup(click.Group):
    """``ponder eval DATASET …`` means ``ponder eval run DATASET …``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in SUBCOMMANDS and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _score_cell(entry: dict[str, Any]) -> str:
    if entry.get("mean") is None:
        return "-"
    return f"{entry['mean']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def print_results(results: list[Any], comparisons: list[Any], *, live: bool = True) -> None:
    """The side-by-side table, the paired comparisons, and the failed examples (``live``: the
    results of this invocation, so say how many were read back instead of asked)."""
    from rich.markup import escape
    from rich.table import Table

    from ponder.cli.runs import format_cost
    from ponder.evaluate.results import metric_union

    console = make_console(highlight=False, soft_wrap=False)
    metrics = metric_union(results)  # evals recorded with other metrics: "-" where absent
    table = Table(title=f"eval of {escape(results[0].dataset)}", title_justify="left")
    table.add_column("variant")
    for metric in metrics:
        table.add_column(f"{metric} (95% CI)")
    for column in ("examples", "failed", "calls", "tokens", "cost", "p50", "p95"):
        table.add_column(column, justify="right")
    for result in results:
        usage, latency = result.usage, result.latency_s
        scores = result.scores
        failed = str(result.failed) + (f" (+{len(result.not_run)} not run)"
                                       if result.not_run else "")
        cost = format_cost(usage["cost"])
        if usage["judge"]["calls"]:
            cost += f" (+{format_cost(usage['judge']['cost'])} judge)"
        table.add_row(escape(result.label), *(_score_cell(scores.get(m, {})) for m in metrics),
                      str(result.examples), failed, str(usage["calls"]), str(usage["tokens"]),
                      cost, _fmt(latency["p50"], 2) + "s" if latency["p50"] is not None else "-",
                      _fmt(latency["p95"], 2) + "s" if latency["p95"] is not None else "-")
    console.print(table)
    if comparisons:
        paired = Table(title=f"compared with {escape(results[0].label)} (paired bootstrap; "
                             f"McNemar for binary metrics)", title_justify="left")
        for column in ("variant", "metric", "difference (95% CI)", "p", "n", "verdict"):
            paired.add_column(column)
        for comparison in comparisons:
            for metric, row in comparison.metrics.items():
                if row.get("diff") is None:
                    paired.add_row(escape(comparison.other), metric, "-", "-", "0",
                                   "no paired examples")
                    continue
                p = row.get("mcnemar_p", row["p_value"])
                paired.add_row(escape(comparison.other), metric,
                               f"{row['diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]",
                               f"{p:.3g}", str(row["n"]),
                               "[green]real[/]" if row["significant"] else "noise")
        console.print(paired)
    for result in results:
        shown = result.failures[:10]
        if not shown and not result.not_run:
            continue
        prefix = f"{result.label}: " if len(results) > 1 else ""
        for r in shown:
            click.echo(f"{prefix}failed {r.id}: {r.failure}", err=True)
        if result.failed > len(shown):
            click.echo(f"{prefix}… and {result.failed - len(shown)} more failed", err=True)
        if result.not_run:
            why = {"interrupted": "interrupted",
                   # a record still "running": another process runs it, or it was killed
                   "running": "the eval is still running, or was killed"}.get(
                result.status, "stopped: the provider cannot be used" if result.stop_reason
                else "stopped")
            click.echo(f"{prefix}not run ({why}): {len(result.not_run)} example(s): "
                       f"{_ids(result.not_run)}", err=True)
    if live and any(r.resumed for r in results):
        click.echo("resumed: " + ", ".join(f"{r.label} {r.resumed}/{r.examples}"
                                           for r in results) + " example(s) read back from "
                   "the run store (--fresh asks again)", err=True)
    click.echo(f"eval id: {', '.join(r.eval_id for r in results)}", err=True)


def _ids(ids: Any, shown: int = 10) -> str:
    ids = list(ids)
    more = f" … and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more


def _exit_code(results: list[Any]) -> int:
    ran = sum(len(r.per_example) - r.failed for r in results)
    if ran == 0:
        return 1
    if any(r.failed or r.not_run for r in results):
        return EXIT_PARTIAL
    return 0


def _store(state: AppState) -> Any:
    from ponder.evaluate.store import EvalStore

    return EvalStore(run_store(state))


def add_eval_commands(cli: click.Group) -> None:
    """Add the ``eval`` group to ``cli``."""

    @cli.group("eval", cls=EvalGroup)
    def eval_group() -> None:
        """Evaluate configurations on a dataset of questions with gold answers.

        \b
        Examples:
          ponder eval docs/examples/datasets/tiny-service.jsonl --metric contains
          ponder eval qa.jsonl src/ --metric contains --metric citations --json
          ponder eval qa.jsonl --config a.toml --config b.toml --report out/
          ponder eval qa.jsonl --matrix strategy.name=map_reduce,hierarchical
          ponder eval list ; ponder eval show ID ; ponder eval compare ID1 ID2
        """

    @eval_group.command("run")
    @click.argument("dataset")
    @click.argument("sources", nargs=-1)
    @click.option("--metric", "metrics", multiple=True, metavar="NAME",
                  help="Metric plugin (exact_match, contains, token_f1, numeric, citations, "
                       "llm_judge, or a plugin's). Repeatable; the first is the headline score.")
    @click.option("--config", "configs", multiple=True, metavar="FILE",
                  help="A configuration to evaluate. Repeat to compare several.")
    @click.option("--matrix", multiple=True, metavar="KEY=V1,V2",
                  help="Run each value of a config key (a grid when repeated).")
    @click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                  help="Any config value, for every variant. Repeatable.")
    @click.option("--limit", type=int, help="The first N examples (after --sample).")
    @click.option("--sample", type=int, help="N examples drawn at random (--seed).")
    @click.option("--seed", type=int, help="Seed of --sample and the bootstrap (default 0).")
    @click.option("--tag", "tags", multiple=True, help="Only examples with this tag.")
    @click.option("--split", help="Only examples of this split (train, val, test).")
    @click.option("--concurrency", type=int,
                  help="Examples and the LM calls inside them at once (one budget).")
    @click.option("--fresh", is_flag=True,
                  help="Ask every example again instead of reading finished ones back.")
    @click.option("--report", "report_dir", metavar="DIR",
                  help="Write an HTML report with plots to DIR (needs ponder[report]).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
    @click.option("--progress", type=click.Choice(["auto", "rich", "plain", "silent"]),
                  envvar="PONDER_PROGRESS", help="Progress on stderr (see ponder ask).")
    @click.pass_obj
    def run_command(state: AppState, dataset: str, sources: tuple[str, ...], **params: Any) -> None:
        """Run DATASET (JSONL or CSV) through the configuration(s) and score the answers.

        SOURCES are used for examples that name no sources of their own.
        """
        _run(state, dataset, sources, params)

    @eval_group.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
    @click.pass_obj
    def list_command(state: AppState, as_json: bool) -> None:
        """List recorded evals, newest first."""
        from rich.markup import escape
        from rich.table import Table

        store = _store(state)
        try:
            evals = store.list_evals()
        finally:
            store.close()
        rows = [{"id": e["id"], "label": e.get("label"), "dataset": e.get("dataset"),
                 "status": e.get("status"), "examples": len(e.get("examples", [])),
                 "metrics": e.get("metrics"), "score": (e.get("summary") or {}).get("score"),
                 "failed": (e.get("summary") or {}).get("failed"),
                 "updated_at": e.get("updated_at")} for e in evals]
        if as_json:
            echo_json(rows)
            return
        if not rows:
            click.echo("no evals recorded yet (`ponder eval DATASET` runs one)")
            return
        table = Table()
        for column in ("id", "label", "dataset", "status", "examples", "score", "failed",
                       "updated"):
            table.add_column(column)
        for row in rows:
            table.add_row(row["id"], escape(str(row["label"])), escape(str(row["dataset"])),
                          str(row["status"]), str(row["examples"]), _fmt(row["score"]),
                          "-" if row["failed"] is None else str(row["failed"]),
                          str(row["updated_at"] or "-"))
        make_console(highlight=False, soft_wrap=False).print(table)

    @eval_group.command("show")
    @click.argument("eval_id")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @click.pass_obj
    def show_command(state: AppState, eval_id: str, as_json: bool) -> None:
        """Show one recorded eval (a unique id prefix is enough)."""
        from ponder.evaluate.store import load_result

        store = _store(state)
        try:
            result = load_result(store, eval_id)
        finally:
            store.close()
        if as_json:
            echo_json(result.to_dict())
            return
        print_results([result], [], live=False)

    @eval_group.command("compare")
    @click.argument("base_id")
    @click.argument("other_ids", nargs=-1, required=True)
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @click.pass_obj
    def compare_command(state: AppState, base_id: str, other_ids: tuple[str, ...],
                        as_json: bool) -> None:
        """Compare recorded evals with the first, paired on example id."""
        from ponder.evaluate.store import load_result

        store = _store(state)
        try:
            base = load_result(store, base_id)
            others = [load_result(store, other) for other in other_ids]
        finally:
            store.close()
        comparisons = [base.compare(other) for other in others]
        if as_json:
            echo_json({"base": base.to_dict(), "others": [o.to_dict() for o in others],
                       "comparisons": [c.to_dict() for c in comparisons]})
            return
        print_results([base, *others], comparisons, live=False)
        for other, comparison in zip(others, comparisons, strict=True):
            if other.dataset_digest != base.dataset_digest:  # pairs only what both have
                paired = next(iter(comparison.metrics.values()), {}).get("n", 0)
                click.echo(f"note: {other.eval_id} ran another selection of examples than "
                           f"{base.eval_id}: compared on the {paired} example id(s) both ran",
                           err=True)

    @eval_group.command("make-dataset")
    @click.argument("out_dir")
    @click.option("--size", type=int, default=200_000, show_default=True,
                  help="Corpus size in bytes.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--family", "families", multiple=True,
                  help="Needle families (literal, semantic, confusable, two_hop, aggregation, "
                       "pairs); default all six.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    def make_dataset_command(out_dir: str, size: int, seed: int, families: tuple[str, ...],
                             as_json: bool) -> None:
        """Write a synthetic codebase with planted needles and its dataset to OUT_DIR."""
        from ponder.evaluate.make_dataset import make_needle_dataset

        made = make_needle_dataset(out_dir, size=size, seed=seed, families=families or None)
        if as_json:
            echo_json(made)
            return
        click.echo(f"wrote {made['examples']} questions to {made['dataset']} over "
                   f"{made['files']} files ({made['bytes']} bytes) in {made['corpus']}")


def _run(state: AppState, dataset_path: str, sources: tuple[str, ...],
         params: dict[str, Any]) -> None:
    from ponder.evaluate.dataset import load_dataset
    from ponder.evaluate.runner import EvalSettings, Evaluator
    from ponder.evaluate.variants import expand_variants
    from ponder.kernel.config import parse_assignment

    as_json = bool(params.get("as_json"))
    if params.get("concurrency") is not None and params["concurrency"] < 1:
        raise ConfigError(f"--concurrency: must be at least 1, got {params['concurrency']}")
    overrides = []
    for text in params.get("assignments") or ():
        path, value = parse_assignment(text)
        overrides.append((path, value, f"--set {text}"))
    state.overrides = overrides
    base_settings = state.config.section("eval", EvalSettings)
    seed = params["seed"] if params.get("seed") is not None else base_settings.seed
    dataset = load_dataset(dataset_path, split=params.get("split"), tags=params.get("tags") or (),
                           limit=params.get("limit"), sample=params.get("sample"), seed=seed)
    configs = list(params.get("configs") or ()) or [state.config_path]
    variants = expand_variants(configs, params.get("matrix") or (), overrides)
    metrics = list(params.get("metrics") or ()) or base_settings.metrics
    quiet = params.get("quiet") or as_json
    progress = "silent" if quiet else (params.get("progress") or "auto")
    if params.get("report_dir"):  # a --report that cannot be written fails before any call
        from ponder.evaluate.report import prepare_report_dir

        prepare_report_dir(params["report_dir"])
    evaluators = []
    try:
        for variant in variants:  # build all first: a bad config or metric fails before a call
            evaluators.append(Evaluator(
                variant.config, metrics, plugins=_plugins(state, variant),
                concurrency=params.get("concurrency"), progress=progress,
                resume=not params.get("fresh"), label=variant.label, default_sources=sources,
                seed=seed))
        results = []
        for evaluator in evaluators:
            results.append(evaluator.run(dataset))
            if results[-1].status == "interrupted":  # Ctrl-C: do not start the next variant
                break
    finally:
        for evaluator in evaluators:
            evaluator.close()
    not_started = [v.label for v in variants[len(results):]]
    comparisons = [results[0].compare(other) for other in results[1:]]
    report_path = None
    if params.get("report_dir"):
        from ponder.evaluate.report import write_report

        report_path = write_report(params["report_dir"], results, comparisons)
    if as_json:
        data = results[0].to_dict()
        if len(variants) > 1:
            data["variants"] = [r.to_dict() for r in results]
            data["comparisons"] = [c.to_dict() for c in comparisons]
            data["variants_not_run"] = not_started
        if report_path:
            data["report"] = str(report_path)
        echo_json(data)
    else:
        print_results(results, comparisons)
        if not_started:
            click.echo(f"variants not run (interrupted): {', '.join(not_started)}", err=True)
        if any(r.status == "interrupted" for r in results):
            click.echo("the finished examples are recorded: run the same command again to "
                       "continue (only the examples not run are asked)", err=True)
        if report_path:
            click.echo(f"report: {report_path}", err=True)
    code = _exit_code(results) if not not_started else max(_exit_code(results), EXIT_PARTIAL)
    if code:
        raise click.exceptions.Exit(code)


def _plugins(state: AppState, variant: Any) -> Any:
    """The plugin set: the CLI's (``--plugin`` modules included) unless the variant's config
    selects plugins differently."""
    if variant.config.plugins == state.config.plugins:
        return state.plugins
    from ponder.kernel.loader import load_plugins

    settings = variant.config.plugins
    return load_plugins(modules=[*settings.load, *state.plugin_modules], allow=settings.allow,
                        disable=settings.disable, strict=settings.strict)
