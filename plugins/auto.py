"""The ``auto`` strategy: pick ``direct``, ``map_reduce`` or ``hierarchical`` by a fixed rule.

No model is asked which strategy to use: the choice depends only on the numbers, so the same
question over the same context always takes the same path, and the draft's ``reason`` says why,
for example ``context ≈ 41,200 tokens > window budget 6,000; 9 chunks ≤ 64 → map_reduce``.

The rule, in order:

1. the rendered context and the question fit one prompt (the window less the reply and the
   instructions) → ``direct``;
2. the question asks for an aggregation ("how many", "count", "list all", "every", …)
   → ``map_reduce``: every chunk must be read and combined, which a per-directory summary
   could lose;
3. more than ``hierarchical_chunks`` chunks spread over at least ``hierarchical_dirs``
   directories → ``hierarchical``;
4. otherwise → ``map_reduce`` (the reason says whether the chunk count was ≤
   ``map_reduce_chunks`` or above it without enough directories for ``hierarchical``).

The delegates come from the plugin registry, built with the settings in ``direct``,
``map_reduce`` and ``hierarchical``; the draft they return is passed on with ``strategy`` set to
the delegate's name and ``reason`` to the rule's explanation.

LM calls: exactly the delegate's (the choice itself costs none).

Config example::

    [strategy]
    name = "auto"
    # map_reduce_chunks = 64        # up to this many chunks: map_reduce
    # hierarchical_chunks = 256     # above this many chunks ...
    # hierarchical_dirs = 8         # ... across at least this many directories: hierarchical
    # map_reduce = { fan_in = 8 }   # settings handed to each delegate
    # hierarchical = {}
    # direct = {}
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


@attrs.define
class AutoSettings:
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


@attrs.frozen
class Choice:
    """What ``auto`` picked and why."""

    strategy: str
    reason: str


def is_aggregation(question: str) -> str | None:
    """The aggregation wording in ``question`` ("how many", "list all", …), or None."""
    match = AGGREGATION.search(question)
    return match.group(0).lower() if match else None


def directory_count(documents: Any) -> int:
    """Distinct directories holding the documents (the top level counts as one)."""
    return len({doc.path.rsplit("/", 1)[0] if "/" in doc.path else "." for doc in documents})


class AutoStrategy:
    name = "auto"

    def __init__(self, settings: AutoSettings | None = None) -> None:
        self.settings = settings or AutoSettings()

    def choose(self, question: str, context: Any, services: Any) -> Choice:
        """The rule from the module docstring, with the numbers it used."""
        from ponder.plugins._common import make_strategy, prompt_room, rendered_tokens
        from ponder.plugins._signatures import answer_signature

        s = self.settings
        tokens = rendered_tokens(context.documents)
        room = prompt_room(services, answer_signature(), question)
        size = f"context ≈ {tokens:,} tokens"
        if tokens <= room:
            return Choice("direct", f"{size} ≤ window budget {max(room, 0):,} → direct")
        size += f" > window budget {max(room, 0):,}"

        planner = make_strategy(services, "map_reduce", s.map_reduce,
                                section="strategy.map_reduce")
        chunks = len(planner.plan_chunks(question, context, services))
        wording = is_aggregation(question)
        if wording:
            return Choice("map_reduce", f"{size}; {chunks} chunks; the question asks for an "
                                        f"aggregation ({wording!r}), so every chunk must be read "
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
        from ponder.plugins._common import make_strategy

        choice = self.choose(question, context, services)
        options = getattr(self.settings, choice.strategy)
        delegate = make_strategy(services, choice.strategy, options,
                                 section=f"strategy.{choice.strategy}")
        with services.tracker.span("auto", SpanType.STRATEGY, chose=choice.strategy,
                                   reason=choice.reason):
            draft = delegate.run(question, context, services)
        draft.reason = choice.reason
        draft.strategy = choice.strategy
        return draft


@hookimpl
def ponder_register_strategies(register):
    register("auto", AutoStrategy, settings=AutoSettings)
