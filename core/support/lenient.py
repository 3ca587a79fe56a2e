"""A DSPy ChatAdapter for small models that ignore the ``[[ ## field ## ]]`` format.

Tiny local models (SmolLM2-135M) rarely write DSPy's field markers; the stock ChatAdapter then
falls back to JSON, which they also miss, and the call fails. This adapter keeps DSPy's parsing
when it works and otherwise takes the reply text as the first text output field, filling the
others with neutral values, so a weak model yields a weak answer instead of a failure.
"""

from __future__ import annotations

from typing import Any

_cached: Any = None


def lenient_chat_adapter() -> Any:
    """A shared instance (the class is built on first use so this module imports no dspy)."""
    global _cached
    if _cached is None:
        import dspy

        class LenientChatAdapter(dspy.ChatAdapter):
            def __init__(self) -> None:
                super().__init__(use_json_adapter_fallback=False)

            def parse(self, signature: Any, completion: str) -> dict[str, Any]:
                try:
                    return super().parse(signature, completion)
                except Exception:
                    return _fallback(signature, completion)

        _cached = LenientChatAdapter()
    return _cached


def _fallback(signature: Any, completion: str) -> dict[str, Any]:
    text = completion.replace("[[ ## completed ## ]]", "").strip()
    values: dict[str, Any] = {}
    filled = False
    for name, field in signature.output_fields.items():
        annotation = field.annotation
        if not filled and annotation is str and name != "reasoning":
            values[name], filled = text, True
        elif "confidence" in name:
            values[name] = "low"
        elif annotation is str:
            values[name] = ""
        else:
            values[name] = None
    return values
