"""The circuit breaker's state machine, driven by a fake clock (no sleeps, no wall clock)."""

from __future__ import annotations

import threading

import pytest

from ponder.engine.fallback import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_opens_after_n_consecutive_failures(clock):
    breaker = CircuitBreaker(failures=3, cooldown=30, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure("server error")
    assert breaker.state == CLOSED and breaker.consecutive_failures == 2
    breaker.record_failure("server error")
    assert breaker.state == OPEN
    assert not breaker.allow()
    assert breaker.reason == "server error"
    assert breaker.retry_in() == 30.0


def test_a_success_resets_the_count(clock):
    breaker = CircuitBreaker(failures=2, cooldown=30, clock=clock)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == CLOSED  # not two *consecutive* failures
    breaker.record_failure()
    assert breaker.state == OPEN


def test_half_open_after_cooldown_lets_one_trial_through(clock):
    breaker = CircuitBreaker(failures=1, cooldown=30, clock=clock)
    breaker.record_failure()
    clock.advance(29.9)
    assert breaker.state == OPEN and not breaker.allow()
    assert breaker.retry_in() == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state == HALF_OPEN
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # a second caller waits for the trial's outcome
    assert breaker.state == HALF_OPEN


def test_trial_success_closes(clock):
    breaker = CircuitBreaker(failures=1, cooldown=5, clock=clock)
    breaker.record_failure("timeout")
    clock.advance(5)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.reason is None
    assert breaker.allow() and breaker.allow()  # closed: everyone goes through
    assert breaker.retry_in() is None


def test_trial_failure_reopens_for_a_full_cooldown(clock):
    breaker = CircuitBreaker(failures=3, cooldown=10, clock=clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(10)
    assert breaker.allow()
    breaker.record_failure("again")  # one failure is enough in half-open
    assert breaker.state == OPEN
    clock.advance(9)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_release_frees_the_trial_without_deciding(clock):
    breaker = CircuitBreaker(failures=1, cooldown=1, clock=clock)
    breaker.record_failure()
    clock.advance(1)
    assert breaker.allow()
    breaker.release()  # e.g. the trial was a bad request: says nothing about the provider
    assert breaker.state == HALF_OPEN
    assert breaker.allow()


def test_permanent_trip_never_half_opens(clock):
    breaker = CircuitBreaker(failures=5, cooldown=1, clock=clock)
    breaker.trip("auth (HTTP 401)", permanent=True)
    assert breaker.state == OPEN and breaker.permanent
    clock.advance(10_000)
    assert breaker.state == OPEN and not breaker.allow()
    assert breaker.retry_in() is None
    breaker.record_success()  # nothing can close it but reset()
    assert breaker.state == OPEN
    breaker.reset()
    assert breaker.state == CLOSED and breaker.allow()


def test_plain_trip_opens_at_once_and_heals(clock):
    breaker = CircuitBreaker(failures=5, cooldown=2, clock=clock)
    breaker.trip("x")
    assert breaker.state == OPEN
    clock.advance(2)
    assert breaker.allow()


def test_zero_cooldown_half_opens_at_once(clock):
    breaker = CircuitBreaker(failures=1, cooldown=0, clock=clock)
    breaker.record_failure()
    assert breaker.state == HALF_OPEN
    assert breaker.allow() and not breaker.allow()


@pytest.mark.parametrize(("failures", "cooldown"), [(0, 1.0), (1, -1.0)])
def test_invalid_settings(failures, cooldown):
    with pytest.raises(ValueError):
        CircuitBreaker(failures=failures, cooldown=cooldown)


def test_exactly_one_concurrent_trial(clock):
    breaker = CircuitBreaker(failures=1, cooldown=1, clock=clock)
    breaker.record_failure()
    clock.advance(1)
    threads = 16
    start = threading.Barrier(threads)
    granted: list[bool] = []
    lock = threading.Lock()

    def ask() -> None:
        start.wait()
        allowed = breaker.allow()
        with lock:
            granted.append(allowed)

    workers = [threading.Thread(target=ask) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(granted) == threads
    assert granted.count(True) == 1


def test_concurrent_failures_open_once_counted(clock):
    breaker = CircuitBreaker(failures=50, cooldown=1, clock=clock)
    threads = 8
    start = threading.Barrier(threads)

    def fail() -> None:
        start.wait()
        for _ in range(5):
            breaker.record_failure()

    workers = [threading.Thread(target=fail) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert breaker.consecutive_failures == 40 and breaker.state == CLOSED  # no lost update
    for _ in range(10):
        breaker.record_failure()
    assert breaker.state == OPEN
