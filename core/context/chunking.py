"""Chunking: split a Context into line-numbered chunks that each fit a token budget.

A chunk is what one model call sees. Its text (``Chunk.render()``) is one or more *pieces*, each a
header ``=== path (lines a-b) ===`` followed by the lines prefixed with their numbers (``12| x``,
leading indentation as one tab per four spaces), so the model can cite ``path:line``. A file name
that is not plainly printable is quoted in the header (:func:`quote_path`). What a piece and a
chunk are, and how they render, is :mod:`ponder.context.render` (re-exported here); this module
decides where the cuts fall. Guarantees, for any context:

- no chunk's rendered text is over ``chunk_tokens`` (estimated with ``estimate_tokens``);
- every line of every document appears in at least one chunk, with its real line number;
- boundaries fall at line ends, preferring structure: top-level ``def``/``class`` in Python (with
  decorators and the comments just above), hunks in diffs, paragraphs elsewhere; a unit that fits
  a chunk is never split;
- the output depends only on the input (same context and sizes, same chunks).

Small documents are packed together, in order, so many tiny files make few chunks.
"""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable
from itertools import accumulate, pairwise
from typing import TYPE_CHECKING, Any

from ponder.context.render import (
    INDENT_SAVED,
    PIECE_SEPARATOR,
    Chunk,
    Piece,
    digits_sum,
    header_line,
    indent_groups,
    quote_path,
)
from ponder.context.tokens import (  # noqa: F401 - estimate_tokens is re-exported
    CHARS_PER_TOKEN,
    estimate_tokens,
    tokens_for_chars,
)

if TYPE_CHECKING:  # pragma: no cover
    from ponder.context.sources import Context, Document

MIN_CHUNK_TOKENS = 64
MAX_DEFAULT_CHUNK_TOKENS = 32_000
"""Smallest chunk size accepted: a header and a few lines must fit."""


def default_chunk_tokens(
    context_window: int,
    *,
    max_output_tokens: int = 1024,
    prompt_overhead: int = 600,
    fraction: float = 0.5,
) -> int:
    """The chunk size the kernel uses when none is configured.

    Only ``fraction`` of what is left after the prompt and the output goes to a chunk: strategies
    add instructions, examples and partial answers around it (the reduce step combines several
    answers in one call), and models read the middle of very long inputs less reliably.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    tokens = int((context_window - max_output_tokens - prompt_overhead) * fraction)
    # Huge windows (1M tokens) would otherwise give one giant chunk: quality drops with prompt
    # length (context rot) and nothing runs in parallel, so cap the default.
    tokens = min(tokens, MAX_DEFAULT_CHUNK_TOKENS)
    if tokens < MIN_CHUNK_TOKENS:
        raise ValueError(
            f"a {context_window}-token window leaves no room for a chunk after "
            f"{max_output_tokens} output and {prompt_overhead} prompt tokens "
            f"(need at least {MIN_CHUNK_TOKENS} tokens)"
        )
    return tokens


#: chunkings of the contexts a session keeps loaded (:func:`keep_chunks`): id -> (context, memo)
_KEPT: dict[int, tuple[Context, dict[tuple[int, int], list[Chunk]]]] = {}


def keep_chunks(context: Context, keep: bool = True) -> None:
    """Remember ``context``'s chunkings (per size) until ``keep_chunks(context, False)``.

    A session asks many questions over one loaded context; chunking 10 MB takes seconds, so its
    strategies should not redo it per question. Chunks are frozen, so sharing them is safe.
    """
    if keep:
        _KEPT.setdefault(id(context), (context, {}))
    else:
        _KEPT.pop(id(context), None)


def kept_memo(context: Any) -> dict[Any, Any] | None:
    """The memo of a context :func:`keep_chunks` keeps (its chunkings by size; others may keep
    what lives as long as the context, an index), or None when it is not kept."""
    kept = _KEPT.get(id(context)) if context is not None else None
    return kept[1] if kept is not None and kept[0] is context else None


#: The last few chunkings, so that planning (``--dry-run``, ``auto``'s choice) and the run itself
#: cut the same context only once: ``(id(context), chunk_tokens, overlap) -> (ref, chunks)``.
_RECENT: OrderedDict[tuple[int, int, int], tuple[weakref.ref[Any], list[Chunk]]] = OrderedDict()
_RECENT_SIZE = 4
_recent_lock = threading.Lock()


def chunk_context(context: Context, *, chunk_tokens: int, overlap_tokens: int = 0) -> list[Chunk]:
    """:func:`split_context`, remembered for the last few (context, sizes): the same Context
    object chunked again with the same sizes gets the same list (a new list of the same frozen
    chunks), without the work. A Context is immutable, so the chunks cannot go stale."""
    key = (id(context), chunk_tokens, overlap_tokens)
    with _recent_lock:
        hit = _RECENT.get(key)
        if hit is not None and hit[0]() is context:
            _RECENT.move_to_end(key)
            return list(hit[1])
    chunks = split_context(context, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
    try:
        ref = weakref.ref(context)
    except TypeError:  # an object that cannot be weakly referenced is simply not remembered
        return chunks
    with _recent_lock:
        _RECENT[key] = (ref, chunks)
        _RECENT.move_to_end(key)
        while len(_RECENT) > _RECENT_SIZE:
            _RECENT.popitem(last=False)
    return list(chunks)


def split_context(context: Context, *, chunk_tokens: int, overlap_tokens: int = 0) -> list[Chunk]:
    """Split ``context`` into chunks whose rendered text is at most ``chunk_tokens`` tokens.

    Documents are visited in order. One that fits the room left in the current chunk joins it; one
    that fits a chunk starts the next; a larger one is split into pieces (see the module docstring
    for where), and then each piece after the first also repeats about ``overlap_tokens`` of the
    lines before it, so a statement cut at a boundary is seen whole on one side. Empty documents
    produce nothing.
    """
    if chunk_tokens < MIN_CHUNK_TOKENS:
        raise ValueError(f"chunk_tokens must be at least {MIN_CHUNK_TOKENS}, got {chunk_tokens}")
    if overlap_tokens < 0 or overlap_tokens * 2 > chunk_tokens:
        raise ValueError(
            f"overlap_tokens must be between 0 and half of chunk_tokens ({chunk_tokens // 2}), "
            f"got {overlap_tokens}"
        )
    memo = kept_memo(context)
    if memo is not None:
        if (chunk_tokens, overlap_tokens) not in memo:
            memo[chunk_tokens, overlap_tokens] = _chunk(context, chunk_tokens, overlap_tokens)
        return list(memo[chunk_tokens, overlap_tokens])
    return _chunk(context, chunk_tokens, overlap_tokens)


def _chunk(context: Context, chunk_tokens: int, overlap_tokens: int) -> list[Chunk]:
    budget = chunk_tokens * CHARS_PER_TOKEN
    overlap = overlap_tokens * CHARS_PER_TOKEN
    chunks: list[Chunk] = []
    current: list[Piece] = []
    used = 0  # rendered characters of `current`, separators included

    def flush() -> None:
        chunks.append(Chunk(len(chunks), current, tokens_for_chars(used)))

    for document in context.documents:
        for piece, chars in _document_pieces(document, budget, overlap, chunk_tokens):
            if current and used + len(PIECE_SEPARATOR) + chars <= budget:
                current.append(piece)
                used += len(PIECE_SEPARATOR) + chars
            else:
                if current:
                    flush()
                current = [piece]
                used = chars
    if current:
        flush()
    return chunks


class _Whole(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a document carrying its whole-document size (see :func:`_whole`);
    one shared callback drops the entry when the document goes."""

    __slots__ = ("chars", "key", "last")

    def __new__(cls, document: Any, key: int, last: int, chars: int) -> _Whole:
        ref = super().__new__(cls, document, _forget)
        ref.key, ref.last, ref.chars = key, last, chars
        return ref

    def __init__(self, document: Any, key: int, last: int, chars: int) -> None:
        super().__init__(document, _forget)


#: whole-document sizes of live documents, by ``id(document)``
_WHOLE: dict[int, _Whole] = {}


def _forget(ref: _Whole) -> None:  # the document is gone, and its id free for another one
    if _WHOLE.get(ref.key) is ref:
        del _WHOLE[ref.key]


def document_rendered_chars(document: Document) -> int:
    """``len(...render())`` of ``document`` shown whole as one piece (0 when it is empty),
    remembered while the Document lives.

    Counting the indentation that becomes tabs is a few passes over the text (~0.1 s for
    20 MB); chunking needs every document's size, at each chunk size it is asked for, and so
    does asking whether the whole context fits one call (the sum of these, with separators, is
    ``ponder.plugins._common.rendered_tokens``'s figure). A Document is immutable, so the figure
    cannot go stale.
    """
    return _whole(document)[1]


def _whole(document: Document) -> tuple[int, int]:
    """(last line, rendered chars) of ``document`` shown whole; (start_line - 1, 0) if empty."""
    key = id(document)
    hit = _WHOLE.get(key)
    if hit is not None and hit() is document:
        return hit.last, hit.chars
    text, first = document.text, document.start_line
    if not text:
        return first - 1, 0
    end = len(text) - 1 if text.endswith("\n") else len(text)  # the content: no final newline
    count = text.count("\n", 0, end) + 1
    last = first + count - 1
    header = len(header_line(document.path, first, last))
    numbers = digits_sum(first, last) + 2 * count
    chars = header + 1 + end + numbers - INDENT_SAVED * indent_groups(text, end)
    with contextlib.suppress(TypeError):  # not weakly referable: not remembered
        _WHOLE[key] = _Whole(document, key, last, chars)
    return last, chars


def _document_pieces(
    document: Document, budget: int, overlap: int, chunk_tokens: int
) -> list[tuple[Piece, int]]:
    """The pieces of one document with their rendered sizes, each at most ``budget`` chars."""
    text = document.text
    if not text:
        return []
    # The common case costs a few count()s, no line list and no copy: the whole document fits.
    last, chars = _whole(document)
    end = len(text) - 1 if text.endswith("\n") else len(text)
    if chars <= budget:
        return [(Piece(document.path, document.start_line, last, text, span=(0, end)), chars)]
    return _Splitter(document, text[:end], budget, overlap, chunk_tokens).pieces()


class _Splitter:
    """Splits one document that does not fit a chunk.

    The document is cut into *units* at the best boundaries available (levels, best first); a unit
    still too big is cut again at the next level, down to single lines. The resulting atoms are
    then packed greedily into pieces, and overlap is added in front of each piece after the first.
    Sizes come from prefix sums, so the work is linear in the document.
    """

    def __init__(
        self, document: Document, content: str, budget: int, overlap: int, chunk_tokens: int
    ) -> None:
        self.path = document.path
        self.start = document.start_line
        self.language = document.language
        self.source = document.text  # the pieces are views of it (offsets as in ``content``)
        self.content = content
        self.lines = content.split("\n")
        self.budget = budget
        self.overlap = overlap
        self.limit = budget - overlap  # pieces leave room for the overlap prepended later
        self.chunk_tokens = chunk_tokens
        # cum[i]: characters of lines[:i], one newline counted per line
        self.cum = [0, *accumulate(len(line) + 1 for line in self.lines)]
        # header characters besides the two line numbers
        self.fixed = len(quote_path(self.path)) + 18

    def cost(self, a: int, b: int) -> int:
        """An upper bound of the rendered characters of a piece holding lines[a:b]: exact but for
        the indentation tabs (counting them per line would cost a pass over every line; the
        exact size of each piece is computed once it is cut)."""
        first, last = self.start + a, self.start + b - 1
        header = self.fixed + len(str(first)) + len(str(last))
        return header + self.cum[b] - self.cum[a] + digits_sum(first, last) + 2 * (b - a)

    def pieces(self) -> list[tuple[Piece, int]]:
        atoms: list[tuple[int, int]] = []
        self._split(0, len(self.lines), 0, self._levels(), atoms)
        spans: list[tuple[int, int]] = []  # whole-line pieces; (i, -1) marks a line split hard
        a = b = -1
        for s, e in atoms:
            if a >= 0 and self.cost(a, e) <= self.limit:
                b = e
                continue
            if a >= 0:
                spans.append((a, b))
            if self.cost(s, e) <= self.limit:
                a, b = s, e
            else:  # a single line over the split limit: alone, or split hard if over the budget
                spans.append((s, e) if self.cost(s, e) <= self.budget else (s, -1))
                a = b = -1
        if a >= 0:
            spans.append((a, b))

        out: list[tuple[Piece, int]] = []
        previous = (-1, -1)
        for a, b in spans:
            if b < 0:
                out.extend(self._hard_split(a))
            else:
                if self.overlap and previous[1] == a:  # a continuation: repeat lines before it
                    a = self._extend_back(previous[0], a, b)
                piece = Piece(self.path, self.start + a, self.start + b - 1, self.source,
                              span=self._span(a, b))
                out.append((piece, piece.rendered_chars()))
            previous = (a, b)
        return out

    def _span(self, a: int, b: int) -> tuple[int, int]:
        """Offsets of lines[a:b] (joined by newlines) in the document's text."""
        return self.cum[a], self.cum[b] - 1

    def _extend_back(self, floor: int, a: int, b: int) -> int:
        """The new start of piece lines[a:b] after taking up to ``overlap`` chars of lines before.

        Never reaches back to ``floor`` (the previous piece's start), so every piece adds lines.
        """
        width = len(str(self.start + b - 1)) + 2
        start = a
        while start - 1 > floor:
            taken = self.cum[a] - self.cum[start - 1] + (a - start + 1) * width
            if taken > self.overlap or self.cost(start - 1, b) > self.budget:
                break
            start -= 1
        return start

    def _hard_split(self, i: int) -> list[tuple[Piece, int]]:
        line, number = self.lines[i], self.start + i
        prefix = len(str(number)) + 2
        out: list[tuple[Piece, int]] = []
        pos, part = 0, 1
        while pos < len(line) or part == 1:
            header = header_line(self.path, number, number, part)
            room = self.budget - len(header) - 1 - prefix
            if room < 1:
                raise ValueError(
                    f"chunk_tokens={self.chunk_tokens} is too small to hold a line of {self.path!r}"
                )
            piece = Piece(self.path, number, number, line[pos : pos + room], part)
            out.append((piece, len(header) + 1 + prefix + len(piece.text)))
            pos += room
            part += 1
        return out

    def _split(
        self, a: int, b: int, level: int, levels: _Levels, out: list[tuple[int, int]]
    ) -> None:
        """Append the atoms of lines[a:b] to ``out``: units of ``level`` that fit, else finer."""
        if b - a == 1 or self.cost(a, b) <= self.limit:
            out.append((a, b))
            return
        if level >= len(levels):
            out.extend((i, i + 1) for i in range(a, b))
            return
        bounds = levels[level]
        inner = bounds[bisect_right(bounds, a) : bisect_left(bounds, b)]
        for s, e in pairwise([a, *inner, b]):
            self._split(s, e, level + 1, levels, out)

    def _levels(self) -> _Levels:
        """Line indices where a unit starts, best level first; single lines are implicitly last.

        Each level is found when ``_split`` first needs it: at small chunk sizes most documents
        split at their first level only, and finding the second (paragraphs, nested defs) was
        a fifth of chunking a 20 MB corpus into retrieval chunks.
        """
        content, line_of = self.content, self.line_of

        def paragraphs() -> list[int]:
            return [line_of(m.end()) for m in _PARAGRAPH.finditer(content)]

        if self.language == "diff":
            return _Levels(lambda: [line_of(m.start()) for m in _HUNK_START.finditer(content, 1)],
                           paragraphs)
        if self.language == "python":
            found: list[tuple[list[int], list[int]]] = []

            def python() -> tuple[list[int], list[int]]:
                if not found:
                    found.append(_python_boundaries(content, self.lines, line_of))
                return found[0]

            return _Levels(lambda: python()[0], lambda: sorted({*python()[1], *paragraphs()}))
        # unindented text after a blank line starts a block (a C function, a heading, a section)
        return _Levels(lambda: [line_of(m.end()) for m in _BLOCK.finditer(content)], paragraphs)

    def line_of(self, offset: int) -> int:
        """Index of the line holding character ``offset`` of the content."""
        return bisect_right(self.cum, offset) - 1


class _Levels:
    """The boundary levels of one document, each computed on first access (then kept)."""

    def __init__(self, *finders: Callable[[], list[int]]) -> None:
        self._finders = finders
        self._found: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._finders)

    def __getitem__(self, level: int) -> list[int]:
        if level not in self._found:
            self._found[level] = self._finders[level]()
        return self._found[level]


_PARAGRAPH = re.compile(r"^[^\S\n]*\n(?=[^\S\n]*\S)", re.M)  # a blank line before a non-blank one
_BLOCK = re.compile(r"^[^\S\n]*\n(?=\S)", re.M)  # ... before an unindented one
_HUNK_START = re.compile(r"^@@", re.M)

# Python structure is found lexically, not with ast: ast.parse runs at ~8 MB/s here and dominated
# chunking at small chunk sizes, and a lexical pass also works on code that does not parse
# (Python 2, syntax errors, templates). Triple-quoted strings are skipped so that code shown in a
# docstring is not mistaken for a definition.
# Anchored on a literal newline rather than `^` with re.M: the regex engine then only tries line
# starts instead of every character (about 3.5x faster on generated code). Line 0 never counts
# as a boundary, so nothing is lost by requiring the newline.
_PY_STATEMENT = re.compile(r"\n(?![#@)\]}]|(?:else|elif|except|finally)\b)\S")  # column 0
_PY_NESTED_DEF = re.compile(r"\n[ \t]+(?:async[ \t]+)?(?:def|class)[ \t]")
_TRIPLE_QUOTE = re.compile(r"\"\"\"|\'\'\'")


def _python_boundaries(
    content: str, lines: list[str], line_of: Callable[[int], int]
) -> tuple[list[int], list[int]]:
    """Line indices where top-level statements and nested ``def``/``class`` start, each moved up
    over its decorators and the comment lines just above it."""
    strings = _triple_quoted_spans(content)
    string_starts = [start for start, _ in strings]

    def in_string(offset: int) -> bool:
        i = bisect_right(string_starts, offset) - 1
        return i >= 0 and strings[i][0] < offset < strings[i][1]

    # each match starts at the newline before its line: the line is at m.start() + 1
    top = [
        _statement_start(lines, line_of(m.start() + 1), 0)
        for m in _PY_STATEMENT.finditer(content)
        if not in_string(m.start() + 1)
    ]
    nested = [
        _statement_start(lines, line_of(m.start() + 1),
                         len(m.group()) - 1 - len(m.group().lstrip()))
        for m in _PY_NESTED_DEF.finditer(content)
        if not in_string(m.start() + 1)
    ]
    return [i for i in top if i > 0], sorted(i for i in nested if i > 0)


def _statement_start(lines: list[str], i: int, indent: int) -> int:
    """The first line of the statement at line ``i``: its decorators (their arguments may span
    lines) and the comments right above it, at the same indentation."""
    start = i
    pending = False  # deeper or closing-bracket lines: a decorator's arguments, if one is above
    for k in range(i - 1, -1, -1):
        line = lines[k]
        body = line.lstrip()
        depth = len(line) - len(body)
        if not body:
            break
        if depth == indent and body[0] == "@":
            start, pending = k, False
        elif depth == indent and body[0] == "#" and not pending:
            start = k
        elif depth > indent or (depth == indent and body[0] in ")]}"):
            pending = True
        else:
            break
    return start


def _triple_quoted_spans(content: str) -> list[tuple[int, int]]:
    """Character spans of triple-quoted strings (approximate: quotes in comments that open one,
    or escaped ones, are the rare misses; a miss only moves a chunk boundary)."""
    spans: list[tuple[int, int]] = []
    opener, start = "", 0
    for match in _TRIPLE_QUOTE.finditer(content):
        quote, at = match.group(), match.start()
        if not opener:
            if "#" in content[content.rfind("\n", 0, at) + 1 : at]:
                continue  # in a comment (or after a "#" in a string; rare)
            opener, start = quote, at
        elif quote == opener and content[at - 1] != "\\":
            spans.append((start, match.end()))
            opener = ""
    if opener:
        spans.append((start, len(content)))
    return spans
