"""The ``grid`` optimizer: every point of the space's grid, in order, until the trials run out.

The grid is :meth:`ponder.optimize.space.Space.grid`: every choice, ints every step, floats every
step (or five points without one), conditions honoured, constraints filtered. With ``shuffle``
the points are visited in a seeded random order, so a budget that cannot cover the grid still
samples all of it evenly instead of only its first corner.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from ponder import hookimpl

PONDER_PLUGIN_API = 1


@attrs.define
class GridSettings:
    #: visit the grid in a seeded random order instead of declaration order
    shuffle: bool = False


class GridSearch:
    name = "grid"
    min_trials = 1

    def __init__(self, settings: GridSettings | None = None) -> None:
        self.settings = settings or GridSettings()

    def planned_trials(self, space: Any) -> int:
        return space.size()[0]

    def optimize(self, study: Any) -> None:
        points = list(study.space.grid())
        if self.settings.shuffle:
            random.Random(study.seed).shuffle(points)
        for number, assignment in enumerate(points):
            if study.should_stop():
                return
            study.evaluate(assignment, number=number)


@hookimpl
def ponder_register_optimizers(register: Any) -> None:
    register("grid", GridSearch, settings=GridSettings)
