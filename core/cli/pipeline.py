"""``ponder pipeline run|check|show FILE``: stages declared in TOML, run in parallel.

Exit codes as for ``ask``: 0 every stage complete, 3 partial (the note lists the stages missing),
1 nothing completed, 2 bad input (the pipeline file, a flag, the config).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import click

from ponder.cli.app import AppState, echo_json, report_error
from ponder.cli.ask import EXIT_PARTIAL, _overrides


def _load(state: AppState, path: str) -> Any:
    from ponder.pipeline.check import check_file

    return check_file(path, state.plugins)


def _json_errors(exc: Any) -> None:
    """``{"ok": false, "errors": [...]}``, one entry per problem, and exit with its code."""
    from ponder.support.secrets import redact

    errors: list[str] = []
    for line in redact(str(exc)).splitlines():  # an indented line continues its error
        if line.startswith(" ") and errors:  # (a signature's caret under the column)
            errors[-1] += "\n" + line
        else:
            errors.append(line)
    click.echo(json.dumps({"ok": False, "errors": errors}))
    raise click.exceptions.Exit(exc.exit_code) from None


@click.group("pipeline")
def pipeline_group() -> None:
    """Run, check and show pipelines of stages (see docs/pipelines.md)."""


@pipeline_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def check_command(state: AppState, file: str, as_json: bool) -> None:
    """Check FILE: plugins, settings, signatures, references, field types and cycles."""
    from ponder.errors import PonderError

    try:
        plan = _load(state, file)
    except PonderError as exc:
        if not as_json:
            raise
        _json_errors(exc)
    if as_json:
        click.echo(json.dumps({"ok": True, "stages": list(plan.stages), "levels": plan.levels,
                               "inputs": list(plan.inputs)}))
        return
    click.echo(f"{file}: ok: {len(plan.stages)} stages in {len(plan.levels)} levels"
               + (f"; inputs: {', '.join(plan.inputs)}" if plan.inputs else ""))


@pipeline_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "json"]), default="text",
              show_default=True, help="A table, a Mermaid flowchart, or JSON.")
@click.pass_obj
def show_command(state: AppState, file: str, fmt: str) -> None:
    """Show FILE's stages, their dependency levels and the critical path."""
    from ponder.errors import PonderError
    from ponder.pipeline.check import critical_path

    try:
        plan = _load(state, file)
    except PonderError as exc:
        if fmt != "json":
            raise
        _json_errors(exc)
    path, _ = critical_path(plan)
    if fmt == "json":
        click.echo(json.dumps({"stages": {n: {"kind": p.kind, "uses": p.stage.uses,
                                              "signature": p.signature.text,
                                              "needs": sorted(p.needs),
                                              "for_each": p.stage.for_each}
                                          for n, p in plan.stages.items()},
                               "levels": plan.levels, "critical_path": path}))
        return
    if fmt == "mermaid":
        lines = ["flowchart LR"]
        for name, stage in plan.stages.items():
            label = f"{name}<br/>{stage.kind} {stage.stage.uses}"
            if stage.stage.for_each:
                label += "<br/>for each"
            lines.append(f'    {name}["{label}"]')
        on_path = set(itertools.pairwise(path))
        for name, stage in plan.stages.items():
            for need in sorted(stage.needs):
                edge = "==>" if (need, name) in on_path else "-->"
                lines.append(f"    {need} {edge} {name}")
        click.echo("\n".join(lines))
        return
    for number, level in enumerate(plan.levels, 1):
        click.echo(f"level {number}:")
        for name in level:
            stage = plan.stages[name]
            needs = f"  after {', '.join(sorted(stage.needs))}" if stage.needs else ""
            fan = f"  for each {stage.stage.for_each}" if stage.stage.for_each else ""
            click.echo(f"  {name:<16} {stage.kind:<9} {stage.stage.uses:<18} "
                       f"{stage.signature.text}{fan}{needs}")
    click.echo(f"critical path: {' -> '.join(path)} ({len(path)} stages)")


@pipeline_group.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("sources", nargs=-1)
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="A pipeline input (${input.NAME}). Repeatable.")
@click.option("--adapter", help="Adapter plugin for the stages that name none.")
@click.option("--model", help="Model for the adapter.")
@click.option("--concurrency", type=int, help="LM calls in flight at most, all stages together.")
@click.option("--max-cost", type=float, help="Stop the pipeline when it has cost this (USD).")
@click.option("--max-tokens", type=int, help="Stop the pipeline after this many tokens.")
@click.option("--timeout", type=float, help="Hard time limit for the whole pipeline (s).")
@click.option("--include", multiple=True, metavar="GLOB", help="Only matching files.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching files.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Any config value. Repeatable.")
@click.option("--no-cache", "no_cache", is_flag=True,
              help="Run every stage and call again (no stage cache, no response cache).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def run_command(state: AppState, file: str, sources: tuple[str, ...], inputs: tuple[str, ...],
                **params: Any) -> None:
    """Run the pipeline in FILE over SOURCES.

    \b
    Examples:
      ponder pipeline run explain.toml src/ --input question="How does it start?"
      ponder pipeline run explain.toml src/ --json
    """
    import attrs

    from ponder.engine.system import System
    from ponder.errors import PonderError
    from ponder.pipeline.model import literal_inputs
    from ponder.pipeline.run import run_pipeline

    as_json = bool(params.get("as_json"))
    try:
        state.overrides = _overrides(params)
        config = state.config
        if params.get("model") and not config.adapter.name:
            config.adapter.name = "litellm"
        values = literal_inputs(inputs)
        plan = _load(state, file)
        if params.get("no_cache"):
            plan = attrs.evolve(plan, pipeline=attrs.evolve(plan.pipeline, cache=False))
        system = System(config, plugins=state.plugins, progress="silent")
        result = run_pipeline(plan, system, sources=list(sources), inputs=values,
                              include=params.get("include") or (),
                              exclude=params.get("exclude") or ())
    except PonderError as exc:
        if not as_json:
            raise
        # the one shape every --json failure has (``report_error``: message on stderr too)
        raise click.exceptions.Exit(report_error(str(exc), exc.exit_code, as_json=True)) \
            from None
    if as_json:
        echo_json(result.to_dict())
    else:
        _print(result)
    if result.partial:
        done = [s for s in result.stages.values() if s.status in ("ok", "cached", "partial")]
        raise click.exceptions.Exit(EXIT_PARTIAL if done else 1)


def _print(result: Any) -> None:
    from ponder.pipeline.run import first_line
    from ponder.support.secrets import redact

    for name, outputs in result.outputs.items():
        click.echo(f"== {name}")
        for field, value in outputs.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            click.echo(redact(f"{field}: {text}"))
    lines = [f"{'stage':<16} {'status':<8} {'time':>7} {'calls':>5}  note"]
    for name, stage in result.stages.items():
        note = first_line(stage.error) if stage.error else stage.why_skipped
        if stage.items is not None:
            note = f"{stage.items} items" + (f", {len(stage.failed_items)} failed"
                                             if stage.failed_items else "") + (
                f"; {note}" if note else "")
        lines.append(f"{name:<16} {stage.status:<8} {stage.elapsed_s:>6.2f}s {stage.calls:>5}  "
                     f"{note}")
    usage = result.usage
    lines.append(f"wall {result.wall_s:.2f}s (stages run), {result.elapsed_s:.2f}s in all; "
                 f"sum of stage times {result.stage_sum_s:.2f}s; speedup "
                 f"{result.speedup:.2f}x; calls {usage.calls}; tokens {usage.input_tokens} in, "
                 f"{usage.output_tokens} out; cost ${usage.cost_usd:.4f}; run {result.run_id}")
    lines.append(f"critical path: {' -> '.join(result.critical_path)}")
    if result.note:
        lines.append(f"partial: {result.note}")
    click.echo("\n".join(redact(line) for line in lines), err=True)


def add_pipeline_commands(cli: click.Group) -> None:
    cli.add_command(pipeline_group)
