"""Regenerate the tables in docs/ that would otherwise drift from the code.

``python -m ponder.cli.docgen`` rewrites, in place, every block of ``docs/*.md`` fenced by

    <!-- BEGIN GENERATED: NAME (python -m ponder.cli.docgen) -->
    …
    <!-- END GENERATED: NAME -->

from what is registered and declared right now: the first-party plugins and what each provides
(``plugins``), the strategies with their summaries and settings (``strategies``), the kernel's
config keys (``config-keys``), every first-party plugin's settings (``plugin-settings``) and the
register hooks with what each kind's protocol asks for (``hooks``).
``--check`` writes nothing and exits 1 when a block is stale (``tests/unit/test_docs_current.py``
runs the same comparison). Hand-written text outside the blocks is never touched.

Why generate rather than only test: plugins are added often, and a test that only fails would
leave someone to retype a table; here the fix is one command. Only first-party plugins (the
``ponder`` distribution's entry points) are listed, so another installed plugin never changes
the docs.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

#: the generated blocks and the doc each one lives in
BLOCKS: dict[str, str] = {
    "plugins": "usage.md",
    "strategies": "usage.md",
    "config-keys": "configuration.md",
    "plugin-settings": "configuration.md",
    "hooks": "writing-plugins.md",
}
COMMAND = "python -m ponder.cli.docgen"
_BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[\w-]+) \(python -m ponder\.cli\.docgen\) -->\n)"
    r"(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.S,
)


# --- what is registered ----------------------------------------------------------------------
def first_party_plugins() -> Any:
    """The first-party plugins only: strict, no third-party plugin, no user config."""
    from ponder.kernel.loader import load_plugins

    return load_plugins(allow=[], strict=True)


def _registrations(plugin_set: Any, kind: str) -> list[Any]:
    registry = plugin_set.registry(kind)
    entries = [registry.entry(name) for name in registry.names()]
    return [e for e in entries if e.provider.distribution == "ponder"]


def _plain(text: str) -> str:
    """reST-ish docstring text as Markdown: ``x`` -> `x`, :class:`X` -> `X`, one line."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    text = text.replace("``", "`")
    return " ".join(text.split()).replace("|", "\\|")


def summary(obj: Any) -> str:
    """The first paragraph of ``obj``'s module docstring (without the ``The `x` strategy:``
    that those start with), else of its own docstring."""
    module = sys.modules.get(getattr(obj, "__module__", ""))
    for doc in (getattr(module, "__doc__", None), inspect.getdoc(obj)):
        if not doc:
            continue
        first = _plain(doc.strip().split("\n\n")[0])
        first = re.sub(r"^The `[\w.]+` (\w+ )?\w+: ", "", first)
        if first:
            return first[0].upper() + first[1:]
    return ""


def field_docs(cls: type) -> dict[str, str]:
    """The ``#:`` comment above each field of an attrs class (what the field means)."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        found = re.match(r"(\w+)\s*:", stripped)
        if found and pending:
            docs[found.group(1)] = _plain(" ".join(pending))
        pending = []
    return docs


def _type_name(field: attrs.Attribute) -> str:
    """The field's type as written: a string annotation, or the same text once resolved
    (cattrs resolves annotations when it first structures a class, so both must read alike)."""
    import typing

    kind = field.type
    if isinstance(kind, str):
        text = kind
    elif isinstance(kind, type) and not typing.get_args(kind):
        text = kind.__name__
    else:
        text = str(kind)
    return re.sub(r"\b(?:[\w]+\.)+(\w)", r"\1", text).replace("|", "or")


def _default(field: attrs.Attribute) -> str:
    default = field.default
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory() if not default.takes_self else "(computed)"
    if default is None:
        return "not set"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, str):
        return f'`"{default}"`' if default else '`""`'
    return f"`{default!r}`"


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    header = list(header)
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


# --- the blocks --------------------------------------------------------------------------------
def render_plugins(plugin_set: Any) -> str:
    """Every first-party plugin (one entry point each) and the components it provides."""
    rows = []
    for info in sorted(plugin_set.plugins, key=lambda p: p.name):
        if not info.builtin:
            continue
        provides = "; ".join(f"{kind}: " + ", ".join(f"`{n}`" for n in names)
                             for kind, names in sorted(info.provides.items()))
        rows.append((f"`{info.name}`", f"`{info.module}`", provides or "-"))
    return _table(("plugin", "module", "provides"), rows)


def render_strategies(plugin_set: Any) -> str:
    """Each strategy: what it does (its docstring) and its settings keys."""
    rows = []
    for entry in _registrations(plugin_set, "strategy"):
        keys = ([f"`{f.name}`" for f in attrs.fields(entry.settings)]
                if entry.settings is not None and attrs.has(entry.settings) else [])
        rows.append((f"`{entry.name}`", summary(entry.factory), ", ".join(keys) or "-"))
    return _table(("name", "what it does", "settings (`[strategy]` keys)"), rows)


def render_config_keys(plugin_set: Any = None) -> str:
    """The kernel's own sections, key by key (``[plugins]``, ``[limits]``, ``[cache]``)."""
    from ponder.kernel.config import KERNEL_SECTIONS

    rows = []
    for section, cls in KERNEL_SECTIONS.items():
        docs = field_docs(cls)
        for field in attrs.fields(cls):
            rows.append((f"`{section}.{field.name}`", _type_name(field), _default(field),
                         docs.get(field.name, "")))
    return _table(("key", "type", "default", "meaning"), rows)


def render_plugin_settings(plugin_set: Any) -> str:
    """Every first-party component's settings: the keys of its config section."""
    from ponder.kernel.hookspecs import ALL_KIND_HOOKS

    rows = []
    for kind in ALL_KIND_HOOKS:
        for entry in _registrations(plugin_set, kind):
            if entry.settings is None or not attrs.has(entry.settings):
                continue
            docs = field_docs(entry.settings)
            for field in attrs.fields(entry.settings):
                rows.append((f"{kind} `{entry.name}`", f"`{field.name}`", _type_name(field),
                             _default(field), docs.get(field.name, "")))
    return _table(("kind, plugin", "key", "type", "default", "meaning"), rows)


def render_hooks(plugin_set: Any = None) -> str:
    """Every register hook, its kind and what the kind's protocol asks of a component."""
    from ponder.kernel.hookspecs import ALL_KIND_HOOKS, COLLECTION_HOOKS
    from ponder.kernel.kinds import KIND_PROTOCOLS

    rows = []
    for kind, hook in ALL_KIND_HOOKS.items():
        protocol = KIND_PROTOCOLS.get(kind)
        members = []
        if protocol is not None:
            for name, value in vars(protocol).items():
                if name.startswith("_") or not callable(value):
                    continue
                parameters = list(inspect.signature(value).parameters)[1:]  # without self
                members.append(f"`{name}({', '.join(parameters)})`")
            # the names only: evaluating the hints could need a type imported for checking only
            members += [f"`{name}`" for name in vars(protocol).get("__annotations__", {})
                        if not name.startswith("_")]
        what = f"`{protocol.__name__}`: " + ", ".join(members) if protocol else "-"
        collection = " (a collection: a run may use several)" if kind in COLLECTION_HOOKS else ""
        rows.append((f"`{hook}`", f"{kind}{collection}", "`register`", what))
    rows.append(("`ponder_register_commands`", "CLI", "`cli` (a click group)",
                 "`@cli.command()` functions"))
    return _table(("hook", "kind", "called with", "registers factories returning…"), rows)


RENDERERS: dict[str, Callable[[Any], str]] = {
    "hooks": render_hooks,
    "plugins": render_plugins,
    "strategies": render_strategies,
    "config-keys": render_config_keys,
    "plugin-settings": render_plugin_settings,
}


def render_all(plugin_set: Any | None = None) -> dict[str, str]:
    plugin_set = plugin_set or first_party_plugins()
    return {name: render(plugin_set) for name, render in RENDERERS.items()}


def blocks_in(text: str) -> dict[str, str]:
    """The generated blocks of a doc: name -> body (without the markers)."""
    return {m.group("name"): m.group("body").rstrip("\n") for m in _BLOCK.finditer(text)}


def update(text: str, rendered: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        body = rendered.get(name, match.group("body").rstrip("\n"))
        return f"{match.group(1)}{body}\n{match.group(4)}"

    return _BLOCK.sub(replace, text)


def stale_blocks(docs: Path, rendered: dict[str, str] | None = None) -> list[str]:
    """The blocks whose text differs from what the code says now (or that are missing)."""
    rendered = rendered or render_all()
    stale = []
    for name, doc in BLOCKS.items():
        found = blocks_in((docs / doc).read_text(encoding="utf-8"))
        if found.get(name) != rendered[name]:
            stale.append(f"{doc}: {name}")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=Path("docs"),
                        help="the docs folder (default: ./docs)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a generated block is stale")
    args = parser.parse_args(argv)
    from ponder.errors import PonderError

    try:  # strict: a first-party plugin that fails to load must not vanish from the docs
        rendered = render_all()
    except PonderError as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_blocks(args.docs, rendered)
        for item in stale:
            print(f"stale: {item} (run `{COMMAND}`)", file=sys.stderr)
        return 1 if stale else 0
    for doc in sorted(set(BLOCKS.values())):
        path = args.docs / doc
        before = path.read_text(encoding="utf-8")
        after = update(before, rendered)
        missing = [n for n, d in BLOCKS.items() if d == doc and n not in blocks_in(before)]
        for name in missing:
            print(f"{path}: no block {name!r}; add the BEGIN/END markers where it belongs",
                  file=sys.stderr)
        if after != before:
            path.write_text(after, encoding="utf-8")
            print(f"updated {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
