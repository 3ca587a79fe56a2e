"""Signature strings: ``"question: str, context: str -> answer: str, confidence: Probability"``.

A pipeline stage (and code that does not want to write a ``dspy.Signature`` class) says what goes
in and what comes out in one line. :func:`parse_signature` turns the line into a
:class:`Signature` of typed :class:`Field` s, checked before anything runs, and
:meth:`Signature.to_dspy` makes the DSPy signature class from it (dspy is imported only then).

Grammar (whitespace is free)::

    signature := fields "->" fields
    fields    := field ("," field)*
    field     := NAME [":" type]                   # no type: str
    type      := NAME ["[" type ("," type)* "]"]   # list[str], dict[str, int], Optional[int]
               | "tuple" "[" type "," "..." "]"       # a tuple of any length
               | "Embedding" "(" INT ")"
               | "Literal" "[" STRING ("," STRING)* "]"
               | type "|" type                     # int | None

Types: the Python ones (``str int float bool list dict tuple set Optional``, ``None``) and
ponder's ML types (``Probability``, ``ConfidenceLabel``, ``Embedding(dim)``, see
:mod:`ponder.signatures.schema`). A mistake is a :class:`SignatureError` that quotes the string and
points at the column, e.g.::

    signature "question -> answer: flot": column 21: unknown type 'flot'; did you mean 'float'?
      question -> answer: flot
                          ^

:func:`assignable` says whether a value of one field's type may feed a field of another type; a
pipeline uses it to check ``${stage.field}`` references when it loads.
"""

from __future__ import annotations

import difflib
import functools
import re
import threading
import types
from typing import Any, Literal, Optional, Union, get_args, get_origin

import attrs

from ponder.errors import ConfigError
from ponder.signatures.schema import ConfidenceLabel, Embedding, Probability

__all__ = ["Field", "Signature", "SignatureError", "assignable", "parse_signature",
           "type_text"]


class SignatureError(ConfigError):
    """A signature string that does not parse; the message names the column at fault."""

    def __init__(self, message: str, *, text: str, position: int) -> None:
        super().__init__(message)
        self.text = text
        self.position = position


#: generic type names -> (the typing object, how many arguments it takes; None = any >= 1)
_GENERICS: dict[str, tuple[Any, int | None]] = {
    "list": (list, 1), "dict": (dict, 2), "set": (set, 1), "tuple": (tuple, None),
    "Optional": (Optional, 1), "List": (list, 1), "Dict": (dict, 2),
}
_PLAIN: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool, "None": type(None),
    "Probability": Probability, "ConfidenceLabel": ConfidenceLabel,
    "list": list[Any], "dict": dict[str, Any],
}
_KNOWN = sorted({*_PLAIN, *_GENERICS, "Embedding", "Literal"})

#: names a DSPy signature class has already (its metaclass's properties): a field called so
#: would shadow them and fail deep inside DSPy with a TypeError that names neither
_RESERVED = frozenset({"fields", "input_fields", "output_fields", "instructions", "signature",
                       "register"})

_TOKEN = re.compile(r"""\s*(?:(?P<arrow>->)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<int>\d+)
                        |(?P<string>"[^"]*"|'[^']*')|(?P<punct>[:,\[\]()|.])|(?P<bad>\S))""",
                    re.VERBOSE)


@attrs.frozen
class Field:
    """One input or output of a signature."""

    name: str
    annotation: Any = str
    #: the type as written (``list[str]``); ``str`` when the field had no type
    type: str = "str"
    #: where the field's name starts in the signature string (0-based)
    position: int = 0


@attrs.frozen
class Signature:
    """A parsed signature string: typed inputs and outputs, and the text it came from."""

    text: str
    inputs: tuple[Field, ...]
    outputs: tuple[Field, ...]

    def input(self, name: str) -> Field | None:
        return next((f for f in self.inputs if f.name == name), None)

    def output(self, name: str) -> Field | None:
        return next((f for f in self.outputs if f.name == name), None)

    def to_dspy(self, instructions: str | None = None) -> Any:
        """The ``dspy.Signature`` class; the same class for the same string and instructions
        (a run's predictor builds one module per signature class)."""
        return _to_dspy(self, instructions or "")


_dspy_lock = threading.Lock()


@functools.lru_cache(maxsize=512)
def _to_dspy_cached(signature: Signature, instructions: str) -> Any:
    import dspy

    fields: dict[str, tuple[Any, Any]] = {}
    for field in signature.inputs:
        fields[field.name] = (field.annotation, dspy.InputField())
    for field in signature.outputs:
        fields[field.name] = (field.annotation, dspy.OutputField())
    name = "".join(part.title() for part in signature.outputs[0].name.split("_")) or "Stage"
    return dspy.make_signature(fields, instructions or None, signature_name=name)


def _to_dspy(signature: Signature, instructions: str) -> Any:
    with _dspy_lock:
        return _to_dspy_cached(signature, instructions)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        for match in _TOKEN.finditer(text):
            kind = match.lastgroup or "bad"
            self.tokens.append((kind, match.group(kind), match.start(kind)))
        self.tokens.append(("end", "", len(text.rstrip())))
        self.at = 0

    # --- helpers ---------------------------------------------------------------------------
    def error(self, message: str, position: int | None = None) -> SignatureError:
        position = self.peek()[2] if position is None else position
        caret = " " * position + "^"
        return SignatureError(
            f"signature {self.text!r}: column {position + 1}: {message}\n  {self.text}\n  {caret}",
            text=self.text, position=position)

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.at]

    def take(self) -> tuple[str, str, int]:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def expect(self, value: str, what: str) -> tuple[str, str, int]:
        kind, text, _ = self.peek()
        if text != value or kind == "string":
            shown = "the end" if kind == "end" else repr(text)
            raise self.error(f"expected {what}, got {shown}")
        return self.take()

    # --- grammar ---------------------------------------------------------------------------
    def signature(self) -> Signature:
        if not self.text.strip():
            raise self.error("the signature is empty; write e.g. 'question -> answer'", 0)
        if not any(kind == "arrow" for kind, _, _ in self.tokens):
            raise self.error("no '->' between the inputs and the outputs", len(self.text))
        inputs = self.fields("inputs")
        self.expect("->", "',' or '->'")
        outputs = self.fields("outputs")
        kind, text, _ = self.peek()
        if kind != "end":
            raise self.error(f"expected ',' or the end, got {text!r}")
        seen: dict[str, Field] = {}
        for field in (*inputs, *outputs):
            if field.name in seen:
                raise self.error(f"field {field.name!r} is declared twice", field.position)
            seen[field.name] = field
        return Signature(self.text, tuple(inputs), tuple(outputs))

    def fields(self, side: str) -> list[Field]:
        fields = [self.field(side)]
        while self.peek()[1] == ",":
            self.take()
            fields.append(self.field(side))
        return fields

    def _ellipsis(self) -> None:
        for _ in range(3):
            text = self.peek()[1]
            if text != ".":
                raise self.error("expected '...' (tuple[T, ...] is a tuple of any length)")
            self.take()

    def field(self, side: str) -> Field:
        kind, name, position = self.peek()
        if kind != "name":
            shown = "nothing" if kind == "end" or name == "->" else repr(name)
            raise self.error(f"expected a field name in the {side}, got {shown}")
        self.take()
        if name.startswith("_"):
            raise self.error(f"field name {name!r} may not start with '_'", position)
        if name in _RESERVED or name.startswith("model_"):
            raise self.error(f"field name {name!r} is taken by DSPy signatures (their own "
                             f"attributes, and pydantic's model_*); call it e.g. "
                             f"{name + '_text'!r}", position)
        if self.peek()[1] != ":":
            return Field(name, str, "str", position)
        self.take()
        start = self.peek()[2]
        annotation = self.union()
        end = self.tokens[self.at - 1]
        written = self.text[start:end[2] + len(end[1])]
        return Field(name, annotation, written, position)

    def union(self) -> Any:
        options = [self.type_()]
        while self.peek()[1] == "|":
            self.take()
            options.append(self.type_())
        if len(options) == 1:
            return options[0]
        return Union[tuple(options)]  # noqa: UP007 - built from a runtime tuple

    def type_(self) -> Any:
        kind, name, position = self.peek()
        if kind != "name":
            shown = "nothing" if kind in ("end", "arrow") else repr(name)
            raise self.error(f"expected a type, got {shown}")
        self.take()
        if name == "Embedding":
            self.expect("(", "'(' after Embedding (Embedding(dim))")
            kind, value, at = self.peek()
            if kind != "int":
                raise self.error("Embedding(dim) takes a whole number of dimensions")
            self.take()
            self.expect(")", "')'")
            try:
                return Embedding(int(value))
            except ValueError as exc:
                raise self.error(str(exc), at) from None
        if name == "Literal":
            self.expect("[", "'[' after Literal")
            values = [self.string()]
            while self.peek()[1] == ",":
                self.take()
                values.append(self.string())
            self.expect("]", "',' or ']'")
            return Literal[tuple(values)]
        if self.peek()[1] == "[":
            if name not in _GENERICS:
                if name in _PLAIN:
                    raise self.error(f"type {name!r} takes no arguments", position)
                raise self._unknown(name, position)
            origin, arity = _GENERICS[name]
            self.take()
            args = [self.union()]
            while self.peek()[1] == ",":
                self.take()
                if origin is tuple and len(args) == 1 and self.peek()[1] == ".":
                    self._ellipsis()  # tuple[int, ...]: any length
                    self.expect("]", "']' after '...'")
                    return tuple[args[0], ...]
                args.append(self.union())
            self.expect("]", "',' or ']'")
            if arity is not None and len(args) != arity:
                plural = "" if arity == 1 else "s"
                raise self.error(f"{name}[...] takes {arity} type argument{plural}, "
                                 f"got {len(args)}", position)
            if origin is Optional:
                return Union[args[0], None]  # noqa: UP007 - a runtime type argument
            if origin is tuple:
                return tuple[tuple(args)]
            return origin[tuple(args)] if len(args) > 1 else origin[args[0]]
        if name in _PLAIN:
            return _PLAIN[name]
        raise self._unknown(name, position)

    def string(self) -> str:
        kind, text, _ = self.peek()
        if kind != "string":
            raise self.error("Literal[...] takes quoted strings, e.g. Literal['yes', 'no']")
        self.take()
        return text[1:-1]

    def _unknown(self, name: str, position: int) -> SignatureError:
        close = difflib.get_close_matches(name, _KNOWN, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(_KNOWN)})"
        return self.error(f"unknown type {name!r}{hint}", position)


@functools.lru_cache(maxsize=512)
def parse_signature(text: str) -> Signature:
    """Parse ``text``; raises :class:`SignatureError` naming the column at fault."""
    if not isinstance(text, str):
        raise SignatureError(f"a signature must be a string, got {text!r}", text=str(text),
                             position=0)
    return _Parser(text).signature()


# --- type compatibility ----------------------------------------------------------------------
def _strip(annotation: Any) -> Any:
    from typing import Annotated

    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


_UNIONS = (Union, types.UnionType)


def assignable(source: Any, target: Any) -> bool:
    """Whether a value of type ``source`` can fill a field of type ``target``.

    Equal types fit; so do the widenings that lose nothing: ``int`` -> ``float``, a
    ``Probability`` -> ``float``, an ``Embedding(n)`` -> ``list[float]``, a ``Literal`` (or
    ``ConfidenceLabel``) of strings -> ``str``, ``T`` -> ``T | None``, and containers whose items
    fit. Anything else, ``str`` -> ``list[str]`` included, is a mismatch: a pipeline refuses it
    when it loads rather than feeding the model a value of the wrong shape.
    """
    if source == target or target is Any:
        return True
    if get_origin(target) in _UNIONS:
        return any(assignable(source, option) for option in get_args(target))
    if get_origin(source) in _UNIONS:
        return all(assignable(option, target) for option in get_args(source))
    source_bare, target_bare = _strip(source), _strip(target)
    if target_bare != target:  # a constrained target (Probability, Embedding(n)) needs the same
        return source == target
    if source_bare is int and target_bare is float:
        return True
    if get_origin(source_bare) is Literal:
        values = get_args(source_bare)
        if get_origin(target_bare) is Literal:
            return set(values) <= set(get_args(target_bare))
        return target_bare is str and all(isinstance(v, str) for v in values)
    if source_bare == target_bare:
        return True
    source_origin, target_origin = get_origin(source_bare), get_origin(target_bare)
    if source_origin is not None and source_origin == target_origin:
        source_args, target_args = get_args(source_bare), get_args(target_bare)
        if len(source_args) != len(target_args):
            return False
        return all(assignable(s, t) for s, t in zip(source_args, target_args, strict=True))
    return False


def item_type(annotation: Any) -> Any | None:
    """The item type of a list (``list[str]`` -> ``str``), or None when it is not a list."""
    bare = _strip(annotation)
    if get_origin(bare) is list:
        args = get_args(bare)
        return args[0] if args else Any
    if bare is list:
        return Any
    return None


def type_text(annotation: Any) -> str:
    """A type as a signature string would write it."""
    from ponder.signatures.schema import describe

    if annotation is Probability:
        return "Probability"
    if annotation is ConfidenceLabel:
        return "ConfidenceLabel"
    if isinstance(annotation, type):
        return annotation.__name__
    text = describe(annotation) if get_origin(annotation) is Literal else str(annotation)
    return text.replace("typing.", "")
