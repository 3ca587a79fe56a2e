"""First-party tools for agent predictors (``react``): search, read and list the run's documents.

Each tool is bound to the run's :class:`ponder.context.sources.Context` and reads only the documents
already loaded in memory: never the filesystem, never the network (a model decides what to call
and with which arguments). Every tool returns text, bounded in size, and answers bad arguments
(an invalid regex, an unknown path, a range past the end) with a message the model can act on
instead of raising.

==================  =======================================================================
``search_context``  ``query`` (literal, or a regex with ``regex=true``) -> up to ``max_hits``
                    ``path:line: text`` hits, optionally only in files matching ``path_glob``
``read_lines``      ``path``, ``start``, ``end`` -> those lines, numbered as chunks show them
``list_files``      optional ``glob`` -> every matching path with its line range and size
==================  =======================================================================

Config example (the tools a ``react`` predictor may use; omit ``tools`` for all of them)::

    [predictor]
    name = "react"
    tools = ["search_context", "read_lines", "list_files"]
"""

from __future__ import annotations

import difflib
import fnmatch
import posixpath
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ponder import hookimpl

PONDER_PLUGIN_API = 1

#: the most characters any tool returns (the rest is cut with a note saying how to see it)
MAX_OUTPUT_CHARS = 6000
#: a hit's line is cut to this many characters
MAX_HIT_CHARS = 240
#: a line shown by read_lines is cut to this many characters
MAX_LINE_CHARS = 1000
#: search_context returns at most this many hits per call
MAX_HITS = 100
#: read_lines returns at most this many lines per call
MAX_READ_LINES = 200
#: list_files lists at most this many files per call
MAX_LIST_FILES = 200
#: longer queries are refused (a guard against pathological patterns)
MAX_QUERY_CHARS = 500
#: a regex search stops after this many seconds (patterns that backtrack forever)
SEARCH_TIME_BUDGET_S = 2.0
#: search_context stops counting matches here
MAX_COUNTED_MATCHES = 10_000


class _Documents:
    """The run's documents by path, with their lines split on first use (thread-safe)."""

    def __init__(self, context: Any) -> None:
        documents = list(getattr(context, "documents", context) or ())
        self.documents = documents
        self.by_path: dict[str, Any] = {}
        for document in documents:
            self.by_path.setdefault(document.path, document)
        self._lines: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def lines(self, document: Any) -> list[str]:
        with self._lock:
            lines = self._lines.get(document.path)
        if lines is None:
            text = document.text
            lines = (text[:-1] if text.endswith("\n") else text).split("\n") if text else []
            with self._lock:
                self._lines.setdefault(document.path, lines)
        return lines

    def line_range(self, document: Any) -> tuple[int, int]:
        count = len(self.lines(document))
        return document.start_line, document.start_line + max(count, 1) - 1

    def close_paths(self, path: str, limit: int = 5) -> list[str]:
        """Known paths that look like ``path``: same name, a suffix, or a near spelling."""
        paths = list(self.by_path)
        name = posixpath.basename(path)
        close = [p for p in paths if p.endswith("/" + path) or posixpath.basename(p) == name]
        close += difflib.get_close_matches(path, paths, n=limit, cutoff=0.5)
        return list(dict.fromkeys(close))[:limit]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _normalize_path(path: str) -> str:
    path = path.strip().strip("`'\"")
    while path.startswith("./"):
        path = path[2:]
    return path


def _clamp(value: Any, low: int, high: int, default: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return max(low, min(high, number))


Matcher = Callable[[str, float], bool]


def _compile(query: str, *, regex: bool, ignore_case: bool) -> tuple[Matcher | None, str | None]:
    """(``matches(line, deadline)``, None), or (None, a message for the model)."""
    try:  # the `regex` package (a dspy dependency) can stop a runaway pattern; re cannot
        import regex as engine
    except ImportError:  # pragma: no cover - dspy always brings it
        engine = None
    pattern = query if regex else re.escape(query)
    try:
        if engine is None:  # pragma: no cover
            compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
            return (lambda line, deadline: compiled.search(line) is not None), None
        compiled = engine.compile(pattern, engine.IGNORECASE if ignore_case else 0)
    except (re.error, getattr(engine, "error", re.error)) as exc:
        return None, (
            f"invalid regular expression {query!r}: {exc}. Escape special characters "
            r"(\. \( \[ \*) or call search_context with regex=false for a literal search."
        )

    def matches(line: str, deadline: float) -> bool:
        remaining = max(deadline - time.monotonic(), 0.001)
        return compiled.search(line, timeout=remaining) is not None

    return matches, None


# --- the tools ------------------------------------------------------------------------------
class SearchContext:
    """``search_context``: grep over the run's documents."""

    def make(self, context: Any) -> Callable[..., str]:
        files = _Documents(context)

        def search_context(query: str, regex: bool = False, ignore_case: bool = True,
                           max_hits: int = 20, path_glob: str = "") -> str:
            """Search every loaded document line by line and return matching lines as
            `path:line: text`. `query` is literal text unless `regex` is true (Python regular
            expression syntax). `ignore_case` (default true) ignores letter case. `max_hits`
            (1-100, default 20) caps the lines returned. `path_glob` (e.g. "src/*.py") searches
            only matching paths. Use read_lines to see the lines around a hit."""
            query = str(query)
            if not query:
                return "search_context needs a non-empty query."
            if len(query) > MAX_QUERY_CHARS:
                return f"the query is {len(query)} characters; use at most {MAX_QUERY_CHARS}."
            matches, problem = _compile(query, regex=bool(regex), ignore_case=bool(ignore_case))
            if matches is None:
                return problem or "invalid query"
            limit = _clamp(max_hits, 1, MAX_HITS, 20)
            glob = _normalize_path(str(path_glob or ""))
            documents = [d for d in files.documents
                         if not glob or fnmatch.fnmatchcase(d.path, glob)]
            if glob and not documents:
                return (f"no file matches path_glob {glob!r}; the context has "
                        f"{len(files.documents)} files (call list_files to see them).")
            deadline = time.monotonic() + SEARCH_TIME_BUDGET_S
            hits: list[str] = []
            total = used = 0
            matched_files: set[str] = set()
            timed_out = False
            try:
                for document in documents:
                    for offset, line in enumerate(files.lines(document)):
                        if not matches(line, deadline):
                            continue
                        total += 1
                        matched_files.add(document.path)
                        if len(hits) < limit:
                            hit = f"{document.path}:{document.start_line + offset}: " \
                                  f"{_cut(line.strip(), MAX_HIT_CHARS)}"
                            if used + len(hit) + 1 <= MAX_OUTPUT_CHARS - 300:
                                hits.append(hit)
                                used += len(hit) + 1
                        if total >= MAX_COUNTED_MATCHES:
                            break
                    if total >= MAX_COUNTED_MATCHES:
                        break
            except TimeoutError:
                timed_out = True
            shown_query = repr(_cut(query, 80))
            where = f"in files matching {glob!r}" if glob else f"in {len(documents)} files"
            if not total and not timed_out:
                return f"no matches for {shown_query} {where}."
            counted = f"{total}+" if total >= MAX_COUNTED_MATCHES or timed_out else str(total)
            noun = "match" if counted == "1" else "matches"
            plural = "" if len(matched_files) == 1 else "s"
            lines = [f"{counted} {noun} for {shown_query} in {len(matched_files)} file{plural}"
                     f" (showing {len(hits)}):", *hits]
            if timed_out:
                lines.append(f"[search stopped after {SEARCH_TIME_BUDGET_S:g}s: simplify the "
                             "pattern or narrow it with path_glob]")
            elif total > len(hits):
                lines.append(f"[{total - len(hits)} more not shown: narrow the query, use "
                             f"path_glob, or raise max_hits (at most {MAX_HITS})]")
            return "\n".join(lines)

        return search_context


class ReadLines:
    """``read_lines``: numbered lines of one document."""

    def make(self, context: Any) -> Callable[..., str]:
        from ponder.context.chunking import Piece

        files = _Documents(context)

        def read_lines(path: str, start: int = 1, end: int | None = None) -> str:
            """Return lines `start` to `end` (inclusive) of the document at `path`, each
            prefixed with its line number, at most 200 lines per call (`end` defaults to
            start + 99). Paths are as list_files and search_context show them."""
            wanted = _normalize_path(str(path))
            document = files.by_path.get(wanted)
            if document is None:
                close = files.close_paths(wanted)
                hint = f" Close paths: {', '.join(close)}." if close else ""
                return (f"no file {wanted!r} in the context.{hint} Call list_files to see all "
                        f"{len(files.by_path)} paths.")
            first, last = files.line_range(document)
            begin = _clamp(start, first, 1 << 62, first)
            if begin > last:
                return f"{wanted} has lines {first}-{last}; start={begin} is past the end."
            requested = begin + 99 if end is None else _clamp(end, begin, 1 << 62, begin + 99)
            stop = min(requested, last, begin + MAX_READ_LINES - 1)
            lines = files.lines(document)[begin - first: stop - first + 1]
            shown: list[str] = []
            used = 0
            for line in lines:
                line = _cut(line, MAX_LINE_CHARS)
                if shown and used + len(line) + 8 > MAX_OUTPUT_CHARS - 200:
                    break
                shown.append(line)
                used += len(line) + 8
            shown_end = begin + len(shown) - 1
            text = Piece(wanted, begin, shown_end, "\n".join(shown)).render()
            if shown_end < min(requested, last) or (end is None and shown_end < last):
                text += (f"\n[lines {begin}-{shown_end} of {first}-{last} shown; call read_lines "
                         f"with start={shown_end + 1} for more]")
            return text

        return read_lines


class ListFiles:
    """``list_files``: the documents' paths and sizes."""

    def make(self, context: Any) -> Callable[..., str]:
        files = _Documents(context)

        def list_files(glob: str = "*") -> str:
            """List the paths of the loaded documents matching `glob` (default "*", every
            file; e.g. "src/*.py"), each with its line range and size in characters (and, for
            Python files, the dotted module name an import would use), at most 200 per call."""
            pattern = _normalize_path(str(glob or "*")) or "*"
            documents = [d for d in files.documents if fnmatch.fnmatchcase(d.path, pattern)]
            if not documents:
                return (f"no file matches {pattern!r}; the context has "
                        f"{len(files.documents)} files (call list_files with glob='*').")
            total = sum(len(d.text) for d in documents)
            lines = [f"{len(documents)} files, {total:,} characters:"]
            used = len(lines[0])
            shown = 0
            for document in documents[:MAX_LIST_FILES]:
                first, last = files.line_range(document)
                entry = f"{document.path} ({_module_of(document.path)}lines {first}-{last}, " \
                        f"{len(document.text):,} chars)"
                if used + len(entry) + 1 > MAX_OUTPUT_CHARS - 200:
                    break
                lines.append(entry)
                used += len(entry) + 1
                shown += 1
            if shown < len(documents):
                lines.append(f"[{len(documents) - shown} more not shown: pass a narrower glob]")
            return "\n".join(lines)

        return list_files


def _module_of(path: str) -> str:
    """``"module a.b, "`` for a Python file (so an agent can map ``import a.b`` to its file)."""
    from ponder.support.fileutils import path_to_module

    if not path.endswith(".py"):
        return ""
    try:
        return f"module {path_to_module(path)}, "
    except ValueError:  # not an importable name (a dash, an absolute path)
        return ""


#: the first-party tools by registered name
TOOLS: dict[str, type] = {
    "search_context": SearchContext,
    "read_lines": ReadLines,
    "list_files": ListFiles,
}


def bind_tools(context: Any, names: Sequence[str] | None = None) -> dict[str, Callable[..., Any]]:
    """The first-party tools (``names``, default all) bound to ``context``, by name."""
    return {name: TOOLS[name]().make(context) for name in (names or TOOLS)}


@hookimpl
def ponder_register_tools(register):
    for name, factory in TOOLS.items():
        register(name, factory)
