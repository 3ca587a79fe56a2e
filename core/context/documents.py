"""Documents: the data every loader returns (``Context``, ``Document``, ``SkippedSource``).

The loaders (directory walks, globs, stdin, git diffs) and everything downstream of them
(chunking, strategies, tools, sessions) share these types, so they live apart from any one way of
loading: a module that only builds or reads a ``Context`` imports this one and none of the file
system code. The two errors a load can raise are here for the same reason, and so is the
language guess, since it is how a ``Document`` fills its ``language`` by default.
"""

from __future__ import annotations

import hashlib
import os

import attrs

from ponder.context.tokens import tokens_for_chars
from ponder.errors import PonderError

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
