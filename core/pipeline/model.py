"""What a pipeline is: named stages, each a strategy over the sources or a predictor over other
stages' outputs, wired by ``${...}`` references.

A pipeline comes from TOML (its own file, or ``[pipeline]`` in ponder.toml) or from code, the same
way::

    [[pipeline.stages]]
    name = "entrypoints"
    uses = "map_reduce"
    signature = "question -> files: list[str], reasoning: str"
    inputs = { question = "Which modules start the service?" }

    pipeline = (Pipeline("explain")
                .stage("entrypoints", uses="map_reduce",
                       signature="question -> files: list[str], reasoning: str",
                       inputs={"question": "Which modules start the service?"}))

A stage's keys: ``name``, ``uses`` (a strategy or predictor plugin), ``kind`` (``strategy`` or
``predictor``, only to disambiguate), ``signature`` (a signature string, see
:mod:`ponder.signatures.parse`), ``instructions``, ``inputs`` (field -> value), ``for_each`` (a
reference to a list: one run per item, ``${item}`` is the item), ``after`` (stages to wait for
without reading them), ``settings`` (the plugin's settings), ``adapter`` (a name, or a table with
``name`` and the adapter's settings; a table without ``name`` changes settings of the run's own
adapter, ``{ temperature = 0.2 }``) and ``predictor`` (the predictor a strategy stage's calls
use). The pipeline's ``output`` (``"STAGE.FIELD"``) names the one value that is *the* answer
where one answer is wanted (``ponder optimize`` scores it); by default the last stage's
``answer`` field, or its first output field.

References inside input values: ``${input.NAME}`` (a pipeline input, given with ``--input``),
``${STAGE.FIELD}`` (an output field of another stage) and ``${item}`` (the current ``for_each``
item). A value that is one reference keeps the referenced type; a string with text around its
references is a ``str``. Reading the model never touches the plugins: that is
:mod:`ponder.pipeline.check`'s job, so errors about the shape of the file come first.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ponder.errors import ConfigError
from ponder.kernel.registry import did_you_mean

__all__ = ["Pipeline", "PipelineError", "Ref", "Stage", "references", "render_template"]

STAGE_KEYS = ("name", "uses", "kind", "signature", "instructions", "inputs", "for_each", "after",
              "settings", "adapter", "predictor")
PIPELINE_KEYS = ("name", "stages", "inputs", "cache", "output")
KINDS = ("strategy", "predictor")
#: the signature of a strategy stage that does not declare one
DEFAULT_STRATEGY_SIGNATURE = "question -> answer"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REF = re.compile(r"\$\{([^}]*)\}")
_OUTPUT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\Z")


class PipelineError(ConfigError):
    """A pipeline that cannot run as written; the message names the file, stage and key."""


@attrs.frozen
class Ref:
    """One ``${...}`` reference: ``input.NAME``, ``STAGE.FIELD`` or ``item``."""

    scope: str  # "input", "stage" or "item"
    name: str  # the input's name, the stage's name, or "item"
    field: str | None = None  # the stage's output field
    text: str = ""

    @property
    def stage(self) -> str | None:
        return self.name if self.scope == "stage" else None


def references(value: Any) -> list[Ref]:
    """Every reference in a value (strings, and lists or tables of them)."""
    if isinstance(value, str):
        return [_parse_ref(match.group(1), match.group(0)) for match in _REF.finditer(value)]
    if isinstance(value, Mapping):
        return [ref for item in value.values() for ref in references(item)]
    if isinstance(value, (list, tuple)):
        return [ref for item in value for ref in references(item)]
    return []


def _parse_ref(body: str, text: str) -> Ref:
    parts = body.strip().split(".")
    if parts == ["item"]:
        return Ref("item", "item", None, text)
    if len(parts) != 2 or not all(_NAME.match(part) for part in parts):
        raise ValueError(f"{text}: a reference is ${{input.NAME}}, ${{STAGE.FIELD}} or ${{item}}")
    if parts[0] == "input":
        return Ref("input", parts[1], None, text)
    return Ref("stage", parts[0], parts[1], text)


def whole_reference(value: Any) -> Ref | None:
    """The reference when ``value`` is exactly one ``${...}`` (it keeps the referenced type)."""
    if isinstance(value, str):
        match = _REF.fullmatch(value.strip())
        if match:
            return _parse_ref(match.group(1), match.group(0))
    return None


def render_template(value: Any, resolve: Any) -> Any:
    """``value`` with each reference replaced by ``resolve(ref)``: a whole reference keeps the
    value's type; references inside text are written into it (lists joined by newlines)."""
    ref = whole_reference(value)
    if ref is not None:
        return resolve(ref)
    if isinstance(value, str):
        def text(match: re.Match[str]) -> str:
            found = resolve(_parse_ref(match.group(1), match.group(0)))
            if isinstance(found, (list, tuple)):
                return "\n".join(str(item) for item in found)
            return str(found)

        return _REF.sub(text, value)
    if isinstance(value, Mapping):
        return {key: render_template(item, resolve) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [render_template(item, resolve) for item in value]
    return value


@attrs.frozen
class Stage:
    """One stage as written (plugin names are checked by :mod:`ponder.pipeline.check`)."""

    name: str
    uses: str
    kind: str | None = None
    signature: str | None = None
    instructions: str | None = None
    inputs: dict[str, Any] = attrs.field(factory=dict)
    for_each: str | None = None
    after: tuple[str, ...] = ()
    settings: dict[str, Any] = attrs.field(factory=dict)
    adapter: str | None = None
    adapter_settings: dict[str, Any] = attrs.field(factory=dict)
    predictor: str | None = None
    #: where the stage was written (a file, ``code``), for error messages; not part of equality
    origin: str = attrs.field(default="code", eq=False)

    def where(self, key: str | None = None) -> str:
        """``pipeline.toml: stage 'explain': inputs.files`` (the prefix of this stage's errors)."""
        return f"{self.origin}: stage {self.name!r}" + (f": {key}" if key else "")

    def config_dict(self) -> dict[str, Any]:
        """The stage as plain data, the way TOML would write it (empty keys left out)."""
        data: dict[str, Any] = {"name": self.name, "uses": self.uses}
        for key in ("kind", "signature", "instructions", "for_each", "predictor"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.inputs:
            data["inputs"] = dict(self.inputs)
        if self.after:
            data["after"] = list(self.after)
        if self.settings:
            data["settings"] = dict(self.settings)
        if self.adapter is not None:
            data["adapter"] = ({"name": self.adapter, **self.adapter_settings}
                               if self.adapter_settings else self.adapter)
        elif self.adapter_settings:  # settings over the run's own adapter
            data["adapter"] = dict(self.adapter_settings)
        return data

    @classmethod
    def from_table(cls, table: Any, *, origin: str, index: int) -> Stage:
        """A stage from one ``[[pipeline.stages]]`` table; shape errors name file, stage, key."""
        if not isinstance(table, Mapping):
            raise PipelineError(f"{origin}: pipeline.stages[{index}]: expected a table "
                                f"([[pipeline.stages]]), got {table!r}")
        name = table.get("name")
        label = f"{origin}: pipeline.stages[{index}]"
        if not isinstance(name, str) or not _NAME.match(name):
            raise PipelineError(f"{label}: name: a stage needs a name of letters, digits and "
                                f"underscores, got {name!r}")
        where = f"{origin}: stage {name!r}"
        problems = []
        for key in table:
            if key not in STAGE_KEYS:
                close = did_you_mean(str(key), STAGE_KEYS)
                hint = f"; did you mean {close!r}?" if close else ""
                problems.append(f"{where}: {key}: unknown key{hint} "
                                f"(known keys: {', '.join(STAGE_KEYS)})")
        uses = table.get("uses")
        if not isinstance(uses, str) or not uses:
            problems.append(f"{where}: uses: name the strategy or predictor this stage runs, "
                            f"got {uses!r}")
        kind = table.get("kind")
        if kind is not None and kind not in KINDS:
            problems.append(f"{where}: kind: expected 'strategy' or 'predictor', got {kind!r}")
        for key in ("signature", "instructions", "for_each", "predictor"):
            if table.get(key) is not None and not isinstance(table[key], str):
                problems.append(f"{where}: {key}: expected a string, got {table[key]!r}")
        for key in ("inputs", "settings"):
            if not isinstance(table.get(key, {}), Mapping):
                problems.append(f"{where}: {key}: expected a table, got {table[key]!r}")
        after = table.get("after", [])
        if isinstance(after, str):
            after = [after]
        if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
            problems.append(f"{where}: after: expected a list of stage names, got {after!r}")
            after = []
        adapter, adapter_settings = table.get("adapter"), {}
        if isinstance(adapter, Mapping):
            # without a name: these settings over the run's own adapter (an optimizer's
            # ``pipeline.stages.<name>.adapter.temperature`` on a stage that names none)
            adapter_settings = {k: v for k, v in adapter.items() if k != "name"}
            adapter = adapter.get("name")
            if adapter is not None and not isinstance(adapter, str):
                problems.append(f"{where}: adapter.name: expected an adapter name, got "
                                f"{adapter!r}")
                adapter = None
        elif adapter is not None and not isinstance(adapter, str):
            problems.append(f"{where}: adapter: expected an adapter name or a table "
                            f"{{ name = ..., <settings> }}, got {adapter!r}")
        for key in ("inputs", "for_each"):
            try:
                references(table.get(key))
            except ValueError as exc:
                problems.append(f"{where}: {key}: {exc}")
        unknown_keys = sum(key not in STAGE_KEYS for key in table)
        if problems and len(problems) > unknown_keys:
            raise PipelineError("\n".join(problems))
        stage = cls(name=name, uses=uses, kind=kind, signature=table.get("signature"),
                    instructions=table.get("instructions"),
                    inputs=dict(table.get("inputs", {})), for_each=table.get("for_each"),
                    after=tuple(after), settings=dict(table.get("settings", {})),
                    adapter=adapter, adapter_settings=dict(adapter_settings),
                    predictor=table.get("predictor"), origin=origin)
        if problems:  # only unknown keys: the error carries the stage the other keys describe
            error = PipelineError("\n".join(problems))
            error.stage = stage  # type: ignore[attr-defined]
            raise error
        return stage


@attrs.frozen
class Pipeline:
    """Stages plus the pipeline's own settings; immutable (``stage`` returns a new one)."""

    name: str = "pipeline"
    stages: tuple[Stage, ...] = ()
    #: pipeline inputs and their defaults (``${input.NAME}``; None: required)
    inputs: dict[str, Any] = attrs.field(factory=dict)
    #: reuse a stage's stored result when its config and inputs are unchanged
    cache: bool = True
    #: ``"STAGE.FIELD"``: the pipeline's one answer (None: see :meth:`output_field`)
    output: str | None = None
    origin: str = attrs.field(default="code", eq=False)

    # --- building in code ------------------------------------------------------------------
    def stage(self, name: str, *, uses: str, **keys: Any) -> Pipeline:
        """This pipeline with one more stage; keys are the TOML keys (``for_each``, ``after``…)."""
        stage = Stage.from_table({"name": name, "uses": uses, **keys}, origin=self.origin,
                                 index=len(self.stages))
        if any(s.name == name for s in self.stages):
            raise PipelineError(f"{self.origin}: stage {name!r}: name: a stage of that name "
                                "exists already")
        return attrs.evolve(self, stages=(*self.stages, stage))

    def input(self, name: str, default: Any = None) -> Pipeline:
        return attrs.evolve(self, inputs={**self.inputs, name: default})

    def get(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        close = did_you_mean(name, [s.name for s in self.stages])
        hint = f"; did you mean {close!r}?" if close else ""
        raise PipelineError(f"{self.origin}: unknown stage {name!r}{hint} "
                            f"(stages: {', '.join(s.name for s in self.stages) or 'none'})")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        if self.inputs:
            data["inputs"] = dict(self.inputs)
        if not self.cache:
            data["cache"] = False
        if self.output is not None:
            data["output"] = self.output
        data["stages"] = [stage.config_dict() for stage in self.stages]
        return data

    def to_toml(self) -> str:
        """The pipeline as a TOML file that :meth:`from_file` reads back to an equal pipeline."""
        from ponder.kernel.render import toml_key, toml_value

        lines = ["[pipeline]", f"name = {toml_value(self.name)}"]
        if not self.cache:
            lines.append("cache = false")
        if self.output is not None:
            lines.append(f"output = {toml_value(self.output)}")
        if self.inputs:
            lines.append(f"inputs = {toml_value({k: v for k, v in self.inputs.items()})}")
        for stage in self.stages:
            lines += ["", "[[pipeline.stages]]"]
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in stage.config_dict().items()]
        return "\n".join(lines) + "\n"

    # --- reading -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "code") -> Pipeline:
        """From a ``[pipeline]`` table (``stages`` a list of stage tables)."""
        problems = []
        for key in data:
            if key not in PIPELINE_KEYS:
                close = did_you_mean(str(key), PIPELINE_KEYS)
                hint = f"; did you mean {close!r}?" if close else ""
                problems.append(f"{origin}: pipeline.{key}: unknown key{hint} "
                                f"(known keys: {', '.join(PIPELINE_KEYS)})")
        raw_stages = data.get("stages")
        if not isinstance(raw_stages, list) or not raw_stages:
            problems.append(f"{origin}: pipeline.stages: a pipeline needs at least one stage "
                            "([[pipeline.stages]] tables)")
            raw_stages = []
        inputs = data.get("inputs", {})
        if not isinstance(inputs, Mapping):
            problems.append(f"{origin}: pipeline.inputs: expected a table of input defaults")
            inputs = {}
        cache = data.get("cache", True)
        if not isinstance(cache, bool):
            problems.append(f"{origin}: pipeline.cache: expected true or false, got {cache!r}")
        output = data.get("output")
        if output is not None and not (isinstance(output, str) and _OUTPUT.match(output)):
            problems.append(f"{origin}: pipeline.output: expected \"STAGE.FIELD\" (the stage "
                            f"output that is the pipeline's answer), got {output!r}")
            output = None
        stages: list[Stage] = []
        dropped: list[str] = []  # stages too broken to check further
        seen: set[str] = set()
        for index, table in enumerate(raw_stages):
            try:
                stage = Stage.from_table(table, origin=origin, index=index)
            except PipelineError as exc:
                problems.append(str(exc))
                stage = getattr(exc, "stage", None)
                if stage is None:
                    if isinstance(table, Mapping) and isinstance(table.get("name"), str):
                        dropped.append(table["name"])
                    continue
            if stage.name in seen:
                problems.append(f"{origin}: stage {stage.name!r}: name: two stages have this name")
            seen.add(stage.name)
            stages.append(stage)
        name = data.get("name")
        pipeline = cls(name=str(name) if name else Path(origin).stem if origin != "code" else
                       "pipeline", stages=tuple(stages),
                       inputs=dict(inputs) if isinstance(inputs, Mapping) else {},
                       cache=bool(cache), output=output, origin=origin)
        if problems:
            # the stages that could be read ride along, so that a check can list their
            # problems too (:func:`ponder.pipeline.check.check_file`): one round of fixes
            error = PipelineError("\n".join(problems))
            error.partial = pipeline if stages else None  # type: ignore[attr-defined]
            error.dropped = tuple(dropped)  # type: ignore[attr-defined]
            raise error
        return pipeline

    @classmethod
    def from_file(cls, path: str | Path) -> Pipeline:
        """Read a pipeline file: ``[pipeline]`` with ``[[pipeline.stages]]`` (its own file or a
        ponder.toml), or bare ``[[stages]]`` at the top."""
        display = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PipelineError(f"{display}: pipeline file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise PipelineError(f"{display}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise PipelineError(f"{display}: cannot read the pipeline file: {exc.strerror}") \
                from None
        table = data.get("pipeline")
        if table is None and "stages" in data:
            table = {key: value for key, value in data.items() if key in PIPELINE_KEYS}
        if not isinstance(table, Mapping):
            raise PipelineError(f"{display}: no pipeline here: write [[pipeline.stages]] tables")
        return cls.from_dict(table, origin=display)

    @classmethod
    def from_config(cls, config: Any) -> Pipeline:
        """The ``[pipeline]`` section of a loaded :class:`ponder.kernel.config.Config`."""
        table = config.section("pipeline")
        if not table:
            raise PipelineError("no [pipeline] section in the configuration "
                                f"({', '.join(config.files) or 'no config file'})")
        return cls.from_dict(table, origin=config.origin("pipeline.stages"))

    def with_value(self, dotted: str, value: Any, *, origin: str | None = None) -> Pipeline:
        """This pipeline with one key changed: ``pipeline.stages.<name>.<key>[.<subkey>…]``
        (the ``pipeline.`` prefix is optional). This is how an optimizer's space addresses a
        stage: ``with_value("pipeline.stages.entrypoints.settings.fan_in", 8)``.

        The new stage goes through the same reading as a file's (a key that is not a stage key
        is refused here, naming this call); its plugin settings are checked by
        :func:`ponder.pipeline.check.check_pipeline`, which a caller runs on the result, as for
        any pipeline, before running it. ``origin`` names the caller in those errors instead
        of this call (``"optimize trial 7: pipeline.stages.entrypoints.settings.fan_in"``).
        """
        call = origin or f"Pipeline.with_value({dotted!r})"
        stage, path = self._address(dotted, call)
        table = stage.config_dict()
        if path[0] == "adapter" and len(path) > 1 and not isinstance(table.get("adapter"), dict):
            # one adapter setting: over the named adapter, or over the run's own (no name)
            named = table.get("adapter")
            table["adapter"] = {"name": named} if isinstance(named, str) else {}
        node = table
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise PipelineError(f"{call}: {part} of stage {stage.name!r} is not a table")
        node[path[-1]] = value
        # the stage's errors (its settings, checked later) name the file and this call
        where = f"{self.origin}, {call}"  # the file (or code), then who changed the stage
        try:
            new = Stage.from_table(table, origin=where, index=self.stages.index(stage))
        except PipelineError as exc:
            raise PipelineError(f"{call}: {exc}") from None
        return attrs.evolve(self, stages=tuple(new if s is stage else s for s in self.stages))

    def with_values(self, values: Mapping[str, Any], *, origin: str | None = None) -> Pipeline:
        """:meth:`with_value` for each ``dotted -> value`` (one optimizer trial's choices);
        ``origin`` (``"optimize trial 7"``) is followed by the key in each error."""
        pipeline = self
        for dotted, value in values.items():
            pipeline = pipeline.with_value(dotted, value,
                                           origin=f"{origin}: {dotted}" if origin else None)
        return pipeline

    def value(self, dotted: str, default: Any = None) -> Any:
        """The current value at ``pipeline.stages.<name>.<key>…`` (``default`` when unset): an
        optimizer's baseline for that key."""
        stage, path = self._address(dotted, f"Pipeline.value({dotted!r})")
        node: Any = stage.config_dict()
        for part in path:
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def _address(self, dotted: str, call: str) -> tuple[Stage, list[str]]:
        parts = dotted.removeprefix("pipeline.").split(".")
        if len(parts) < 3 or parts[0] != "stages" or not all(parts):
            raise PipelineError(f"{call}: expected pipeline.stages.<stage>.<key>, e.g. "
                                "pipeline.stages.entrypoints.settings.fan_in")
        try:
            stage = self.get(parts[1])
        except PipelineError as exc:
            raise PipelineError(f"{call}: {str(exc).removeprefix(self.origin + ': ')}") \
                from None
        if parts[2] not in STAGE_KEYS or parts[2] == "name":
            close = did_you_mean(parts[2], STAGE_KEYS)
            hint = f"; did you mean {close!r}?" if close else ""
            raise PipelineError(f"{call}: {parts[2]!r} is not a stage key that can change{hint} "
                                f"(keys: {', '.join(k for k in STAGE_KEYS if k != 'name')})")
        return stage, parts[2:]


def literal_inputs(pairs: Sequence[str]) -> dict[str, str]:
    """``--input question="…"`` values as a dict; a bad one is a ConfigError naming the flag."""
    values: dict[str, str] = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not _NAME.match(key.strip()):
            raise ConfigError(f"--input {text!r}: expected NAME=VALUE, e.g. "
                              "--input question=\"What starts the service?\"")
        values[key.strip()] = value
    return values
