"""``[adapter] rpm``/``tpm`` under the ``threads`` executor, against the fake provider's own
tokens-per-window bucket over HTTP: the run's one lock-protected limiter keeps concurrent calls
under it (zero 429s), where the same run without it is rejected; and the config keys reach the
run (every request took a ticket)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ponder.engine.ratelimit import RateLimiter
from ponder.engine.system import System
from ponder.kernel.config import load_config
from ponder.testing import isolated_user_dir
from ponder.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.fault

NEEDLE = "MAGIC_PORT = 48213"


def make_corpus(root: Path, files: int) -> Path:
    rng = random.Random(9)
    for i in range(files):
        lines = [f"# note {i:03d}"] + [f"entry_{i:03d}_{j} = {rng.randint(0, 99_999)}"
                                       for j in range(12)]
        if i == 3:
            lines.insert(4, NEEDLE)
        (root / f"note_{i:03d}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"note_{i:03d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_system(tmp_path: Path, provider: FakeProvider, adapter_extra: str = "") -> System:
    cfg = tmp_path / "ponder.toml"
    cfg.write_text(
        '[strategy]\nname = "map_reduce"\nchunk_tokens = 128\n'
        "[limits]\nconcurrency = 8\nmax_retries = 0\n[cache]\nenabled = false\n"
        '[storage]\nname = "memory"\n[executor]\nname = "threads"\n'
        f'[adapter]\nname = "openai_compatible"\nbase_url = "{provider.base_url}"\n'
        f'model = "fake-model"\n{adapter_extra}', encoding="utf-8")
    return System(load_config(str(cfg)), progress="silent")


def test_one_limiter_keeps_eight_threads_under_the_providers_tpm(tmp_path):
    corpus = make_corpus(tmp_path / "notes", files=12)
    # a map call is ~500 tokens: 4 fit one 3 s window, so the 12 calls need 3 windows
    window_s, tpm = 3.0, 2000
    runs = {}
    with isolated_user_dir(tmp_path / "home"):
        for limited in (False, True):
            with FakeProvider(mode="oracle", needles={"MAGIC_PORT": NEEDLE}, tpm=tpm,
                              tpm_window_s=window_s, max_lifetime=120) as provider:
                system = make_system(tmp_path, provider)
                if limited:  # what [adapter] tpm builds, over the fake's short window
                    system.rate_limiter = RateLimiter(None, tpm, window_s=window_s)
                answer = system.ask("What is MAGIC_PORT?", [str(corpus)])
                runs[limited] = (answer, provider.stats())

    unlimited, unlimited_stats = runs[False]
    assert unlimited_stats["failures"]["tpm"] > 0  # the provider's bucket does bite
    assert unlimited.failures

    answer, stats = runs[True]
    assert stats["failures"]["tpm"] == 0, "ponder overran the provider's tokens per window"
    assert answer.failures == [] and answer.chunks["read"] == 12
    assert NEEDLE in answer.answer
    assert stats["prompt_tokens"] + stats["completion_tokens"] > tpm  # so it had to wait


def test_rpm_and_tpm_from_the_config_meter_every_request(tmp_path):
    corpus = make_corpus(tmp_path / "notes", files=6)
    with isolated_user_dir(tmp_path / "home"), FakeProvider(
            mode="oracle", needles={"MAGIC_PORT": NEEDLE}, max_lifetime=60) as provider:
        system = make_system(tmp_path, provider, "rpm = 6000\ntpm = 1000000\n")
        answer = system.ask("What is MAGIC_PORT?", [str(corpus)])
        stats = provider.stats()
    limiter = system.rate_limiter.stats()
    assert (limiter["rpm"], limiter["tpm"]) == (6000, 1000000)
    assert limiter["admitted"] == stats["requests"] == answer.usage.calls == 7
    assert NEEDLE in answer.answer


class FakeClock:
    """A clock the test moves by hand (the limiter's ``clock``): no sleeping, no wall time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_rpm_under_one_a_minute_still_admits_one_request_per_period():
    """``rpm = 0.5`` is one request every two minutes; a 60 s window holding 0.5 requests
    would never admit one (the run hung)."""
    clock = FakeClock()
    limiter = RateLimiter(0.5, None, margin_s=0.0, clock=clock)
    first, _ = limiter.try_acquire(10)
    assert first is not None
    limiter.settle(first, 10)
    second, wait = limiter.try_acquire(10)
    assert second is None and 119 <= wait <= 120
    clock.now += 90  # past a minute, inside two: still held back
    assert limiter.try_acquire(10)[0] is None
    clock.now += 30.5
    assert limiter.try_acquire(10)[0] is not None


def test_a_long_rate_limit_wait_says_so_once(caplog):
    """A run held back by the limit for long says why on stderr (once), instead of going
    quiet."""
    from ponder.engine import ratelimit

    clock = FakeClock()
    limiter = RateLimiter(1, None, margin_s=0.0, clock=clock)
    limiter.settle(limiter.try_acquire(1)[0], 1)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the limiter's wait, on the fake clock
        slept.append(seconds)
        clock.now += seconds

    ratelimit._last_notice[0] = float("-inf")
    with caplog.at_level("WARNING", logger="ponder.run"):
        for _ in range(3):
            ticket = ratelimit.wait_for_ticket(limiter.try_acquire, 1,
                                               remaining_s=lambda: None, sleep=sleep)
            limiter.settle(ticket, 1)
    notices = [r for r in caplog.records if "rate limit" in r.getMessage()]
    assert len(slept) >= 2 and min(slept) >= 59  # each request waited a whole window
    assert len(notices) == 1 and "[adapter] rpm/tpm" in notices[0].getMessage()

