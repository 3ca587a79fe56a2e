"""Helpers the first-party strategies share: prompt budgets, rendering, the reduce tree.

Nothing here imports dspy at module level, so a strategy plugin that imports this stays light.

**Prompt budget.** A prompt is the signature's fixed text (instructions, field descriptions, the
adapter's structure: :func:`prompt_overhead`, measured once per signature) plus the inputs. The
room for inputs is ``context_window - max_output_tokens - overhead``; every strategy sizes what it
sends so the estimated prompt (``ceil(chars / 4)``, see :mod:`ponder.context.chunking`) stays
inside it.

**Reduce tree** (:func:`reduce_answers`). ``m`` partial answers are combined in groups of at most
``fan_in`` (k) per call, level after level, until one answer is left; a single partial still goes
through one combine call so the answer is phrased for the question. A group also closes early
when the next partial would push the prompt past the room, and every partial is capped at half the
room, so each group holds at least two partials and each level shrinks. Without such window splits
the number of combine calls is::

    R(m) = sum(ceil(m / k**i) for i in 1..L),   L = max(1, ceil(log_k m))   (R(0) = 0)

(levels ``L``; e.g. m = 20, k = 8: 3 + 1 = 4 calls). Window splits can only add calls.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ponder.context.chunking import (
    Piece,
    default_chunk_tokens,
    document_rendered_chars,
    estimate_tokens,
    tokens_for_chars,
)
from ponder.errors import PonderError

log = logging.getLogger("ponder.strategy")

#: Tokens added to the measured overhead of a signature: the message separators, a demo-free
#: adapter's small variations, and the question's framing.
PROMPT_MARGIN = 48

#: The smallest room for inputs a strategy accepts before it reports the window as too small.
MIN_ROOM = 32

#: Limits that stop a run (``ponder.engine.services.LimitReached.limit``); a chunk failing with one
#: of these was not read because the run stopped, not because the chunk was bad.
LIMIT_KINDS = frozenset({"max_cost", "max_tokens", "timeout", "interrupted", "cancelled"})

#: How a first-party strategy's draft begins when no chunk had anything relevant (so a strategy
#: that combines drafts, such as ``hierarchical``, can leave it out).
NOTHING_FOUND = "The text does not contain information that answers the question"

_SEPARATOR = "\n\n"
_TRUNCATED = "\n[… truncated to fit the window …]\n"
_NOT_FOUND = re.compile(r"^\W*(not found|nothing relevant|none)\W*$", re.IGNORECASE)


# --- predictor settings (shared by the single-step predictors) ---------------------------------
def _optional_ge(minimum: float) -> Any:
    return attrs.validators.optional(attrs.validators.ge(minimum))


@attrs.define
class PredictorSettings:
    """Settings of the single-step predictors (``predict``, ``chain_of_thought``)."""

    #: sampling temperature sent with every call; None leaves the adapter's default
    temperature: float | None = attrs.field(default=None, validator=_optional_ge(0.0))
    #: cap on the reply's tokens; None leaves the adapter's ``max_output_tokens``
    max_tokens: int | None = attrs.field(default=None, validator=_optional_ge(1))

    def lm_config(self) -> dict[str, Any]:
        """The per-call LM options these settings ask for (only the ones that are set)."""
        config: dict[str, Any] = {}
        if self.temperature is not None:
            config["temperature"] = self.temperature
        if self.max_tokens is not None:
            config["max_tokens"] = self.max_tokens
        return config


# --- prompt sizes -----------------------------------------------------------------------------
_overhead_lock = threading.Lock()


@functools.cache
def _measured_overhead(signature: Any) -> int:
    import dspy

    inputs = {name: "" for name in signature.input_fields}
    # with a reasoning field too, so chain_of_thought's prompts fit as well as predict's
    extended = dspy.ChainOfThought(signature).predict.signature
    sizes = []
    for adapter in (dspy.ChatAdapter(), dspy.JSONAdapter()):
        messages = adapter.format(extended, demos=[], inputs=inputs)
        sizes.append(estimate_tokens(_SEPARATOR.join(str(m["content"]) for m in messages)))
    return max(sizes)


def prompt_overhead(signature: Any) -> int:
    """Estimated tokens of ``signature``'s prompt with empty inputs, plus :data:`PROMPT_MARGIN`."""
    with _overhead_lock:
        return _measured_overhead(signature) + PROMPT_MARGIN


def window_budget(services: Any) -> int:
    """Tokens a prompt may hold: the context window less the reply's ``max_output_tokens``."""
    info = services.model_info
    return info.context_window - info.max_output_tokens


def prompt_room(services: Any, signature: Any, *fixed: str) -> int:
    """Tokens left for the variable input of a ``signature`` call that also sends ``fixed``."""
    return (window_budget(services) - prompt_overhead(signature)
            - sum(estimate_tokens(text) for text in fixed))


def require_room(room: int, what: str, services: Any) -> int:
    """``room`` if a useful prompt fits; else a PonderError naming the window."""
    if room < MIN_ROOM:
        info = services.model_info
        raise PonderError(
            f"the model's {info.context_window:,}-token window leaves no room for {what} after "
            f"{info.max_output_tokens:,} output tokens and the prompt's instructions; use a model "
            "with a larger window, a lower max_output_tokens, or a shorter question"
        )
    return room


def resolve_chunk_tokens(services: Any, configured: int | None, room: int) -> int:
    """The chunk size to use: ``configured``, else the run's, else the kernel default; never
    more than ``room`` (what the map prompt leaves for a chunk)."""
    info = services.model_info
    tokens = configured or services.chunk_tokens
    if tokens is None:
        try:
            tokens = default_chunk_tokens(info.context_window,
                                          max_output_tokens=info.max_output_tokens)
        except ValueError:
            tokens = room
    if tokens > room:
        if configured or services.chunk_tokens:
            log.warning("chunk_tokens=%d does not fit the window's room for a chunk (%d tokens); "
                        "using %d", tokens, room, room)
        tokens = room
    from ponder.context.chunking import MIN_CHUNK_TOKENS

    if tokens < MIN_CHUNK_TOKENS:
        raise PonderError(
            f"the model's {info.context_window:,}-token window leaves only {room} tokens for a "
            f"chunk (need at least {MIN_CHUNK_TOKENS}); use a model with a larger window or a "
            "lower max_output_tokens"
        )
    return tokens


# --- rendering --------------------------------------------------------------------------------
def _document_piece(document: Any) -> Piece | None:
    text = document.text
    if not text:
        return None
    content = text[:-1] if text.endswith("\n") else text
    last = document.start_line + content.count("\n")
    return Piece(document.path, document.start_line, last, content)


def render_documents(documents: Sequence[Any]) -> str:
    """Every document whole, as chunks render them: a header, then numbered lines."""
    pieces = [piece for piece in map(_document_piece, documents) if piece is not None]
    return _SEPARATOR.join(piece.render() for piece in pieces)


def rendered_tokens(documents: Sequence[Any]) -> int:
    """``estimate_tokens(render_documents(documents))`` without rendering: each document's
    rendered size is remembered (``document_rendered_chars``), and chunking reads the same."""
    sizes = [size for size in map(document_rendered_chars, documents) if size]
    return tokens_for_chars(sum(sizes) + len(_SEPARATOR) * max(len(sizes) - 1, 0))


def fits_rendered(context: Any, room: int) -> bool:
    """Whether the rendered ``context`` holds at most ``room`` tokens (and is not empty).

    A rendered line is never shorter than a quarter of its raw text (leading groups of four
    spaces become one tab; a line number and ``| `` are added), so a raw size over four times
    the room answers no without the pass over the text (each document's size is remembered
    once counted: ``rendered_tokens``)."""
    raw = sum(len(document.text) for document in context.documents)
    if raw == 0 or tokens_for_chars(raw // 4) > room:
        return False
    return rendered_tokens(context.documents) <= room


def truncate_tokens(text: str, max_tokens: int, *, keep: str = "head") -> str:
    """``text`` cut to at most ``max_tokens`` estimated tokens, with a visible marker.

    ``keep="head"`` keeps the beginning; ``"both"`` keeps the beginning and the end (for running
    notes, whose oldest and newest parts both matter).
    """
    if estimate_tokens(text) <= max_tokens:
        return text
    room = max(max_tokens * 4 - len(_TRUNCATED), 0)
    if keep == "both":
        head = room // 2
        return text[:head] + _TRUNCATED + text[len(text) - (room - head):]
    return text[:room] + _TRUNCATED


def says_nothing(text: str | None, confidence: str | None = None) -> bool:
    """Whether a result carries nothing: confidence none, empty, a bare NOT FOUND, or a draft
    that begins with :data:`NOTHING_FOUND`."""
    if confidence is not None and str(confidence).strip().lower() == "none":
        return True
    text = (text or "").strip()
    return not text or text.startswith(NOTHING_FOUND) or bool(_NOT_FOUND.match(text))


def format_finding(number: int, text: str, *, source: str = "", confidence: str = "") -> str:
    """One partial answer as the combine prompt shows it."""
    details = ", ".join(part for part in (source, f"confidence {confidence}" if confidence else "")
                        if part)
    header = f"--- finding {number}" + (f" ({details})" if details else "") + " ---"
    return f"{header}\n{text.strip()}"


# --- the reduce tree --------------------------------------------------------------------------
def plan_groups(sizes: Sequence[int], fan_in: int, room: int) -> list[list[int]]:
    """Indices of ``sizes`` grouped in order: at most ``fan_in`` per group, and a group's total
    within ``room`` (an item alone larger than ``room`` still gets a group of its own)."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, size in enumerate(sizes):
        if current and (len(current) >= fan_in or used + size > room):
            groups.append(current)
            current, used = [], 0
        current.append(index)
        used += size
    if current:
        groups.append(current)
    return groups


def reduce_calls(m: int, fan_in: int) -> int:
    """``R(m)``: combine calls for ``m`` partial answers when no window split happens."""
    if m <= 0:
        return 0
    calls, level = 0, m
    while True:
        level = math.ceil(level / fan_in)
        calls += level
        if level == 1:
            return calls


@attrs.define
class Reduced:
    """The outcome of :func:`reduce_answers`."""

    text: str
    levels: int = 0
    calls: int = 0
    #: combine calls that failed (their inputs went up a level verbatim)
    failed_calls: int = 0
    #: the run stopped (limit) before everything was combined: ``text`` is the findings joined
    stopped: bool = False
    #: one line per failed combine call, for the draft's ``problems``
    problems: list[str] = attrs.Factory(list)


def reduce_answers(services: Any, question: str, partials: Sequence[str], *, fan_in: int,
                   label: str = "reduce") -> Reduced:
    """Combine ``partials`` into one answer with a tree of combine calls (see the module doc).

    A failed combine call passes its inputs up unchanged, so nothing found is lost; when a limit
    stops the run, the findings reached so far are returned joined, marked ``stopped``.
    """
    from ponder.plugins._signatures import combine_signature
    from ponder.support.observability import SpanType

    if not partials:
        raise ValueError("reduce_answers needs at least one partial answer")
    signature = combine_signature()
    room = require_room(prompt_room(services, signature, question), "combining answers",
                        services)
    cap = max(room // 2 - 2, 1)  # two capped items (with separators) always fit one prompt
    level = [truncate_tokens(p, cap) for p in partials]
    outcome = Reduced(text="")

    def combine(index: int, group: list[str]) -> Any:
        from ponder.support.results import ChunkResult

        prediction = services.predict(signature, role="reduce", question=question,
                                      partial_answers=_SEPARATOR.join(group))
        return ChunkResult(index, str(prediction.answer or "").strip())

    with services.tracker.span(label, SpanType.REDUCE, partials=len(partials), fan_in=fan_in):
        while True:
            if services.stopped_by is not None:
                outcome.stopped = True
                outcome.text = _SEPARATOR.join(level)
                return outcome
            sizes = [estimate_tokens(item) + 1 for item in level]
            groups = [[level[i] for i in group] for group in plan_groups(sizes, fan_in, room)]
            outcome.levels += 1
            batch = services.map(combine, groups, label=f"{label} level {outcome.levels}")
            outputs = {result.index: result.relevant_info for result in batch.results}
            for failure in batch.failed:
                if failure.kind not in LIMIT_KINDS:
                    outcome.failed_calls += 1
                    outcome.problems.append(
                        f"a combine call failed ({failure.error}); its "
                        f"{len(groups[failure.index])} inputs went up a level uncombined")
                    log.warning("a combine call failed (%s); its %d inputs go up unchanged",
                                failure.error, len(groups[failure.index]))
                outputs[failure.index] = _SEPARATOR.join(groups[failure.index])
            outcome.calls += batch.total
            level = [truncate_tokens(outputs[i], cap) for i in range(len(groups))]
            if len(level) == 1 and services.stopped_by is None:
                outcome.text = level[0]
                return outcome


def stop_reason(services: Any, failures: Sequence[Any] = ()) -> str | None:
    """The limit that stopped the run: ``services.stopped_by``, else a limit a failure names."""
    if services.stopped_by is not None:
        return services.stopped_by
    return next((f.kind for f in failures if f.kind in LIMIT_KINDS), None)


def stopped_note(services: Any, failures: Sequence[Any] = ()) -> str:
    return (f"[partial: the run stopped ({stop_reason(services, failures)}) before the findings "
            "could be combined; these are the findings so far]")


def nothing_read(total: int, failures: Sequence[Any], services: Any) -> str:
    """The draft text when not one chunk could be read."""
    reason = stop_reason(services, failures)
    if reason is not None:
        return f"No answer: the run stopped ({reason}) before any of the {total} chunks was read."
    if not failures:
        return "No answer: the context holds no text to read."
    from ponder.engine.failures import clip_error

    return f"No answer: none of the {total} chunks could be read ({clip_error(failures[0].error)})."


# --- what was read, and what the answer stands on ---------------------------------------------
#: words of a finding that can locate its line: identifiers, numbers, quoted values (4+ chars,
#: or 2+ digits), checked against the lines the finding's chunk showed
_LOCATING = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{3,}|\d{2,}")
_COMMON_WORDS = frozenset({
    "this", "that", "with", "from", "have", "been", "were", "which", "what", "when", "where",
    "there", "their", "they", "them", "these", "those", "into", "only", "also", "does", "each",
    "other", "than", "then", "such", "more", "most", "some", "very", "about", "would", "could",
    "should", "file", "line", "lines", "chunk", "chunks", "text", "found", "value", "values",
    "defined", "define", "function", "return", "returns", "none", "relevant", "information",
    "answer", "question", "code",
})


def read_spans(chunks: Sequence[Any]) -> list[tuple[str, int, int]]:
    """The ``(path, first, last)`` line spans the model was shown in ``chunks``
    (:attr:`ponder.engine.answer.Draft.read`)."""
    return [(piece.path, piece.start_line, piece.end_line)
            for chunk in chunks for piece in chunk.pieces]


def document_spans(documents: Sequence[Any]) -> list[tuple[str, int, int]]:
    """The spans of ``documents`` whole (a strategy that shows the model everything)."""
    pieces = [piece for piece in map(_document_piece, documents) if piece is not None]
    return [(piece.path, piece.start_line, piece.end_line) for piece in pieces]


def _pieces_of(items: Sequence[Any]) -> list[Piece]:
    pieces: list[Piece] = []
    for item in items:
        if isinstance(item, Piece):
            pieces.append(item)
        elif hasattr(item, "pieces"):
            pieces.extend(item.pieces)
        else:  # a document
            piece = _document_piece(item)
            if piece is not None:
                pieces.append(piece)
    return pieces


def evidence_lines(finding: str, items: Sequence[Any], *, limit: int = 3) -> list[Any]:
    """Where ``finding`` came from among the lines of ``items`` (chunks, pieces or documents):
    the lines holding most of its locating words (identifiers, numbers), at most ``limit``; else
    the first non-blank line of each item's first piece. ``Citation`` objects, for
    :attr:`ponder.engine.answer.Draft.evidence`."""
    from ponder.engine.answer import Citation

    pieces = _pieces_of(items)
    words = {w.strip(".") for w in _LOCATING.findall(finding or "")}
    words = {w for w in words if w and w.lower() not in _COMMON_WORDS}
    scored: list[tuple[int, int, str, int]] = []
    if words:
        for order, piece in enumerate(pieces):
            if piece.partial:
                continue
            for offset, line in enumerate(piece.text.split("\n")):
                hits = sum(1 for word in words if word in line)
                if hits:
                    scored.append((-hits, order * 1_000_000 + offset, piece.path,
                                   piece.start_line + offset))
    if scored:
        best = min(score for score, *_ in scored)
        # a line needs the best score, and two words unless the finding has only one
        if -best >= min(2, len(words)):
            top = sorted(item for item in scored if item[0] == best)[:limit]
            return [Citation(path, line) for _, _, path, line in top]
    found = []
    for piece in pieces[:limit]:
        for offset, line in enumerate(piece.text.split("\n")):
            if line.strip():
                found.append(Citation(piece.path, piece.start_line + offset))
                break
    return found


# --- sub-strategies ---------------------------------------------------------------------------
def make_strategy(services: Any, name: str, options: dict[str, Any] | None = None,
                  *, section: str = "strategy") -> Any:
    """Build the strategy registered as ``name`` from the run's plugin registry.

    Strategies that delegate (``auto``, ``hierarchical``) use this instead of importing another
    plugin module, so a third-party strategy works as a delegate too.
    """
    plugin_set = getattr(services, "plugin_set", None)
    if plugin_set is None:
        raise PonderError(f"strategy {name!r} cannot be found: this run has no plugin registry "
                          "(services.plugin_set)")
    entry = plugin_set.get("strategy", name)
    if entry.settings is None:
        if options:
            raise PonderError(f"{section}: strategy {name!r} takes no settings, got "
                              f"{sorted(options)}")
        return entry.factory()
    from ponder.kernel.config import structure_settings

    return entry.factory(structure_settings(entry.settings, options or {}, section=section))


def offset_failures(failures: Sequence[Any], offset: int, prefix: str = "") -> list[Any]:
    """Failures of a sub-run with their chunk indices shifted into the whole run's numbering."""
    return [attrs.evolve(f, index=f.index + offset, error=f"{prefix}{f.error}") for f in failures]


def run_sequential(services: Any, items: Sequence[Any], step: Callable[[int, Any], None], *,
                   label: str) -> None:
    """Call ``step(index, item)`` in order, with a CHUNK span and progress for each."""
    from ponder.support.observability import SpanType
    from ponder.support.progress import ProgressContext

    with ProgressContext(total=len(items), model=services.model_info.model, description=label,
                         mode=services.progress_mode) as progress:
        for index, item in enumerate(items):
            with services.tracker.span(f"{label}[{index}]", SpanType.CHUNK, index=index):
                ok = step(index, item)
            if ok is False:
                progress.fail()
            else:
                progress.update(advance=1, status="processing")
        progress.update(status="done")


# --- stored indexes (retrievers' dump/load) ----------------------------------------------------
#: a stored index starts with the length of its JSON header (little-endian uint32)
_INDEX_HEADER_LENGTH = 4


def pack_index(header: dict[str, Any], *blobs: bytes) -> bytes:
    """A stored index: the JSON ``header``'s length, the header, then raw ``blobs`` (no pickle)."""
    import json

    text = json.dumps(header, sort_keys=True).encode()
    return b"".join([len(text).to_bytes(_INDEX_HEADER_LENGTH, "little"), text, *blobs])


def read_index_header(data: bytes, *, owner: str, fmt: str,
                      version: int) -> tuple[dict[str, Any], int]:
    """The JSON header of an index stored by :func:`pack_index` and the offset of its blobs;
    ``ValueError`` naming ``owner`` when ``data`` is not such an index of format ``fmt``."""
    import json

    if not isinstance(data, bytes | bytearray | memoryview) or len(data) < _INDEX_HEADER_LENGTH:
        raise ValueError(f"{owner}: not a stored index")
    length = int.from_bytes(bytes(data[:_INDEX_HEADER_LENGTH]), "little")
    end = _INDEX_HEADER_LENGTH + length
    if end > len(data):
        raise ValueError(f"{owner}: not a stored index (bad header length)")
    try:
        header = json.loads(bytes(data[_INDEX_HEADER_LENGTH:end]))
    except ValueError:
        raise ValueError(f"{owner}: not a stored index (bad header)") from None
    if not isinstance(header, dict) or header.get("format") != fmt:
        raise ValueError(f"{owner}: not a stored {owner} index")
    if header.get("version") != version:
        raise ValueError(f"{owner}: stored index version {header.get('version')} is not "
                         f"{version}")
    return header, end
