"""Checking a pipeline before it runs: plugins, settings, signatures, references, types, cycles.

:func:`check_pipeline` resolves a :class:`ponder.pipeline.model.Pipeline` against the loaded
plugins and returns a :class:`Plan`, or raises one :class:`PipelineError` listing every problem,
each naming the file, the stage and the key::

    pipeline.toml: stage 'explain': inputs.files: ${entrypoints.filez}: unknown field 'filez'
        of stage 'entrypoints'; did you mean 'files'? (its outputs: files, reasoning)
    pipeline.toml: stage 'explain': inputs.files: ${entrypoints.reasoning} is str, but field
        'files' of the signature is list[str]
    pipeline.toml: stages form a cycle: a -> b -> a

Nothing runs and no source is read, so ``ponder pipeline check`` is instant. The plan also knows
the stages' dependency levels (stages in one level can run at the same time) and the critical path
(the longest chain of dependent stages), which ``ponder pipeline show`` prints.
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping
from typing import Any

import attrs

from ponder.kernel.registry import did_you_mean
from ponder.pipeline.model import (
    DEFAULT_STRATEGY_SIGNATURE,
    Pipeline,
    PipelineError,
    Ref,
    Stage,
    references,
    whole_reference,
)
from ponder.signatures.parse import (
    Signature,
    SignatureError,
    assignable,
    item_type,
    parse_signature,
    type_text,
)

__all__ = ["Plan", "StagePlan", "check_file", "check_pipeline", "critical_path"]


@attrs.frozen
class StagePlan:
    """A stage resolved against the plugins."""

    stage: Stage
    kind: str  # "strategy" or "predictor"
    signature: Signature
    #: stages this one waits for (its references and ``after``)
    needs: frozenset[str]
    #: output field -> the type a reference to it has (``list[T]`` for a ``for_each`` stage)
    outputs: dict[str, Any]
    #: the plugin's validated settings instance (None when it takes none)
    settings: Any = None
    adapter_settings: Any = None

    @property
    def name(self) -> str:
        return self.stage.name


@attrs.frozen
class Plan:
    pipeline: Pipeline
    stages: dict[str, StagePlan]
    levels: list[list[str]]
    #: the pipeline inputs the stages reference (``${input.NAME}``)
    inputs: tuple[str, ...]
    #: ``(stage, field)``: the pipeline's one answer (``[pipeline] output``, else the last
    #: stage's ``answer`` or first output field); what an eval of the pipeline scores
    output: tuple[str, str] | None = None

    def dependants(self, name: str) -> list[str]:
        """Every stage that needs ``name``, directly or through others, in plan order."""
        found: set[str] = set()
        frontier = {name}
        while frontier:
            frontier = {s for s, p in self.stages.items() if p.needs & frontier} - found
            found |= frontier
        return [s for s in self.stages if s in found]


def _stage_kind(stage: Stage, plugins: Any) -> tuple[str, Any]:
    """(kind, registration) of the plugin ``stage.uses`` names."""
    from ponder.kernel.registry import RegistryError

    if stage.kind is not None:
        try:
            return stage.kind, plugins.get(stage.kind, stage.uses)
        except RegistryError as exc:
            raise PipelineError(f"{stage.where('uses')}: {exc}") from None
    found = [kind for kind in ("strategy", "predictor") if stage.uses in plugins.registry(kind)]
    if len(found) > 1:
        raise PipelineError(f"{stage.where('uses')}: {stage.uses!r} is both a strategy and a "
                            "predictor; say which with kind = \"strategy\" or \"predictor\"")
    if found:
        return found[0], plugins.get(found[0], stage.uses)
    strategies = plugins.registry("strategy").names()
    predictors = plugins.registry("predictor").names()
    close = did_you_mean(stage.uses, [*strategies, *predictors])
    hint = f"; did you mean {close!r}?" if close else ""
    raise PipelineError(f"{stage.where('uses')}: unknown plugin {stage.uses!r}{hint} "
                        f"(strategies: {', '.join(strategies)}; predictors: "
                        f"{', '.join(predictors)})")


def _settings(entry: Any, options: Mapping[str, Any], stage: Stage, key: str, what: str) -> Any:
    from ponder.kernel.config import structure_settings

    if entry.settings is None:
        if options:
            raise PipelineError(f"{stage.where(key)}: {what} takes no settings, got "
                                f"{sorted(options)}")
        return None
    return structure_settings(entry.settings, options, section=key,
                              origins={key: stage.where()})


def _signature(stage: Stage, kind: str) -> Signature:
    text = stage.signature
    if text is None:
        text = DEFAULT_STRATEGY_SIGNATURE if kind == "strategy" else \
            ", ".join(stage.inputs or ["question"]) + " -> answer"
    try:
        return parse_signature(text)
    except SignatureError as exc:
        raise PipelineError(f"{stage.where('signature')}: {exc}") from None


def _literal_type(value: Any) -> Any:
    if isinstance(value, bool):
        return bool
    if isinstance(value, (int, float, str)):
        return type(value)
    if isinstance(value, list):
        kinds = {_literal_type(item) for item in value}
        return list[kinds.pop()] if len(kinds) == 1 else list[Any]
    if isinstance(value, Mapping):
        return dict[str, Any]
    return Any


def check_pipeline(pipeline: Pipeline, plugins: Any) -> Plan:
    """Resolve ``pipeline`` against ``plugins``; raises PipelineError listing every problem."""
    problems: list[str] = []
    partial: dict[str, tuple[Stage, str, Signature, Any, Any]] = {}
    for stage in pipeline.stages:
        try:
            kind, entry = _stage_kind(stage, plugins)
            signature = _signature(stage, kind)
            settings = _settings(entry, stage.settings, stage, "settings", f"{kind} "
                                 f"{stage.uses!r}")
            adapter_settings = _check_components(stage, plugins, kind)
        except PipelineError as exc:
            problems.append(str(exc))
            continue
        except Exception as exc:  # a settings error (ConfigError) already names file and key
            problems.append(str(exc))
            continue
        partial[stage.name] = (stage, kind, signature, settings, adapter_settings)
        problems.extend(_field_problems(stage, kind, signature))

    names = [stage.name for stage in pipeline.stages]
    outputs: dict[str, dict[str, Any]] = {}
    for name, (stage, _kind, signature, _s, _a) in partial.items():
        wrap = (lambda t: list[t]) if stage.for_each else (lambda t: t)
        outputs[name] = {field.name: wrap(field.annotation) for field in signature.outputs}

    plans: dict[str, StagePlan] = {}
    for name, (stage, kind, signature, settings, adapter_settings) in partial.items():
        needs, found = _reference_problems(stage, signature, names, outputs, pipeline)
        problems.extend(found)
        plans[name] = StagePlan(stage, kind, signature, frozenset(needs), outputs[name],
                                settings, adapter_settings)

    graph = {name: set(plan.needs) for name, plan in plans.items()}
    levels: list[list[str]] = []
    try:
        sorter = graphlib.TopologicalSorter(graph)
        sorter.prepare()
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=names.index)
            levels.append(ready)
            sorter.done(*ready)
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])
        problems.append(f"{pipeline.origin}: stages form a cycle: {' -> '.join(cycle)} "
                        "(a stage cannot wait, through its references or `after`, for itself)")
    output = _output(pipeline, outputs, problems)
    if problems:
        raise PipelineError("\n".join(dict.fromkeys(problems)))
    inputs = sorted({ref.name for stage in pipeline.stages
                     for ref in references([stage.inputs, stage.for_each])
                     if ref.scope == "input"})
    return Plan(pipeline, plans, levels, tuple(inputs), output)


def _output(pipeline: Pipeline, outputs: Mapping[str, Mapping[str, Any]],
            problems: list[str]) -> tuple[str, str] | None:
    """The ``(stage, field)`` that is the pipeline's answer; a problem when ``output`` names a
    stage or field that does not exist."""
    if pipeline.output is None:
        if not pipeline.stages or pipeline.stages[-1].name not in outputs:
            return None
        last = pipeline.stages[-1].name
        fields = list(outputs[last])
        return (last, "answer" if "answer" in fields else fields[0]) if fields else None
    stage, _, field = pipeline.output.partition(".")
    names = [s.name for s in pipeline.stages]
    where = f"{pipeline.origin}: pipeline.output: {pipeline.output!r}"
    if stage not in names:
        close = did_you_mean(stage, names)
        hint = f"; did you mean {close!r}?" if close else ""
        problems.append(f"{where}: unknown stage {stage!r}{hint} (stages: {', '.join(names)})")
        return None
    fields = outputs.get(stage)
    if fields is None:  # that stage has problems of its own
        return None
    if field not in fields:
        close = did_you_mean(field, list(fields))
        hint = f"; did you mean {close!r}?" if close else ""
        problems.append(f"{where}: unknown field {field!r} of stage {stage!r}{hint} "
                        f"(its outputs: {', '.join(fields)})")
        return None
    return stage, field


def check_file(path: Any, plugins: Any) -> Plan:
    """Read the pipeline file at ``path`` and check it, listing every problem at once.

    :meth:`Pipeline.from_file` stops at the shape of the file (an unknown key, a list where a
    table goes); the stages it could read are then checked too, so one ``pipeline check`` shows
    the misspelt key *and* the unknown field three stages down, not one per round. References
    to a stage too broken to read are not reported again as unknown stages.
    """
    try:
        pipeline = Pipeline.from_file(path)
    except PipelineError as exc:
        partial = getattr(exc, "partial", None)
        if partial is None:
            raise
        try:
            check_pipeline(partial, plugins)
        except PipelineError as more:
            dropped = getattr(exc, "dropped", ())
            extra = [line for line in str(more).splitlines()
                     if not any(f"unknown stage {name!r}" in line for name in dropped)]
            raise PipelineError("\n".join([str(exc), *extra])) from None
        raise
    return check_pipeline(pipeline, plugins)


@attrs.define
class _NoSettings:
    """The fields of a plugin that takes no settings: none."""


def _check_components(stage: Stage, plugins: Any, kind: str) -> Any:
    """The stage's adapter and predictor exist; returns the adapter's validated settings."""
    from ponder.kernel.registry import RegistryError

    adapter_settings = None
    if stage.adapter is not None:
        try:
            entry = plugins.get("adapter", stage.adapter)
        except RegistryError as exc:
            raise PipelineError(f"{stage.where('adapter')}: {exc}") from None
        adapter_settings = _settings(entry, stage.adapter_settings, stage, "adapter",
                                     f"adapter {stage.adapter!r}")
    elif stage.adapter_settings:
        # settings over the run's own adapter, known only when it runs: each key must be a
        # setting of some adapter (the run's adapter validates the values then)
        registry = plugins.registry("adapter")
        known = sorted({field for name in registry.names()
                        for field in attrs.fields_dict(plugins.get("adapter", name).settings
                                                       or _NoSettings)})
        for key in stage.adapter_settings:
            if key not in known:
                close = did_you_mean(key, known)
                hint = f"; did you mean {close!r}?" if close else ""
                raise PipelineError(f"{stage.where('adapter.' + key)}: no adapter has a "
                                    f"setting {key!r}{hint}")
    if stage.predictor is not None:
        if kind == "predictor":
            raise PipelineError(f"{stage.where('predictor')}: a predictor stage runs "
                                f"{stage.uses!r} itself; `predictor` is for strategy stages")
        try:
            plugins.get("predictor", stage.predictor)
        except RegistryError as exc:
            raise PipelineError(f"{stage.where('predictor')}: {exc}") from None
    return adapter_settings


def _field_problems(stage: Stage, kind: str, signature: Signature) -> list[str]:
    """Inputs the signature lacks, and signature inputs no value is given for."""
    problems = []
    declared = [field.name for field in signature.inputs]
    if kind == "strategy" and "question" not in declared:
        problems.append(f"{stage.where('signature')}: a strategy stage answers a question "
                        f"over the sources: its signature needs the input 'question' "
                        f"(it has {', '.join(declared)})")
    for key in stage.inputs:
        if key not in declared:
            close = did_you_mean(key, declared)
            hint = f"; did you mean {close!r}?" if close else ""
            problems.append(f"{stage.where('inputs.' + key)}: the signature has no input "
                            f"{key!r}{hint} (inputs: {', '.join(declared)})")
    for field in signature.inputs:
        if field.name not in stage.inputs:
            problems.append(f"{stage.where('inputs')}: no value for the signature's input "
                            f"{field.name!r} (add inputs = {{ {field.name} = \"...\" }})")
    return problems


def _reference_problems(stage: Stage, signature: Signature, names: list[str],
                        outputs: dict[str, dict[str, Any]],
                        pipeline: Pipeline) -> tuple[set[str], list[str]]:
    """(the stages ``stage`` needs, problems with its references and their types)."""
    problems: list[str] = []
    needs: set[str] = set()
    item: Any = None

    def ref_type(ref: Ref, key: str) -> Any:
        nonlocal item
        if ref.scope == "input":
            default = pipeline.inputs.get(ref.name)
            return str if default is None else _literal_type(default)
        if ref.scope == "item":
            if stage.for_each is None:
                problems.append(f"{stage.where(key)}: {ref.text} is only defined in a stage "
                                "with for_each")
                return None
            return item
        if ref.name == stage.name:
            problems.append(f"{stage.where(key)}: {ref.text}: a stage cannot read its own "
                            "outputs")
            return None
        if ref.name not in names:
            close = did_you_mean(ref.name, names)
            hint = f"; did you mean {close!r}?" if close else ""
            problems.append(f"{stage.where(key)}: {ref.text}: unknown stage {ref.name!r}{hint} "
                            f"(stages: {', '.join(names)})")
            return None
        needs.add(ref.name)
        fields = outputs.get(ref.name)
        if fields is None:  # that stage has problems of its own, reported already
            return None
        if ref.field not in fields:
            close = did_you_mean(str(ref.field), list(fields))
            hint = f"; did you mean {close!r}?" if close else ""
            problems.append(f"{stage.where(key)}: {ref.text}: unknown field {ref.field!r} of "
                            f"stage {ref.name!r}{hint} (its outputs: {', '.join(fields)})")
            return None
        return fields[ref.field]

    if stage.for_each is not None:
        ref = whole_reference(stage.for_each)
        if ref is None:
            problems.append(f"{stage.where('for_each')}: expected one reference to a list, "
                            f"e.g. \"${{entrypoints.files}}\", got {stage.for_each!r}")
        else:
            found = ref_type(ref, "for_each")
            if found is not None:
                item = item_type(found)
                if item is None:
                    problems.append(f"{stage.where('for_each')}: {ref.text} is "
                                    f"{type_text(found)}, not a list: for_each needs a list")
    for key, value in stage.inputs.items():
        field = signature.input(key)
        ref = whole_reference(value)
        if ref is not None:
            source = ref_type(ref, f"inputs.{key}")
        else:
            for inner in references(value):
                ref_type(inner, f"inputs.{key}")
            source = str if isinstance(value, str) else _literal_type(value)
        if field is None or source is None:
            continue
        if not assignable(source, field.annotation):
            shown = ref.text if ref is not None else repr(value)
            problems.append(f"{stage.where('inputs.' + key)}: {shown} is {type_text(source)}, "
                            f"but field {key!r} of the signature is {field.type}")
    for name in stage.after:
        if name not in names:
            close = did_you_mean(name, names)
            hint = f"; did you mean {close!r}?" if close else ""
            problems.append(f"{stage.where('after')}: unknown stage {name!r}{hint}")
        elif name == stage.name:
            problems.append(f"{stage.where('after')}: a stage cannot wait for itself")
        else:
            needs.add(name)
    return needs, problems


def critical_path(plan: Plan, durations: Mapping[str, float] | None = None) -> tuple[list[str],
                                                                                      float]:
    """The longest chain of dependent stages and its length: by measured ``durations`` when
    given (seconds), else by stage count (each stage 1)."""
    weight = {name: (durations or {}).get(name, 1.0 if durations is None else 0.0)
              for name in plan.stages}
    best: dict[str, tuple[float, list[str]]] = {}
    order = list(plan.stages)
    for level in plan.levels:
        for name in level:
            needs = sorted(plan.stages[name].needs, key=order.index)  # ties: the first written
            before = max((best[n] for n in needs), key=lambda b: b[0], default=(0.0, []))
            best[name] = (before[0] + weight[name], [*before[1], name])
    if not best:
        return [], 0.0
    length, path = max(best.values(), key=lambda b: b[0])
    return path, length
