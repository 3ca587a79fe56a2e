"""What a run returns: the answer, where it came from, what it cost and what is missing."""

from __future__ import annotations

import re
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

    def add(self, *, calls: int = 0, input_tokens: int = 0, output_tokens: int = 0,
            cost_usd: float = 0.0, retries: int = 0, cached_calls: int = 0) -> None:
        self.calls += calls
        self.cached_calls += cached_calls
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

    @property
    def partial(self) -> bool:
        return bool(self.failures) or self.stopped_by is not None

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["partial"] = self.partial
        data["usage"]["cost_usd"] = round(self.usage.cost_usd, 6)
        data["elapsed_s"] = round(self.elapsed_s, 3)
        return data


_CITATION = re.compile(r"(?P<path>[\w./\\-]+\.\w+|<stdin>):(?P<line>\d+)")


def extract_citations(text: str, documents: Any) -> list[Citation]:
    """``path:line`` references in ``text`` that point into a loaded document, in order."""
    spans: dict[str, tuple[int, int]] = {}
    for doc in documents:
        last = doc.start_line + max(doc.text.count("\n"), 0)
        spans[doc.path] = (doc.start_line, last)
    found: list[Citation] = []
    for match in _CITATION.finditer(text):
        path, line = match.group("path"), int(match.group("line"))
        span = spans.get(path)
        if span is None:  # the model may shorten a path: accept a unique suffix match
            candidates = [p for p in spans if p.endswith("/" + path)]
            if len(candidates) != 1:
                continue
            path = candidates[0]
            span = spans[path]
        if span[0] <= line <= span[1] and Citation(path, line) not in found:
            found.append(Citation(path, line))
    return found
