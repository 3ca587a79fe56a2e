"""Writes and checks :mod:`ponder.kernel.builtin_plugins` (what each built-in provides).

    python -m ponder.kernel.manifest --write    # after adding or renaming a plugin
    python -m ponder.kernel.manifest --check    # exit 1 when the list is stale

Kept apart from the list itself so that the loader, which reads the list, never imports this
module (which imports the loader to import every plugin).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def generate() -> dict[str, tuple[str, dict[str, tuple[str, ...]]]]:
    """Import every built-in (eagerly) and read what each registered."""
    from ponder.kernel.loader import load_plugins

    plugin_set = load_plugins(lazy=False)
    out: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {}
    for info in plugin_set.plugins:
        if not info.builtin or info.local or info.status != "ok" or not info.provides:
            continue
        module = plugin_set.manager.get_plugin(info.name)
        if module is None or hasattr(module, "ponder_register_commands"):
            continue
        out[info.name] = (info.module, {kind: tuple(sorted(names))
                                        for kind, names in sorted(info.provides.items())})
    return dict(sorted(out.items()))


def render(provides: dict[str, Any]) -> str:
    lines = ["PROVIDES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {"]
    for name, (module, kinds) in provides.items():
        inner = ", ".join(f"{kind!r}: ({', '.join(repr(n) for n in names)},)"
                          for kind, names in kinds.items())
        line = f"    {name!r}: ({module!r}, {{{inner}}}),"
        if len(line) > 100:  # the project's line length
            line = f"    {name!r}: (\n        {module!r},\n        {{{inner}}},\n    ),"
        lines.append(line)
    lines.append("}")
    return "\n".join(lines)


_BEGIN = ("# --- generated: do not edit below "
          "(python -m ponder.kernel.manifest --write) ---\n")
_END = "# --- end of generated list ---\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    from ponder.kernel import builtin_plugins

    path = Path(builtin_plugins.__file__)
    text = path.read_text()
    head, rest = text.split(_BEGIN, 1)
    _, tail = rest.split(_END, 1)
    wanted = f"{head}{_BEGIN}{render(generate())}\n{_END}{tail}"
    if "--write" in args:
        if wanted != text:
            path.write_text(wanted)
        print(f"wrote {path}")
        return 0
    if wanted != text:
        print(f"{path} is stale: run python -m ponder.kernel.manifest --write",
              file=sys.stderr)
        return 1
    print(f"{path} is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
