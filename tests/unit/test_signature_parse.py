"""Signature strings: parsing, the DSPy signature they make, errors that point at the column."""

from __future__ import annotations

from typing import Literal

import pytest

from ponder.signatures.parse import SignatureError, assignable, item_type, parse_signature
from ponder.signatures.schema import ConfidenceLabel, Embedding, Probability


def test_python_and_ml_types():
    sig = parse_signature("question: str, context -> answer: str, confidence: Probability, "
                          "label: ConfidenceLabel, vector: Embedding(4), files: list[str], "
                          "counts: dict[str, int], maybe: int | None, pick: Literal['a', 'b']")
    types = {f.name: f.annotation for f in (*sig.inputs, *sig.outputs)}
    assert types["context"] is str  # no type: str
    assert types["confidence"] is Probability
    assert types["label"] is ConfidenceLabel
    assert types["vector"] is Embedding(4)
    assert types["files"] == list[str] and types["counts"] == dict[str, int]
    assert types["maybe"] == int | None
    assert types["pick"] == Literal["a", "b"]
    assert [f.type for f in sig.outputs][:3] == ["str", "Probability", "ConfidenceLabel"]


def test_dspy_signature():
    sig = parse_signature("question: str, files: list[str] -> explanation: str, "
                          "confidence: Probability")
    dspy_sig = sig.to_dspy("Explain.")
    assert list(dspy_sig.input_fields) == ["question", "files"]
    assert list(dspy_sig.output_fields) == ["explanation", "confidence"]
    assert dspy_sig.instructions == "Explain."
    assert dspy_sig.input_fields["files"].annotation == list[str]
    assert sig.to_dspy("Explain.") is dspy_sig  # one class per string: one module per run


@pytest.mark.parametrize(("text", "column", "message"), [
    ("question -> answer: flot", 21, "unknown type 'flot'; did you mean 'float'?"),
    ("question answer", 16, "no '->' between the inputs and the outputs"),
    ("q -> a: list[str", 17, "expected ',' or ']', got the end"),
    ("q -> a: dict[str]", 9, "dict[...] takes 2 type arguments, got 1"),
    ("q -> a: Embedding(0)", 19, "Embedding(dim): dim must be an int in [1, 65536], got 0"),
    ("q, -> a", 4, "expected a field name in the inputs, got nothing"),
    ("q -> q", 6, "field 'q' is declared twice"),
    ("q -> a: str extra", 13, "expected ',' or the end, got 'extra'"),
    ("q -> a: int[str]", 9, "type 'int' takes no arguments"),
    # names a dspy.Signature class has already: they used to fail inside DSPy with a TypeError
    ("q -> fields", 6, "field name 'fields' is taken by DSPy signatures (their own attributes, "
                       "and pydantic's model_*); call it e.g. 'fields_text'"),
    ("instructions -> a", 1, "field name 'instructions' is taken by DSPy signatures (their own "
                             "attributes, and pydantic's model_*); call it e.g. "
                             "'instructions_text'"),
    ("q -> model_config", 6, "field name 'model_config' is taken by DSPy signatures (their own "
                             "attributes, and pydantic's model_*); call it e.g. "
                             "'model_config_text'"),
    ("q -> b: tuple[int, ..]", 22, "expected '...' (tuple[T, ...] is a tuple of any length)"),
])
def test_errors_name_the_column(text, column, message):
    with pytest.raises(SignatureError) as info:
        parse_signature(text)
    first = str(info.value).splitlines()[0]
    assert first == f"signature {text!r}: column {column}: {message}"
    assert info.value.position == column - 1
    assert str(info.value).splitlines()[2].index("^") == column + 1  # under the column


def test_assignable():
    assert assignable(Probability, float) and assignable(int, float)
    assert not assignable(float, Probability)  # a float may be outside [0, 1]
    assert assignable(ConfidenceLabel, str) and not assignable(str, ConfidenceLabel)
    assert assignable(Embedding(4), list[float]) and not assignable(list[float], Embedding(4))
    assert assignable(list[str], list[str]) and not assignable(str, list[str])
    assert not assignable(list[str], str)
    assert assignable(int, float | None) and assignable(list[int], list[float])
    assert item_type(list[str]) is str and item_type(str) is None


def test_tuple_of_any_length():
    # the docs list tuple[...]: `tuple[int, ...]` used to fail with "expected a type, got '.'"
    signature = parse_signature("q -> scores: tuple[int, ...], pair: tuple[int, str]")
    scores, pair = signature.outputs
    assert scores.annotation == tuple[int, ...] and scores.type == "tuple[int, ...]"
    assert pair.annotation == tuple[int, str]
    assert list(signature.to_dspy().output_fields) == ["scores", "pair"]
