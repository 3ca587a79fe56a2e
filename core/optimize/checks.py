"""Reading a space (:func:`load_space`) and checking it against the plugins' settings classes.

Why check against the settings classes rather than a list of known keys: the plugins own their
settings (a third-party strategy's ``window`` is as searchable as ``map_reduce``'s ``fan_in``),
and their attrs validators already say which values are legal. So a variable over
``strategy.fan_in = { int = [1, 16] }`` is probed by structuring ``MapReduceSettings`` with
``fan_in = 1`` and ``fan_in = 16``; the validator's refusal becomes the space's error, naming
the space file and the key, before a single trial is paid for.

Which plugins a key reaches: for ``<kind>.<field>``, the plugins a ``module`` variable over the
kind (or a ``choice`` over ``<kind>.name``) chooses among, else the configured plugin, else
(nothing configured, e.g. an adapter picked at run time) every registered plugin of the kind.
The field must exist in at least one of them; when it exists in only some, the variable is
active only while one of those is chosen. A ``pipeline.stages.<name>.<key>`` key is checked
against the study's pipeline the same way (:mod:`ponder.optimize.pipeline_space`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ponder.errors import ConfigError
from ponder.kernel.config import KERNEL_SECTIONS, structure_settings
from ponder.kernel.hookspecs import KINDS
from ponder.kernel.registry import did_you_mean
from ponder.optimize import expr
from ponder.optimize.space import Space, SpaceError
from ponder.optimize.variables import TYPES, Variable

OPTIONS = ("step", "log", "when")


def load_space(path: str | Path, *, plugins: Any = None, base: Any = None) -> Space:
    """Read the space in ``path``: its ``[optimize.space]`` table (and ``[optimize]
    constraints``), checked against ``plugins``' settings classes."""
    display = str(path)
    try:
        with Path(path).open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise SpaceError(f"{display}: space file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"{display}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise SpaceError(f"{display}: cannot read the space file: {exc.strerror}") from None
    return space_from_data(data, source=display, plugins=plugins, base=base)


def space_from_data(data: Mapping[str, Any], *, source: str, plugins: Any = None,
                    base: Any = None) -> Space:
    """The space of a parsed TOML document (a ponder.toml or a space file of its own)."""
    optimize = data.get("optimize")
    if not isinstance(optimize, Mapping) or not isinstance(optimize.get("space"), Mapping):
        raise SpaceError(f"{source}: no [optimize.space] table (declare the variables there, "
                         f"e.g. \"adapter.temperature\" = {{ float = [0.0, 1.0] }})")
    return build_space(optimize["space"], source=source, plugins=plugins, base=base,
                       extra_constraints=optimize.get("constraints"))


class _Errors:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        where = f"optimize.space.{_quote(key)}" if key else "optimize.space"
        self.items.append(f"{self.source}: {where}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise SpaceError("\n".join(self.items))


def _quote(key: str) -> str:
    return f'"{key}"' if "." in key else key


def build_space(table: Mapping[str, Any], *, source: str = "<space>", plugins: Any = None,
                base: Any = None, extra_constraints: Any = None) -> Space:
    """Build and check a space from an ``[optimize.space]`` table."""
    from ponder.kernel.config import Config

    base = base if base is not None else Config()
    errors = _Errors(source)
    raw_constraints: list[Any] = []
    variables: dict[str, Variable] = {}
    for key, spec in table.items():
        if key == "constraints":
            raw_constraints.extend(spec if isinstance(spec, list) else [spec])
            continue
        variable = _parse_variable(str(key), spec, errors)
        if variable is not None:
            variables[variable.key] = variable
    if extra_constraints is not None:
        raw_constraints.extend(extra_constraints if isinstance(extra_constraints, list)
                               else [extra_constraints])
    constraints = []
    for text in raw_constraints:
        try:
            constraint = expr.parse(text)
        except expr.ExprError as exc:
            errors.add("constraints", f"{text!r}: {exc}")
            continue
        _check_names(constraint, variables, "constraints", errors, text)
        constraints.append(constraint)
    for variable in list(variables.values()):
        if variable.when is not None:
            _check_names(variable.when, variables, variable.key, errors, variable.when.text)
    if not any(key != "constraints" for key in table):
        errors.add("", "the space has no variables")
    if plugins is not None:  # every problem in one message: the shape's and the plugins'

        variables = _check_against_plugins(variables, plugins, base, errors)
    errors.raise_if_any()
    ordered = _dependency_order(variables, errors)
    errors.raise_if_any()
    return Space(ordered, constraints, base=base, source=source)


def _check_names(expression: Any, variables: Mapping[str, Variable], key: str,
                 errors: _Errors, text: str) -> None:
    for name in sorted(expression.names):
        if name not in variables:
            hint = did_you_mean(name, sorted(variables))
            errors.add(key, f"condition {text!r} names unknown variable {name!r}"
                       + (f"; did you mean {hint!r}?" if hint else "")
                       + f" (variables: {', '.join(sorted(variables))})")


# --- one variable ------------------------------------------------------------------------------
def _parse_variable(key: str, spec: Any, errors: _Errors) -> Variable | None:
    if not isinstance(spec, Mapping):
        errors.add(key, f"expected a table such as {{ float = [0.0, 1.0] }}, got {spec!r}")
        return None
    types = [t for t in TYPES if t in spec]
    unknown = [k for k in spec if k not in TYPES and k not in OPTIONS]
    for name in unknown:
        hint = did_you_mean(name, [*TYPES, *OPTIONS])
        errors.add(key, f"unknown option {name!r}" + (f"; did you mean {hint!r}?" if hint else "")
                   + f" (types: {', '.join(TYPES)}; options: {', '.join(OPTIONS)})")
    if len(types) != 1:
        errors.add(key, f"give exactly one type of {', '.join(TYPES)}"
                   + (f", got {', '.join(types)}" if types else ""))
        return None
    kind = types[0]
    when = None
    if "when" in spec:
        try:
            when = expr.parse(spec["when"])
        except expr.ExprError as exc:
            errors.add(key, f"when {spec['when']!r}: {exc}")
            return None
    log = spec.get("log", False)
    if not isinstance(log, bool):
        errors.add(key, f"log: expected true or false, got {log!r}")
        return None
    step = spec.get("step")
    value = spec[kind]
    if kind in ("float", "int"):
        return _range_variable(key, kind, value, step, log, when, errors)
    if step is not None or log:
        errors.add(key, f"step and log apply to float and int variables, not {kind}")
    if kind == "choice":
        if not isinstance(value, list) or not value:
            errors.add(key, "empty choice: list at least one value" if value == [] else
                       f"choice: expected a list of values, got {value!r}")
            return None
        if len({repr(v) for v in value}) != len(value):
            errors.add(key, f"choice lists a value twice: {value!r}")
        return Variable(key, "choice", choices=tuple(value), when=when)
    if kind == "module":
        section = key.split(".")[0]
        if key not in KINDS:
            errors.add(key, f"a module variable is keyed by a component kind "
                       f"({', '.join(KINDS)}), not {key!r}")
            return None
        if not isinstance(value, list) or not value or \
                not all(isinstance(v, str) for v in value):
            errors.add(key, "empty choice: list at least one plugin name" if value == [] else
                       f"module: expected a list of plugin names, got {value!r}")
            return None
        return Variable(key, "module", choices=tuple(value), kind=section, when=when)
    if kind == "composite":
        if not isinstance(value, Mapping) or not value or \
                not all(isinstance(p, Mapping) and p for p in value.values()):
            errors.add(key, "composite: expected named presets, each a table of config keys, "
                       "e.g. { fast = { \"strategy.name\" = \"direct\" } }")
            return None
        return Variable(key, "composite", presets={str(n): dict(p) for n, p in value.items()},
                        when=when)
    if not isinstance(value, str) or not value:  # prompt
        errors.add(key, f"prompt: expected the prompt optimizer's name, got {value!r}")
        return None
    if not key.startswith("predictor"):
        errors.add(key, "a prompt variable is keyed under the predictor (e.g. "
                   "\"predictor.prompt\")")
        return None
    return Variable(key, "prompt", optimizer=value, when=when)


def _range_variable(key: str, kind: str, value: Any, step: Any, log: bool, when: Any,
                    errors: _Errors) -> Variable | None:
    number = (int,) if kind == "int" else (int, float)
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(x, number) and not isinstance(x, bool) for x in value)):
        noun = "integers" if kind == "int" else "numbers"
        errors.add(key, f"{kind}: expected [min, max] of {noun}, got {value!r}")
        return None
    low, high = value
    if low > high:
        errors.add(key, f"min > max: {low!r} > {high!r}")
        return None
    if step is not None and (not isinstance(step, number) or isinstance(step, bool)
                             or step <= 0):
        noun = "integer" if kind == "int" else "number"
        errors.add(key, f"step: expected a positive {noun}, got {step!r}")
        return None
    if log and low <= 0:
        errors.add(key, f"log scale needs min > 0, got {low!r}")
        return None
    if kind == "float":
        low, high = float(low), float(high)
    return Variable(key, kind, low=low, high=high, step=step, log=log, when=when)


# --- against the plugins --------------------------------------------------------------------------
def _selector(section: str, variables: Mapping[str, Variable]) -> Variable | None:
    for key in (section, f"{section}.name"):
        variable = variables.get(key)
        if variable is not None and variable.type in ("module", "choice"):
            return variable
    return None


def _probes(variable: Variable) -> list[Any]:
    if variable.type == "choice":
        return list(variable.choices)
    return [variable.low, variable.high]


def _check_against_plugins(variables: dict[str, Variable], plugins: Any, base: Any,
                           errors: _Errors) -> dict[str, Variable]:
    from ponder.kernel.registry import RegistryError

    out = dict(variables)
    for key, variable in variables.items():
        section = key.split(".")[0]
        if variable.type == "module" or (key == f"{section}.name" and section in KINDS):
            for name in variable.choices:
                try:
                    plugins.get(section, name)
                except RegistryError as exc:
                    errors.add(key, str(exc))
            continue
        if variable.type == "prompt":
            try:
                plugins.get("optimizer", variable.optimizer)
            except RegistryError as exc:
                errors.add(key, str(exc))
            from ponder.optimize.pipeline_space import pipeline_of

            if pipeline_of(base) is not None:
                errors.add(key, "a prompt variable does not reach a pipeline's stages yet "
                           "(optimize the stages' settings, uses, adapter, instructions)")
            continue
        if variable.type == "composite":
            for preset, values in variable.presets.items():
                for dotted, value in values.items():
                    _check_key(f"{key}.{preset}", dotted, [value], variables, plugins, base,
                               errors)
            continue
        requires = _check_key(key, key, _probes(variable), variables, plugins, base, errors)
        if requires is not None:
            out[key] = attrs.evolve(variable, requires=requires)
    return out


def _check_key(label: str, dotted: str, probes: list[Any], variables: Mapping[str, Variable],
               plugins: Any, base: Any, errors: _Errors) -> tuple[str, frozenset[str]] | None:
    """Check ``dotted`` exists and accepts ``probes``; the implicit condition, if any."""
    from ponder.kernel.config import SUBSYSTEM_SECTIONS

    parts = dotted.split(".")
    section = parts[0]
    if section == "pipeline":
        from ponder.optimize.pipeline_space import check_pipeline_key, pipeline_of

        selectors = {k: v for k, v in variables.items()
                     if k.startswith("pipeline.stages.") and k.endswith(".uses")
                     and v.type == "choice"}
        return check_pipeline_key(dotted, probes, pipeline=pipeline_of(base), plugins=plugins,
                                  base=base, selectors=selectors,
                                  add=lambda message: errors.add(label, message),
                                  probe=_refusal)
    if section in KERNEL_SECTIONS:
        if len(parts) != 2:
            errors.add(label, f"{dotted!r}: expected {section}.<setting>")
            return None
        _probe(label, KERNEL_SECTIONS[section], section, parts[1], probes, {}, errors,
               what=f"[{section}]")
        return None
    if section == "adapters" and len(parts) == 3:
        entry = _entry(label, plugins, "adapter", parts[1], errors)
        if entry is not None:
            _probe(label, entry.settings, f"adapters.{parts[1]}", parts[2], probes, {},
                   errors, what=f"adapter {parts[1]!r}")
        return None
    if section not in KINDS:
        known = [*KERNEL_SECTIONS, *KINDS, "adapters", "pipeline"]
        hint = did_you_mean(section, known)
        why = " (subsystem sections other than pipeline are not searchable)" \
            if section in SUBSYSTEM_SECTIONS else ""
        errors.add(label, f"unknown section {section!r}{why}"
                   + (f"; did you mean {hint!r}?" if hint else "")
                   + f" (searchable: {', '.join(known)})")
        return None
    if len(parts) != 2:
        errors.add(label, f"{dotted!r}: expected {section}.<setting> (one level)")
        return None
    field = parts[1]
    selector = _selector(section, variables)
    configured = base.component(section).name
    if selector is not None:
        names, reach = list(selector.choices), f"the {selector.key!r} variable"
    elif configured is not None:
        names, reach = [configured], f"{section}.name (configured)"
    else:
        names, reach = plugins.registry(section).names(), f"every {section} plugin"
    having: list[str] = []
    known_fields: set[str] = set()
    for name in names:
        entry = _entry(label, plugins, section, name, errors)
        if entry is None or entry.settings is None:
            continue
        fields = attrs.fields_dict(entry.settings)
        known_fields.update(fields)
        if field in fields:
            having.append(name)
            options = base.component(section).options if name == configured else {}
            options = {k: v for k, v in options.items() if k != field}
            _probe(label, entry.settings, section, field, probes, options, errors,
                   what=f"{section} {name!r}")
    if not having:
        hint = did_you_mean(field, sorted(known_fields))
        errors.add(label, f"unknown key {field!r} for {', '.join(map(repr, names))} "
                   f"(reached through {reach})"
                   + (f"; did you mean {hint!r}?" if hint else "")
                   + f" (known keys: {', '.join(sorted(known_fields)) or 'none'})")
        return None
    if selector is not None and len(having) < len(names):
        return selector.key, frozenset(having)
    return None


def _entry(label: str, plugins: Any, kind: str, name: str, errors: _Errors) -> Any:
    from ponder.kernel.registry import RegistryError

    try:
        return plugins.get(kind, name)
    except RegistryError as exc:
        errors.add(label, str(exc))
        return None


def _probe(label: str, cls: Any, section: str, field: str, probes: list[Any],
           options: Mapping[str, Any], errors: _Errors, *, what: str) -> None:
    if cls is None or field not in attrs.fields_dict(cls):
        known = sorted(attrs.fields_dict(cls)) if cls is not None else []
        hint = did_you_mean(field, known)
        errors.add(label, f"unknown key {field!r} for {what}"
                   + (f"; did you mean {hint!r}?" if hint else "")
                   + f" (known keys: {', '.join(known) or 'none'})")
        return
    reason = _refusal(cls, field, probes, options, what, section=section)
    if reason:
        errors.add(label, reason)


def _refusal(cls: Any, field: str, probes: Any, options: Mapping[str, Any], what: str, *,
             section: str = "settings") -> str | None:
    """Why settings class ``cls`` refuses one of ``probes`` for ``field`` (None: it takes
    them all), in the words of the plugin's own validator."""
    for value in probes:
        try:
            structure_settings(cls, {**options, field: value}, section=section)
        except ConfigError as exc:  # the plugin's own validator (or type) refused the value
            # only this field's complaint counts: another field may lack a value here
            lines = [line for line in str(exc).splitlines() if f"{section}.{field}:" in line]
            if lines:
                reason = lines[0].split(f"{section}.{field}:", 1)[-1].strip()
                return f"value {value!r} is outside what {what} accepts for {field!r}: {reason}"
    return None


def _dependency_order(variables: Mapping[str, Variable], errors: _Errors) -> list[Variable]:
    """Variables ordered so each comes after those its condition reads; a cycle is an error."""
    ordered: list[Variable] = []
    state: dict[str, str] = {}

    def visit(key: str, path: tuple[str, ...]) -> None:
        if state.get(key) == "done":
            return
        if state.get(key) == "visiting":
            errors.add(key, "conditions form a cycle: " + " -> ".join((*path, key)))
            return
        state[key] = "visiting"
        for dependency in sorted(variables[key].depends_on()):
            if dependency in variables:
                visit(dependency, (*path, key))
        state[key] = "done"
        ordered.append(variables[key])

    for key in variables:
        visit(key, ())
    return ordered
