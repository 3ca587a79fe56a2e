"""ML schema types (ponder.signatures.schema): constraints, coercion, and the error messages
they give."""

from __future__ import annotations

import enum
import math
import subprocess
import sys
from typing import Literal

import pytest

from ponder.errors import PonderError
from ponder.signatures.schema import (
    ConfidenceLabel,
    Describe,
    Embedding,
    Probability,
    SchemaError,
    describe,
    schema_note,
    validate_value,
)


@pytest.mark.parametrize("value, expected", [(0.0, 0.0), (1.0, 1.0), (0.25, 0.25),
                                             ("0.7", 0.7), ("1e-3", 0.001), (1, 1.0)])
def test_probability_accepts_and_coerces_values_in_the_unit_interval(value, expected) -> None:
    result = validate_value(Probability, value, field="p")
    assert result == expected and isinstance(result, float)


def test_probability_error_names_field_expectation_and_value() -> None:
    with pytest.raises(SchemaError) as caught:
        validate_value(Probability, 1.7, field="confidence")
    assert str(caught.value) == "field 'confidence': expected a probability in [0, 1], got 1.7"
    assert caught.value.field == "confidence" and caught.value.value == 1.7
    assert isinstance(caught.value, PonderError)


@pytest.mark.parametrize("value, shown", [(-0.01, "-0.01"), ("very", "'very'"),
                                          (float("nan"), "nan"), (float("inf"), "inf"),
                                          (None, "None"), ([0.5], "a list of 1 value")])
def test_probability_rejects_everything_else(value, shown: str) -> None:
    with pytest.raises(SchemaError, match=r"^field 'p': expected a probability in \[0, 1\], "
                                          rf"got {shown}$"):
        validate_value(Probability, value, field="p")


def test_confidence_label_is_a_literal_with_a_listing_error() -> None:
    assert validate_value(ConfidenceLabel, "medium", field="c") == "medium"
    with pytest.raises(SchemaError) as caught:
        validate_value(ConfidenceLabel, "very", field="c")
    message = str(caught.value)
    assert message.startswith("field 'c': expected one of 'low', 'medium', 'high', got 'very'")


def test_embedding_is_a_cached_annotated_list_of_exactly_dim_finite_floats() -> None:
    vector_type = Embedding(3)
    assert Embedding(3) is vector_type and Embedding(4) != vector_type
    assert schema_note(vector_type) == "a list of exactly 3 finite floats"
    assert validate_value(vector_type, [1, "2", 3.5], field="v") == [1.0, 2.0, 3.5]
    with pytest.raises(SchemaError, match=r"^field 'v': expected a list of exactly 3 finite "
                                          r"floats, got a list of 2 values$"):
        validate_value(vector_type, [1.0, 2.0], field="v")
    with pytest.raises(SchemaError, match=r"got a list of 4 values$"):
        validate_value(vector_type, [1.0, 2.0, 3.0, 4.0], field="v")
    with pytest.raises(SchemaError, match=r"\(item 1 is nan, not a finite number\)$"):
        validate_value(vector_type, [1.0, math.nan, 3.0], field="v")
    with pytest.raises(SchemaError, match=r"\(item 2 is inf, not a finite number\)$"):
        validate_value(vector_type, [1.0, 2.0, math.inf], field="v")
    with pytest.raises(SchemaError, match=r"\(item 0: input should be a valid number"):
        validate_value(vector_type, ["x", 2.0, 3.0], field="v")


@pytest.mark.parametrize("dim", [0, -1, 1.5, True, "384", 1 << 20])
def test_embedding_rejects_a_bad_dimension(dim) -> None:
    with pytest.raises(ValueError, match="dim must be an int"):
        Embedding(dim)


def test_plain_annotations_get_pydantic_detail() -> None:
    assert validate_value(int, "42", field="n") == 42
    assert validate_value(list[str], ("a", "b"), field="names") == ["a", "b"]
    with pytest.raises(SchemaError) as caught:
        validate_value(int, "forty", field="n")
    assert str(caught.value).startswith("field 'n': expected int, got 'forty' (input should be")
    with pytest.raises(SchemaError, match=r"^field 'names': expected list\[str\], got a list of 2 "
                                          r"values \(item 1: input should be a valid string\)$"):
        validate_value(list[str], ["a", 2], field="names")


def test_describe_and_notes() -> None:
    class Colour(enum.Enum):
        RED = "red"
        BLUE = "blue"

    assert describe(Probability) == "a probability in [0, 1]"
    assert describe(Literal["a", 1]) == "one of 'a', 1"
    assert describe(Colour) == "one of 'red', 'blue'"
    assert describe(int | None) == "int or None"
    assert schema_note(float) is None
    assert Describe("x") == Describe("x")  # frozen, hashable metadata


def test_schema_errors_are_not_retried() -> None:
    from ponder.support.retry import is_retryable

    with pytest.raises(SchemaError) as caught:
        validate_value(Probability, 2, field="p")
    assert is_retryable(caught.value) is False


def test_importing_schema_does_not_import_dspy_or_pydantic() -> None:
    code = ("import sys, ponder.signatures.schema; "
            "print(','.join(m for m in ('dspy', 'litellm', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


def test_schema_types_work_as_dspy_signature_fields() -> None:
    import dspy

    class Rate(dspy.Signature):
        """Rate the claim."""

        claim: str = dspy.InputField()
        probability: Probability = dspy.OutputField()
        label: ConfidenceLabel = dspy.OutputField()
        vector: Embedding(2) = dspy.OutputField()

    fields = Rate.output_fields
    assert fields["probability"].annotation is float  # pydantic keeps the constraints apart
    rebuilt = fields["probability"].rebuild_annotation()
    with pytest.raises(SchemaError, match="expected a probability"):
        validate_value(rebuilt, 1.5, field="probability")
    assert schema_note(fields["vector"].rebuild_annotation()) == \
        "a list of exactly 2 finite floats"
    assert validate_value(fields["label"].rebuild_annotation(), "high", field="label") == "high"
