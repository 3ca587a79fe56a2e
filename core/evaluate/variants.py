"""The variants one ``ponder eval`` compares: each ``--config`` file, times each combination of
``--matrix`` values.

``--matrix strategy.name=map_reduce,hierarchical --matrix limits.max_retries=0,3`` is a grid of
four assignments; with two ``--config`` files that is eight variants, all run on the same
examples. Values are TOML (``3`` is an int, ``true`` a bool, anything else a string), exactly as
``--set`` reads them. The first variant is the base every other one is compared against.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

import attrs

from ponder.errors import ConfigError


@attrs.frozen
class Variant:
    label: str
    config: Any
    #: the matrix assignments that made it (dotted key -> value)
    assignments: dict[str, Any] = attrs.field(factory=dict)


def parse_matrix(texts: Sequence[str]) -> list[tuple[tuple[str, ...], list[Any]]]:
    """``key=v1,v2`` texts as (key path, values); a bad one names the flag."""
    from ponder.kernel.config import parse_assignment

    grid: list[tuple[tuple[str, ...], list[Any]]] = []
    seen: set[tuple[str, ...]] = set()
    for text in texts:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise ConfigError(f"--matrix {text!r}: expected KEY=V1,V2,… e.g. "
                              f"--matrix strategy.name=map_reduce,hierarchical")
        values = []
        for part in raw.split(","):
            if not part.strip():
                raise ConfigError(f"--matrix {text!r}: an empty value")
            path, value = parse_assignment(f"{key}={part}")
            values.append(value)
        if path in seen:
            raise ConfigError(f"--matrix {key.strip()}: given twice")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"--matrix {text!r}: a value is repeated")
        seen.add(path)
        grid.append((path, values))
    return grid


def expand_variants(config_paths: Sequence[str | None], matrix: Sequence[str] = (),
                    overrides: Sequence[tuple[tuple[str, ...], Any, str]] = ()) -> list[Variant]:
    """One Variant per config file (None: the default ./ponder.toml) and matrix combination."""
    from ponder.kernel.config import load_config

    grid = parse_matrix(matrix)
    paths = list(config_paths) or [None]
    stems = [os.path.splitext(os.path.basename(p))[0] if p else "default" for p in paths]
    if len(set(stems)) != len(stems):  # a.toml in two folders: keep the labels apart
        stems = [p or "default" for p in paths]
    variants: list[Variant] = []
    for path, stem in zip(paths, stems, strict=True):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"--config {path}: no such file")
        combos = itertools.product(*[values for _, values in grid]) if grid else [()]
        for combo in combos:
            assignments = {".".join(key): value for (key, _), value in zip(grid, combo,
                                                                           strict=True)}
            extra = [(key, value, f"--matrix {'.'.join(key)}={value}")
                     for (key, _), value in zip(grid, combo, strict=True)]
            config = load_config(path, overrides=[*overrides, *extra])
            label = stem if not assignments or len(paths) > 1 else ""
            label = ",".join(filter(None, [label, *(f"{k}={v}" for k, v in
                                                    assignments.items())]))
            variants.append(Variant(label or stem, config, assignments))
    return variants
