"""What a chunk is and how the model sees it: :class:`Piece`, :class:`Chunk` and their text.

A piece renders as a header ``=== path (lines a-b) ===`` followed by its lines, each prefixed
with its number (``12| x``) and with each leading group of four spaces shown as one tab, so the
model can cite ``path:line``. A file name that is not plainly printable is quoted in the header
(:func:`quote_path`). :mod:`ponder.context.chunking` decides where chunks are cut; this module
only says what they hold and how big they are once rendered (its size functions must agree with
:meth:`Piece.render` to the character, because the chunker packs pieces by them).

Rendering is on the path of every LM call that reads a chunk (a 20 MB map_reduce renders 670,000
lines), so it works on the whole piece with str methods rather than line by line in Python: the
indentation is turned into tabs by a few ``str.replace`` passes, and the line-number prefixes come
from a shared table and are interleaved with the lines by slice assignment: 0.25 s instead of
0.5-0.6 s of CPU for the 20 MB haystack (``docs/performance.md``). It imports nothing of
ponder's, so the chunker and the strategies' own renderers can both use it.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import attrs

PIECE_SEPARATOR = "\n\n"
"""Between two pieces of one chunk."""

INDENT = "    "
"""One indentation level as most code writes it; rendered as one tab."""

INDENT_SAVED = len(INDENT) - 1
"""Characters one rendered tab saves."""

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote_path(path: str) -> str:
    """``path`` as a chunk header shows it: as it is when it is printable, else quoted.

    A file name may hold a newline or another control character (POSIX allows all but ``/`` and
    NUL); written raw into the header it would forge a line of the prompt (a fake ``=== …``
    header, a fake numbered line). Such names, and names with leading/trailing blanks or a
    leading quote, are shown in double quotes with ``\\``, ``"``, ``\\n``, ``\\r``, ``\\t``
    and ``\\uXXXX`` escapes, so every header is exactly one line and unambiguous.
    """
    if path.isprintable() and path == path.strip() and not path.startswith('"'):
        return path
    out = []
    for ch in path:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif not ch.isprintable() and ch != " ":
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def header_line(path: str, first: int, last: int, part: int = 0) -> str:
    """The header of a piece of ``path`` holding lines ``first..last`` (``part`` of a line)."""
    suffix = f", part {part}" if part else ""
    return f"=== {quote_path(path)} (lines {first}-{last}{suffix}) ==="


def digits_sum(first: int, last: int) -> int:
    """``sum(len(str(n)) for n in range(first, last + 1))`` in O(digits), for n >= 1."""
    total, low, width = 0, 1, 1
    while low <= last:
        high = low * 10 - 1
        a, b = max(first, low), min(last, high)
        if a <= b:
            total += (b - a + 1) * width
        low, width = high + 1, width + 1
    return total


_LEADING_SPACES = re.compile(" *")


def indent_groups(text: str, end: int | None = None) -> int:
    """Leading :data:`INDENT` groups over all lines of ``text[:end]`` (each becomes one tab)."""
    end = len(text) if end is None else end
    total, k = 0, 1
    first = _LEADING_SPACES.match(text, 0, end).end()  # type: ignore[union-attr]
    total += first // len(INDENT)
    while True:
        found = text.count("\n" + INDENT * k, 0, end)
        if not found:
            return total
        total += found
        k += 1


def _tabs(text: str) -> str:
    """``"\\n" + text`` with each leading :data:`INDENT` group of every line made a tab.

    Deepest level first: ``"\\n"`` and ``k`` groups become ``"\\n"`` and ``k`` tabs, for ``k``
    from the deepest level found down to 1. A converted line then starts with a tab, which no
    later (shallower) pattern matches, and a line that already started with a tab is never
    touched, as :meth:`Piece.render` promises (only spaces count as indentation).
    """
    out = "\n" + text
    deepest = 0
    while "\n" + INDENT * (deepest + 1) in out:
        deepest += 1
    for k in range(deepest, 0, -1):
        out = out.replace("\n" + INDENT * k, "\n" + "\t" * k)
    return out


#: ``_PREFIXES[n]`` is ``"\n{n}| "``: the start of rendered line ``n``, shared by every render.
#: Grown on demand up to ``_PREFIXES_CACHED`` entries (~4 MB at most; a 5,000-line file ~0.3 MB);
#: numbers beyond are formatted per render.
_PREFIXES: list[str] = ["\n0| "]
_PREFIXES_CACHED = 1 << 16
_prefix_lock = threading.Lock()


def _line_prefixes(first: int, count: int) -> list[str]:
    """``["\\n{n}| " for n in range(first, first + count)]``."""
    stop = first + count
    cached = min(stop, _PREFIXES_CACHED)
    if not 0 <= first < cached:  # past the table, no lines, or (never from a loader) below 0
        return [f"\n{n}| " for n in range(first, stop)]
    if len(_PREFIXES) < cached:
        with _prefix_lock:
            size = len(_PREFIXES)
            if size < cached:  # doubling: a run's many small renders grow it a few times only
                grow = min(max(cached, 2 * size), _PREFIXES_CACHED)
                _PREFIXES.extend([f"\n{n}| " for n in range(size, grow)])
    prefixes = _PREFIXES[first:cached]
    if stop > cached:
        prefixes.extend(f"\n{n}| " for n in range(max(first, cached), stop))
    return prefixes


def render_lines(header: str, first: int, text: str) -> str:
    """``header``, then each line of ``text`` as ``{number}| {line}`` (numbers from ``first``),
    leading indentation as tabs: what :meth:`Piece.render` shows for whole lines."""
    lines = _tabs(text).split("\n")
    lines[0] = header  # the empty string before the first line's "\n"
    prefixes = _line_prefixes(first, len(lines) - 1)
    parts: list[str] = [""] * (2 * len(lines) - 1)
    parts[0::2] = lines
    parts[1::2] = prefixes
    return "".join(parts)


@attrs.frozen(eq=False)
class Piece:
    """Consecutive lines of one document: ``text`` is lines ``start_line..end_line`` (inclusive),
    joined by newlines, without a trailing newline.

    ``part`` is 0 for whole lines. A single line too long for a whole chunk is split hard into
    pieces numbered ``part`` 1, 2, …, each holding a slice of that line (``start_line ==
    end_line``); their header says ``part k`` so the model knows the line continues.

    The chunker's pieces are *views*: ``Piece(..., document.text, span=(a, b))`` keeps the
    document's text (which the Context holds anyway) and the offsets of its lines, and ``text``
    is sliced from it when read. A copy per piece was a second copy of the whole corpus held for
    the run (+19 MB RSS at 20 MB). Pickling (a worker process) sends the sliced text only.
    """

    path: str
    start_line: int
    end_line: int
    _source: str = attrs.field(alias="text", repr=lambda text: f"<{len(text)} chars>")
    part: int = 0
    _span: tuple[int, int] | None = attrs.field(default=None, alias="span", kw_only=True,
                                                repr=False)

    @property
    def text(self) -> str:
        """The piece's lines (sliced from the document's text for a view)."""
        if self._span is None:
            return self._source
        start, end = self._span
        return self._source[start:end]

    def _key(self) -> tuple[str, int, int, int, str]:
        return (self.path, self.start_line, self.end_line, self.part, self.text)

    def __eq__(self, other: object) -> bool:  # a view equals a copy with the same lines
        if not isinstance(other, Piece):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Piece, (self.path, self.start_line, self.end_line, self.text, self.part))

    @property
    def partial(self) -> bool:
        """Whether this piece holds only a slice of one long line."""
        return self.part > 0

    @property
    def citation(self) -> str:
        return f"{self.path}:{self.start_line}"

    def header(self) -> str:
        return header_line(self.path, self.start_line, self.end_line, self.part)

    def render(self) -> str:
        """The header, then each line as ``{number}| {line}``, leading indentation as tabs.

        Compact on purpose (the prompt is most of what a run costs): numbers are not padded,
        and each leading group of four spaces is one tab, which keeps the structure visible at
        a quarter of the characters. A slice of a hard-split line is shown as it is.
        """
        if self.partial:
            return f"{self.header()}\n{self.start_line}| {self.text}"
        return render_lines(self.header(), self.start_line, self.text)

    def rendered_chars(self) -> int:
        """``len(self.render())``, computed without rendering."""
        if self.partial:
            return len(self.header()) + 1 + len(str(self.start_line)) + 2 + len(self.text)
        return rendered_size(len(self.header()), self.start_line, self.end_line, self.text)


def rendered_size(header: int, first: int, last: int, text: str) -> int:
    """Rendered size of whole lines ``first..last`` holding ``text`` under a header of
    ``header`` characters (see :meth:`Piece.render`)."""
    lines = last - first + 1
    numbers = digits_sum(first, last) + 2 * lines
    return header + 1 + len(text) + numbers - INDENT_SAVED * indent_groups(text)


@attrs.frozen
class Chunk:
    """The pieces one model call sees; ``tokens`` estimates the rendered text."""

    index: int
    pieces: list[Piece]
    tokens: int

    def render(self) -> str:
        """The text the model sees: the pieces' renders separated by a blank line."""
        return PIECE_SEPARATOR.join(piece.render() for piece in self.pieces)

    @property
    def paths(self) -> list[str]:
        """The documents this chunk draws on, in order, each once."""
        return list(dict.fromkeys(piece.path for piece in self.pieces))

    @property
    def first_citation(self) -> str:
        """``path:line`` of the chunk's first line."""
        return self.pieces[0].citation
