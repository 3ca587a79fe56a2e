"""The ``hierarchical`` strategy: answer per directory, then combine the section answers.

**Sections.** Documents are grouped by directory, starting below the directory all of them share.
A directory whose rendered text fits the section budget (``section_chunks`` chunks' worth of
tokens) is one section; a larger one is split again by its subdirectories, recursively, and the
files directly inside a directory too large for one section are packed, in order, into sections
that fit (a single file larger than the budget is a section of its own). Every document lands in
exactly one section, and sections keep the documents' order.

**Answers.** Each section is answered by the sub-strategy (``map_reduce`` unless
``sub_strategy`` names another), obtained from the run's plugin registry and built with
``sub_settings``. Sections whose answer found nothing are left out; the others are combined with
the same window-safe reduce tree as ``map_reduce`` (``fan_in`` per call). When only one section
found something, its answer is the answer (it was already phrased for the question).

**LM calls** with the default sub-strategy, for sections ``s`` of ``n_s`` chunks of which
``m_s`` found something, ``S'`` sections that found something, and fan-in ``k``::

    calls = sum(n_s + R(m_s)) + (R(S') if S' >= 2 else 0)

with ``R`` the reduce count documented in :mod:`ponder.plugins.map_reduce`.

Failures of every section are reported with chunk indices numbered across the whole run.

Config example::

    [strategy]
    name = "hierarchical"
    # sub_strategy = "map_reduce"           # any registered strategy but hierarchical
    # sub_settings = { fan_in = 4 }         # that strategy's settings
    # section_chunks = 32                   # a section larger than 32 chunks is split further
    # fan_in = 8                            # section answers combined per call
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from ponder import hookimpl

PONDER_PLUGIN_API = 1


def _not_self(_inst: Any, _attr: Any, value: str) -> None:
    if value == "hierarchical":
        raise ValueError("sub_strategy cannot be hierarchical itself")


@attrs.define
class HierarchicalSettings:
    #: the strategy that answers each section (looked up in the plugin registry)
    sub_strategy: str = attrs.field(default="map_reduce", validator=_not_self)
    #: settings for the sub-strategy
    sub_settings: dict[str, Any] = attrs.field(factory=dict)
    #: a section is split further when it would take more than this many chunks
    section_chunks: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    #: section answers combined per call
    fan_in: int = attrs.field(default=8, validator=attrs.validators.ge(2))


@attrs.frozen
class Section:
    """Documents answered together: a directory (``src/api/``), or files of one directory."""

    name: str
    documents: tuple[Any, ...]


def plan_sections(documents: Sequence[Any], budget_tokens: int) -> list[Section]:
    """Split ``documents`` into sections of at most ``budget_tokens`` rendered tokens where the
    directory structure allows (see the module docstring)."""
    from ponder.plugins._common import rendered_tokens

    docs = [d for d in documents if d.text]
    if not docs:
        return []
    depth = _common_depth([d.path for d in docs])
    prefix = "".join(part + "/" for part in docs[0].path.split("/")[:depth])
    return _split(docs, depth, prefix, budget_tokens, rendered_tokens)


def _common_depth(paths: Sequence[str]) -> int:
    """How many leading directories all ``paths`` share."""
    dirs = [path.split("/")[:-1] for path in paths]
    depth = 0
    while all(len(d) > depth for d in dirs) and len({d[depth] for d in dirs}) == 1:
        depth += 1
    return depth


def _split(docs: list[Any], depth: int, prefix: str, budget: int, size: Any) -> list[Section]:
    # one entry per subdirectory (a list) or run of files directly here, in document order
    groups: dict[str, list[Any]] = {}
    for doc in docs:
        parts = doc.path.split("/")
        key = parts[depth] + "/" if len(parts) > depth + 1 else ""
        groups.setdefault(key, []).append(doc)
    sections: list[Section] = []
    for key, group in groups.items():
        if key and (size(group) <= budget or len(group) == 1):
            sections.append(Section(prefix + key, tuple(group)))
        elif key:
            sections.extend(_split(group, depth + 1, prefix + key, budget, size))
        else:
            sections.extend(_pack_files(group, prefix, budget, size))
    return sections


def _pack_files(files: list[Any], prefix: str, budget: int, size: Any) -> list[Section]:
    """The files of one directory packed in order into sections of at most ``budget`` tokens."""
    packs: list[list[Any]] = []
    used = 0
    for doc in files:
        tokens = size([doc])
        if packs and used + tokens <= budget:
            packs[-1].append(doc)
            used += tokens
        else:
            packs.append([doc])
            used = tokens
    label = prefix or "./"
    if len(packs) == 1 and len(files) > 1:
        return [Section(f"{label} (files)", tuple(files))]
    return [Section(pack[0].path if len(pack) == 1 else
                    f"{label} ({pack[0].path.rsplit('/', 1)[-1]} … "
                    f"{pack[-1].path.rsplit('/', 1)[-1]})", tuple(pack))
            for pack in packs]


class HierarchicalStrategy:
    name = "hierarchical"

    def __init__(self, settings: HierarchicalSettings | None = None) -> None:
        self.settings = settings or HierarchicalSettings()

    def section_budget(self, question: str, services: Any) -> int:
        """Rendered tokens a section may hold: ``section_chunks`` chunks of the default size."""
        from ponder.plugins._common import prompt_room, require_room, resolve_chunk_tokens
        from ponder.plugins._signatures import extract_signature

        room = require_room(prompt_room(services, extract_signature(), question), "a chunk",
                            services)
        return self.settings.section_chunks * resolve_chunk_tokens(services, None, room)

    def run(self, question: str, context: Any, services: Any) -> Any:
        from ponder.context.sources import Context
        from ponder.engine.answer import Draft
        from ponder.engine.services import LimitReached
        from ponder.errors import PonderError
        from ponder.plugins._common import (
            NOTHING_FOUND,
            document_spans,
            format_finding,
            log,
            make_strategy,
            offset_failures,
            reduce_answers,
            says_nothing,
            stopped_note,
        )
        from ponder.support.observability import SpanType
        from ponder.support.results import FailedChunk

        settings = self.settings
        sub = make_strategy(services, settings.sub_strategy, settings.sub_settings,
                            section="strategy.sub_settings")
        sections = plan_sections(context.documents, self.section_budget(question, services))
        failures: list[FailedChunk] = []
        problems: list[str] = []
        findings: list[tuple[Section, str]] = []
        total = read = 0
        read_spans: list[tuple[str, int, int]] = []
        evidence: list[Any] = []
        with services.tracker.span("hierarchical", SpanType.STRATEGY, sections=len(sections)):
            for section in sections:
                part = Context(documents=list(section.documents), sources=context.sources)
                with services.tracker.span(f"section {section.name}", SpanType.STRATEGY,
                                           documents=len(section.documents)):
                    try:
                        draft = sub.run(question, part, services)
                    except LimitReached as exc:
                        failures.append(FailedChunk(f"section {section.name}: {exc}", total,
                                                    kind=exc.limit))
                        continue
                    except PonderError as exc:  # e.g. direct: this section does not fit
                        failures.append(FailedChunk.from_exception(total, exc))
                        log.warning("section %s failed: %s", section.name, exc)
                        continue
                failures += offset_failures(draft.failures, total, f"{section.name}: ")
                total += draft.chunks_total
                read += draft.chunks_read
                problems += [f"section {section.name}: {p}" for p in draft.problems]
                # a sub-strategy that does not say what it read: the section was shown whole
                read_spans += (draft.read if draft.read is not None
                               else document_spans(section.documents)) if draft.chunks_read \
                    else []
                if not says_nothing(draft.text):
                    findings.append((section, draft.text))
                    evidence += draft.evidence

            if not findings:
                text = (f"{NOTHING_FOUND}: none of the {len(sections)} sections "
                        f"({read} chunks read) had anything relevant.")
            elif len(findings) == 1:
                text = findings[0][1]
            else:
                partials = [format_finding(number, answer, source=f"section {section.name}")
                            for number, (section, answer) in enumerate(findings, 1)]
                reduced = reduce_answers(services, question, partials, fan_in=settings.fan_in,
                                         label="combine sections")
                problems += reduced.problems
                text = reduced.text
                if reduced.stopped:
                    text = f"{stopped_note(services, failures)}\n\n{text}"
        return Draft(
            text=text,
            failures=failures,
            problems=problems,
            chunks_total=total,
            chunks_read=read,
            strategy=self.name,
            largest_prompt_tokens=services.largest_prompt_tokens,
            read=read_spans,
            evidence=evidence,
        )


@hookimpl
def ponder_register_strategies(register):
    register("hierarchical", HierarchicalStrategy, settings=HierarchicalSettings)
