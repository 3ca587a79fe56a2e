"""What a run returns: the answer, where it came from, what it cost and what is missing."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from ponder.support.results import FailedChunk


@attrs.frozen
class Citation:
    path: str
    line: int


@attrs.define
class Usage:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    retries: int = 0
    #: calls answered from the response cache (not in ``calls``: they cost nothing)
    cached_calls: int = 0
    #: requests that reached the provider and came back as an error (a 5xx, a 429, a time-out)
    #: with no usage to charge: counted here, not in ``calls``, and priced at zero
    failed_requests: int = 0

    def add(self, *, calls: int = 0, input_tokens: int = 0, output_tokens: int = 0,
            cost_usd: float = 0.0, retries: int = 0, cached_calls: int = 0,
            failed_requests: int = 0) -> None:
        self.calls += calls
        self.cached_calls += cached_calls
        self.failed_requests += failed_requests
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost_usd += cost_usd
        self.retries += retries


@attrs.define
class Draft:
    """What a strategy returns; the system adds usage, timing and citations."""

    text: str
    failures: list[FailedChunk] = attrs.Factory(list)
    chunks_total: int = 0
    chunks_read: int = 0
    #: why this strategy (the ``auto`` strategy explains its choice here)
    reason: str | None = None
    #: the strategy that actually produced the text (``auto`` delegates)
    strategy: str | None = None
    #: the largest single prompt sent, in estimated tokens
    largest_prompt_tokens: int = 0
    #: what went wrong that is not a chunk (a failed combine call, code the sandbox refused),
    #: one short secret-free line each
    problems: list[str] = attrs.Factory(list)
    #: the lines the model actually read, as ``(path, first, last)`` spans (the chunks that were
    #: read); a citation outside them is dropped. None: the strategy does not say, and any line
    #: of a loaded document may be cited (third-party strategies written before this field)
    read: list[tuple[str, int, int]] | None = None
    #: where the findings the answer was built from came from (each finding's chunk's first
    #: line), cited when the model's text cites nothing itself
    evidence: list[Citation] = attrs.Factory(list)


#: the outcome of a run: ``ok`` (complete), ``partial`` (an answer, with something missing),
#: ``failed`` (no evidence was read: no answer), ``interrupted`` (Ctrl-C or SIGTERM)
STATUSES = ("ok", "partial", "failed", "interrupted")


@attrs.define
class Answer:
    answer: str
    citations: list[Citation] = attrs.Factory(list)
    strategy: str = ""
    model: str = ""
    usage: Usage = attrs.Factory(Usage)
    elapsed_s: float = 0.0
    failures: list[FailedChunk] = attrs.Factory(list)
    skipped_sources: list[dict[str, str]] = attrs.Factory(list)
    stopped_by: str | None = None
    run_id: str | None = None
    strategy_reason: str | None = None
    chunks: dict[str, int] = attrs.Factory(dict)
    #: a one-line statement of what is missing, when the answer is partial
    note: str | None = None
    #: problems that are not failed chunks (see :attr:`Draft.problems`)
    problems: list[str] = attrs.Factory(list)
    #: citations in the model's text that were dropped, each ``{"path", "line", "reason"}``: a
    #: line that was not read, a blank line, a path that is not a loaded document
    citations_dropped: list[dict[str, Any]] = attrs.Factory(list)

    @property
    def partial(self) -> bool:
        """Whether anything is missing (a chunk failed, or a limit stopped the run).

        True for a ``failed`` run too, which has no answer at all: use :attr:`status` to tell
        them apart (the JSON's ``partial`` is true only for ``partial`` and ``interrupted``).
        """
        return bool(self.failures) or self.stopped_by is not None

    @property
    def evidence_read(self) -> bool:
        """Whether any evidence was read: a chunk, or (a strategy that reports no chunks) any
        call at all. A run that read none has no answer."""
        read = self.chunks.get("read")
        if read is None:
            return self.usage.calls + self.usage.cached_calls > 0
        return read > 0

    @property
    def status(self) -> str:
        """``ok``, ``partial``, ``failed`` (nothing was read) or ``interrupted``; what the run
        store records and the JSON says, and what :attr:`exit_code` follows."""
        if self.stopped_by == "interrupted":
            return "interrupted"
        if not self.partial:
            return "ok"
        return "partial" if self.evidence_read and self.answer else "failed"

    @property
    def exit_code(self) -> int:
        """``ponder ask``'s exit code: 0 ok, 3 partial or interrupted with an answer, 1 failed
        (or interrupted before anything was read)."""
        status = self.status
        if status == "ok":
            return 0
        if status == "failed" or not self.answer:
            return 1
        return 3

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["status"] = self.status
        data["partial"] = self.status in ("partial", "interrupted")
        data["usage"]["cost_usd"] = round(self.usage.cost_usd, 6)
        data["elapsed_s"] = round(self.elapsed_s, 3)
        return data


#: ``path:line``, starting at a word boundary: not inside a URL (``http://127.0.0.1:8080`` in
#: ponder's own "cannot reach the provider at …" note is no citation, and was reported as a
#: dropped one) nor in the middle of a longer token
_CITATION = re.compile(r"(?<![\w:/.\\-])(?P<path>[\w./\\-]+\.\w+|<stdin>):(?P<line>\d+)")


def _known_paths_pattern(paths: Sequence[str]) -> re.Pattern[str] | None:
    """The loaded paths, literally (longest first), followed by ``:line``: a path with spaces or
    other characters the generic pattern does not allow is still found."""
    odd = [p for p in paths if not re.fullmatch(r"[\w./\\-]+\.\w+|<stdin>", p)]
    if not odd:
        return None
    alternatives = "|".join(re.escape(p) for p in sorted(odd, key=len, reverse=True))
    return re.compile(rf"(?P<path>{alternatives}):(?P<line>\d+)")


def extract_citations(text: str, documents: Any, *,
                      read: Iterable[tuple[str, int, int]] | None = None,
                      dropped: list[dict[str, Any]] | None = None) -> list[Citation]:
    """``path:line`` references in ``text`` that point at a line that was read, in order.

    ``read`` is the ``(path, first, last)`` spans the model was shown (None: every loaded
    document whole). A reference is dropped, and described in ``dropped`` when a list is given,
    when its path is no loaded document (a unique suffix of one is accepted: models shorten
    paths), when its line was not among those read, or when that line is blank (no evidence).
    """
    # Only the documents actually cited are split into lines (on first use): splitting all of
    # them made half a million line strings at 20 MB, the run's peak memory (~+50 MB).
    texts: dict[str, str] = {}
    starts: dict[str, int] = {}
    for doc in documents:
        texts[doc.path] = doc.text
        starts[doc.path] = doc.start_line
    split: dict[str, list[str]] = {}

    def lines_of(path: str) -> list[str]:
        if path not in split:
            split[path] = texts[path].split("\n")
        return split[path]

    spans: dict[str, list[tuple[int, int]]] = {}
    if read is None:
        for path, body in texts.items():
            count = body.count("\n") + 1  # len(body.split("\n")), without the list
            ends_blank = body == "" or body.endswith("\n")
            last = starts[path] + max(count - (1 if ends_blank else 0), 1) - 1
            spans[path] = [(starts[path], last)]
    else:
        for path, first, last in read:
            spans.setdefault(path, []).append((first, last))
    matches: list[tuple[int, str, int]] = []
    taken: list[tuple[int, int]] = []
    known = _known_paths_pattern(list(texts))
    for pattern in (known, _CITATION):
        if pattern is None:
            continue
        for match in pattern.finditer(text):
            if any(a < match.end() and match.start() < b for a, b in taken):
                continue  # already found as a loaded path with spaces
            taken.append(match.span())
            matches.append((match.start(), match.group("path"), int(match.group("line"))))
    found: list[Citation] = []

    def drop(path: str, line: int, reason: str) -> None:
        if dropped is not None and not any(d["path"] == path and d["line"] == line
                                           for d in dropped):
            dropped.append({"path": path, "line": line, "reason": reason})

    for _, path, line in sorted(matches):
        if path not in texts:  # the model may shorten a path: accept a unique suffix match;
            # or lengthen it: the path as given on the command line (``corpus/f1.py`` for a
            # document loaded from ``corpus/`` as ``f1.py``)
            candidates = [p for p in texts if p.endswith("/" + path)] or \
                [p for p in texts if path.endswith("/" + p)]
            if len(candidates) != 1:
                drop(path, line, "not a loaded document")
                continue
            path = candidates[0]
        if not any(first <= line <= last for first, last in spans.get(path, ())):
            drop(path, line, "that line was not read")
            continue
        index = line - starts[path]
        body = lines_of(path)
        if not 0 <= index < len(body) or not body[index].strip():
            drop(path, line, "a blank line" if 0 <= index < len(body)
                 else "beyond the end of the file")
            continue
        if Citation(path, line) not in found:
            found.append(Citation(path, line))
    return found
