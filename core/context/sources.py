"""Sources: files, directories, globs, stdin and git diffs loaded into a ``Context``.

Loading never stops for one bad file. Binary, oversized, unreadable and special files, broken
links and symlink loops are left out and listed in ``Context.skipped`` with a reason; text that is
not valid UTF-8 is repaired (U+FFFD in place of the bad bytes), loaded, and listed too. Only input
that cannot be meant (a missing path, a glob matching nothing) or that leaves nothing to read
raises a ``SourceError``.
"""

from __future__ import annotations

import codecs
import errno
import glob
import hashlib
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

import attrs
import pathspec

from ponder.context.tokens import tokens_for_chars
from ponder.errors import PonderError

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

_BINARY_KINDS = {
    "image": "png jpg jpeg gif bmp ico icns webp tif tiff psd svgz heic avif",
    "document": "pdf doc docx xls xlsx ppt pptx odt ods odp epub",
    "archive": "zip gz tgz bz2 xz zst lz4 7z rar tar jar war ear whl egg apk dmg iso deb rpm",
    "compiled": "so dylib dll exe o obj a lib ko pyc pyo pyd class wasm bin elc beam",
    "font": "woff woff2 ttf otf eot",
    "media": "mp3 mp4 m4a wav ogg oga flac aac avi mov mkv webm wmv flv",
    "data": "sqlite sqlite3 db mdb npy npz pkl pickle parquet feather arrow h5 hdf5",
    "model": "onnx pt pth safetensors gguf ckpt tflite pb",
}
BINARY_EXTENSIONS = frozenset(ext for group in _BINARY_KINDS.values() for ext in group.split())
"""Extensions (without the dot) read as binary without opening the file. Other files are binary
when their first 8 KB hold a NUL byte."""

_LANGUAGE_EXTENSIONS = {
    "python": ".py .pyi .pyw",
    "javascript": ".js .mjs .cjs .jsx",
    "typescript": ".ts .tsx .mts .cts",
    "go": ".go",
    "rust": ".rs",
    "java": ".java",
    "kotlin": ".kt .kts",
    "scala": ".scala",
    "c": ".c .h",
    "cpp": ".cc .cpp .cxx .hh .hpp .hxx",
    "csharp": ".cs",
    "swift": ".swift",
    "objc": ".m",
    "ruby": ".rb",
    "php": ".php",
    "perl": ".pl .pm",
    "lua": ".lua",
    "r": ".r",
    "julia": ".jl",
    "elixir": ".ex .exs",
    "erlang": ".erl",
    "haskell": ".hs",
    "ocaml": ".ml .mli",
    "clojure": ".clj",
    "dart": ".dart",
    "zig": ".zig",
    "shell": ".sh .bash .zsh",
    "powershell": ".ps1",
    "sql": ".sql",
    "html": ".html .htm",
    "css": ".css .scss .sass .less",
    "vue": ".vue",
    "svelte": ".svelte",
    "json": ".json",
    "yaml": ".yaml .yml",
    "toml": ".toml",
    "ini": ".ini .cfg",
    "xml": ".xml",
    "protobuf": ".proto",
    "terraform": ".tf",
    "markdown": ".md .markdown",
    "restructuredtext": ".rst",
    "text": ".txt",
    "diff": ".diff .patch",
}
LANGUAGES = {ext: lang for lang, exts in _LANGUAGE_EXTENSIONS.items() for ext in exts.split()}
"""Language by (lower-cased) file extension; a few file names are known too (``Makefile``)."""

_FILE_NAMES = {
    "Makefile": "make",
    "GNUmakefile": "make",
    "Dockerfile": "dockerfile",
    "CMakeLists.txt": "cmake",
    "Jenkinsfile": "groovy",
}

_BINARY_SNIFF_BYTES = 8192
_STDIN_PATH = "<stdin>"
_GLOB_MAGIC = re.compile(r"[*?[]")


class SourceError(PonderError):
    """The sources cannot be read as asked (missing path, glob matching nothing, git failed)."""

    exit_code = 2


class EmptyContextError(SourceError):
    """The sources were found, but nothing readable was left in them."""


def guess_language(path: str) -> str | None:
    """The language of ``path`` from its name or extension, or None when unknown."""
    name = path.rsplit("/", 1)[-1]
    if name in _FILE_NAMES:
        return _FILE_NAMES[name]
    return LANGUAGES.get(os.path.splitext(name)[1].lower())


@attrs.frozen
class Document:
    """One text source. ``path`` is relative to the directory it was found in (so citations read
    ``src/app.py:12``), as written for files and glob matches, ``<stdin>`` for standard input.
    Line ``start_line + i`` is the ``i``-th line of ``text`` (0-based)."""

    path: str
    text: str = attrs.field(repr=lambda text: f"<{len(text)} chars>")
    start_line: int = 1
    language: str | None = attrs.field(
        default=attrs.Factory(lambda self: guess_language(self.path), takes_self=True)
    )


_KINDS = ("skipped", "repaired")


@attrs.frozen
class SkippedSource:
    """A source left out (``kind="skipped"``) or loaded after repair (``kind="repaired"``)."""

    path: str
    reason: str
    kind: str = attrs.field(default="skipped", validator=attrs.validators.in_(_KINDS))


@attrs.frozen
class Context:
    """Everything loaded for one run: the documents, what was skipped, and the sources as given."""

    documents: list[Document]
    skipped: list[SkippedSource] = attrs.Factory(list)
    sources: list[str] = attrs.Factory(list)

    @property
    def total_chars(self) -> int:
        return sum(len(document.text) for document in self.documents)

    @property
    def estimated_tokens(self) -> int:
        """Tokens of the raw text; rendered chunks add headers and line numbers on top."""
        return tokens_for_chars(self.total_chars)

    def digest(self) -> str:
        """A stable sha256 (hex) of every document's path, first line and text, in order."""
        digest = hashlib.sha256()
        for document in self.documents:
            data = document.text.encode("utf-8", "surrogatepass")
            # lengths make the encoding unambiguous: no two contexts share a byte stream
            head = f"{len(document.path)}:{document.path}:{document.start_line}:{len(data)}:"
            digest.update(head.encode("utf-8", "surrogatepass"))
            digest.update(data)
        return digest.hexdigest()

    def __len__(self) -> int:
        return len(self.documents)


# -- decoding ------------------------------------------------------------------------------------

_repairs = threading.local()


def _count_repair(error: UnicodeError) -> tuple[str, int]:
    # Same output as errors="replace", counting the bytes it replaces.
    assert isinstance(error, UnicodeDecodeError)
    _repairs.count += error.end - error.start
    return "\ufffd", error.end


codecs.register_error("ponder.repair", _count_repair)


def decode_text(data: bytes) -> tuple[str, int]:
    """``data`` as UTF-8 text and how many bytes were not valid UTF-8 (each run replaced by U+FFFD).

    A byte-order mark is dropped and CRLF line ends become LF, so line numbers match editors.
    """
    try:
        text, repaired = data.decode("utf-8"), 0
    except UnicodeDecodeError:
        _repairs.count = 0
        text = data.decode("utf-8", "ponder.repair")
        repaired = _repairs.count
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text, repaired


def _size(n: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def _too_large(size: int, limit: int) -> str:
    shown = _size(size)
    if shown == _size(limit):  # rounding made them look equal
        shown = f"{size:,} bytes"
    return f"larger than {_size(limit)} limit ({shown})"


# -- loading -------------------------------------------------------------------------------------

# (a directory + "/", its .gitignore rules), outermost first
_Rules = list[tuple[str, pathspec.GitIgnoreSpec]]


def _compile(patterns: Sequence[str]) -> pathspec.GitIgnoreSpec | None:
    lines = [pattern for pattern in patterns if pattern.strip()]
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def _norm(path: str) -> str:
    return os.path.normpath(path).replace(os.sep, "/")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


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
        include=_compile(include),
        exclude=_compile(exclude),
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
    include: pathspec.GitIgnoreSpec | None
    exclude: pathspec.GitIgnoreSpec | None
    max_file_bytes: int
    respect_gitignore: bool
    documents: list[Document] = attrs.Factory(list)
    skipped: list[SkippedSource] = attrs.Factory(list)
    empty: int = 0
    seen_files: set[tuple[int, int]] = attrs.Factory(set)  # (device, inode): load each file once
    seen_dirs: set[tuple[int, int]] = attrs.Factory(set)
    _ignore_files: dict[str, pathspec.GitIgnoreSpec | None] = attrs.Factory(dict)
    _repo_roots: dict[str, str | None] = attrs.Factory(dict)
    _rules: dict[tuple[str, str], _Rules | None] = attrs.Factory(dict)

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
        elif "\0" in text[:_BINARY_SNIFF_BYTES]:
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
        rules = (self.rules_for(root, root) or []) if self.respect_gitignore else []
        self.walk(root, "", prefix, rules, {key}, os.path.realpath(root))

    def glob(self, pattern: str, matches: list[str]) -> None:
        magic = _GLOB_MAGIC.search(pattern)
        base = os.path.abspath(os.path.dirname(pattern[: magic.start()]) if magic else pattern)
        for match in matches:
            shown = _norm(match)
            absolute = os.path.abspath(match)
            is_dir = os.path.isdir(match)
            if self.in_skipped_dir(absolute, base, is_dir):
                continue
            if self.respect_gitignore:
                rules = self.rules_for(os.path.dirname(absolute), base)
                if rules is None or self.ignored(rules, absolute, is_dir):
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
        rules: _Rules,
        active: set[tuple[int, int]],
        root_real: str,
    ) -> None:
        """Load what is under ``directory`` (``rel`` from the root); ``active`` holds the
        directories being walked, to tell a symlink loop from a second link to one place."""
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            self.skip(prefix + rel.rstrip("/") or directory, _os_reason(error))
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
                self.skip(shown, _os_reason(error))
                continue
            # cheap name-based rules first: most skipped entries are never stat'ed
            if is_dir:
                if _skipped_dir(name, child) or self.ignored(rules, child, True):
                    continue
                if self.exclude is not None and self.exclude.match_file(child_rel + "/"):
                    continue
            elif self.ignored(rules, child, False) or not self.selected(child_rel):
                continue
            status = self.stat(child, shown)
            if status is None:
                continue
            if is_link and not _inside(os.path.realpath(child), root_real):
                self.skip(shown, "symlink points outside the source root")
            elif stat.S_ISDIR(status.st_mode):
                key = (status.st_dev, status.st_ino)
                if key in active:
                    self.skip(shown, "symlink loop")
                    continue
                if key in self.seen_dirs:
                    continue
                self.seen_dirs.add(key)
                spec = self.ignore_file(child) if self.respect_gitignore else None
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
            self.skip(shown, _os_reason(error))
        return None

    # -- files ------------------------------------------------------------------------------------

    def file(self, path: str, shown: str, status: os.stat_result) -> None:
        key = (status.st_dev, status.st_ino)
        if status.st_ino and key in self.seen_files:
            return
        self.seen_files.add(key)
        if status.st_size > self.max_file_bytes:
            self.skip(shown, _too_large(status.st_size, self.max_file_bytes))
            return
        if os.path.splitext(path)[1][1:].lower() in BINARY_EXTENSIONS:
            self.skip(shown, "binary file")
            return
        if _is_secret_file(os.path.basename(path)):
            self.skip(shown, "may hold secrets (.env, keys): never sent to a model")
            return
        try:
            with open(path, "rb") as handle:
                data = handle.read(self.max_file_bytes + 1)  # +1: a file that grew is caught
        except OSError as error:
            self.skip(shown, _os_reason(error))
            return
        if len(data) > self.max_file_bytes:
            self.skip(shown, _too_large(len(data), self.max_file_bytes))
            return
        self.add(shown, data)

    def add(self, shown: str, data: bytes) -> None:
        if data.find(b"\0", 0, _BINARY_SNIFF_BYTES) != -1:
            self.skip(shown, "binary file")
            return
        text, repaired = decode_text(data)
        if not text:
            self.empty += 1
            return
        if repaired:
            plural = "s" if repaired > 1 else ""
            reason = f"not valid UTF-8: repaired {repaired} byte{plural}"
            self.skipped.append(SkippedSource(shown, reason, kind="repaired"))
        self.documents.append(Document(shown, text))

    # -- ignore rules -----------------------------------------------------------------------------

    def ignored(self, rules: _Rules, path: str, is_dir: bool) -> bool:
        """Whether git would ignore ``path``: the deepest ``.gitignore`` with a match decides."""
        for base, spec in reversed(rules):
            if path.startswith(base):
                rel = path[len(base) :].replace(os.sep, "/")
                decision = spec.check_file(rel + "/" if is_dir else rel).include
                if decision is not None:
                    return decision
        return False

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
        spec = _ignore_spec(lines)
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

    def rules_for(self, directory: str, stop: str) -> _Rules | None:
        """Ignore rules in force in ``directory``, from the repository's top (or ``stop`` outside
        a repository) down; None when ``directory`` is inside a directory git ignores, below
        ``stop``. At or above ``stop`` (what the user named), an ignored directory only drops
        the rules outside it: something in there was asked for, so it is read."""
        key = (directory, stop)
        if key not in self._rules:
            self._rules[key] = self._rules_for(directory, stop)
        return self._rules[key]

    def _rules_for(self, directory: str, stop: str) -> _Rules | None:
        top = self.repo_root(directory) or stop
        chain = [directory]
        while chain[-1] != top and _inside(chain[-1], top):
            chain.append(os.path.dirname(chain[-1]))
        rules: _Rules = []
        for folder in reversed(chain):
            if rules and self.ignored(rules, folder, True):
                if not _inside(stop, folder):
                    return None
                rules = []
            spec = self.ignore_file(folder)
            if spec is not None:
                rules.append((folder.rstrip(os.sep) + os.sep, spec))
        return rules

    def in_skipped_dir(self, path: str, base: str, is_dir: bool) -> bool:
        """Whether a glob match lies in (or is) a directory a walk would skip."""
        if not _inside(path, base) or path == base:
            return False
        parts = path[len(base.rstrip(os.sep)) + 1 :].split(os.sep)
        folder = base
        for name in parts if is_dir else parts[:-1]:
            folder = os.path.join(folder, name)
            if name == ".git" or _skipped_dir(name, folder):
                return True
        return False


#: files that typically hold credentials: never sent to a model unless the user insists
SECRET_FILE_PATTERNS = (".env", ".env.*", "*.pem", "*.key", "id_rsa*", "id_ed25519*",
                        ".netrc", ".pypirc", "credentials.json")


def _is_secret_file(name: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SECRET_FILE_PATTERNS)


def _skipped_dir(name: str, path: str) -> bool:
    return (
        name in SKIPPED_DIRS
        or name.endswith(".egg-info")
        or os.path.isfile(os.path.join(path, "pyvenv.cfg"))
    )


def _ignore_spec(lines: list[str]) -> pathspec.GitIgnoreSpec | None:
    lines = [line for line in lines if line.strip() and not line.startswith("#")]
    if not lines:
        return None
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


def _os_reason(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return "permission denied"
    if error.errno == errno.ELOOP:
        return "symlink loop"
    return f"unreadable: {error.strerror or error}"


# -- git diffs -----------------------------------------------------------------------------------

_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def load_git_diff(
    *, rev: str | None = None, text: str | None = None, cwd: str | os.PathLike[str] | None = None
) -> Context:
    """One Document per file changed in a unified diff: ``text``, or ``git diff REV`` run in
    ``cwd`` (REV defaults to ``HEAD``: staged and unstaged changes to tracked files).

    A document's path is the new (``b/``) path (the old one for a deletion), its text is the
    file's hunks with their ``@@`` headers, and its language is ``"diff"``. ``start_line`` is
    the first hunk's start in the new file, so chunk line numbers count *diff lines* from there:
    they match the new file only up to the first removed line or second hunk. The ``@@``
    headers carry the exact positions; prompts over diffs should cite from them.
    Binary changes and pure renames are listed in ``skipped``.
    """
    if text is not None and rev is not None:
        raise ValueError("give either rev or text, not both")
    if text is None:
        rev = rev or "HEAD"
        text = _git_diff(rev, cwd)
        source = f"git diff {rev}"
    else:
        source = "<diff>"
    documents, skipped = parse_unified_diff(text)
    if not documents:
        detail = f"{len(skipped)} files without textual changes" if skipped else "no changes"
        raise EmptyContextError(f"nothing readable in {source} ({detail})")
    return Context(documents, skipped, [source])


def _git_diff(rev: str, cwd: str | os.PathLike[str] | None) -> str:
    if rev.startswith("-"):
        raise SourceError(f"not a git revision: '{rev}'")
    if cwd is not None and not os.path.isdir(cwd):
        raise SourceError(f"no such file or directory: '{os.fspath(cwd)}'")
    command = [
        "git",
        "-c",
        "core.quotepath=off",
        "diff",
        "--no-color",
        "--no-ext-diff",
        "--src-prefix=a/",  # whatever diff.noprefix / diff.mnemonicPrefix say
        "--dst-prefix=b/",
        rev,
        "--",
    ]
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError:
        raise SourceError("git diff needs git, which is not installed or not on PATH") from None
    except OSError as error:
        raise SourceError(f"could not run git: {error}") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        why = lines[0] if lines else f"exit status {done.returncode}"
        raise SourceError(f"git diff {rev} failed: {why}")
    return decode_text(done.stdout)[0]


@attrs.define
class _FileDiff:
    old: str | None = None
    new: str | None = None
    lines: list[str] = attrs.Factory(list)
    first_new: int | None = None
    binary: bool = False

    def path(self) -> str:
        return self.new or self.old or "<unknown>"


def parse_unified_diff(text: str) -> tuple[list[Document], list[SkippedSource]]:
    """Split a unified diff (git's or ``diff -u``'s) into one Document per file; see
    ``load_git_diff``. Text around the file sections (a commit message, ``index`` lines) is
    ignored."""
    documents: list[Document] = []
    skipped: list[SkippedSource] = []
    files: list[_FileDiff] = []
    current: _FileDiff | None = None
    old_left = new_left = 0  # lines still expected in the current hunk
    lines = text.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        if old_left > 0 or new_left > 0:
            tag = line[:1]
            if tag in (" ", ""):  # "" : a context line whose space an editor stripped
                old_left, new_left = old_left - 1, new_left - 1
            elif tag == "-":
                old_left -= 1
            elif tag == "+":
                new_left -= 1
            elif tag != "\\":  # a truncated hunk: read this line as a header
                old_left = new_left = 0
            if old_left > 0 or new_left > 0 or tag in (" ", "", "-", "+", "\\"):
                assert current is not None
                current.lines.append(line)
                continue
        if line.startswith("diff --git "):
            current = _FileDiff(new=_git_header_path(line))
            files.append(current)
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            if current is None or current.lines or current.first_new is not None:
                current = _FileDiff()  # `diff -u` output: no `diff --git` line per file
                files.append(current)
            current.old = _diff_path(line[4:], "a/")
        elif line.startswith("+++ ") and current is not None:
            current.new = _diff_path(line[4:], "b/")
        elif line.startswith("@@") and current is not None and (match := _HUNK.match(line)):
            old_left = int(match[2]) if match[2] is not None else 1
            new_left = int(match[4]) if match[4] is not None else 1
            if current.first_new is None:
                current.first_new = int(match[3])
            current.lines.append(line)
        elif line.startswith("\\") and current is not None and current.lines:
            current.lines.append(line)  # "\ No newline at end of file" after a hunk's last line
        elif current is not None and (
            line.startswith("Binary files ") or line.startswith("GIT binary patch")
        ):
            current.binary = True
        elif line.startswith("rename to ") and current is not None:
            current.new = _diff_path(line[len("rename to ") :], "")
    for diff in files:
        if diff.lines:
            start = max(1, diff.first_new or 1)
            body = "\n".join(diff.lines) + "\n"
            documents.append(Document(diff.path(), body, start, "diff"))
        else:
            reason = "binary file" if diff.binary else "no textual changes (rename or mode)"
            skipped.append(SkippedSource(diff.path(), reason))
    return documents, skipped


def _diff_path(raw: str, prefix: str) -> str | None:
    """A path from a ``---``/``+++`` line: unquoted, without timestamp and ``a/``/``b/``."""
    raw = raw.rstrip("\n")
    if raw.startswith('"'):
        raw = _unquote(raw)
    elif "\t" in raw:
        raw = raw.split("\t", 1)[0]  # `diff -u` appends a tab and a timestamp
    if raw == "/dev/null":
        return None
    return raw[len(prefix) :] if prefix and raw.startswith(prefix) else raw


def _git_header_path(line: str) -> str | None:
    """The b/ path of a ``diff --git a/X b/Y`` line (used when no ``+++`` line follows)."""
    rest = line[len("diff --git ") :]
    if rest.endswith('"'):
        start = rest.rfind(' "')
        return _diff_path(rest[start + 1 :], "b/") if start != -1 else None
    cut = rest.rfind(" b/")
    return rest[cut + 3 :] if cut != -1 else None


_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
_OCTAL = re.compile(r"[0-7]{3}")


def _unquote(quoted: str) -> str:
    """Undo git's C-style quoting of a path (``"a/tab\\there"``, octal escapes for bytes)."""
    end = quoted.rfind('"')
    inner = quoted[1:end] if end > 0 else quoted[1:]
    out = bytearray()
    i = 0
    while i < len(inner):
        char = inner[i]
        if char == "\\" and i + 1 < len(inner):
            if _OCTAL.match(inner, i + 1):
                out.append(int(inner[i + 1 : i + 4], 8) & 0xFF)
                i += 4
                continue
            if inner[i + 1] in _ESCAPES:
                out.append(_ESCAPES[inner[i + 1]])
                i += 2
                continue
        out += char.encode("utf-8", "surrogatepass")
        i += 1
    return out.decode("utf-8", "replace")
