"""The package layout holds: no import cycles, and every import goes down the documented layers.

The graph is built from the source with ``ast`` (module-level and function-level imports, and
``TYPE_CHECKING`` blocks too), so it sees imports that a run may never execute. The layering is
the table in docs/architecture.md; ``ALLOWED`` below is that table, and a test checks the two
agree.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE, PLUGINS = ROOT / "core", ROOT / "plugins"

#: layer -> the layers its modules may import (itself included). A module's layer is the longest
#: key that prefixes its dotted name. "ponder" is the package's own __init__ (lazy public names).
ALLOWED: dict[str, set[str]] = {
    "ponder.errors": set(),
    "ponder.support": {"ponder.errors", "ponder.support"},
    "ponder.signatures": {"ponder.errors", "ponder.support", "ponder.signatures"},
    "ponder.context": {"ponder.errors", "ponder.support", "ponder.context"},
    "ponder.kernel": {"ponder.errors", "ponder.support", "ponder.kernel"},
    "ponder.engine": {"ponder.errors", "ponder.support", "ponder.signatures", "ponder.context",
                      "ponder.kernel", "ponder.engine"},
    "ponder.evaluate": {"ponder.errors", "ponder.support", "ponder.signatures",
                        "ponder.context", "ponder.kernel", "ponder.engine", "ponder.pipeline",
                        "ponder.evaluate"},
    "ponder.plugins": {"ponder", "ponder.errors", "ponder.support", "ponder.signatures",
                       "ponder.context", "ponder.kernel", "ponder.engine", "ponder.evaluate",
                       "ponder.plugins"},
    "ponder.batchjobs": {"ponder.errors", "ponder.support", "ponder.signatures",
                         "ponder.context", "ponder.kernel", "ponder.engine", "ponder.plugins",
                         "ponder.batchjobs"},
    "ponder.optimize": {"ponder.errors", "ponder.support", "ponder.signatures",
                        "ponder.context", "ponder.kernel", "ponder.engine", "ponder.pipeline",
                        "ponder.evaluate", "ponder.optimize"},
    "ponder.cli": {"ponder", "ponder.errors", "ponder.support", "ponder.signatures",
                   "ponder.context", "ponder.kernel", "ponder.engine", "ponder.batchjobs",
                   "ponder.optimize", "ponder.pipeline", "ponder.sessions", "ponder.builder",
                   "ponder.evaluate", "ponder.cli"},
    "ponder.testing": {"ponder", "ponder.errors", "ponder.support", "ponder.signatures",
                       "ponder.context", "ponder.kernel", "ponder.engine", "ponder.cli",
                       "ponder.plugins", "ponder.batchjobs", "ponder.optimize",
                       "ponder.pipeline", "ponder.sessions", "ponder.builder",
                       "ponder.evaluate", "ponder.testing"},
    # pipelines, sessions and the builder: above the engine, below the CLI
    "ponder.pipeline": {"ponder.errors", "ponder.support", "ponder.signatures", "ponder.context",
                        "ponder.kernel", "ponder.engine", "ponder.pipeline"},
    "ponder.sessions": {"ponder.errors", "ponder.support", "ponder.signatures", "ponder.context",
                        "ponder.kernel", "ponder.engine", "ponder.sessions"},
    "ponder.builder": {"ponder.errors", "ponder.support", "ponder.signatures", "ponder.context",
                       "ponder.kernel", "ponder.engine", "ponder.pipeline", "ponder.sessions",
                       "ponder.builder"},
    "ponder": {"ponder", "ponder.kernel"},
    "ponder.__main__": {"ponder.cli"},
}


def module_files(package_dir: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package_dir``."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def _lazy_names(init: Path) -> dict[str, str]:
    """The package's lazily exported names (``_LAZY = {name: module}`` in its __init__)."""
    tree = ast.parse(init.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets):
                return ast.literal_eval(node.value)
    return {}


def import_graph(modules: dict[str, Path], prefix: str) -> dict[str, set[str]]:
    """Module -> the modules of ``prefix`` it imports anywhere in its source."""
    names = set(modules)
    lazy = _lazy_names(modules[prefix]) if prefix in modules else {}

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in names:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: Iterable[str] = ()
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from pkg import sub` names a submodule when one exists; a lazy public name
                # of the top package counts as the module that defines it
                targets = [lazy.get(a.name) if base == prefix and a.name in lazy
                           else f"{base}.{a.name}" for a in node.names]
            for target in targets:
                if target and (target == prefix or target.startswith(prefix + ".")):
                    found = resolve(target)
                    if found and found != module:
                        edges.add(found)
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def layer_of(module: str) -> str:
    # "ponder" is the package's __init__ alone, not a catch-all for every module under it
    matches = [key for key in ALLOWED
               if module == key or (key != "ponder" and module.startswith(key + "."))]
    if not matches:
        raise AssertionError(f"{module} is in no layer: add its subpackage to ALLOWED")
    return max(matches, key=len)


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        allowed = ALLOWED[layer_of(module)]
        for target in sorted(targets):
            if layer_of(target) not in allowed:
                problems.append(f"{module} imports {target} ({layer_of(target)} is above it)")
    return problems


def ponder_graph() -> dict[str, set[str]]:
    modules = {**module_files(CORE, "ponder"), **module_files(PLUGINS, "ponder.plugins")}
    return import_graph(modules, "ponder")


def test_ponder_has_no_import_cycles() -> None:
    assert find_cycles(ponder_graph()) == []


def test_every_import_follows_the_layering() -> None:
    assert layering_violations(ponder_graph()) == []


def test_every_module_is_in_a_layer() -> None:
    for module in ponder_graph():
        layer_of(module)


def test_a_synthetic_cycle_is_found(tmp_path: Path) -> None:
    """The checker itself can fail: a two-module cycle through a function-level import."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg import c\n")
    (pkg / "c.py").write_text("from . import a\n")
    (pkg / "d.py").write_text("import pkg.a\n")  # imports into the cycle, is not part of it
    graph = import_graph(module_files(pkg, "pkg"), "pkg")
    assert find_cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_a_synthetic_layering_break_is_found(tmp_path: Path, monkeypatch) -> None:
    pkg = tmp_path / "ponder"
    (pkg / "kernel").mkdir(parents=True)
    (pkg / "engine").mkdir()
    for init in (pkg, pkg / "kernel", pkg / "engine"):
        (init / "__init__.py").write_text("")
    (pkg / "engine" / "system.py").write_text("X = 1\n")
    (pkg / "kernel" / "config.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ponder.engine import system\n")
    graph = import_graph(module_files(pkg, "ponder"), "ponder")
    assert layering_violations(graph) == [
        "ponder.kernel.config imports ponder.engine.system (ponder.engine is above it)"]


def test_production_code_never_imports_testing() -> None:
    graph = ponder_graph()
    offenders = {m for m, targets in graph.items()
                 if not m.startswith("ponder.testing")
                 and any(t.startswith("ponder.testing") for t in targets)}
    assert offenders == set()


def test_architecture_doc_lists_the_same_layers() -> None:
    """docs/architecture.md's layering table names exactly the layers this test enforces."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Layering", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(ponder[\w.]*)` \|", section, re.M))
    assert documented == set(ALLOWED)


def test_every_subpackage_is_packaged() -> None:
    """A folder of core/ missing from pyproject's package list would be left out of a wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {"ponder" + ("." + ".".join(p.parent.relative_to(CORE).parts)
                         if p.parent != CORE else "")
             for p in CORE.rglob("__init__.py")}
    assert found | {"ponder.plugins"} == listed


@pytest.mark.parametrize("layer", sorted(k for k in ALLOWED if k.count(".") == 1
                                         and (CORE / k.split(".")[1]).is_dir()))
def test_each_subpackage_says_what_it_may_import(layer: str) -> None:
    doc = ast.get_docstring(ast.parse((CORE / layer.split(".")[1] / "__init__.py").read_text()))
    assert doc and "import" in doc
