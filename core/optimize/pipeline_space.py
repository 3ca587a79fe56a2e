"""Pipelines in a space: ``pipeline.stages.<name>.<key>`` variables, checked and applied.

A study optimizes a pipeline by carrying it in the candidate's config: the raw ``[pipeline]``
section holds the stages (:func:`with_pipeline` puts a checked pipeline there, with ``[optimize]
evaluate = "pipeline"``, so the eval asks the pipeline instead of a strategy: see
:mod:`ponder.evaluate.pipeline_system`). A variable over ``pipeline.stages.explain.settings
.fan_in`` is then a key of that section like ``adapter.temperature`` is of ``[adapter]``: the
config digest covers it, so the per-(candidate, example) eval records, resume and the program
work as for any other key.

**Applying** (:func:`apply_pipeline_values`, called by :func:`ponder.optimize.apply
.apply_overrides`): :meth:`ponder.pipeline.model.Pipeline.with_values` on the base pipeline,
after one rule that ``--set`` has for components too: a trial that chooses another plugin for a
stage (``pipeline.stages.<name>.uses``) drops the settings the file gave the old plugin; the
settings the trial sets itself are kept.

**Checking** (:func:`check_pipeline_key`, called by :mod:`ponder.optimize.checks` for every
variable and preset key under ``pipeline.``): the stage must exist and the key be a stage key
(did-you-mean for both); ``settings.<field>`` must be a setting of the stage's plugin (or of
one of the plugins a ``uses`` variable chooses among, which then makes the variable
conditional, as for ``strategy.<field>``); ``adapter.<field>`` a setting of the stage's adapter
(the run's own when the stage names none); and every probed value (a range's bounds, each
choice) must pass :func:`ponder.pipeline.check.check_pipeline` on the pipeline it makes, so a
value the plugin's validator refuses, an unknown plugin or a signature that no longer fits is an
error before any trial runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ponder.errors import ConfigError
from ponder.kernel.registry import did_you_mean
from ponder.pipeline.model import Pipeline, PipelineError

PREFIX = "pipeline."
SECTION = "pipeline"


def is_pipeline_key(dotted: str) -> bool:
    return dotted == SECTION or dotted.startswith(PREFIX)


# --- the pipeline in a config -------------------------------------------------------------------
def load_pipeline(path: str, plugins: Any, *, flag: str = "--pipeline") -> Any:
    """Read and check the pipeline in ``path`` (its own file, or ``[pipeline]`` of a
    ponder.toml); returns the :class:`ponder.pipeline.check.Plan`. Every problem is listed, as
    ``ponder pipeline check`` lists them; a pipeline an eval cannot feed is refused too."""
    from ponder.evaluate.pipeline_system import QUESTION_INPUT
    from ponder.pipeline.check import check_file

    if not Path(path).is_file():
        raise ConfigError(f"{flag} {path}: pipeline file not found")
    plan = check_file(path, plugins)
    pipeline = plan.pipeline
    problems = []
    if QUESTION_INPUT not in plan.inputs:
        problems.append(f"{path}: the pipeline reads no ${{input.{QUESTION_INPUT}}}: an "
                        "example's question goes in there, so every example would get the "
                        "same answer (use it in a stage's inputs)")
    for name in plan.inputs:
        if name != QUESTION_INPUT and pipeline.inputs.get(name) is None:
            problems.append(f"{path}: pipeline.inputs: ${{input.{name}}} has no default; an "
                            f"example gives only the question (add inputs = {{ {name} = "
                            "\"...\" }} to [pipeline])")
    if plan.output is None:
        problems.append(f"{path}: pipeline.output: the pipeline has no output field to score; "
                        "name one: output = \"STAGE.FIELD\"")
    if problems:
        raise ConfigError("\n".join(problems))
    return plan


def check_executor(config: Any, plugins: Any) -> None:
    """Refuse an executor that asks examples in worker processes: a worker builds a plain
    System from the config and would answer with the strategy, not the pipeline (not wired
    yet); ``threads`` (the default) asks in this process, through the pipeline."""
    name = config.executor.name
    if not name:
        return
    try:
        entry = plugins.get("executor", name)
    except Exception:
        return  # an unknown executor is the eval's own error
    factory = getattr(entry, "factory", None)
    if getattr(factory, "needs_worker_spec", False):
        raise ConfigError(f"{config.origin('executor.name')}: executor.name: {name!r} asks "
                          "examples in worker processes, which do not run a pipeline yet; a "
                          "pipeline study needs the default executor (threads)")


def with_pipeline(config: Any, pipeline: Pipeline, *, stage_cache: bool = False) -> Any:
    """A copy of ``config`` whose evals ask ``pipeline`` (see the module docstring);
    ``stage_cache``: reuse unchanged stages across candidates (``--stage-cache``)."""
    from ponder.evaluate.pipeline_system import EVALUATE_KEY, PIPELINE, STAGE_CACHE_KEY

    out = copy.deepcopy(config)
    out.sections[SECTION] = pipeline.to_dict()
    out.sections["optimize"] = {**out.sections.get("optimize", {}), EVALUATE_KEY: PIPELINE,
                                STAGE_CACHE_KEY: bool(stage_cache)}
    out.origins = {k: v for k, v in out.origins.items() if not is_pipeline_key(k)}
    for key in out.sections[SECTION]:
        out.origins[f"{SECTION}.{key}"] = pipeline.origin
    return out


def pipeline_of(config: Any) -> Pipeline | None:
    """The pipeline a config's evals ask, or None."""
    from ponder.evaluate.pipeline_system import evaluates_pipeline

    if config is None or not evaluates_pipeline(config):
        return None
    return Pipeline.from_dict(config.section(SECTION), origin=config.origin("pipeline.stages"))


def pipeline_path_in(space_path: str, flag: str = "--space") -> str | None:
    """``[optimize] pipeline = "FILE"`` of a space file (relative to it), or None."""
    import tomllib

    try:
        data = tomllib.loads(Path(space_path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None  # load_space says what is wrong with the file
    value = (data.get("optimize") or {}).get("pipeline")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{space_path}: optimize.pipeline: expected the pipeline file's "
                          f"path, got {value!r}")
    path = Path(value)
    return str(path if path.is_absolute() else Path(space_path).parent / path)


# --- applying a trial's values -------------------------------------------------------------------
def apply_pipeline_values(pipeline: Pipeline, values: Sequence[tuple[str, Any]],
                          origin: str) -> Pipeline:
    """``pipeline`` with each ``(pipeline.stages.<name>.<key>…, value)`` set (the rule for a
    changed ``uses`` is in the module docstring)."""
    values = list(values)
    for dotted, value in values:
        parts = dotted.split(".")
        if len(parts) == 4 and parts[3] == "uses":
            try:
                stage = pipeline.get(parts[2])
            except PipelineError:
                break  # with_values names the unknown stage below
            if stage.uses != value and stage.settings:
                pipeline = attrs.evolve(pipeline, stages=tuple(
                    attrs.evolve(s, settings={}) if s is stage else s for s in pipeline.stages))
    return pipeline.with_values(dict(values), origin=origin)


# --- checking a variable's key ------------------------------------------------------------------
def _stage_error(text: str, stage: str) -> str:
    """The line of a pipeline check that is about ``stage``, without its file prefix."""
    lines = str(text).splitlines()
    mine = [line for line in lines if f"stage {stage!r}" in line] or lines
    line = mine[0]
    marker = f"stage {stage!r}: "
    return line.split(marker, 1)[1] if marker in line else line


def _plugin(plugins: Any, stage: Any, name: str) -> tuple[str, Any] | None:
    kinds = [stage.kind] if stage.kind else ["strategy", "predictor"]
    for kind in kinds:
        if name in plugins.registry(kind):
            return kind, plugins.get(kind, name)
    return None


def check_pipeline_key(dotted: str, probes: Sequence[Any], *, pipeline: Pipeline | None,
                       plugins: Any, base: Any, selectors: Mapping[str, Any],
                       add: Callable[[str], None],
                       probe: Callable[[Any, str, Sequence[Any], Mapping[str, Any], str],
                                       str | None]) -> tuple[str, frozenset[str]] | None:
    """Check one ``pipeline.stages.…`` key and its ``probes``; each problem goes to ``add``.
    Returns the implicit condition ``(uses variable, plugins having the setting)``, if any.

    ``selectors`` maps a ``pipeline.stages.<name>.uses`` key to the choice variable over it;
    ``probe(cls, field, values, options, what)`` says why a settings class refuses a value."""
    from ponder.pipeline.check import check_pipeline

    if pipeline is None:
        add("a pipeline.stages key needs the pipeline: give --pipeline FILE, or "
            "[optimize] pipeline = \"FILE\" in the space file")
        return None
    parts = dotted.split(".")
    if len(parts) < 4 or parts[1] != "stages":
        add(f"{dotted!r}: expected pipeline.stages.<stage>.<key>, e.g. "
            "pipeline.stages.explain.settings.fan_in")
        return None
    try:
        pipeline.value(dotted)
    except PipelineError as exc:
        add(str(exc).split("): ", 1)[-1])
        return None
    stage = pipeline.get(parts[2])
    key = parts[3]
    selector = selectors.get(f"pipeline.stages.{stage.name}.uses")
    names = list(selector.choices) if selector is not None else [stage.uses]
    requires = None
    if key == "settings":
        if len(parts) != 5:
            add(f"{dotted!r}: expected pipeline.stages.{stage.name}.settings.<setting> (one "
                "level)")
            return None
        field, having, known = parts[4], [], set()
        for name in names:
            found = _plugin(plugins, stage, str(name))
            if found is None or found[1].settings is None:
                continue  # an unknown plugin is the uses variable's own error
            fields = attrs.fields_dict(found[1].settings)
            known.update(fields)
            if field in fields:
                having.append(name)
        reach = f"the {selector.key!r} variable" if selector is not None else \
            f"stage {stage.name!r}"
        if not having:
            hint = did_you_mean(field, sorted(known))
            add(f"unknown setting {field!r} for {', '.join(map(repr, names))} (the plugin of "
                f"{reach})" + (f"; did you mean {hint!r}?" if hint else "")
                + f" (known settings: {', '.join(sorted(known)) or 'none'})")
            return None
        if selector is not None and len(having) < len(names):
            requires = (selector.key, frozenset(having))
        trials = [(name, value) for name in having for value in probes]
    elif key == "adapter" and len(parts) > 4:
        if len(parts) != 5:
            add(f"{dotted!r}: expected pipeline.stages.{stage.name}.adapter.<setting>")
            return None
        adapter = stage.adapter or base.adapter.name
        candidates = [adapter] if adapter else plugins.registry("adapter").names()
        options = dict(stage.adapter_settings) if stage.adapter else \
            dict(base.adapter.options) if adapter == base.adapter.name else {}
        options.pop(parts[4], None)
        settings = [plugins.get("adapter", a).settings for a in candidates
                    if a in plugins.registry("adapter")]
        if not any(cls is not None and parts[4] in attrs.fields_dict(cls) for cls in settings):
            known = sorted({f for cls in settings if cls is not None
                            for f in attrs.fields_dict(cls)})
            hint = did_you_mean(parts[4], known)
            whose = f"adapter {adapter!r}" if adapter else "any adapter"
            add(f"unknown setting {parts[4]!r} for {whose} (stage {stage.name!r}"
                + ("" if stage.adapter else ", the run's adapter") + ")"
                + (f"; did you mean {hint!r}?" if hint else "")
                + f" (known settings: {', '.join(known) or 'none'})")
            return None
        for cls in settings:
            if cls is not None and parts[4] in attrs.fields_dict(cls):
                reason = probe(cls, parts[4], probes, options, f"stage {stage.name!r}'s adapter")
                if reason:
                    add(reason)
                    return None
        return None
    else:
        trials = [(None, value) for value in probes]
    for name, value in trials:
        values = [(dotted, value)]
        if name is not None and name != stage.uses:
            values.insert(0, (f"pipeline.stages.{stage.name}.uses", name))
        try:
            check_pipeline(apply_pipeline_values(pipeline, values, "optimize"), plugins)
        except PipelineError as exc:
            add(f"value {value!r} does not fit stage {stage.name!r}"
                + (f" with uses = {name!r}" if name is not None and name != stage.uses else "")
                + f": {_stage_error(str(exc), stage.name)}")
            return requires
    return requires
