"""The ``follow_up`` strategy: answer with a base strategy, then follow what the answer names.

Single-pass strategies lose two-hop questions: asked "what does ``handshake_timeout()``
return?", the chunk holding ``def handshake_timeout(): return grace_window_seconds()`` answers
with that line, while the chunk holding ``def grace_window_seconds(): return 731`` cannot know it
matters, so the value never reaches the answer. ``follow_up`` adds a second round:

1. **First round**: the ``base`` strategy (``map_reduce`` by default) answers.
2. **Unresolved names**: identifiers the first answer *calls* (``name(``) or names in backticks
   that the answer itself does not define (no ``def name`` / ``class name`` / ``name =`` in it);
   at most ``max_names``, in order of appearance. None: the first answer is the answer (no call).
3. **Second round**: the lines that define those names are found lexically in the context
   (``def name``, ``class name``, ``name =`` at the start of a line, an exact match: no model, no
   index), cut into chunks, and read in as few ``answer`` calls (``role="follow_up"``) as fit
   the window, each with the first answer shown as an earlier finding. The second round's
   answer, when it says something, is the answer; otherwise the first round's stands.

**LM calls**: ``base calls`` + ``g`` (read calls of the second round, usually 1; 0 when nothing
is unresolved or no definition is found) + ``R(g)`` combine calls when ``g > 1``.

Config example::

    [strategy]
    name = "follow_up"
    # base = "map_reduce"       # the first round's strategy
    # base_options = {}         # its settings
    # max_names = 3             # names followed at most
    # fan_in = 8                # answers per combine call when the second round took several
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from ponder import hookimpl

PONDER_PLUGIN_API = 1

#: a call in an answer: an identifier followed by "(" (attribute calls count by their last name)
_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]{2,})\s*\(")
#: a name quoted in backticks
_TICKED = re.compile(r"`([A-Za-z_][A-Za-z0-9_]{2,})`")
#: words that look like calls but name no definition worth following
_BUILTINS = frozenset({
    "print", "len", "range", "int", "str", "float", "list", "dict", "set", "tuple", "open",
    "super", "isinstance", "sum", "min", "max", "sorted", "enumerate", "zip", "map", "filter",
    "return", "lines", "line", "def", "class", "self", "None", "True", "False", "the", "and",
})


@attrs.define
class FollowUpSettings:
    #: the first round's strategy
    base: str = "map_reduce"
    #: settings of the base strategy
    base_options: dict[str, Any] = attrs.field(factory=dict)
    #: unresolved names followed at most
    max_names: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    #: answers per combine call when the second round took several read calls
    fan_in: int = attrs.field(default=8, validator=attrs.validators.ge(2))


def unresolved_names(answer: str, *, limit: int = 3) -> list[str]:
    """Names ``answer`` calls or quotes but does not define itself, in order, at most ``limit``."""
    names: list[str] = []
    for match in sorted([*_CALL.finditer(answer), *_TICKED.finditer(answer)],
                        key=lambda m: m.start()):
        name = match.group(1)
        if name in _BUILTINS or name in names:
            continue
        defines = rf"(?:\b(?:def|class)[ \t]+{re.escape(name)}\b|^[ \t]*{re.escape(name)}[ \t]*=)"
        if re.search(defines, answer, re.M):
            continue
        names.append(name)
    return names[:limit]


def definition_pattern(names: list[str]) -> re.Pattern[str]:
    """Lines that define one of ``names``: ``def``/``class``/assignment at a line start."""
    alternation = "|".join(re.escape(n) for n in names)
    return re.compile(rf"^[ \t]*(?:async[ \t]+)?(?:def[ \t]+|class[ \t]+)?(?:{alternation})\b"
                      rf"[ \t]*(?:\(|:|=(?!=))", re.M)


def defining_context(context: Any, names: list[str], *, around: int = 3) -> Any:
    """A Context of the lines around each definition of ``names`` (with real line numbers)."""
    from ponder.context.sources import Context, Document

    pattern = definition_pattern(names)
    documents = []
    for doc in context.documents:
        if not any(name in doc.text for name in names):
            continue
        lines = doc.text.split("\n")
        hits = [doc.text.count("\n", 0, m.start()) for m in pattern.finditer(doc.text)]
        spans: list[list[int]] = []
        for i in hits:
            a, b = max(0, i - around), min(len(lines), i + around + 1)
            if spans and a <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], b)
            else:
                spans.append([a, b])
        for a, b in spans:
            documents.append(Document(doc.path, "\n".join(lines[a:b]) + "\n",
                                      start_line=doc.start_line + a, language=doc.language))
    return Context(documents)


class FollowUpStrategy:
    name = "follow_up"

    def __init__(self, settings: FollowUpSettings | None = None) -> None:
        self.settings = settings or FollowUpSettings()

    def run(self, question: str, context: Any, services: Any) -> Any:
        from ponder.plugins._common import make_strategy
        from ponder.support.observability import SpanType

        s = self.settings
        base = make_strategy(services, s.base, s.base_options, section="strategy.base_options")
        with services.tracker.span("follow_up", SpanType.STRATEGY, base=s.base) as span:
            draft = base.run(question, context, services)
            draft.strategy = draft.strategy or s.base
            second = follow_up(question, draft, context, services, max_names=s.max_names,
                               fan_in=s.fan_in)
            if second["found"]:
                draft.strategy += "+follow_up"
            span.attributes.update(names=second.get("names", []), calls=second.get("calls", 0))
        return draft


def follow_up(question: str, draft: Any, context: Any, services: Any, *, max_names: int = 3,
              fan_in: int = 8) -> dict[str, Any]:
    """The second round on ``draft`` (updated in place when it finds something); returns what
    it did: ``{"names": [...], "calls": n, "found": bool}``."""
    from ponder.context.chunking import chunk_context
    from ponder.plugins._common import (
        format_finding,
        plan_groups,
        prompt_room,
        read_spans,
        reduce_answers,
        require_room,
        says_nothing,
        truncate_tokens,
    )
    from ponder.plugins._signatures import answer_signature
    from ponder.support.results import ChunkResult

    # nothing to follow: no finding, a stopped run, or nothing could be read at all
    if (says_nothing(draft.text) or services.stopped_by is not None
            or (draft.chunks_total and not draft.chunks_read)
            or draft.text.startswith("No answer")):
        return {"names": [], "calls": 0, "found": False}
    names = unresolved_names(draft.text, limit=max_names)
    if not names:
        return {"names": [], "calls": 0, "found": False}
    found_context = defining_context(context, names)
    if not found_context.documents:
        _note(draft, f"follow-up: no definition of {', '.join(names)} in the context")
        return {"names": names, "calls": 0, "found": False}
    signature = answer_signature()
    earlier = truncate_tokens(draft.text, 2000)
    asked = (f"{question}\n\nAn earlier finding (from another part of the text):\n{earlier}\n"
             f"Use the definitions of {', '.join(names)} below to finish the answer.")
    room = require_room(prompt_room(services, signature, asked), "the follow-up", services)
    chunks = chunk_context(found_context, chunk_tokens=max(64, min(room, 4096)))
    groups = plan_groups([c.tokens + 1 for c in chunks], len(chunks), room)

    def read(index: int, group: list[int]) -> ChunkResult:
        text = "\n\n".join(chunks[i].render() for i in group)
        prediction = services.predict(signature, role="follow_up", question=asked, context=text)
        return ChunkResult(index, str(prediction.answer or "").strip())

    batch = services.map(read, groups, label="follow-up")
    answers = [r.relevant_info for r in sorted(batch.results, key=lambda r: r.index)
               if not says_nothing(r.relevant_info)]
    calls = batch.total
    if not answers:
        _note(draft, f"follow-up on {', '.join(names)}: the definitions added nothing")
        return {"names": names, "calls": calls, "found": False}
    text = answers[0]
    if len(answers) > 1:
        partials = [format_finding(i, a) for i, a in enumerate(answers, 1)]
        reduced = reduce_answers(services, question, partials, fan_in=fan_in,
                                 label="follow-up reduce")
        text, calls = reduced.text, calls + reduced.calls
    draft.text = text
    if draft.read is not None:
        draft.read = [*draft.read, *read_spans(chunks)]
    draft.chunks_read += len(chunks)
    _note(draft, f"follow-up: read the definitions of {', '.join(names)} "
                 f"({len(chunks)} chunk(s), {calls} call(s))")
    return {"names": names, "calls": calls, "found": True}


def _note(draft: Any, text: str) -> None:
    draft.reason = f"{draft.reason}; {text}" if draft.reason else text


@hookimpl
def ponder_register_strategies(register):
    register("follow_up", FollowUpStrategy, settings=FollowUpSettings)
