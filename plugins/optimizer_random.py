"""The ``random`` optimizer: independent samples of the space, the baseline every other beats.

Each trial is ``space.sample(rng)`` with ``random.Random(seed)`` (the study's seed unless set),
so the sequence of candidates depends only on the seed: a resumed study walks the same
sequence, and the trials already recorded are read back instead of run again.

Config example (``ponder optimize … --optimizer random``)::

    [optimize]
    optimizer = "random"
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from ponder import hookimpl

PONDER_PLUGIN_API = 1


@attrs.define
class RandomSettings:
    #: the sampler's seed; None: the study's ``--seed``
    seed: int | None = None


class RandomSearch:
    name = "random"
    #: trials below which an optimizer cannot learn anything (random learns nothing: 1)
    min_trials = 1

    def __init__(self, settings: RandomSettings | None = None) -> None:
        self.settings = settings or RandomSettings()

    def optimize(self, study: Any) -> None:
        seed = self.settings.seed if self.settings.seed is not None else study.seed
        rng = random.Random(seed)
        number = 0
        while not study.should_stop():
            study.evaluate(study.space.sample(rng), number=number)
            number += 1


@hookimpl
def ponder_register_optimizers(register: Any) -> None:
    register("random", RandomSearch, settings=RandomSettings)
