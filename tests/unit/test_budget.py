"""The one concurrency budget: slots, and Services.map lending and borrowing them."""

from __future__ import annotations

import threading
import time

import pytest

from ponder.engine.budget import ConcurrencyBudget
from ponder.engine.services import Services
from ponder.kernel.kinds import ModelInfo
from ponder.support.results import ChunkResult


def test_slots_are_counted_and_never_over_released():
    budget = ConcurrencyBudget(2)
    assert budget.try_acquire() and budget.try_acquire()
    assert not budget.try_acquire() and budget.held == 2
    assert not budget.acquire(timeout=0.01)
    budget.release()
    with budget.slot():
        assert budget.held == 2
    budget.release()
    assert budget.held == 0 and budget.peak == 2
    with pytest.raises(RuntimeError, match="not held"):
        budget.release()
    with pytest.raises(ValueError):
        ConcurrencyBudget(0)


def services(budget: ConcurrencyBudget | None, concurrency: int = 8) -> Services:
    return Services(lm=None, model_info=ModelInfo("m", context_window=1000), predictor=None,
                    concurrency=concurrency, progress_mode="silent", budget=budget)


def running_peak(svc: Services, items: int) -> tuple[int, int]:
    """(items that finished, the most that ran at once) of one map."""
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def work(index: int, item: int) -> ChunkResult:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.02)  # long enough for the others to start, if they may
        with lock:
            state["now"] -= 1
        return ChunkResult(index, str(item))

    batch = svc.map(work, list(range(items)))
    return len(batch.results), state["peak"]


def test_map_lends_the_callers_slot_and_borrows_only_free_ones():
    budget = ConcurrencyBudget(3)
    with budget.slot():  # the eval example running this map
        done, peak = running_peak(services(budget), 12)
        assert done == 12 and peak <= 3  # 1 lent + at most 2 borrowed, never the map's own 8
        assert budget.held == 1  # the borrowed slots went back
    assert budget.peak <= 3


def test_map_with_every_slot_taken_still_progresses_on_the_lent_one():
    budget = ConcurrencyBudget(2)
    with budget.slot(), budget.slot():  # two examples running, no slot free
        done, peak = running_peak(services(budget), 5)
    assert done == 5 and peak == 1 and budget.held == 0


def test_without_a_budget_the_map_keeps_its_own_pool():
    done, peak = running_peak(services(None, concurrency=4), 8)
    assert done == 8 and 1 <= peak <= 4
