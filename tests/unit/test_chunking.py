"""Chunking: the token bound, line numbers, coverage, structure-aware boundaries, packing."""

from __future__ import annotations

import bisect
import itertools
import random
import re

import pytest

from ponder.context.chunking import (
    MIN_CHUNK_TOKENS,
    Chunk,
    Piece,
    _python_boundaries,
    chunk_context,
    default_chunk_tokens,
    digits_sum,
    estimate_tokens,
    quote_path,
)
from ponder.context.sources import Context, Document


def ctx(*documents: Document) -> Context:
    return Context(list(documents))


def doc_lines(document: Document) -> list[str]:
    text = document.text[:-1] if document.text.endswith("\n") else document.text
    return text.split("\n") if document.text else []


def check_invariants(context: Context, chunks: list[Chunk], chunk_tokens: int) -> None:
    """The bound, exact token counts, real line numbers, and every line covered."""
    by_path = {document.path: document for document in context.documents}
    covered: dict[str, set[int]] = {path: set() for path in by_path}
    parts: dict[tuple[str, int], list[str]] = {}
    for index, chunk in enumerate(chunks):
        rendered = chunk.render()
        assert chunk.index == index
        assert chunk.tokens == estimate_tokens(rendered)
        assert chunk.tokens <= chunk_tokens
        assert sum(p.rendered_chars() for p in chunk.pieces) + 2 * (len(chunk.pieces) - 1) == len(
            rendered
        )
        for piece in chunk.pieces:
            document = by_path[piece.path]
            lines = doc_lines(document)
            if piece.partial:
                assert piece.start_line == piece.end_line
                parts.setdefault((piece.path, piece.start_line), []).append(piece.text)
                continue
            texts = piece.text.split("\n")
            assert len(texts) == piece.end_line - piece.start_line + 1
            for offset, text in enumerate(texts):
                number = piece.start_line + offset
                assert lines[number - document.start_line] == text, (piece.path, number)
                covered[piece.path].add(number)
    for (path, number), pieces in parts.items():
        document = by_path[path]
        assert "".join(pieces) == doc_lines(document)[number - document.start_line]
        covered[path].add(number)
    for path, document in by_path.items():
        expected = set(range(document.start_line, document.start_line + len(doc_lines(document))))
        assert covered[path] == expected, path


# -- estimates and sizes --------------------------------------------------------------------------


def test_estimate_tokens_is_ceil_of_quarter() -> None:
    assert [estimate_tokens("x" * n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_default_chunk_tokens_takes_a_fraction_of_what_is_left() -> None:
    assert default_chunk_tokens(32_000) == (32_000 - 1024 - 600) // 2
    assert default_chunk_tokens(1_048_576) == 32_000  # capped: huge windows still get chunks
    assert default_chunk_tokens(8192, max_output_tokens=2048, fraction=0.25) == int(
        (8192 - 2048 - 600) * 0.25
    )
    with pytest.raises(ValueError, match="leaves no room"):
        default_chunk_tokens(1500)
    with pytest.raises(ValueError, match="fraction"):
        default_chunk_tokens(128_000, fraction=0)


def test_bad_sizes_are_rejected() -> None:
    context = ctx(Document("a.py", "x = 1\n"))
    with pytest.raises(ValueError, match="at least"):
        chunk_context(context, chunk_tokens=MIN_CHUNK_TOKENS - 1)
    with pytest.raises(ValueError, match="overlap_tokens"):
        chunk_context(context, chunk_tokens=100, overlap_tokens=51)
    with pytest.raises(ValueError, match="overlap_tokens"):
        chunk_context(context, chunk_tokens=100, overlap_tokens=-1)


# -- rendering ------------------------------------------------------------------------------------


def test_render_numbers_lines_under_a_header() -> None:
    chunks = chunk_context(ctx(Document("src/app.py", "import os\n\nx = 1\n")), chunk_tokens=100)
    assert len(chunks) == 1
    assert chunks[0].render() == (
        "=== src/app.py (lines 1-3) ===\n1| import os\n2| \n3| x = 1"
    )
    assert chunks[0].first_citation == "src/app.py:1"
    assert chunks[0].paths == ["src/app.py"]


def test_start_line_offsets_numbers() -> None:
    chunks = chunk_context(ctx(Document("a.txt", "x\ny", start_line=9998)), chunk_tokens=100)
    assert chunks[0].render() == "=== a.txt (lines 9998-9999) ===\n9998| x\n9999| y"
    wide = chunk_context(ctx(Document("a.txt", "x\ny", start_line=99999)), chunk_tokens=100)
    assert wide[0].render().splitlines()[1:] == ["99999| x", "100000| y"]


def test_piece_rendered_chars_matches_render() -> None:
    for piece in (
        Piece("p.py", 1, 3, "a\n\nccc"),
        Piece("p.py", 12, 12, "xyz", part=2),
        Piece("p.py", 12, 12, "        xyz", part=1),
        Piece("p.py", 99_998, 100_001, "1\n2\n3\n4"),
        Piece("p.py", 7, 12, "    a\n        b\n      c\n\t    d\n            \n  e"),
        Piece("we\nird.py", 1, 1, "x"),
    ):
        assert piece.rendered_chars() == len(piece.render())
    assert "part 2" in Piece("p.py", 12, 12, "xyz", part=2).header()


def test_empty_documents_make_no_chunks() -> None:
    assert chunk_context(ctx(Document("a", "")), chunk_tokens=100) == []
    assert chunk_context(ctx(), chunk_tokens=100) == []


# -- packing and splitting ------------------------------------------------------------------------


def test_small_documents_are_packed() -> None:
    documents = [Document(f"pkg/m{i:04d}.py", f"VALUE = {i}\n") for i in range(1000)]
    context = ctx(*documents)
    chunks = chunk_context(context, chunk_tokens=2000)
    check_invariants(context, chunks, 2000)
    assert len(chunks) < 30  # ~50 characters per file: ~150 files per 8000-character chunk
    assert [p.path for c in chunks for p in c.pieces] == [d.path for d in documents]


def _functions(count: int, body_lines: int) -> str:
    out = ["import os", ""]
    for i in range(count):
        out += ["", "", f"# comment for f{i}", "@decorator", f"def f{i}(x):"]
        out += [f"    y{j} = x + {j}" for j in range(body_lines)]
        out += ["    return x"]
    return "\n".join(out) + "\n"


def test_python_functions_are_not_split_when_they_fit() -> None:
    source = _functions(count=12, body_lines=8)
    document = Document("mod.py", source)
    context = ctx(document)
    chunks = chunk_context(context, chunk_tokens=150)
    check_invariants(context, chunks, 150)
    assert len(chunks) > 3
    lines = doc_lines(document)
    for i in range(12):
        start = lines.index(f"# comment for f{i}") + 1  # the comment above belongs to the def
        end = lines.index(f"def f{i}(x):") + 1 + 8 + 1
        holders = [
            p for c in chunks for p in c.pieces if p.start_line <= start and end <= p.end_line
        ]
        assert holders, f"f{i} (lines {start}-{end}) was split"
    # pieces start at a function's leading comment (or the file's start), never mid-function
    starts = {p.start_line for c in chunks for p in c.pieces}
    assert all(lines[s - 1].startswith("# comment") or s == 1 for s in starts)


def test_big_python_class_splits_at_methods() -> None:
    methods = []
    for i in range(20):
        methods += [f"    def m{i}(self):", *[f"        v = {j}" for j in range(6)], ""]
    source = "class Big:\n" + "\n".join(methods)
    document = Document("big.py", source)
    context = ctx(document)
    chunks = chunk_context(context, chunk_tokens=120)
    check_invariants(context, chunks, 120)
    lines = doc_lines(document)
    for piece in (p for c in chunks for p in c.pieces):
        first = lines[piece.start_line - 1]
        assert first.startswith(("class Big", "    def m")), first


def test_code_that_does_not_parse_still_splits_at_definitions() -> None:
    paragraphs = [
        f"def broken{i}(:\n" + "".join(f"  line {j}\n" for j in range(10)) for i in range(8)
    ]
    document = Document("bad.py", "\n".join(paragraphs))
    context = ctx(document)
    chunks = chunk_context(context, chunk_tokens=100)
    check_invariants(context, chunks, 100)
    for piece in (p for c in chunks for p in c.pieces):
        assert piece.text.startswith("def broken")


PYTHON_SAMPLE = '''"""Module doc.

def not_a_function_in_a_docstring():
    pass
"""
import os


@app.route(
    "/x",
)
def view():
    return 1


# explains Thing
class Thing:
    def method(self):
        if x:
            pass
        else:
            pass
'''


def test_python_boundaries_skip_strings_and_keep_decorators_and_comments() -> None:
    lines = PYTHON_SAMPLE.split("\n")
    starts = [0, *itertools.accumulate(len(line) + 1 for line in lines)]

    def line_of(offset: int) -> int:
        return bisect.bisect_right(starts, offset) - 1

    top, nested = _python_boundaries(PYTHON_SAMPLE, lines, line_of)
    assert [lines[i] for i in top] == ["import os", "@app.route(", "# explains Thing"]
    assert [lines[i] for i in nested] == ["    def method(self):"]


def test_text_splits_at_blank_lines() -> None:
    paragraphs = ["\n".join(f"para {i} line {j}" for j in range(5)) for i in range(30)]
    document = Document("notes.md", "\n\n".join(paragraphs))
    context = ctx(document)
    chunks = chunk_context(context, chunk_tokens=100)
    check_invariants(context, chunks, 100)
    for piece in (p for c in chunks for p in c.pieces):
        assert re.match(r"para \d+ line 0", piece.text)


def test_diff_documents_split_at_hunks() -> None:
    hunks = []
    for i in range(10):
        hunks.append(f"@@ -{i * 50 + 1},4 +{i * 50 + 1},5 @@ def f{i}():")
        hunks += [" context", "-old line", "+new line", "+added", " context"]
    document = Document("a.py", "\n".join(hunks) + "\n", start_line=1, language="diff")
    context = ctx(document)
    chunks = chunk_context(context, chunk_tokens=100)
    check_invariants(context, chunks, 100)
    assert all(p.text.startswith("@@") for c in chunks for p in c.pieces)


def test_giant_single_line_is_split_hard() -> None:
    line = "".join(chr(ord("a") + i % 26) for i in range(10_000))
    document = Document("min.js", f"first\n{line}\nlast\n")
    context = ctx(document)
    chunks = chunk_context(context, chunk_tokens=100)
    check_invariants(context, chunks, 100)
    parts = [p for c in chunks for p in c.pieces if p.partial]
    assert len(parts) > 20
    assert [p.part for p in parts] == list(range(1, len(parts) + 1))
    assert all(p.start_line == p.end_line == 2 for p in parts)
    assert "".join(p.text for p in parts) == line
    assert "(lines 2-2, part 1)" in parts[0].render()


def test_overlap_repeats_lines_of_the_same_document() -> None:
    document = Document("log.txt", "".join(f"entry number {i}\n" for i in range(400)))
    context = ctx(document)
    plain = chunk_context(context, chunk_tokens=200)
    overlapped = chunk_context(context, chunk_tokens=200, overlap_tokens=50)
    check_invariants(context, overlapped, 200)
    pieces = [p for c in overlapped for p in c.pieces]
    for before, after in itertools.pairwise(pieces):
        assert after.start_line <= before.end_line  # repeats lines
        assert after.start_line > before.start_line  # and still moves on
        repeated = before.end_line - after.start_line + 1
        assert 1 <= repeated <= 50 * 4 // len("  12| entry number 0")
    assert len(overlapped) > len(plain)


def test_chunking_is_deterministic() -> None:
    context = _corpus(random.Random(7), files=40)
    first = chunk_context(context, chunk_tokens=300, overlap_tokens=40)
    second = chunk_context(context, chunk_tokens=300, overlap_tokens=40)
    assert first == second
    assert [c.render() for c in first] == [c.render() for c in second]


def _corpus(rng: random.Random, files: int) -> Context:
    """Python, prose, code with long lines and blank runs, unicode: the usual suspects."""
    words = ["alpha", "beta", "gamma", "δέλτα", "数据", "x", "return", "if", "{", "}", "😀"]
    documents = []
    for i in range(files):
        kind = rng.choice(["py", "md", "js", "txt"])
        lines = []
        for _ in range(rng.choice([0, 1, 3, 20, 80, 300])):
            roll = rng.random()
            if roll < 0.15:
                lines.append("")
            elif roll < 0.2:
                lines.append("".join(rng.choice(words) for _ in range(rng.randint(50, 900))))
            elif kind == "py" and roll < 0.35:
                lines.append(f"def f{rng.randint(0, 99)}(a, b):")
            else:
                indent = " " * rng.choice([0, 0, 4, 8])
                lines.append(
                    indent + " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
                )
        text = "\n".join(lines) + rng.choice(["", "\n"])
        start = rng.choice([1, 1, 1, 40, 9990])
        documents.append(Document(f"dir{i % 5}/file{i}.{kind}", text, start_line=start))
    return Context(documents)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    ("chunk_tokens", "overlap_tokens"), [(64, 0), (64, 32), (200, 0), (500, 120)]
)
def test_generated_corpus_respects_bound_and_covers_every_line(
    seed: int, chunk_tokens: int, overlap_tokens: int
) -> None:
    context = _corpus(random.Random(seed), files=25)
    chunks = chunk_context(context, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
    check_invariants(context, chunks, chunk_tokens)


def test_too_small_for_a_long_path_says_so() -> None:
    document = Document("d/" * 200 + "f.txt", "x\n" * 100)
    with pytest.raises(ValueError, match="too small to hold a line"):
        chunk_context(ctx(document), chunk_tokens=MIN_CHUNK_TOKENS)


def test_indentation_is_rendered_as_tabs() -> None:
    text = "def f():\n    if x:\n        return 1\n      odd = 2\n\treal_tab = 3\n"
    (chunk,) = chunk_context(ctx(Document("m.py", text)), chunk_tokens=100)
    assert chunk.render().splitlines()[1:] == [
        "1| def f():", "2| \tif x:", "3| \t\treturn 1", "4| \t  odd = 2", "5| \treal_tab = 3"]


def _render_line_by_line(piece: Piece) -> str:
    """The definition :meth:`Piece.render` promises, one line at a time."""
    out = [piece.header()]
    for number, line in enumerate(piece.text.split("\n"), piece.start_line):
        groups = (len(line) - len(line.lstrip(" "))) // 4
        out.append(f"{number}| " + "\t" * groups + line[groups * 4:])
    return "\n".join(out)


def test_render_matches_the_line_by_line_definition() -> None:
    """The whole-piece render (str.replace passes, a shared table of line-number prefixes) gives
    the same text as numbering and re-indenting each line, for odd indentation, tabs, blank and
    whitespace-only lines, carriage returns, and numbers on both sides of the prefix table's
    end."""
    from ponder.context import render

    rng = random.Random(11)
    alphabet = [" ", "    ", "        ", "\t", "\n", "\n", "x", "é", "\r", "  ", "\u2028", "#"]
    edge = render._PREFIXES_CACHED
    for start in (1, 9, 99_998, edge - 3, edge, edge + 5):
        for _ in range(60):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 50)))
            piece = Piece("p.py", start, start + text.count("\n"), text)
            assert piece.render() == _render_line_by_line(piece), (start, text)
            assert piece.rendered_chars() == len(piece.render())
    below = Piece("p.py", -1, 1, "a\n    b\nc")  # numbers below the table's start
    assert below.render() == _render_line_by_line(below)
    # the deepest level first: 16 spaces are four tabs, not a tab and twelve spaces
    assert Piece("p.py", 1, 2, " " * 17 + "x\n\t    y").render().split("\n")[1:] == [
        "1| \t\t\t\t x", "2| \t    y"]


def test_whole_document_sizes_are_remembered_while_the_document_lives() -> None:
    import gc

    from ponder.context import chunking

    document = Document("m.py", "def f():\n    return 1\n", start_line=7)
    (chunk,) = chunk_context(ctx(document), chunk_tokens=100)
    assert chunking.document_rendered_chars(document) == len(chunk.render())
    assert id(document) in chunking._WHOLE
    assert chunking.document_rendered_chars(Document("e.py", "")) == 0
    from ponder.plugins._common import rendered_tokens

    many = [document, Document("e.py", ""), Document("n.txt", "a\n      b\n\n", start_line=98)]
    sizes = [chunking.document_rendered_chars(d) for d in many if d.text]
    assert rendered_tokens(many) == estimate_tokens("x" * (sum(sizes) + 2 * (len(sizes) - 1)))
    key = id(document)
    del document, chunk, many
    gc.collect()
    assert key not in chunking._WHOLE  # no entry outlives its document (its id may be reused)


@pytest.mark.parametrize("name", ["evil\n=== fake.py (lines 1-1) ===\n1| x.py", "a\rb.py",
                                  "bell\x07.py", " lead.py", '"quoted.py', "sep\u2028.py"])
def test_file_names_cannot_break_the_header(name: str) -> None:
    (chunk,) = chunk_context(ctx(Document(name, "x = 1\n")), chunk_tokens=100)
    header, *body = chunk.render().split("\n")
    assert body == ["1| x = 1"]
    assert header.startswith('=== "') and header.endswith('" (lines 1-1) ===')
    assert header.isprintable()
    assert quote_path(name) != name


def test_plain_file_names_stay_as_they_are() -> None:
    for name in ("src/app.py", "dir with space/ü.py", "C:\\x\\y.py"):
        assert quote_path(name) == name


def test_digits_sum_matches_the_definition() -> None:
    for first, last in ((1, 1), (1, 9), (8, 12), (95, 1005), (99_998, 100_001)):
        assert digits_sum(first, last) == sum(len(str(n)) for n in range(first, last + 1))


def test_the_same_context_is_cut_once_and_the_same_way() -> None:
    from ponder.context import chunking

    context = ctx(Document("a.py", "x = 1\n" * 200), Document("b.py", "y = 2\n" * 200))
    first = chunk_context(context, chunk_tokens=100)
    again = chunk_context(context, chunk_tokens=100)
    assert again == first and again is not first           # a new list of the same chunks
    assert all(a is b for a, b in zip(again, first, strict=True))  # ... not cut again
    assert chunk_context(context, chunk_tokens=200) != first  # other sizes: cut anew
    twin = ctx(*context.documents)                             # an equal context, other object
    assert chunk_context(twin, chunk_tokens=100) == first
    assert len(chunking._RECENT) <= chunking._RECENT_SIZE


def test_rendered_tokens_is_the_estimate_of_the_rendered_text() -> None:
    """``_common.rendered_tokens`` sums the remembered per-document sizes; it must equal the
    estimate of the text ``render_documents`` produces (what direct and single reads send)."""
    from ponder.context.tokens import estimate_tokens
    from ponder.plugins._common import render_documents, rendered_tokens

    rng = random.Random(11)
    docs = [Document(f"d{i}.py", "".join(
        " " * rng.choice([0, 2, 4, 8, 9]) + f"line {j}\n" for j in range(rng.randint(0, 40))),
        start_line=rng.choice([1, 1, 5])) for i in range(30)]
    docs.append(Document("no_newline.txt", "last line without newline"))
    assert rendered_tokens(docs) == estimate_tokens(render_documents(docs))
    assert rendered_tokens([]) == 0
