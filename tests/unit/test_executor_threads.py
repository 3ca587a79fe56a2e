"""The ``threads`` executor (the default) against the executor conformance suite, and the
run-wide rate limiter (:mod:`ponder.engine.ratelimit`) on a clock the test drives."""

from __future__ import annotations

import threading

import pytest

from ponder.engine.ratelimit import RateLimiter, take_ticket
from ponder.kernel.config import DEFAULT_NAMES, ConfigError, load_config
from ponder.testing.executor_conformance import ExecutorConformance


class TestThreadsExecutor(ExecutorConformance):
    name = "threads"


def test_threads_is_the_default_executor():
    assert DEFAULT_NAMES["executor"] == "threads"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_tokens_in_any_window_never_exceed_tpm():
    """A classic bucket would let 2 x tpm through in one window (a burst, then a window of
    refill); the sliding window admits a request only if the window's sum stays within tpm."""
    clock = Clock()
    limiter = RateLimiter(tpm=1000, window_s=60, margin_s=0, clock=clock)
    admitted: list[tuple[float, int]] = []
    for step in range(600):  # 10 minutes of asking every second
        clock.now = float(step)
        ticket, _ = limiter.try_acquire(150)
        if ticket is not None:
            limiter.settle(ticket, 150)
            admitted.append((clock.now, 150))
    for start, _ in admitted:
        in_window = sum(t for at, t in admitted if start <= at < start + 60)
        assert in_window <= 1000
    # and it is not over-cautious: 6 requests (900 tokens) per window, every window
    assert len(admitted) >= 6 * 10 - 1


def test_rpm_counts_requests_and_names_the_wait():
    clock = Clock()
    limiter = RateLimiter(rpm=3, window_s=60, margin_s=0, clock=clock)
    tickets = [limiter.try_acquire(1)[0] for _ in range(3)]
    assert None not in tickets
    for ticket in tickets:
        limiter.settle(ticket, 1)
    ticket, wait = limiter.try_acquire(1)
    assert ticket is None and wait == pytest.approx(60.0)
    clock.now = 60.0
    assert limiter.try_acquire(1)[0] is not None


def test_a_request_in_flight_holds_its_tokens_until_it_settles():
    clock = Clock()
    limiter = RateLimiter(tpm=100, window_s=10, margin_s=0, clock=clock)
    ticket, _ = limiter.try_acquire(80)
    clock.now = 300.0  # far past the window, but the request has not settled
    assert limiter.try_acquire(30)[0] is None
    limiter.settle(ticket, 90)  # the provider reported more than the estimate
    assert limiter.try_acquire(20)[0] is None
    clock.now = 310.0
    big, _ = limiter.try_acquire(100)
    assert big is not None
    # a request never settled (its worker died with it) is taken as done after max_call_s
    clock.now = 310.0 + limiter.max_call_s + limiter.window_s
    assert limiter.try_acquire(100)[0] is not None


def test_estimates_learn_from_replies():
    limiter = RateLimiter(tpm=10_000)
    first = limiter.estimate(100)
    ticket = take_ticket(limiter, 100, lambda: None)
    ticket.done(600)  # the reply and the prompt framing came to 6x the prompt estimate
    assert limiter.estimate(100) >= 600 > first


def test_take_ticket_gives_up_when_the_time_left_is_shorter_than_the_wait():
    limiter = RateLimiter(rpm=1, window_s=60)
    ticket = take_ticket(limiter, 1, lambda: None)
    assert ticket is not None
    ticket.done(1)  # the next room opens a window (60 s) later: more than the 5 s left
    assert take_ticket(limiter, 1, lambda: 5.0) is None


def test_the_limiter_is_thread_safe():
    limiter = RateLimiter(rpm=50, window_s=3600)
    got: list[int] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(20):
            ticket, _ = limiter.try_acquire(1)
            if ticket is not None:
                with lock:
                    got.append(ticket)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == len(set(got)) == 50


def test_rpm_and_tpm_are_kernel_adapter_keys(tmp_path):
    path = tmp_path / "ponder.toml"
    path.write_text('[adapter]\nname = "scripted"\nrpm = 120\ntpm = 40000\n')
    config = load_config(str(path))
    assert (config.adapter.rpm, config.adapter.tpm) == (120, 40000)
    assert "rpm" not in config.adapter.options and "tpm" not in config.adapter.options
    assert config.to_dict()["adapter"]["tpm"] == 40000


@pytest.mark.parametrize("line, message", [
    ("tpm = 0", "adapter.tpm: expected a whole number of tokens per minute > 0, got 0"),
    ('rpm = "fast"', "adapter.rpm: expected a number of requests per minute > 0, got 'fast'"),
    ("tpm = 1.5", "adapter.tpm: expected a whole number of tokens per minute > 0, got 1.5"),
])
def test_bad_rate_limits_name_the_file_and_key(tmp_path, line, message):
    path = tmp_path / "ponder.toml"
    path.write_text(f'[adapter]\nname = "scripted"\n{line}\n')
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert message in str(err.value) and "ponder.toml" in str(err.value)


def test_the_ray_executor_without_ray_says_how_to_install_it(monkeypatch):
    """``sys.modules["ray"] = None`` makes ``import ray`` fail as if the extra were absent."""
    import sys

    from ponder.plugins.executor_ray import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError) as err:
        RayExecutor()
    assert "pip install -e '.[ray]'" in str(err.value)
    assert err.value.exit_code == 2


def test_a_task_travels_without_the_drivers_services():
    """What ``ray`` ships: the closure's Services becomes the worker's per-item services, and a
    ponder signature comes back as the very class the factory builds (the module cache hits)."""
    import pickle

    from ponder.engine.remote import WorkerRuntime, dumps_task
    from ponder.engine.services import Services
    from ponder.kernel.kinds import ModelInfo
    from ponder.plugins._signatures import extract_signature

    services = Services(lm=None, model_info=ModelInfo(model="m", context_window=100),
                        predictor=None, progress_mode="silent")
    signature = extract_signature()

    def task(index, item):
        return services.chunk_tokens, signature, item

    data, uses_services = dumps_task(task)
    assert uses_services
    assert b"Services" not in data  # no copy of the driver's services travelled
    copy = pickle.loads(data)
    runtime = WorkerRuntime(None)
    with pytest.raises(RuntimeError, match="only usable inside an item"):
        copy(0, "x")  # outside a worker's item there are no services to stand in for
    # a runtime without a spec runs tasks that need no services
    assert runtime.run("k", dumps_task(lambda i, item: item * 2)[0], 0, 21, None)[:2] == \
        ("ok", 42)
    # a signature crosses by reference to its factory: the same class on the other side
    from ponder.engine import remote

    remote._current.services = services
    try:
        assert copy(0, "x")[1] is signature
    finally:
        remote._current.services = None
