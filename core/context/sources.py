"""Sources: files, directories, globs, stdin and git diffs loaded into a ``Context``.

Loading never stops for one bad file. Binary, oversized, unreadable and special files, broken
links and symlink loops are left out and listed in ``Context.skipped`` with a reason; text that is
not valid UTF-8 is repaired (U+FFFD in place of the bad bytes), loaded, and listed too. Only input
that cannot be meant (a missing path, a glob matching nothing) or that leaves nothing to read
raises a ``SourceError``.

This module is the entry point every caller imports from: it resolves the paths given into
files, directory walks, glob matches and standard input, and walks them. The rest lives in
modules of their own and is re-exported here: the data model (``documents``), what one file's
bytes are and why it is left out (``reading``), ``.gitignore`` and default skips (``ignore``),
and unified diffs (``diffs``).
"""

from __future__ import annotations

import glob
import os
import re
import stat
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

import attrs

from ponder.context.diffs import load_git_diff, parse_unified_diff
from ponder.context.documents import (
    LANGUAGES,
    Context,
    Document,
    EmptyContextError,
    SkippedSource,
    SourceError,
    guess_language,
)
from ponder.context.ignore import (
    SKIPPED_DIRS,
    GitIgnores,
    Rules,
    compile_patterns,
    ignored,
    in_skipped_dir,
    inside,
    skipped_dir,
)
from ponder.context.reading import (
    BINARY_EXTENSIONS,
    BINARY_SNIFF_BYTES,
    SECRET_FILE_PATTERNS,
    decode_text,
    is_binary,
    os_reason,
    refusal,
    repaired_reason,
)
from ponder.context.reading import too_large as _too_large  # old name: tests check wording

if TYPE_CHECKING:  # only in annotations; imported where a pattern is compiled (ignore.py)
    import pathspec

__all__ = [
    "BINARY_EXTENSIONS",
    "LANGUAGES",
    "SECRET_FILE_PATTERNS",
    "SKIPPED_DIRS",
    "Context",
    "Document",
    "EmptyContextError",
    "SkippedSource",
    "SourceError",
    "decode_text",
    "guess_language",
    "load_git_diff",
    "load_sources",
    "parse_unified_diff",
]

_STDIN_PATH = "<stdin>"
_GLOB_MAGIC = re.compile(r"[*?[]")


def _norm(path: str) -> str:
    return os.path.normpath(path).replace(os.sep, "/")


def load_sources(
    paths: Sequence[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_file_bytes: int = 2_000_000,
    stdin: TextIO | None = None,
    respect_gitignore: bool = True,
) -> Context:
    """Load files, directories (recursively), globs and ``-`` (standard input) into a Context.

    - Directories are walked in sorted order, skipping ``SKIPPED_DIRS`` and what ``.gitignore``
      files ignore (at every level, with git's precedence; the repository's ``.gitignore`` files
      above the directory and ``.git/info/exclude`` count too). A document's path is relative to
      the directory; when several directories are given, it starts with the directory as given.
    - Globs (``src/**/*.py``) expand recursively; their matches are filtered like a walk's.
    - ``include``/``exclude`` are gitignore-style patterns matched against the path relative to
      its directory (the path as given for files): with ``include``, only matching files load;
      ``exclude`` wins over ``include``. A file named explicitly is subject to these two only,
      not to ``.gitignore`` or the default skips.
    - Symlinks are followed while they stay inside the directory walked; a file met twice
      (overlapping sources, links) loads once. Empty files are left out silently (they are not
      listed in ``skipped``); standard input has no size limit.

    Raises ``SourceError`` for a missing path or a glob matching nothing, before reading
    anything, and ``EmptyContextError`` when nothing readable remains.
    """
    plan: list[tuple[str, str, list[str]]] = []  # (kind, path, glob matches)
    for path in paths:
        if path == "-":
            plan.append(("stdin", path, []))
        elif os.path.lexists(path):
            plan.append(("dir" if os.path.isdir(path) else "file", path, []))
        elif _GLOB_MAGIC.search(path):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                raise SourceError(f"no files match '{path}'")
            plan.append(("glob", path, matches))
        else:
            raise SourceError(f"no such file or directory: '{path}'")

    loader = _Loader(
        include=compile_patterns(include),
        exclude=compile_patterns(exclude),
        max_file_bytes=max_file_bytes,
        respect_gitignore=respect_gitignore,
    )
    several_dirs = sum(kind == "dir" for kind, _, _ in plan) > 1
    for kind, path, matches in plan:
        if kind == "stdin":
            loader.stdin(stdin if stdin is not None else sys.stdin)
        elif kind == "dir":
            loader.directory(path, _norm(path) + "/" if several_dirs else "")
        elif kind == "file":
            loader.named_file(path)
        else:
            loader.glob(path, matches)
    if not loader.documents:
        raise EmptyContextError(f"nothing readable in the given sources ({loader.summary()})")
    return Context(loader.documents, loader.skipped, list(paths))


@attrs.define
class _Loader:
    """One load's state: what was read, what was skipped and why, and what was already seen (a
    file or directory met twice, through overlapping sources or links, is read once)."""

    include: pathspec.GitIgnoreSpec | None
    exclude: pathspec.GitIgnoreSpec | None
    max_file_bytes: int
    respect_gitignore: bool
    documents: list[Document] = attrs.Factory(list)
    skipped: list[SkippedSource] = attrs.Factory(list)
    empty: int = 0
    seen_files: set[tuple[int, int]] = attrs.Factory(set)  # (device, inode): load each file once
    seen_dirs: set[tuple[int, int]] = attrs.Factory(set)
    gitignores: GitIgnores = attrs.Factory(GitIgnores)

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(SkippedSource(path, reason))

    def summary(self) -> str:
        skipped = [s for s in self.skipped if s.kind == "skipped"]
        parts = []
        if skipped:
            listed = ", ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
            parts.append(f"{len(skipped)} skipped: {listed}" + (", …" if len(skipped) > 3 else ""))
        if self.empty:
            parts.append(f"{self.empty} empty file" + ("s" if self.empty > 1 else ""))
        return "; ".join(parts) or "no files left after .gitignore, default and include rules"

    def selected(self, path: str) -> bool:
        if self.include is not None and not self.include.match_file(path):
            return False
        return self.exclude is None or not self.exclude.match_file(path)

    # -- sources ----------------------------------------------------------------------------------

    def stdin(self, stream: TextIO) -> None:
        try:
            if stream.isatty():
                raise SourceError("'-' reads standard input, but standard input is a terminal")
        except (AttributeError, ValueError, OSError):
            pass
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            self.add(_STDIN_PATH, buffer.read())
            return
        text = stream.read()
        if not text:
            self.empty += 1
        elif "\0" in text[:BINARY_SNIFF_BYTES]:
            self.skip(_STDIN_PATH, "binary file")
        else:
            self.documents.append(Document(_STDIN_PATH, text.replace("\r\n", "\n")))

    def named_file(self, given: str) -> None:
        shown = _norm(given)
        if not self.selected(shown):
            return
        status = self.stat(given, shown)
        if status is None:
            return
        if not stat.S_ISREG(status.st_mode):
            self.skip(shown, "not a regular file")
            return
        self.file(given, shown, status)

    def directory(self, given: str, prefix: str) -> None:
        root = os.path.abspath(given)
        status = self.stat(root, _norm(given))
        if status is None:
            return
        key = (status.st_dev, status.st_ino)
        if key in self.seen_dirs:
            return
        self.seen_dirs.add(key)
        rules = (self.gitignores.rules_for(root, root) or []) if self.respect_gitignore else []
        self.walk(root, "", prefix, rules, {key}, os.path.realpath(root))

    def glob(self, pattern: str, matches: list[str]) -> None:
        magic = _GLOB_MAGIC.search(pattern)
        base = os.path.abspath(os.path.dirname(pattern[: magic.start()]) if magic else pattern)
        for match in matches:
            shown = _norm(match)
            absolute = os.path.abspath(match)
            is_dir = os.path.isdir(match)
            if in_skipped_dir(absolute, base, is_dir):
                continue
            if self.respect_gitignore:
                rules = self.gitignores.rules_for(os.path.dirname(absolute), base)
                if rules is None or ignored(rules, absolute, is_dir):
                    continue
            if is_dir:
                self.directory(match, shown + "/")
            elif self.selected(shown) and (status := self.stat(match, shown)) is not None:
                if stat.S_ISREG(status.st_mode):
                    self.file(match, shown, status)
                else:
                    self.skip(shown, "not a regular file")

    # -- walking ----------------------------------------------------------------------------------

    def walk(
        self,
        directory: str,
        rel: str,
        prefix: str,
        rules: Rules,
        active: set[tuple[int, int]],
        root_real: str,
    ) -> None:
        """Load what is under ``directory`` (``rel`` from the root); ``active`` holds the
        directories being walked, to tell a symlink loop from a second link to one place."""
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            self.skip(prefix + rel.rstrip("/") or directory, os_reason(error))
            return
        for entry in entries:
            name = entry.name
            if name == ".git":
                continue
            child, child_rel = entry.path, rel + name
            shown = prefix + child_rel
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir()
            except OSError as error:
                self.skip(shown, os_reason(error))
                continue
            # cheap name-based rules first: most skipped entries are never stat'ed
            if is_dir:
                if skipped_dir(name, child) or ignored(rules, child, True):
                    continue
                if self.exclude is not None and self.exclude.match_file(child_rel + "/"):
                    continue
            elif ignored(rules, child, False) or not self.selected(child_rel):
                continue
            status = self.stat(child, shown)
            if status is None:
                continue
            if is_link and not inside(os.path.realpath(child), root_real):
                self.skip(shown, "symlink points outside the source root")
            elif stat.S_ISDIR(status.st_mode):
                key = (status.st_dev, status.st_ino)
                if key in active:
                    self.skip(shown, "symlink loop")
                    continue
                if key in self.seen_dirs:
                    continue
                self.seen_dirs.add(key)
                spec = self.gitignores.ignore_file(child) if self.respect_gitignore else None
                active.add(key)
                inner = [*rules, (child + os.sep, spec)] if spec is not None else rules
                self.walk(child, child_rel + "/", prefix, inner, active, root_real)
                active.discard(key)
            elif stat.S_ISREG(status.st_mode):
                self.file(child, shown, status)
            else:
                self.skip(shown, "not a regular file")

    def stat(self, path: str, shown: str) -> os.stat_result | None:
        """``os.stat`` (following links), or None after recording why it failed."""
        try:
            return os.stat(path)
        except FileNotFoundError:
            self.skip(shown, "broken symlink" if os.path.islink(path) else "no longer exists")
        except OSError as error:
            self.skip(shown, os_reason(error))
        return None

    # -- files ------------------------------------------------------------------------------------

    def file(self, path: str, shown: str, status: os.stat_result) -> None:
        key = (status.st_dev, status.st_ino)
        if status.st_ino and key in self.seen_files:
            return
        self.seen_files.add(key)
        reason = refusal(path, status.st_size, self.max_file_bytes)
        if reason is not None:
            self.skip(shown, reason)
            return
        try:
            with open(path, "rb") as handle:
                data = handle.read(self.max_file_bytes + 1)  # +1: a file that grew is caught
        except OSError as error:
            self.skip(shown, os_reason(error))
            return
        if len(data) > self.max_file_bytes:
            self.skip(shown, _too_large(len(data), self.max_file_bytes))
            return
        self.add(shown, data)

    def add(self, shown: str, data: bytes) -> None:
        if is_binary(data):
            self.skip(shown, "binary file")
            return
        text, repaired = decode_text(data)
        if not text:
            self.empty += 1
            return
        if repaired:
            self.skipped.append(SkippedSource(shown, repaired_reason(repaired), kind="repaired"))
        self.documents.append(Document(shown, text))
