"""A variable space: the config keys an optimizer may change, their domains and conditions.

Declared in TOML, in ``[optimize.space]`` of a ponder.toml or of a file of its own, keyed by
dotted config paths::

    [optimize.space]
    "strategy.name"       = { choice = ["map_reduce", "hierarchical"] }
    "strategy.fan_in"     = { int = [2, 16], log = true, when = "strategy.name == 'map_reduce'" }
    "adapter.temperature" = { float = [0.0, 1.0], step = 0.1 }
    "predictor"           = { module = ["predict", "chain_of_thought"] }
    constraints = ["strategy.overlap_tokens <= strategy.chunk_tokens / 2"]

Every key is checked against the settings class of each plugin it can reach (the plugins a
``module`` or ``<kind>.name`` variable chooses among, else the configured one), so a typo, a
range the plugin's validator refuses or a condition over an unknown variable is an error naming
the file and the key before any trial runs: :func:`ponder.optimize.checks.load_space` reads and
checks a space file.

``Space.sample(rng)``, ``grid()``, ``validate(assignment)`` and ``to_config(assignment)``; an
assignment maps each *active* variable's key to its value (inactive conditional variables are
absent).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from ponder.errors import ConfigError
from ponder.optimize.expr import Expression
from ponder.optimize.variables import Variable

#: grid enumeration stops counting past this many points (``size`` then says "more than")
GRID_COUNT_LIMIT = 100_000
#: rejection-sampling tries before a space is declared unsatisfiable
SAMPLE_TRIES = 1000


class SpaceError(ConfigError):
    """A space that does not make sense, or an assignment outside it."""


@attrs.define
class Space:
    """Variables in dependency order (a variable comes after those its condition reads)."""

    variables: list[Variable]
    constraints: list[Expression] = attrs.field(factory=list)
    #: the config that trials start from (``to_config`` applies an assignment on top of it)
    base: Any = None
    #: where the space was read from, for messages
    source: str = "<space>"

    # --- looking ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Variable]:
        return iter(self.variables)

    def __getitem__(self, key: str) -> Variable:
        for variable in self.variables:
            if variable.key == key:
                return variable
        raise KeyError(key)

    @property
    def keys(self) -> list[str]:
        return [v.key for v in self.variables]

    @property
    def searchable(self) -> list[Variable]:
        return [v for v in self.variables if v.searchable]

    @property
    def prompt(self) -> Variable | None:
        """The ``prompt`` variable, if the space asks for prompt optimization."""
        return next((v for v in self.variables if v.type == "prompt"), None)

    @property
    def conditional(self) -> list[Variable]:
        return [v for v in self.variables if v.conditional]

    # --- sampling and enumerating -------------------------------------------------------------
    def sample(self, rng: random.Random | int | None = None) -> dict[str, Any]:
        """A random assignment honouring conditions and constraints (rejection sampling)."""
        if not isinstance(rng, random.Random):
            rng = random.Random(rng)
        for _ in range(SAMPLE_TRIES):
            assignment: dict[str, Any] = {}
            for variable in self.searchable:
                if variable.active(assignment):
                    assignment[variable.key] = variable.sample(rng)
            if self.satisfies(assignment):
                return assignment
        raise SpaceError(f"{self.source}: optimize.space: no assignment satisfying the "
                         f"constraints found in {SAMPLE_TRIES} samples")

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every grid point, conditions honoured (an inactive variable is not multiplied in)."""
        def walk(index: int, assignment: dict[str, Any]) -> Iterator[dict[str, Any]]:
            variables = self.searchable
            if index == len(variables):
                if self.satisfies(assignment):
                    yield dict(assignment)
                return
            variable = variables[index]
            if not variable.active(assignment):
                yield from walk(index + 1, assignment)
                return
            for value in variable.grid_values():
                assignment[variable.key] = value
                yield from walk(index + 1, assignment)
                del assignment[variable.key]

        yield from walk(0, {})

    def size(self) -> tuple[int, bool]:
        """``(count, exact)``: the grid's size, and whether the space is finite (no float
        without a step) and was counted to the end."""
        finite = all(v.finite_values() is not None for v in self.searchable)
        count = sum(1 for _ in itertools.islice(self.grid(), GRID_COUNT_LIMIT + 1))
        return min(count, GRID_COUNT_LIMIT), finite and count <= GRID_COUNT_LIMIT

    def satisfies(self, assignment: Mapping[str, Any]) -> bool:
        return all(c.holds(assignment) for c in self.constraints)

    # --- checking and applying ---------------------------------------------------------------
    def validate(self, assignment: Mapping[str, Any]) -> dict[str, Any]:
        """The assignment if it is a point of the space; else SpaceError listing every problem.

        Every active variable must have a value in its domain, no inactive or unknown variable
        may have one, and every constraint must hold."""
        problems: list[str] = []
        known = set(self.keys)
        for key in assignment:
            if key not in known:
                from ponder.kernel.registry import did_you_mean

                hint = did_you_mean(key, sorted(known))
                problems.append(f"{key!r} is not a variable of the space"
                                + (f"; did you mean {hint!r}?" if hint else ""))
        for variable in self.searchable:
            present = variable.key in assignment
            if variable.active(assignment):
                if not present:
                    problems.append(f"{variable.key!r} is active but has no value")
                elif not variable.contains(assignment[variable.key]):
                    problems.append(f"{variable.key!r} = {assignment[variable.key]!r} is outside "
                                    f"its domain ({variable.describe()})")
            elif present:
                problems.append(f"{variable.key!r} is set but inactive "
                                f"({variable.condition_text()} does not hold)")
        for constraint in self.constraints:
            if not constraint.holds(assignment):
                problems.append(f"constraint {constraint.text!r} does not hold")
        if problems:
            raise SpaceError(f"{self.source}: assignment: " + "; ".join(problems))
        return dict(assignment)

    def overrides(self, assignment: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """The config keys an assignment sets, ``(dotted key, value)``, composites expanded."""
        out: list[tuple[str, Any]] = []
        for variable in self.searchable:
            if variable.key not in assignment:
                continue
            value = assignment[variable.key]
            if variable.type == "composite":
                out.extend(variable.presets[value].items())
            elif variable.type == "module":
                out.append((f"{variable.kind}.name", value))
            else:
                out.append((variable.key, value))
        return out

    def to_config(self, assignment: Mapping[str, Any], *, trial: int | None = None,
                  base: Any = None) -> Any:
        """The base config with ``assignment`` applied, each value's origin
        ``optimize trial N`` (``optimize`` without a trial number)."""
        from ponder.optimize.apply import apply_overrides

        self.validate(assignment)
        origin = "optimize" if trial is None else f"optimize trial {trial}"
        return apply_overrides(base if base is not None else self.base,
                               self.overrides(assignment), origin)

    def to_dict(self) -> dict[str, Any]:
        count, exact = self.size()
        return {
            "source": self.source,
            "variables": [{"key": v.key, "type": v.type, "domain": v.describe(),
                           "condition": v.condition_text()} for v in self.variables],
            "constraints": [c.text for c in self.constraints],
            "size": count, "finite": exact,
            "conditional": [v.key for v in self.conditional],
        }

