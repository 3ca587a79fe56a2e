"""ML schema types for DSPy signatures, validated with clear errors.

Use them as output field annotations; the ``structured`` predictor checks every output against
its annotation (with :func:`validate_value`) and retries or fails instead of accepting a value
that does not fit::

    import dspy
    from ponder.signatures.schema import ConfidenceLabel, Embedding, Probability

    class Rate(dspy.Signature):
        \"\"\"Rate how likely the claim is true.\"\"\"

        claim: str = dspy.InputField()
        probability: Probability = dspy.OutputField()       # a float in [0, 1]
        confidence: ConfidenceLabel = dspy.OutputField()    # "low", "medium" or "high"
        vector: Embedding(4) = dspy.OutputField()           # exactly 4 finite floats

The types are plain ``typing.Annotated`` aliases whose constraints pydantic understands
(``annotated_types`` metadata, a pydantic ``AfterValidator``), plus a :class:`Describe` note saying
in words what a value must be; the note is what error messages (and the ``structured``
predictor's field descriptions) show. This module never imports dspy, and pydantic only when a
value is validated or an ``Embedding`` type is made.
"""

from __future__ import annotations

import enum
import functools
import math
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import attrs

from ponder.errors import PonderError

__all__ = [
    "ConfidenceLabel",
    "Describe",
    "Embedding",
    "Probability",
    "SchemaError",
    "describe",
    "schema_note",
    "validate_value",
]

#: the most elements an ``Embedding`` may declare (a typo guard, not a model limit)
MAX_EMBEDDING_DIM = 1 << 16


class SchemaError(PonderError):
    """A value does not fit a field's declared type; the message names the field."""

    #: a wrong value is not a transient provider error: never retried by ponder.support.retry
    retryable = False

    def __init__(self, message: str, *, field: str, value: Any = None, expected: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.expected = expected


@attrs.frozen
class Describe:
    """``Annotated`` metadata: what a value of the type is, in words (pydantic ignores it)."""

    text: str


#: a float in [0, 1] (NaN and infinities fail too)
Probability = Annotated[
    float, annotated_types.Interval(ge=0.0, le=1.0), Describe("a probability in [0, 1]")
]

#: a coarse confidence label
ConfidenceLabel = Literal["low", "medium", "high"]


def _all_finite(values: list[float]) -> list[float]:
    for index, value in enumerate(values):
        if not math.isfinite(value):
            raise ValueError(f"item {index} is {value!r}, not a finite number")
    return values


@functools.cache
def Embedding(dim: int) -> Any:  # a type factory, named like the type it makes
    """``Annotated[list[float], ...]`` holding exactly ``dim`` finite floats.

    ``Embedding(384)`` is the same object every time, so it compares and hashes equal.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_EMBEDDING_DIM:
        raise ValueError(f"Embedding(dim): dim must be an int in [1, {MAX_EMBEDDING_DIM}], "
                         f"got {dim!r}")
    from pydantic import AfterValidator

    return Annotated[
        list[float],
        annotated_types.Len(dim, dim),
        AfterValidator(_all_finite),
        Describe(f"a list of exactly {dim} finite floats"),
    ]


# --- describing types -----------------------------------------------------------------------
def _split_annotated(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    if get_origin(annotation) is Annotated:
        inner, *metadata = get_args(annotation)
        return inner, tuple(metadata)
    return annotation, ()


def schema_note(annotation: Any) -> str | None:
    """The :class:`Describe` text of ``annotation`` (outermost wins), or None."""
    _, metadata = _split_annotated(annotation)
    for item in metadata:
        if isinstance(item, Describe):
            return item.text
    return None


def describe(annotation: Any) -> str:
    """What a value of ``annotation`` must be, in words (for error messages)."""
    note = schema_note(annotation)
    if note is not None:
        return note
    annotation, _ = _split_annotated(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(value) for value in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(repr(member.value) for member in annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in get_args(annotation))
    if annotation is type(None):
        return "None"
    if origin is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def _show(value: Any) -> str:
    """A short rendering of a bad value for an error message."""
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "…'"
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        plural = "" if len(value) == 1 else "s"
        return f"a {type(value).__name__} of {len(value)} value{plural}"
    if isinstance(value, Mapping):
        return f"a {type(value).__name__} with keys {sorted(map(str, value))[:8]}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


# --- validating -----------------------------------------------------------------------------
def _build_adapter(annotation: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(annotation)


_cached_adapter = functools.lru_cache(maxsize=256)(_build_adapter)


def _type_adapter(annotation: Any) -> Any:
    try:
        return _cached_adapter(annotation)
    except TypeError:  # unhashable metadata (a pydantic FieldInfo): build one each time
        return _build_adapter(annotation)


def _detail(error: Mapping[str, Any], noted: bool) -> str:
    """pydantic's first error as a short clause, or "" when the expectation says it all."""
    location = error.get("loc") or ()
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    if noted and not location and error.get("type") != "value_error":
        return ""  # e.g. "less than or equal to 1" repeats "a probability in [0, 1]"
    message = message[:1].lower() + message[1:]
    if location:
        where = ".".join(f"item {part}" if isinstance(part, int) else str(part)
                         for part in location)
        return f"{where}: {message}"
    return message


def validate_value(annotation: Any, value: Any, *, field: str) -> Any:
    """``value`` validated (and coerced, e.g. ``"0.5"`` -> 0.5) against ``annotation``.

    Raises :class:`SchemaError` naming the field, what was expected and what came, e.g.
    ``field 'confidence': expected a probability in [0, 1], got 1.7``.
    """
    import pydantic

    try:
        adapter = _type_adapter(annotation)
    except pydantic.PydanticSchemaGenerationError as exc:
        raise SchemaError(f"field {field!r}: cannot validate values of type {annotation!r}: "
                          f"{exc}", field=field, value=value) from None
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as exc:
        expected = describe(annotation)
        errors = exc.errors()
        detail = _detail(errors[0], schema_note(annotation) is not None) if errors else ""
        message = f"field {field!r}: expected {expected}, got {_show(value)}"
        if detail:
            message += f" ({detail})"
        raise SchemaError(message, field=field, value=value, expected=expected) from None
