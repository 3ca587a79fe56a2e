"""Ignore rules: which directories and files a walk or a glob leaves out before reading them.

Two sets of rules apply. Directories such as ``.git``, ``node_modules`` and virtual
environments are never walked into (``SKIPPED_DIRS``), and ``.gitignore`` files are honoured the
way git does: at every level, the deepest file with a matching pattern deciding, counting the
repository's files above the directory walked and ``.git/info/exclude``. Getting git's
precedence right takes state (caches of the files read and of the repository roots found) and
care at the edges (a directory git ignores that the user named anyway), which is why it is a
module of its own, used by the loader in ``ponder.context.sources``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from ponder.context.reading import decode_text

if TYPE_CHECKING:  # pathspec is imported where a pattern is compiled: a walk without ignore
    import pathspec  # files or --include/--exclude never needs it (~25 ms of start-up)

SKIPPED_DIRS = frozenset(
    {
        ".git",
        "node_modules",
        ".venv",
        "venv",
        "__pycache__",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "dist",
        "build",
        ".eggs",
    }
)
"""Directory names never walked into (tools' caches, environments, build output). Directories named
``*.egg-info`` and any directory holding a ``pyvenv.cfg`` (a virtual environment under any name,
such as ``env/``) are skipped too. A directory named explicitly is still read."""

Rules = list[tuple[str, "pathspec.GitIgnoreSpec"]]
"""(a directory + ``os.sep``, its ``.gitignore`` rules), outermost first."""


def compile_patterns(patterns: Sequence[str]) -> pathspec.GitIgnoreSpec | None:
    """``include``/``exclude`` gitignore-style patterns as one spec, None when there are none."""
    lines = [pattern for pattern in patterns if pattern.strip()]
    if not lines:
        return None
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


def inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both absolute, or both as given)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def skipped_dir(name: str, path: str) -> bool:
    """Whether the directory ``name`` (at ``path``) is one a walk never enters."""
    return (
        name in SKIPPED_DIRS
        or name.endswith(".egg-info")
        or os.path.isfile(os.path.join(path, "pyvenv.cfg"))
    )


def in_skipped_dir(path: str, base: str, is_dir: bool) -> bool:
    """Whether a glob match lies in (or is) a directory a walk would skip."""
    if not inside(path, base) or path == base:
        return False
    parts = path[len(base.rstrip(os.sep)) + 1 :].split(os.sep)
    folder = base
    for name in parts if is_dir else parts[:-1]:
        folder = os.path.join(folder, name)
        if name == ".git" or skipped_dir(name, folder):
            return True
    return False


def ignored(rules: Rules, path: str, is_dir: bool) -> bool:
    """Whether git would ignore ``path``: the deepest ``.gitignore`` with a match decides."""
    for base, spec in reversed(rules):
        if path.startswith(base):
            rel = path[len(base) :].replace(os.sep, "/")
            decision = spec.check_file(rel + "/" if is_dir else rel).include
            if decision is not None:
                return decision
    return False


def ignore_spec(lines: list[str]) -> pathspec.GitIgnoreSpec | None:
    """The rules of one ignore file's ``lines``, None when it has none."""
    lines = [line for line in lines if line.strip() and not line.startswith("#")]
    if not lines:
        return None
    import pathspec

    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except Exception:  # one bad pattern must not drop the file's other rules (git skips it too)
        good = []
        for line in lines:
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except Exception:
                continue
            good.append(line)
        return pathspec.GitIgnoreSpec.from_lines(good) if good else None


@attrs.define
class GitIgnores:
    """The ``.gitignore`` rules met during one load, each file read and each root found once."""

    _ignore_files: dict[str, pathspec.GitIgnoreSpec | None] = attrs.Factory(dict)
    _repo_roots: dict[str, str | None] = attrs.Factory(dict)
    _rules: dict[tuple[str, str], Rules | None] = attrs.Factory(dict)

    def ignore_file(self, directory: str) -> pathspec.GitIgnoreSpec | None:
        """The rules of ``directory/.gitignore`` (after ``.git/info/exclude`` at a repository's
        root, which they override), cached."""
        if directory in self._ignore_files:
            return self._ignore_files[directory]
        lines: list[str] = []
        for name in (os.path.join(".git", "info", "exclude"), ".gitignore"):
            try:
                with open(os.path.join(directory, name), "rb") as handle:
                    lines += decode_text(handle.read())[0].splitlines()
            except OSError:
                pass
        spec = ignore_spec(lines)
        self._ignore_files[directory] = spec
        return spec

    def repo_root(self, directory: str) -> str | None:
        """The enclosing git work tree's top directory, or None."""
        if directory not in self._repo_roots:
            parent = os.path.dirname(directory)
            if os.path.exists(os.path.join(directory, ".git")):
                root: str | None = directory
            else:
                root = None if parent == directory else self.repo_root(parent)
            self._repo_roots[directory] = root
        return self._repo_roots[directory]

    def rules_for(self, directory: str, stop: str) -> Rules | None:
        """Ignore rules in force in ``directory``, from the repository's top (or ``stop`` outside
        a repository) down; None when ``directory`` is inside a directory git ignores, below
        ``stop``. At or above ``stop`` (what the user named), an ignored directory only drops
        the rules outside it: something in there was asked for, so it is read."""
        key = (directory, stop)
        if key not in self._rules:
            self._rules[key] = self._rules_for(directory, stop)
        return self._rules[key]

    def _rules_for(self, directory: str, stop: str) -> Rules | None:
        top = self.repo_root(directory) or stop
        chain = [directory]
        while chain[-1] != top and inside(chain[-1], top):
            chain.append(os.path.dirname(chain[-1]))
        rules: Rules = []
        for folder in reversed(chain):
            if rules and ignored(rules, folder, True):
                if not inside(stop, folder):
                    return None
                rules = []
            spec = self.ignore_file(folder)
            if spec is not None:
                rules.append((folder.rstrip(os.sep) + os.sep, spec))
        return rules
