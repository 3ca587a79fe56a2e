"""What the instruction optimizers (``mipro``, ``simba``) share: a signature's default
instructions by name, and a recorded call rendered as text for a proposal or reflection prompt.

Why by name: a prompt state is keyed by signature *name* (:mod:`ponder.engine.prompts`) and a
trace holds only the name, the inputs and the outputs. The first-party signatures are looked up
in :mod:`ponder.plugins._signatures`; a signature of another plugin gets DSPy's own default
wording for a signature without a docstring ("Given the fields …, produce the fields …").
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

#: an input value longer than this is cut in a rendered call (DSPy's demo_input_field_maxlen)
MAX_FIELD_CHARS = 1500


@functools.cache
def _first_party() -> dict[str, Any]:
    from ponder.plugins import _signatures

    out = {}
    for name in dir(_signatures):
        if name.endswith("_signature") and callable(getattr(_signatures, name)):
            signature = getattr(_signatures, name)()
            out[signature.__name__] = signature
    return out


def default_instructions(name: str, inputs: Sequence[str] = (),
                         outputs: Sequence[str] = ()) -> str:
    """The instructions signature ``name`` has when no prompt state sets them."""
    signature = _first_party().get(name)
    if signature is not None:
        return str(signature.instructions)
    ins = ", ".join(f"`{f}`" for f in inputs)
    outs = ", ".join(f"`{f}`" for f in outputs)
    return f"Given the fields {ins}, produce the fields {outs}."


def render_call(inputs: Mapping[str, Any], outputs: Mapping[str, Any],
                max_chars: int = MAX_FIELD_CHARS) -> str:
    """``Field: value`` lines of one recorded call, long values cut."""
    lines = []
    for name, value in [*inputs.items(), *outputs.items()]:
        text = str(value)
        if len(text) > max_chars:
            text = text[:max_chars] + " … <cut>"
        lines.append(f"{name}: {text}")
    return "\n".join(lines)


def calls_by_signature(collected: Sequence[tuple[Any, list[Any]]]) -> dict[str, list[Any]]:
    """Signature name -> the (inputs, outputs) of its recorded calls, in the order given."""
    out: dict[str, list[Any]] = {}
    for _, calls in collected:
        for name, inputs, outputs in calls:
            out.setdefault(name, []).append((dict(inputs), dict(outputs)))
    return out
