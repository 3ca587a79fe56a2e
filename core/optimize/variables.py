"""The typed variables of a space: their domains, how each is sampled and laid on a grid.

A variable is keyed by a dotted config path (``strategy.fan_in``), except a ``composite``, whose
key is a label and whose value names a preset that sets several config keys together. A
``module`` variable chooses a plugin of a kind (``adapter``, ``predictor``, …); the variables
over that kind's settings are then active only while a plugin having that setting is chosen
(``requires``). ``when`` is an explicit condition (:mod:`ponder.optimize.expr`).

Grid points (``grid()``): every choice; an ``int`` every ``step`` from ``low`` to ``high``; a
``float`` every ``step``, or :data:`FLOAT_GRID_POINTS` points (log-spaced with ``log = true``)
when it has no step. Sampling is uniform (log-uniform with ``log``), rounded to the step.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import attrs

from ponder.optimize.expr import Expression

#: kinds of variable, in the order ``ponder optimize space`` explains them
TYPES: tuple[str, ...] = ("float", "int", "choice", "module", "composite", "prompt")
#: points of a float with no step on a grid
FLOAT_GRID_POINTS = 5
#: an int range with more values than this and no step is not put on a grid whole
INT_GRID_LIMIT = 64


@attrs.frozen
class Variable:
    """One searchable setting. ``values`` of a finite variable; ``low``/``high`` of a range."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    #: composite: preset name -> {dotted config key: value}
    presets: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: module: the kind whose plugin it chooses; prompt: the prompt optimizer's name
    kind: str | None = None
    optimizer: str | None = None
    when: Expression | None = None
    #: (selector variable, plugin names having this setting): active only for those plugins
    requires: tuple[str, frozenset[str]] | None = None

    @property
    def conditional(self) -> bool:
        return self.when is not None or self.requires is not None

    @property
    def searchable(self) -> bool:
        """A prompt variable is optimized by a prompt optimizer, not sampled."""
        return self.type != "prompt"

    def depends_on(self) -> set[str]:
        names = set(self.when.names) if self.when is not None else set()
        if self.requires is not None:
            names.add(self.requires[0])
        return names

    def active(self, assignment: Mapping[str, Any]) -> bool:
        if self.requires is not None:
            selector, names = self.requires
            if assignment.get(selector) not in names:
                return False
        return self.when is None or self.when.holds(assignment)

    # --- domain --------------------------------------------------------------------------
    def finite_values(self) -> list[Any] | None:
        """Every value of a finite variable, or None for a continuous one."""
        if self.type in ("choice", "module"):
            return list(self.choices)
        if self.type == "composite":
            return list(self.presets)
        if self.type == "int":
            assert self.low is not None and self.high is not None
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.type == "float" and self.step:
            assert self.low is not None and self.high is not None
            count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
            return [round(self.low + i * self.step, 10) for i in range(count)]
        return None

    def grid_values(self) -> list[Any]:
        values = self.finite_values()
        if self.type == "int" and values is not None and len(values) > INT_GRID_LIMIT \
                and not self.step:
            values = None
        if values is not None:
            return values
        assert self.low is not None and self.high is not None
        points = FLOAT_GRID_POINTS
        if self.log and self.low > 0:
            lo, hi = math.log(self.low), math.log(self.high)
            raw = [math.exp(lo + (hi - lo) * i / (points - 1)) for i in range(points)]
        else:
            raw = [self.low + (self.high - self.low) * i / (points - 1) for i in range(points)]
        if self.type == "int":
            return sorted({round(x) for x in raw})
        return [round(x, 10) for x in raw]

    def sample(self, rng: random.Random) -> Any:
        if self.type in ("choice", "module"):
            return rng.choice(list(self.choices))
        if self.type == "composite":
            return rng.choice(list(self.presets))
        assert self.low is not None and self.high is not None
        if self.log and self.low > 0:
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            x = rng.uniform(self.low, self.high)
        return self.snap(x)

    def snap(self, x: float) -> Any:
        """``x`` rounded to the variable's step and type, inside its range."""
        assert self.low is not None and self.high is not None
        if self.step:
            x = self.low + self.step * round((x - self.low) / self.step)
        x = min(max(x, self.low), self.high)
        return round(x) if self.type == "int" else round(float(x), 10)

    def contains(self, value: Any) -> bool:
        if self.type in ("choice", "module"):
            return value in self.choices
        if self.type == "composite":
            return value in self.presets
        if self.type == "prompt":
            return True
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.type == "int" and not isinstance(value, int):
            return False
        assert self.low is not None and self.high is not None
        if not self.low - 1e-9 <= value <= self.high + 1e-9:
            return False
        if self.step:
            steps = (value - self.low) / self.step
            return abs(steps - round(steps)) < 1e-6
        return True

    def describe(self) -> str:
        """One line for ``ponder optimize space``."""
        if self.type in ("choice", "module"):
            what = f"{self.type} of {len(self.choices)}: " + ", ".join(map(str, self.choices))
        elif self.type == "composite":
            what = f"composite of {len(self.presets)} presets: " + ", ".join(self.presets)
        elif self.type == "prompt":
            what = f"prompt, optimized by {self.optimizer}"
        else:
            what = f"{self.type} [{_num(self.low)}, {_num(self.high)}]"
            if self.step:
                what += f" step {_num(self.step)}"
            if self.log:
                what += " log"
        return what

    def condition_text(self) -> str | None:
        parts = []
        if self.requires is not None:
            selector, names = self.requires
            parts.append(f"{selector} in [{', '.join(sorted(names))}]")
        if self.when is not None:
            parts.append(self.when.text)
        return " and ".join(parts) or None


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)
