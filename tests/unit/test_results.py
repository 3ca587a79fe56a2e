"""ponder.support.results: partial success is a value, not an exception."""

from __future__ import annotations

import json

import pytest

from ponder.support.results import BatchResult, ChunkResult, FailedChunk
from ponder.support.secrets import forget_secrets, register_secret


def test_seed_usage() -> None:
    result = BatchResult(
        results=[ChunkResult(index=0, relevant_info="...", confidence="high")],
        failed=[FailedChunk(error="timeout", index=5)],
    )
    assert result.success_rate == 0.5
    assert result.total == 2
    assert result.succeeded == 1
    assert result.is_partial is True


def test_confidence_is_normalised_and_validated() -> None:
    assert ChunkResult(index=1, relevant_info="x", confidence=" High ").confidence == "high"
    assert ChunkResult(index=1, relevant_info="x").confidence == "medium"
    with pytest.raises(ValueError, match="confidence must be one of"):
        ChunkResult(index=1, relevant_info="x", confidence="certain")


def test_failed_chunk_defaults() -> None:
    failed = FailedChunk(error="boom", index=3)
    assert (failed.kind, failed.attempts) == ("error", 1)


def test_empty_batch_rate_is_zero_and_not_partial() -> None:
    empty = BatchResult()
    assert empty.total == 0
    assert empty.success_rate == 0.0
    assert empty.is_partial is False
    assert empty.summary() == "answered from 0 of 0 chunks"


def test_all_ok_and_all_failed_are_not_partial() -> None:
    ok = BatchResult(results=[ChunkResult(index=i, relevant_info="r") for i in range(3)])
    assert ok.success_rate == 1.0
    assert ok.is_partial is False
    bad = BatchResult(failed=[FailedChunk(error="x", index=0)])
    assert bad.success_rate == 0.0
    assert bad.is_partial is False


def test_summary_lists_at_most_five_failures_sorted() -> None:
    results = [ChunkResult(index=i, relevant_info="r") for i in range(42)]
    failed = [FailedChunk(error=f"error {i}", index=i) for i in (50, 44, 43, 42, 45, 46, 47, 48)]
    batch = BatchResult(results=results, failed=failed, skipped=2)
    assert batch.summary() == (
        "answered from 42 of 50 chunks; 8 failed: chunk 42 (error 42), chunk 43 (error 43), "
        "chunk 44 (error 44), chunk 45 (error 45), chunk 46 (error 46) and 3 more; 2 skipped"
    )


def test_summary_shape_from_brief() -> None:
    results = [ChunkResult(index=i, relevant_info="r") for i in range(47)]
    failed = [
        FailedChunk(error="timeout", index=5),
        FailedChunk(error="rate limit", index=9),
        FailedChunk(error="bad json", index=12),
    ]
    assert BatchResult(results=results, failed=failed).summary() == (
        "answered from 47 of 50 chunks; 3 failed: chunk 5 (timeout), chunk 9 (rate limit), "
        "chunk 12 (bad json)"
    )


def test_to_dict_is_json_ready() -> None:
    batch = BatchResult(
        results=[ChunkResult(index=0, relevant_info="a", metadata={"path": "x.py"})],
        failed=[FailedChunk(error="timeout", index=1, kind="timeout", attempts=3)],
    )
    data = json.loads(json.dumps(batch.to_dict()))
    assert data["success_rate"] == 0.5
    assert data["results"][0] == {
        "index": 0,
        "relevant_info": "a",
        "confidence": "medium",
        "metadata": {"path": "x.py"},
    }
    assert data["failed"][0]["attempts"] == 3
    assert (data["total"], data["succeeded"], data["skipped"]) == (2, 1, 0)


def test_failed_chunk_from_exception_redacts_secrets() -> None:
    forget_secrets()
    register_secret("hunter2-secret-value")
    try:
        failed = FailedChunk.from_exception(
            7, RuntimeError("auth failed for hunter2-secret-value"), attempts=4
        )
        assert failed.error == "auth failed for ********"
        assert (failed.index, failed.kind, failed.attempts) == (7, "RuntimeError", 4)
        assert FailedChunk.from_exception(1, TimeoutError()).kind == "timeout"
        assert FailedChunk.from_exception(1, TimeoutError()).error == "TimeoutError"
    finally:
        forget_secrets()
