"""Applying an assignment to a config: the same rules as a ``--set`` flag, on a copy.

Why a copy and not a reload: a trial's config is the base config (files, environment, flags)
plus the assignment, and the base must stay untouched for the next trial. The rules match
:class:`ponder.kernel.layers.Layers`: choosing another plugin for a component drops the settings
meant for the old one; every value set remembers its origin (``optimize trial 7``), so an error
or ``ponder config show`` says where a value came from. ``pipeline.stages.<name>.<key>`` values
change the pipeline in the config's ``[pipeline]`` section (:mod:`ponder.optimize.pipeline_space`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from ponder.errors import ConfigError
from ponder.kernel.config import (
    ADAPTERS_SECTION,
    KERNEL_SECTIONS,
    Config,
    converter,
    structure_settings,
)
from ponder.kernel.hookspecs import KINDS
from ponder.optimize.pipeline_space import apply_pipeline_values, is_pipeline_key, pipeline_of


def apply_overrides(base: Config | None, overrides: Sequence[tuple[str, Any]],
                    origin: str) -> Config:
    """A copy of ``base`` with each ``(dotted key, value)`` set, plugin names first."""
    config = copy.deepcopy(base) if base is not None else Config()
    names = [(k, v) for k, v in overrides if k.split(".")[0] in KINDS and k.count(".") == 1
             and k.endswith(".name")]
    for dotted, value in names:
        kind = dotted.split(".")[0]
        component = config.component(kind)
        if component.name != value:
            component.options = {}
            for key in [k for k in config.origins if k.startswith(kind + ".")]:
                del config.origins[key]
        component.name = value
        config.origins[dotted] = origin
    staged = [(k, v) for k, v in overrides if is_pipeline_key(k)]
    if staged:
        pipeline = pipeline_of(config)
        if pipeline is None:
            raise ConfigError(f"{origin}: {staged[0][0]}: the config carries no pipeline to "
                              "set it in (give the study --pipeline FILE)")
        config.sections["pipeline"] = apply_pipeline_values(pipeline, staged, origin).to_dict()
        for dotted, _ in staged:
            config.origins[dotted] = origin
    for dotted, value in overrides:
        if (dotted, value) in names or is_pipeline_key(dotted):
            continue
        parts = dotted.split(".")
        section = parts[0]
        if section in KINDS and len(parts) == 2:
            config.component(section).options[parts[1]] = value
        elif section in KERNEL_SECTIONS and len(parts) == 2:
            cls = KERNEL_SECTIONS[section]
            data = converter().unstructure(getattr(config, section))
            data[parts[1]] = value
            setattr(config, section, structure_settings(cls, data, section=section,
                                                        origins={dotted: origin}))
        elif section == ADAPTERS_SECTION and len(parts) == 3:
            config.adapters.setdefault(parts[1], {})[parts[2]] = value
        else:
            raise ConfigError(f"{origin}: {dotted}: not a key an optimizer can set")
        config.origins[dotted] = origin
    return config
