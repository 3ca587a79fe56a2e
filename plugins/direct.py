"""The ``direct`` strategy: the whole context in one call, when it fits the window.

The documents are rendered whole, as chunks render them (``=== path (lines a-b) ===`` headers and
numbered lines, so the model can cite ``path:line``), and sent with the question in a single
``answer`` call. If the rendered context and the question do not fit the room the window leaves
(``context_window - max_output_tokens - the prompt's instructions``), the strategy refuses with a
:class:`ponder.errors.PonderError` instead of sending a prompt the model would truncate; use
``map_reduce`` or ``auto`` for such contexts.

LM calls: exactly 1.

Config example::

    [strategy]
    name = "direct"
"""

from __future__ import annotations

from typing import Any

import attrs

from ponder import hookimpl

PONDER_PLUGIN_API = 1


@attrs.define
class DirectSettings:
    """``direct`` has no settings of its own (the window comes from the adapter)."""


class DirectStrategy:
    name = "direct"

    def __init__(self, settings: DirectSettings | None = None) -> None:
        self.settings = settings or DirectSettings()

    def run(self, question: str, context: Any, services: Any) -> Any:
        from ponder.engine.answer import Draft
        from ponder.errors import PonderError
        from ponder.plugins._common import (
            document_spans,
            evidence_lines,
            prompt_room,
            render_documents,
            rendered_tokens,
        )
        from ponder.plugins._signatures import answer_signature
        from ponder.support.observability import SpanType

        signature = answer_signature()
        room = prompt_room(services, signature, question)
        tokens = rendered_tokens(context.documents)
        if tokens > room:
            info = services.model_info
            raise PonderError(
                f"the context (≈{tokens:,} tokens rendered) does not fit in one call: the "
                f"{info.context_window:,}-token window leaves {max(room, 0):,} tokens after "
                f"{info.max_output_tokens:,} output tokens, the instructions and the question; "
                "use strategy map_reduce (reads it in chunks) or auto (picks for you)"
            )
        with services.tracker.span("direct", SpanType.STRATEGY, context_tokens=tokens):
            prediction = services.predict(signature, role="answer", question=question,
                                          context=render_documents(context.documents))
        text = str(prediction.answer or "").strip()
        return Draft(
            text=text,
            chunks_total=1,
            chunks_read=1,
            strategy=self.name,
            largest_prompt_tokens=services.largest_prompt_tokens,
            read=document_spans(context.documents),
            # the model read everything: its evidence is the lines holding what it answered
            evidence=evidence_lines(text, context.documents) if text else [],
        )


@hookimpl
def ponder_register_strategies(register):
    register("direct", DirectStrategy, settings=DirectSettings)
