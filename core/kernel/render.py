"""The resolved configuration as TOML, and the value/key quoting other TOML writers reuse.

``ponder config show`` prints the config this way, each value annotated with the layer it came
from; the builder, pipelines and optimized programs write TOML with :func:`toml_value` and
:func:`toml_key`, so one quoting rule serves all of them. It depends only on what it renders
(:class:`Renderable`, which :class:`ponder.kernel.config.Config` is), so the model can re-export
:func:`render_toml` without an import cycle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

from ponder.kernel.layers import ADAPTERS_SECTION


class Renderable(Protocol):
    """What :func:`render_toml` needs of a config: its data, and where each value came from."""

    def to_dict(self, *, masked: bool = True) -> dict[str, Any]: ...

    def origin(self, dotted: str) -> str: ...


def toml_value(value: Any) -> str:
    """``value`` as a TOML value: booleans, numbers, arrays and inline tables as such, anything
    else as a basic string (so a path or a secret's mask never needs its own quoting rule)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}"
                                for k, v in value.items()) + " }"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def toml_key(key: str) -> str:
    """``key`` bare when TOML allows it, else quoted (``"my.key"`` must not read as a table)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def render_toml(config: Renderable) -> str:
    """The resolved config as TOML, secrets masked, each value annotated with its origin."""
    lines: list[str] = []
    for section, values in config.to_dict(masked=True).items():
        if section == ADAPTERS_SECTION:  # one [adapters.<name>] table per adapter
            for name, options in values.items():
                lines.append(f"[{section}.{toml_key(name)}]")
                for key, value in options.items():
                    origin = config.origin(f"{section}.{name}.{key}")
                    lines.append(f"{toml_key(key)} = {toml_value(value)}  # {origin}")
                lines.append("")
            continue
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} = (not set)")
                continue
            origin = config.origin(f"{section}.{key}")
            lines.append(f"{toml_key(key)} = {toml_value(value)}  # {origin}")
        lines.append("")
    return "\n".join(lines)
