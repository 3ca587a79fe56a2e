"""The ``structured`` predictor: typed outputs, validated against the signature's annotations.

Every output field's annotation (``float``, ``list[str]``, ``Literal[...]``, a pydantic model, or
one of :mod:`ponder.signatures.schema`'s types such as ``Probability`` and ``Embedding(384)``) is
enforced, constraints included: DSPy itself parses a reply into the field's bare type, so a
probability of ``1.7`` would pass it; this predictor then checks each value with
:func:`ponder.signatures.schema.validate_value` and never accepts one that does not fit.

What happens on every call, deterministically:

1. **ChatAdapter** (``[[ ## field ## ]]`` sections), with DSPy's own JSON fallback *off*
   (``ChatAdapter(use_json_adapter_fallback=False)``), so a bad reply costs exactly one retry;
2. if the reply does not parse (``AdapterParseError``) or a value fails validation: **one retry
   with** ``dspy.JSONAdapter()`` (a JSON object; providers that support it also get the JSON
   schema as ``response_format``);
3. if that fails too: :class:`StructuredOutputError`, naming the signature, the field and both
   validation errors.

So a prediction costs one LM call, or two when the first reply does not fit. The predictor
chooses these adapters itself: a run's configured DSPy adapter does not apply to it. Output fields
whose type carries a :class:`ponder.signatures.schema.Describe` note get that note in their
description, so the model is told the constraint (``a probability in [0, 1]``) and not just
``float``.

Config example::

    [predictor]
    name = "structured"
    # temperature = 0.0
    # max_tokens = 1024
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from ponder import hookimpl
from ponder.errors import PonderError
from ponder.plugins._common import PredictorSettings

PONDER_PLUGIN_API = 1

log = logging.getLogger("ponder.predictor")

_PARSE_FIELD = re.compile(r"Failed to parse field (\w+)")
_PYDANTIC_LINE = re.compile(r"^\s+(\S.*?)\s+\[type=", re.MULTILINE)


class StructuredOutputError(PonderError):
    """The model's reply did not fit the signature's output types, even after the JSON retry."""

    #: a reply that does not fit is not a transient provider error: ponder.support.retry leaves it
    retryable = False

    def __init__(self, message: str, *, signature: str, field: str | None,
                 errors: list[str], lm_usage: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.signature = signature
        self.field = field
        #: one message per attempt: the ChatAdapter try, then the JSONAdapter retry
        self.errors = errors
        self._lm_usage = lm_usage or {}

    def get_lm_usage(self) -> dict[str, Any]:
        """The tokens both attempts used, per model, shaped like ``Prediction.get_lm_usage()``
        (empty when usage tracking was off), so the failed calls can still be metered."""
        return self._lm_usage


def _signature_name(signature: Any) -> str:
    return getattr(signature, "__name__", None) or type(signature).__name__


def _parse_problem(error: Exception, annotations: dict[str, Any]) -> tuple[str | None, str]:
    """(field, message) for an ``AdapterParseError``."""
    from ponder.signatures.schema import describe

    text = str(error)
    found = _PARSE_FIELD.search(text)
    if found and found.group(1) in annotations:
        field = found.group(1)
        reason = _PYDANTIC_LINE.search(text)
        why = f" ({reason.group(1)[:1].lower()}{reason.group(1)[1:]})" if reason else ""
        return field, (f"field {field!r}: the reply could not be parsed as "
                       f"{describe(annotations[field])}{why}")
    parsed = getattr(error, "parsed_result", None)
    if isinstance(parsed, dict):
        missing = [name for name in annotations if name not in parsed]
        if missing:
            names = ", ".join(repr(name) for name in missing)
            return missing[0], f"the reply lacks field(s) {names}"
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return None, f"the reply could not be parsed: {first}"


def _with_notes(signature: Any) -> Any:
    """``signature`` with each noted output type's :class:`Describe` text in its description."""
    from ponder.signatures.schema import schema_note

    for name, field in signature.output_fields.items():
        note = schema_note(field.rebuild_annotation())
        if note is None:
            continue
        desc = (field.json_schema_extra or {}).get("desc") or ""
        if not desc or desc == f"${{{name}}}":
            desc = note
        elif note not in desc:
            desc = f"{desc} ({note})"
        signature = signature.with_updated_fields(name, desc=desc)
    return signature


# --- the dspy module (built on first use: importing this plugin must not import dspy) --------
_class_lock = threading.Lock()
_classes: dict[str, type] = {}


def structured_module_class() -> type:
    """``StructuredPredict``: ``dspy.Predict`` with the validate-retry-fail loop above."""
    with _class_lock:
        if "StructuredPredict" in _classes:
            return _classes["StructuredPredict"]
        import dspy
        from dspy.signatures.signature import ensure_signature
        from dspy.utils.exceptions import AdapterParseError

        from ponder.signatures.schema import SchemaError, validate_value

        class StructuredPredict(dspy.Module):
            """One ``dspy.Predict`` whose outputs are validated, retried once as JSON."""

            def __init__(self, signature: Any, **config: Any) -> None:
                super().__init__()
                self.signature = ensure_signature(signature)
                self.annotations = {name: field.rebuild_annotation()
                                    for name, field in self.signature.output_fields.items()}
                self.predict = dspy.Predict(_with_notes(self.signature), **config)

            @staticmethod
            def attempts() -> list[tuple[str, Any]]:
                """The adapters tried, in order (fresh each call: they hold no state)."""
                return [("ChatAdapter", dspy.ChatAdapter(use_json_adapter_fallback=False)),
                        ("JSONAdapter", dspy.JSONAdapter())]

            def validated(self, prediction: Any) -> Any:
                """``prediction`` with every output validated and coerced (SchemaError if not)."""
                for name, annotation in self.annotations.items():
                    prediction[name] = validate_value(annotation, prediction.get(name),
                                                      field=name)
                return prediction

            def _failure(self, label: str, error: Exception) -> tuple[str | None, str]:
                if isinstance(error, SchemaError):
                    field, message = error.field, str(error)
                else:
                    field, message = _parse_problem(error, self.annotations)
                log.info("structured: %s reply for %s does not fit: %s", label,
                         _signature_name(self.signature), message)
                return field, message

            def _give_up(self, failures: list[tuple[str, str | None, str]]) -> Exception:
                name = _signature_name(self.signature)
                field = failures[-1][1]
                tracker = dspy.settings.usage_tracker
                usage = tracker.get_total_tokens() if tracker is not None else {}
                first, last = failures[0], failures[-1]
                return StructuredOutputError(
                    f"signature {name!r}: the model's reply does not fit the declared output "
                    f"types, even after a retry with {last[0]}: {last[2]} (first try, "
                    f"{first[0]}: {first[2]})",
                    signature=name, field=field, errors=[message for *_, message in failures],
                    lm_usage=usage)

            def forward(self, **inputs: Any) -> Any:
                failures: list[tuple[str, str | None, str]] = []
                for label, adapter in self.attempts():
                    try:
                        with dspy.context(adapter=adapter):
                            prediction = self.predict(**inputs)
                        return self.validated(prediction)
                    except (AdapterParseError, SchemaError) as error:
                        failures.append((label, *self._failure(label, error)))
                raise self._give_up(failures)

            async def aforward(self, **inputs: Any) -> Any:
                failures: list[tuple[str, str | None, str]] = []
                for label, adapter in self.attempts():
                    try:
                        with dspy.context(adapter=adapter):
                            prediction = await self.predict.acall(**inputs)
                        return self.validated(prediction)
                    except (AdapterParseError, SchemaError) as error:
                        failures.append((label, *self._failure(label, error)))
                raise self._give_up(failures)

        StructuredPredict.__module__ = __name__
        StructuredPredict.__qualname__ = "StructuredPredict"
        _classes["StructuredPredict"] = StructuredPredict
        return StructuredPredict


class StructuredPredictor:
    """Builds a :func:`structured_module_class` module per signature."""

    def __init__(self, settings: PredictorSettings | None = None) -> None:
        self.settings = settings or PredictorSettings()

    def build(self, signature: Any) -> Any:
        return structured_module_class()(signature, **self.settings.lm_config())


@hookimpl
def ponder_register_predictors(register):
    register("structured", StructuredPredictor, settings=PredictorSettings)
