"""The ``auto`` strategy: pick a path by a fixed rule, and say which and why.

No model is asked which strategy to use: the choice depends only on the numbers and the
question's wording, so the same question over the same context always takes the same path, and
the draft's ``reason`` says why, for example ``context ≈ 41,200 tokens > window budget 6,000; a
lookup question; bm25 top-8 of 1,203 chunks first → found in 1 read call``.

The rule, in order:

1. the rendered context and the question fit one prompt (the window less the reply and the
   instructions) → ``direct``;
2. the question asks for an aggregation ("how many", "count", "list all", "every", …) or a
   relation across the text ("each other", "which two", "cycle", …) → ``map_reduce``: every
   chunk must be read and combined, which retrieval or a per-directory summary could lose;
3. otherwise it is a *lookup*: when a retriever is at hand (the run's ``[retriever]``, else the
   bm25 retriever when ``bm25s`` is installed) and the context is more than
   ``retrieval_min_chunks`` retrieval chunks → **retrieval first**: when the question names code
   identifiers (``MAGIC_PORT``, ``handshake_timeout``), the chunks holding them verbatim are read
   first (no index at all, when there are at most ``max(retrieval_top_k)`` of them; only the
   documents whose raw text names one are chunked for this, see :meth:`AutoStrategy.exact_first`);
   then
   ``retrieve_then_read`` with ``top_k`` = each of ``retrieval_top_k`` in turn (8, then 32), the
   hits read in as few calls as fit; an answer that says nothing was found widens to the next
   round, and after the last one the full map below runs;
4. the full map: more than ``hierarchical_chunks`` chunks spread over at least
   ``hierarchical_dirs`` directories → ``hierarchical``; otherwise → ``map_reduce``.

Then, with ``follow_up = true`` (the default), when the answer calls or quotes names it does
not define (two hops: ``a()`` returns ``b()``), their definitions are read in a second round
(:mod:`ponder.plugins.follow_up`).

The delegates come from the plugin registry, built with the settings in ``direct``,
``map_reduce``, ``hierarchical`` and ``retrieve_then_read``; the draft they return is passed on
with ``strategy`` set to the delegate's name and ``reason`` to the path taken and why.

**LM calls**: the delegate's: direct 1; map_reduce ``n + R(n)``; retrieval first ``g_1 (+ R)``
for the first ``top_k`` (one call when the hits fit the window), ``+ g_2 (+ R)`` when widened,
``+`` the full map's when nothing was found; ``+ g_f`` follow-up reads (usually 0 or 1).

Config example::

    [strategy]
    name = "auto"
    # retrieval = true              # lookups read bm25's best chunks first
    # retrieval_top_k = [8, 32]     # widening steps before the full map
    # retrieval_min_chunks = 4      # at most this many retrieval chunks: read everything
    # follow_up = true              # a second round for names the answer leaves unresolved
    # map_reduce_chunks = 64        # up to this many chunks: map_reduce
    # hierarchical_chunks = 256     # above this many chunks ...
    # hierarchical_dirs = 8         # ... across at least this many directories: hierarchical
    # map_reduce = { fan_in = 8 }   # settings handed to each delegate
    # hierarchical = {}
    # direct = {}
    # retrieve_then_read = {}
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from ponder import hookimpl

PONDER_PLUGIN_API = 1

#: Questions that need every chunk read and counted: a per-section summary could drop items.
AGGREGATION = re.compile(
    r"\b(how many|how much|count(s|ing)?|number of|list (all|every|each)|all (the )?"
    r"(occurrences|places|uses|usages|files|functions|classes|callers)|every|enumerate|"
    r"sum of)\b",
    re.IGNORECASE,
)


def _top_ks(_inst: Any, attribute: attrs.Attribute, value: list[int]) -> None:
    if not value or any(not isinstance(k, int) or k < 1 for k in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of positive integers")


#: Questions about relations across the whole text (pairs, cycles): no few chunks can answer them.
RELATION = re.compile(r"\b(each other|one another|mutual(ly)?|which (two|pairs?)|both ways|"
                      r"cycles?|circular)\b", re.IGNORECASE)


def needs_everything(question: str) -> str | None:
    """Why ``question`` needs every chunk: ``"aggregation ('how many')"``, ``"relation ('each
    other')"``, or None."""
    for kind, pattern in (("aggregation", AGGREGATION), ("relation", RELATION)):
        match = pattern.search(question)
        if match:
            return f"{kind} ({match.group(0).lower()!r})"
    return None


@attrs.define
class AutoSettings:
    #: lookups read the retriever's best chunks first
    retrieval: bool = True
    #: top_k of each retrieval round, widening when the answer says nothing was found
    retrieval_top_k: list[int] = attrs.field(factory=lambda: [8, 32], validator=_top_ks)
    #: contexts of at most this many retrieval chunks are mapped whole
    retrieval_min_chunks: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    #: a second round for names the answer calls but does not define
    follow_up: bool = True
    #: up to this many chunks, map_reduce is chosen without further questions
    map_reduce_chunks: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    #: above this many chunks (and across hierarchical_dirs directories): hierarchical
    hierarchical_chunks: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    #: directories the documents must span for hierarchical to be chosen
    hierarchical_dirs: int = attrs.field(default=8, validator=attrs.validators.ge(2))
    #: settings for each delegate
    direct: dict[str, Any] = attrs.field(factory=dict)
    map_reduce: dict[str, Any] = attrs.field(factory=dict)
    hierarchical: dict[str, Any] = attrs.field(factory=dict)
    retrieve_then_read: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Choice:
    """What ``auto`` picked and why."""

    strategy: str
    reason: str
    #: retrieval first: ``(make, name)``, a retriever not built yet (None: the full path only)
    retriever: Any = None
    #: retrieval first: the retrieval chunks' count, or a lower bound of it (the reason says
    #: ``≥``) when the size alone showed it is over ``retrieval_min_chunks``
    retrieval_chunks: int = 0
    #: retrieval first: the size part of the reason, for the full map's choice if it comes to it
    size: str = ""


#: an identifier as code spells it: a snake_case or CONSTANT name, or camelCase/PascalCase with
#: an inner capital
_IDENTIFIER = re.compile(r"\b(?:[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+|[a-z]+[A-Z][A-Za-z0-9]*|"
                         r"[A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*)\b")


def identifiers(question: str) -> list[str]:
    """The code identifiers ``question`` names, in order, each once."""
    return list(dict.fromkeys(m.group(0) for m in _IDENTIFIER.finditer(question)))


def naming_documents(context: Any, names: list[str]) -> list[Any]:
    """The documents whose raw text holds one of ``names`` verbatim, in order."""
    return [doc for doc in context.documents if any(name in doc.text for name in names)]


def _subcontext(context: Any, documents: list[Any]) -> Any:
    """A Context of some of ``context``'s documents (the same objects: same paths, first lines,
    texts), for chunking just those."""
    from ponder.context.documents import Context

    return Context(documents, sources=list(context.sources))


def directory_count(documents: Any) -> int:
    """Distinct directories holding the documents (the top level counts as one)."""
    return len({doc.path.rsplit("/", 1)[0] if "/" in doc.path else "." for doc in documents})


def available_retriever(services: Any) -> tuple[Any, str | None, str]:
    """``(make, name, why)``: how to get a retriever (the run's, else a bm25 one when
    ``bm25s`` is installed) without building it yet (bm25 imports numpy and scipy: a plan or a
    question that needs no retrieval should not pay for that); ``(None, None, why not)``."""
    if getattr(services, "retriever", None) is not None:
        name = (getattr(services, "names", {}) or {}).get("retriever", (None, None))[0]
        return (lambda: services.retriever), name or "retriever", "the run's retriever"
    import importlib.util

    if importlib.util.find_spec("bm25s") is None:
        return None, None, "no retriever configured and bm25s is not installed"
    plugin_set = getattr(services, "plugin_set", None)
    try:
        entry = plugin_set.get("retriever", "bm25")
    except Exception:  # no registry, or no bm25 plugin in it
        return None, None, "no retriever configured and no bm25 plugin"
    return (lambda: entry.factory(entry.settings() if entry.settings else None)), "bm25", \
        "bm25 (default)"


class AutoStrategy:
    name = "auto"
    #: the exact round scans the documents' raw text for the identifiers and chunks only the
    #: documents naming them (False: it chunks the whole context first, the path before the scan;
    #: kept so tests and ``bench/auto_prescan.py`` can compare the two)
    prescan = True

    def __init__(self, settings: AutoSettings | None = None) -> None:
        self.settings = settings or AutoSettings()

    def choose(self, question: str, context: Any, services: Any) -> Choice:
        """The rule from the module docstring, with the numbers it used."""
        from ponder.plugins._common import prompt_room, rendered_tokens
        from ponder.plugins._signatures import answer_signature

        s = self.settings
        tokens = rendered_tokens(context.documents)
        room = prompt_room(services, answer_signature(), question)
        size = f"context ≈ {tokens:,} tokens"
        if tokens <= room:
            return Choice("direct", f"{size} ≤ window budget {max(room, 0):,} → direct")
        size += f" > window budget {max(room, 0):,}"
        if s.retrieval and not needs_everything(question):
            retriever, name, why = available_retriever(services)
            if retriever is not None:
                reader = _make(services, "retrieve_then_read", s.retrieve_then_read)
                count, exact = self.retrieval_count(reader, question, context, services, tokens)
                if count > s.retrieval_min_chunks:
                    # the full map is planned only if retrieval finds nothing (cutting a large
                    # context into map chunks is work a found answer does not need)
                    steps = ", then ".join(str(k) for k in s.retrieval_top_k)
                    return Choice("map_reduce",
                                  f"{size}; a lookup question (no aggregation wording): {name} "
                                  f"top-{steps} of {'' if exact else '≥ '}{count:,} chunks "
                                  "first, widening when nothing is found, then the full map",
                                  retriever=(retriever, name), retrieval_chunks=count,
                                  size=size)
            else:
                full = self.full_map(question, context, services, size)
                return Choice(full.strategy, f"{full.reason} (retrieval first skipped: {why})")
        return self.full_map(question, context, services, size)

    def retrieval_count(self, reader: Any, question: str, context: Any, services: Any,
                        tokens: int) -> tuple[int, bool]:
        """``(count, exact)``: the retrieval chunks of ``context``, or a lower bound of them when
        that already decides rule 3 (more than ``retrieval_min_chunks``).

        Cutting 20 MB into ~7,000 retrieval chunks takes seconds, and a lookup the exact round
        answers never needs them. The bound is sound: a chunk renders to at most ``chunk_tokens
        * CHARS_PER_TOKEN`` characters and its pieces render to at least as many characters as
        their documents whole, which ``tokens`` (:func:`rendered_tokens`, separators included)
        bounds from below."""
        from ponder.context.tokens import CHARS_PER_TOKEN

        chunk_tokens, _overlap = reader.chunk_sizes(question, services)
        chars = tokens * CHARS_PER_TOKEN - (CHARS_PER_TOKEN - 1) - 2 * len(context.documents)
        floor = max(chars, 0) // (chunk_tokens * CHARS_PER_TOKEN)
        if floor > self.settings.retrieval_min_chunks:
            return floor, False
        return len(reader.plan_chunks(question, context, services)), True

    def full_map(self, question: str, context: Any, services: Any, size: str) -> Choice:
        """The full map's delegate (rules 2 and 4) and its reason."""

        s = self.settings
        planner = _make(services, "map_reduce", s.map_reduce)
        chunks = len(planner.plan_chunks(question, context, services))
        wording = needs_everything(question)
        if wording:
            return Choice("map_reduce", f"{size}; {chunks} chunks; the question asks for an "
                                        f"{wording}, so every chunk must be read "
                                        "→ map_reduce")
        if chunks <= s.map_reduce_chunks:
            return Choice("map_reduce", f"{size}; {chunks} chunks ≤ {s.map_reduce_chunks} "
                                        "→ map_reduce")
        dirs = directory_count(context.documents)
        if chunks > s.hierarchical_chunks and dirs >= s.hierarchical_dirs:
            return Choice("hierarchical", f"{size}; {chunks} chunks > {s.hierarchical_chunks} "
                                          f"across {dirs} directories ≥ {s.hierarchical_dirs} "
                                          "→ hierarchical")
        why = (f"{chunks} chunks ≤ {s.hierarchical_chunks}" if chunks <= s.hierarchical_chunks
               else f"only {dirs} directories < {s.hierarchical_dirs}")
        return Choice("map_reduce", f"{size}; {chunks} chunks > {s.map_reduce_chunks} but {why} "
                                    "→ map_reduce")

    def run(self, question: str, context: Any, services: Any) -> Any:
        from ponder.support.observability import SpanType

        choice = self.choose(question, context, services)
        with services.tracker.span("auto", SpanType.STRATEGY, chose=choice.strategy,
                                   reason=choice.reason) as span:
            draft, path = None, []
            if choice.retriever is not None:
                draft, path = self.retrieve_first(question, context, services, choice)
            if draft is None and choice.retriever is not None:
                full = self.full_map(question, context, services, choice.size)
                path.append(f"{full.strategy} over every chunk ({full.reason.split('; ', 1)[-1]})")
                choice = attrs.evolve(choice, strategy=full.strategy)
            strategy = "retrieve_then_read" if draft is not None else choice.strategy
            if draft is None:
                options = getattr(self.settings, choice.strategy)
                delegate = _make(services, choice.strategy, options)
                draft = delegate.run(question, context, services)
            reason = choice.reason + (f" → {'; '.join(path)}" if path else "")
            draft.reason, draft.strategy = reason, strategy
            if self.settings.follow_up and strategy != "direct":
                from ponder.plugins.follow_up import follow_up

                done = follow_up(question, draft, context, services)
                if done["found"]:
                    draft.strategy = f"{strategy}+follow_up"
            span.attributes.update(path=path, strategy=draft.strategy)
        return draft

    def exact_first(self, question: str, context: Any, services: Any,
                    path: list[str]) -> Any:
        """The exact round: when the question names identifiers (``MAGIC_PORT``,
        ``handshake_timeout``), the retrieval chunks holding them verbatim, read like a
        retriever's hits; None when there are none, too many, or the read finds nothing.

        The documents' raw text is scanned for the names first (:func:`naming_documents`, a
        substring test: 20 MB in milliseconds) and only the documents naming one are chunked,
        as a Context of their own: a document's pieces do not depend on its neighbours, so the
        chunks hold the same lines with the same numbers as the whole context's chunking would,
        without the seconds that cutting 20 MB into ~7,000 chunks takes. Those chunks are what
        the reader considers, so the draft's ``chunks_total`` counts them, and the path says so
        (``exact MAGIC_PORT: 1 chunk(s), found (1 of 1,437 documents name it; only they were
        chunked: 3 chunks)`` on bench/peer.py's 20 MB haystack). A chunk can differ from the
        whole chunking's in which pieces of *other* documents share it (small documents are
        packed together): here those are only documents that name an identifier too. When no
        document names one the round ends without chunking; when more than
        ``max(retrieval_top_k)`` do, the whole context is chunked as before (the ranking rounds
        need those chunks anyway)."""
        from ponder.plugins._common import says_nothing

        names = identifiers(question)
        if not names:
            return None
        reader = _make(services, "retrieve_then_read", self.settings.retrieve_then_read)
        limit = max(self.settings.retrieval_top_k)
        shown = ", ".join(names)
        scope, scanned = context, ""
        if self.prescan:
            documents = naming_documents(context, names)
            if not documents:
                path.append(f"exact {shown}: in none of the {len(context.documents):,} "
                            "documents → ranking")
                return None
            if len(documents) <= limit:
                scope = _subcontext(context, documents)
        chunks = reader.plan_chunks(question, scope, services)
        if scope is not context:
            scanned = (f" ({len(scope.documents)} of {len(context.documents):,} documents name "
                       f"{'it' if len(names) == 1 else 'one'}; only they were chunked: "
                       f"{len(chunks):,} chunks)")
        scored = []
        for chunk in chunks:
            texts = [piece.text for piece in chunk.pieces]
            hit = sum(1 for name in names if any(name in text for text in texts))
            if hit:
                scored.append((-hit, chunk.index, chunk))
        if not scored or len(scored) > limit:
            path.append(f"exact {shown}: {len(scored)} chunks, "
                        + ("none" if not scored else f"more than {limit}") + f"{scanned} → ranking")
            return None
        hits = [chunk for _, _, chunk in sorted(scored)]
        reader.retrieve = lambda _q, _chunks, _services: hits  # the exact hits, best first
        draft = reader.run(question, scope, services)
        if services.stopped_by is not None or not says_nothing(draft.text):
            outcome = "found" if draft.chunks_read else "could not be read"
            path.append(f"exact {shown}: {len(hits)} chunk(s), {outcome}{scanned}")
            return draft
        path.append(f"exact {shown}: {len(hits)} chunk(s), nothing found{scanned}")
        return None

    # --- plans (``ponder ask --dry-run``; see ponder.engine.plan) -------------------------------
    def plan(self, question: str, context: Any, services: Any) -> dict[str, Any]:
        """What :meth:`run` would do: the path :meth:`choose` takes and its calls, both bounds."""
        choice = self.choose(question, context, services)
        if choice.retriever is not None:
            choice = attrs.evolve(choice, strategy=self.full_map(
                question, context, services, choice.size).strategy)
        options = getattr(self.settings, choice.strategy)
        delegate = _make(services, choice.strategy, options)
        figures = self.plan_for(choice.strategy, delegate, question, context, services,
                                options=options)
        figures["reason"] = choice.reason
        if choice.retriever is not None:
            exact, note = self.plan_exact(question, context)
            reads = len(self.settings.retrieval_top_k) + exact
            rounds = f"the exact round + {reads - 1} ranking" if exact else f"{reads}"
            figures.update(
                strategy=f"auto → retrieval first (bm25 top-{self.settings.retrieval_top_k[0]}),"
                         f" else {choice.strategy}",
                calls_min=1, calls_max=figures["calls_max"] + reads,
                formula=f"retrieval: 1 read call per round, {rounds} round(s) at most; if "
                        f"nothing is found: {figures['formula']}",
                waves_min=1, waves=figures["waves"] + reads)
            figures.setdefault("notes", []).extend(
                [*([note] if note else []),
                 "retrieval first usually ends after one call; the upper figures are the "
                 "full map's"])
        else:
            figures["strategy"] = f"auto → {choice.strategy}"
        if self.settings.follow_up and choice.strategy != "direct":
            figures["calls_max"] += 1
            figures["formula"] += " (+1 follow-up read when the answer names something unresolved)"
        return figures

    def plan_exact(self, question: str, context: Any) -> tuple[int, str]:
        """``(calls, note)`` of the exact round for a plan: 1 when it will read (the question
        names identifiers that a document holds), with what the raw-text scan found; the scan is
        the run's own and costs milliseconds, so the plan can say it."""
        names = identifiers(question)
        if not names:
            return 0, ""
        shown = ", ".join(names)
        if not self.prescan:
            return 1, f"exact round: the chunks naming {shown} are read first"
        found = len(naming_documents(context, names))
        if not found:
            return 0, f"exact round: no document names {shown}; bm25 ranks first"
        limit = max(self.settings.retrieval_top_k)
        if found > limit:
            return 1, (f"exact round: {found:,} documents name {shown} (more than {limit}): "
                       "the whole context is chunked to find the chunks holding it")
        return 1, (f"exact round: {found} of {len(context.documents):,} documents name {shown}; "
                   "only they are chunked, and the chunks naming it are read first")

    def plan_for(self, name: str, strategy: Any, question: str, context: Any, services: Any,
                 *, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Chunks, calls (min/max), formula, prompt tokens and sequential rounds of the
        first-party strategy ``name`` over ``context`` (no call is made)."""
        import math

        from ponder.plugins._common import prompt_overhead, reduce_calls, rendered_tokens
        from ponder.plugins._signatures import answer_signature, extract_signature

        concurrency = max(1, int(getattr(services, "concurrency", 1) or 1))
        settings = getattr(strategy, "settings", None)
        fan_in = int(getattr(settings, "fan_in", 8) or 8)
        asked = -(-len(question) // 4)
        if name == "direct":
            tokens = rendered_tokens(context.documents) + prompt_overhead(answer_signature())
            return {"strategy": name, "chunks": 1, "calls_min": 1, "calls_max": 1,
                    "formula": "direct: 1", "prompt_tokens": tokens + asked, "waves": 1}
        if name == "follow_up":
            base = _make(services, settings.base, settings.base_options)
            figures = self.plan_for(settings.base, base, question, context, services)
            figures.update(strategy=f"follow_up({settings.base})",
                           calls_max=figures["calls_max"] + 1,
                           formula=figures["formula"] + " + 1 follow-up read")
            return figures
        if not callable(getattr(strategy, "plan_chunks", None)):
            # hierarchical cuts per directory as it runs: map_reduce's chunks are the estimate
            strategy = _make(services, "map_reduce", self.settings.map_reduce)
        chunks = strategy.plan_chunks(question, context, services)
        n = len(chunks)
        if name == "map_reduce" and getattr(strategy, "reads_in_one_call", None) is not None \
                and strategy.reads_in_one_call(question, context, services):
            tokens = sum(c.tokens for c in chunks) + prompt_overhead(answer_signature()) + asked
            return {"strategy": name, "chunks": n, "calls_min": 1, "calls_max": 1,
                    "formula": "map_reduce: 1 (the context fits one call: read and answered in "
                               "it)", "prompt_tokens": tokens, "waves": 1}
        overhead = prompt_overhead(extract_signature()) + asked
        tokens = sum(c.tokens for c in chunks) + n * overhead
        levels = max(1, math.ceil(math.log(max(n, 2), fan_in)))
        if name == "iterative":
            return {"strategy": name, "chunks": n, "calls_min": n + 1, "calls_max": n + 1,
                    "formula": "iterative: n + 1, one after another", "prompt_tokens": tokens,
                    "waves": n + 1}
        if name in ("map_reduce", "hierarchical"):
            return {"strategy": name, "chunks": n, "calls_min": n + 1,
                    "calls_max": n + reduce_calls(n, fan_in),
                    "formula": f"{name}: n + R(n), R = the reduce tree with fan-in {fan_in}",
                    "prompt_tokens": tokens, "waves": math.ceil(n / concurrency) + levels,
                    "sequential_calls": n + reduce_calls(n, fan_in)}
        if name == "retrieve_then_read":
            top_k = int(getattr(settings, "top_k", 8))
            read = sorted(chunks, key=lambda c: -c.tokens)[:top_k]
            return {"strategy": name, "chunks": n, "calls_min": 1,
                    "calls_max": 1 + reduce_calls(1, fan_in),
                    "formula": f"retrieve_then_read: g (+ R(g)), top_k = {top_k}",
                    "prompt_tokens": sum(c.tokens for c in read) + overhead, "waves": 1}
        return {"strategy": name, "chunks": n, "calls_min": max(n, 1), "calls_max": max(n, 1),
                "formula": f"{name}: decided as it runs (at least one call per chunk here)",
                "prompt_tokens": tokens, "waves": max(1, math.ceil(n / concurrency)),
                "notes": [f"{name} decides its calls as it runs: the figures are a guide"]}

    def retrieve_first(self, question: str, context: Any, services: Any,
                       choice: Choice) -> tuple[Any, list[str]]:
        """Retrieval rounds with widening ``top_k``: the first draft that found something (or
        None), and one line per round for the reason."""
        from ponder.plugins._common import says_nothing

        make, name = choice.retriever
        saved = (services.retriever, dict(getattr(services, "names", {}) or {}))

        class Lazy:
            """The retriever, built on its first use: a question the exact round answers
            never imports bm25's numpy/scipy."""

            built: Any = None

            def __getattr__(self, attr: str) -> Any:
                if Lazy.built is None:
                    Lazy.built = make()
                    services.retriever = Lazy.built
                    if name == "bm25" and saved[0] is None:
                        services.names["retriever"] = ("bm25",
                                                       getattr(Lazy.built, "settings", None))
                return getattr(Lazy.built, attr)

        services.retriever = saved[0] if saved[0] is not None else Lazy()
        path: list[str] = []
        try:
            draft = self.exact_first(question, context, services, path)
            if draft is not None:
                return draft, path
            for top_k in self.settings.retrieval_top_k:
                options = {**self.settings.retrieve_then_read, "top_k": top_k}
                reader = _make(services, "retrieve_then_read", options)
                draft = reader.run(question, context, services)
                if services.stopped_by is not None or not says_nothing(draft.text):
                    path.append(f"top-{top_k}: found")
                    return draft, path
                path.append(f"top-{top_k}: nothing found")
                if top_k >= draft.chunks_total:  # every chunk was read: no wider round
                    break
        finally:
            services.retriever = saved[0]
            services.names.clear()
            services.names.update(saved[1])
        return None, path


def _make(services: Any, name: str, options: dict[str, Any] | None) -> Any:
    from ponder.plugins._common import make_strategy

    return make_strategy(services, name, options, section=f"strategy.{name}")


@hookimpl
def ponder_register_strategies(register):
    register("auto", AutoStrategy, settings=AutoSettings)
