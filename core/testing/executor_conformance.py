"""The conformance suite of the ``executor`` kind (threads, Ray, yours).

Subclass it and set ``name`` (and ``settings``/``plugins``); override :meth:`make_executor` when
the executor needs more than its settings (a cluster address)::

    class TestMyExecutor(ExecutorConformance):
        name = "mine"

The tasks below are module-level functions of this module, so an executor whose workers are
other processes can import them there. Items talk to the test through files in a temporary
folder (the only thing both sides of a process boundary share), never through shared memory.
Every wait is bounded, and no assertion is about elapsed time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ponder.kernel.kinds import ModelInfo
from ponder.testing.conformance import ComponentConformance

#: the longest an item waits for the test to release it (a bound, never expected to be reached)
RELEASE_WAIT_S = 30.0


def bare_services(**limits: Any) -> Any:
    """Services without an LM, for tasks that use none (what an executor sees of a run)."""
    from ponder.engine.services import Services

    return Services(lm=None, model_info=ModelInfo(model="conformance", context_window=1000,
                                                  max_output_tokens=100),
                    predictor=None, progress_mode="silent", **limits)


def square(index: int, item: int) -> int:
    return item * item


def fail_odd(index: int, item: int) -> int:
    if item % 2:
        raise ValueError(f"item {item} is odd")
    return item


def wait_for_release(index: int, item: tuple[str, int]) -> str:
    """Item 0 waits until the test saw another item's result (the file ``released``); the rest
    return at once. "released" proves results stream back before the whole batch is done."""
    folder, number = item
    if number != 0:
        return "quick"
    flag = Path(folder) / "released"
    end = time.monotonic() + RELEASE_WAIT_S
    while time.monotonic() < end:
        if flag.exists():
            return "released"
        time.sleep(0.02)
    return "never released"


def count_running(index: int, item: tuple[str, int]) -> int:
    """Mark this item running (a file), wait a little, and return how many are running."""
    folder, number = item
    mark = Path(folder) / f"running-{number}-{os.getpid()}"
    mark.write_text("")
    try:
        time.sleep(0.05)
        return sum(1 for p in Path(folder).iterdir() if p.name.startswith("running-"))
    finally:
        mark.unlink()


def sleep_a_while(index: int, item: float) -> float:
    time.sleep(item)
    return item


class ExecutorConformance(ComponentConformance):
    """An executor runs every item once, streams results, keeps the cap, stops and cancels."""

    kind: ClassVar[str] = "executor"
    concurrency: ClassVar[int] = 2

    def make_executor(self) -> Any:
        return self.make()

    @pytest.fixture(scope="class")
    @classmethod
    def executor(cls) -> Any:
        executor = cls().make_executor()
        yield executor
        executor.close()

    def run(self, executor: Any, task: Any, items: list[Any], services: Any = None,
            concurrency: int | None = None) -> list[Any]:
        services = services or bare_services()
        return list(executor.map(task, items, services=services,
                                 concurrency=concurrency or self.concurrency))

    # --- the tests ------------------------------------------------------------------------------
    def test_every_item_runs_once_with_its_value(self, executor) -> None:
        outcomes = self.run(executor, square, list(range(12)))
        assert sorted(o.index for o in outcomes) == list(range(12))
        assert all(o.status == "done" and o.error is None for o in outcomes)
        assert {o.index: o.value for o in outcomes} == {i: i * i for i in range(12)}

    def test_an_items_error_is_its_outcome(self, executor) -> None:
        outcomes = {o.index: o for o in self.run(executor, fail_odd, list(range(6)))}
        assert sorted(outcomes) == list(range(6))
        for index, outcome in outcomes.items():
            if index % 2:
                assert isinstance(outcome.error, Exception)
                assert type(outcome.error).__name__ == "ValueError"
                assert f"item {index} is odd" in str(outcome.error)
            else:
                assert outcome.error is None and outcome.value == index

    def test_results_stream_back_as_they_finish(self, executor, tmp_path) -> None:
        items = [(str(tmp_path), n) for n in range(4)]
        seen = []
        for outcome in executor.map(wait_for_release, items, services=bare_services(),
                                    concurrency=self.concurrency):
            seen.append(outcome)
            if outcome.value == "quick":  # item 0 is still running: let it finish
                (tmp_path / "released").write_text("")
        values = {o.index: o.value for o in seen}
        assert values[0] == "released", "the executor held results back until all were done"
        # item 0 came back after another item's result (the last of the four need not be it:
        # with two in flight, the items handed out after the release may return after it)
        assert [o.index for o in seen].index(0) > 0 and len(seen) == 4

    def test_never_more_than_concurrency_in_flight(self, executor, tmp_path) -> None:
        items = [(str(tmp_path), n) for n in range(10)]
        outcomes = self.run(executor, count_running, items)
        assert sorted(o.index for o in outcomes) == list(range(10))
        assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
        assert max(o.value for o in outcomes) <= self.concurrency

    def test_a_stopped_run_starts_nothing_new(self, executor) -> None:
        services = bare_services()
        seen = []
        for outcome in executor.map(square, list(range(40)), services=services,
                                    concurrency=self.concurrency):
            seen.append(outcome)
            services._stop("max_cost")  # as a spent limit does
        # the first result stops the hand-out: what else was in flight still comes back
        assert 1 <= len(seen) <= self.concurrency
        assert len({o.index for o in seen}) == len(seen)

    def test_the_deadline_cancels_what_is_in_flight(self, executor) -> None:
        services = bare_services(timeout=0.3)
        outcomes = self.run(executor, sleep_a_while, [3.0] * 6, services=services)
        # two started, none finished before the deadline: both cancelled, the rest never began
        assert outcomes and all(o.status == "cancelled" for o in outcomes)
        assert len(outcomes) <= self.concurrency

    def test_the_rate_limiter_is_shared_and_binds(self, executor) -> None:
        limiter = executor.rate_limiter(2, None)
        first, _ = limiter.try_acquire(10)
        second, _ = limiter.try_acquire(10)
        third, wait = limiter.try_acquire(10)
        assert first is not None and second is not None and first != second
        assert third is None and wait > 0
        limiter.settle(first, 12)
        assert limiter.stats()["admitted"] == 2

    def test_an_empty_batch_yields_nothing(self, executor) -> None:
        assert self.run(executor, square, []) == []
