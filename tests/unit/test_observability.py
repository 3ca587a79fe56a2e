"""ponder.support.observability: spans, nesting across threads and tasks, the track decorator."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ponder.support.observability import (
    Span,
    SpanType,
    Tracker,
    enable_tracking,
    get_tracker,
    in_current_context,
    is_tracking_enabled,
    track,
)
from ponder.support.secrets import forget_secrets, register_secret


@pytest.fixture
def default_tracker() -> Iterator[Tracker]:
    """The module-level tracker, emptied and disabled again afterwards."""
    tracker = get_tracker()
    tracker.reset()
    yield tracker
    enable_tracking(False)
    tracker.reset()


def by_name(tracker: Tracker) -> dict[str, Span]:
    return {s.name: s for s in tracker.spans}


def test_seed_usage_and_summary() -> None:
    tracker = Tracker()
    with tracker.span("chunk_processing", SpanType.CHUNK):
        pass
    with tracker.span("chunk_processing", SpanType.CHUNK):
        pass
    with pytest.raises(ValueError), tracker.span("call", SpanType.LLM):
        raise ValueError("bad")
    summary = tracker.get_summary()
    assert summary["total_spans"] == 3
    assert summary["errors"] == 1
    chunk = summary["by_type"]["chunk"]
    assert (chunk["count"], chunk["errors"]) == (2, 0)
    assert chunk["mean_s"] == pytest.approx(chunk["total_s"] / 2)
    assert summary["by_type"]["llm"]["errors"] == 1


def test_span_fields_and_nesting() -> None:
    tracker = Tracker()
    with tracker.span("run", SpanType.RUN, question="q") as run:
        assert tracker.current_span() is run
        with tracker.span("llm", "llm") as llm:
            llm.attributes["tokens"] = 12
    assert tracker.current_span() is None
    spans = by_name(tracker)
    assert [s.name for s in tracker.spans] == ["llm", "run"]  # finish order
    assert spans["llm"].parent_id == spans["run"].id
    assert spans["run"].parent_id is None
    assert spans["llm"].type is SpanType.LLM
    assert spans["llm"].attributes == {"tokens": 12}
    assert spans["run"].attributes == {"question": "q"}
    for span in spans.values():
        assert span.status == "ok"
        assert span.error is None
        assert span.end is not None and span.end >= span.start
        assert span.duration_s is not None and span.duration_s >= 0
    assert spans["run"].to_dict()["type"] == "run"


def test_error_is_redacted_and_attributes_cleaned() -> None:
    forget_secrets()
    register_secret("planted-secret-777")
    try:
        tracker = Tracker()
        with (
            pytest.raises(RuntimeError, match="planted-secret-777"),
            tracker.span("call", SpanType.LLM, api_key="planted-secret-777", n=1),
        ):
            raise RuntimeError("rejected key planted-secret-777")
        (span,) = tracker.spans
        assert span.status == "error"
        assert span.error == "RuntimeError: rejected key ********"
        assert span.attributes == {"api_key": "********", "n": 1}
    finally:
        forget_secrets()


def test_nesting_is_per_thread() -> None:
    tracker = Tracker()
    barrier = threading.Barrier(4)

    def worker(i: int) -> None:
        with tracker.span(f"outer{i}"):
            barrier.wait()  # all outers are open at the same time
            with tracker.span(f"inner{i}"):
                barrier.wait()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = by_name(tracker)
    assert len(spans) == 8
    for i in range(4):
        assert spans[f"inner{i}"].parent_id == spans[f"outer{i}"].id
        assert spans[f"outer{i}"].parent_id is None
        assert spans[f"inner{i}"].thread == spans[f"outer{i}"].thread


def test_worker_threads_inherit_parent_with_in_current_context() -> None:
    tracker = Tracker()

    def work(i: int) -> int:
        with tracker.span(f"chunk{i}", SpanType.CHUNK):
            return i

    with tracker.span("map", SpanType.STRATEGY) as parent:
        with ThreadPoolExecutor(max_workers=3) as pool:
            wrapped = in_current_context(work)
            assert sorted(pool.map(wrapped, range(6))) == list(range(6))
        # without the wrapper a pool thread starts with an empty context
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(lambda: work(99)).result()
    spans = by_name(tracker)
    for i in range(6):
        assert spans[f"chunk{i}"].parent_id == parent.id
    assert spans["chunk99"].parent_id is None


def test_async_tasks_get_correct_parents() -> None:
    tracker = Tracker()

    async def leaf(name: str) -> None:
        with tracker.span(name):
            await asyncio.sleep(0)

    async def branch(name: str) -> None:
        with tracker.span(name):
            await asyncio.gather(leaf(f"{name}.a"), leaf(f"{name}.b"))

    async def main() -> None:
        await asyncio.gather(branch("x"), branch("y"))

    asyncio.run(main())
    spans = by_name(tracker)
    for b in ("x", "y"):
        assert spans[f"{b}.a"].parent_id == spans[b].id
        assert spans[f"{b}.b"].parent_id == spans[b].id


def test_explicit_parent_and_two_trackers_are_independent() -> None:
    a, b = Tracker(), Tracker()
    with a.span("a-outer"), b.span("b-only"), a.span("forced-root", parent_id=None):
        pass
    assert by_name(b)["b-only"].parent_id is None
    assert by_name(a)["forced-root"].parent_id is None


def test_listeners_see_finished_spans_and_failures_are_contained() -> None:
    tracker = Tracker()
    seen: list[str] = []

    def broken(span: Span) -> None:
        raise OSError("disk full")

    tracker.add_listener(lambda span: seen.append(f"{span.name}:{span.status}"))
    tracker.add_listener(broken)
    with tracker.span("ok"):
        pass
    with pytest.raises(KeyError), tracker.span("bad"):
        raise KeyError("k")
    assert seen == ["ok:ok", "bad:error"]
    tracker.reset()
    assert tracker.spans == []


def test_track_disabled_records_nothing_and_changes_nothing(default_tracker: Tracker) -> None:
    enable_tracking(False)
    assert is_tracking_enabled() is False

    @track("add", SpanType.TOOL)
    def add(a: int, b: int) -> int:
        return a + b

    @track()
    def fail() -> None:
        raise LookupError("same error")

    assert add(2, 3) == 5
    with pytest.raises(LookupError, match="same error"):
        fail()
    assert default_tracker.spans == []


def test_track_enabled_sync_and_async(default_tracker: Tracker) -> None:
    enable_tracking(True)
    assert is_tracking_enabled() is True

    @track("call_llm", SpanType.LLM)
    def call_llm() -> str:
        return "answer"

    @track
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    @track(span_type="io")
    async def broken() -> None:
        raise ValueError("nope")

    assert call_llm() == "answer"
    assert asyncio.run(fetch(21)) == 42
    with pytest.raises(ValueError, match="nope"):
        asyncio.run(broken())
    spans = by_name(default_tracker)
    assert spans["call_llm"].type is SpanType.LLM
    fetch_name = "test_track_enabled_sync_and_async.<locals>.fetch"
    assert spans[fetch_name].type is SpanType.OTHER
    broken_span = spans["test_track_enabled_sync_and_async.<locals>.broken"]
    assert (broken_span.type, broken_span.status) == (SpanType.IO, "error")
    assert inspect.iscoroutinefunction(fetch)


def test_unknown_span_type() -> None:
    with pytest.raises(ValueError, match="unknown span type"), Tracker().span("x", "nope"):
        pass
