"""The ``ray`` executor on a real local Ray cluster (``ray.init(num_cpus=2)``, one for the whole
module: starting one costs seconds), against the loopback fake provider over HTTP.

- the executor conformance suite;
- a 200-chunk ``map_reduce`` finds the needle under ``ray``, and every count (calls, tokens, the
  provider's own counters, the call records in the run store) matches the ``threads`` executor;
- a worker process killed mid-map loses nothing: its items run again on a new worker;
- ``[adapter] tpm`` held in one Ray actor keeps two workers from overrunning the provider's
  tokens-per-window bucket (zero 429s), where the same run without it is rejected;
- a stopped run (``max_cost``) cancels what is queued.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from ponder.engine.system import System
from ponder.kernel.config import load_config
from ponder.support.observability import SpanType, Tracker
from ponder.testing import isolated_user_dir
from ponder.testing.executor_conformance import ExecutorConformance
from ponder.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.slow

CHUNKS = 200
NEEDLE = "MAGIC_PORT = 48213"
QUESTION = "What is MAGIC_PORT?"


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


class TestRayExecutor(ExecutorConformance):
    name = "ray"
    settings = {"num_workers": 2}


def make_corpus(root: Path, files: int = CHUNKS, needles: tuple[int, ...] = (57, 142)) -> Path:
    """``files`` notes of ~90 tokens (with 128-token chunks, one chunk each); the needle line in
    the notes ``needles``."""
    rng = random.Random(5)
    for i in range(files):
        lines = [f"# note {i:03d}"] + [f"entry_{i:03d}_{j} = {rng.randint(0, 99_999)}"
                                       for j in range(12)]
        if i in needles:
            lines.insert(4, NEEDLE)
        path = root / f"part_{i // 50}" / f"note_{i:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def make_system(tmp_path: Path, provider: FakeProvider, executor: str, *, concurrency: int = 4,
                extra: str = "", adapter_extra: str = "") -> System:
    cfg = tmp_path / f"ponder-{executor}.toml"
    cfg.write_text(
        '[strategy]\nname = "map_reduce"\nchunk_tokens = 128\n'
        f"[limits]\nconcurrency = {concurrency}\nmax_retries = 0\n"
        "[cache]\nenabled = false\n"
        f'[storage]\nname = "sqlite"\npath = "{tmp_path / "runs.sqlite"}"\n'
        f'[executor]\nname = "{executor}"\n{extra}'
        f'[adapter]\nname = "openai_compatible"\nbase_url = "{provider.base_url}"\n'
        f'model = "fake-model"\n{adapter_extra}',
        encoding="utf-8")
    return System(load_config(str(cfg)), progress="silent")


def recorded_calls(system: System, run_id: str) -> list[dict]:
    storage = system.open_storage()
    try:
        return storage.get_run(run_id)["calls"]
    finally:
        storage.close()


def test_a_200_chunk_map_reduce_under_ray_counts_what_threads_counts(tmp_path, corpus):
    results = {}
    with isolated_user_dir(tmp_path / "home"), FakeProvider(
            mode="oracle", needles={"MAGIC_PORT": NEEDLE}, max_lifetime=240) as provider:
        for executor in ("threads", "ray"):
            provider.reset()
            system = make_system(tmp_path, provider, executor)
            tracker = Tracker()
            answer = system.ask(QUESTION, [str(corpus)], tracker=tracker)
            results[executor] = (answer, provider.stats(),
                                 recorded_calls(system, answer.run_id), tracker.spans)
            if executor == "ray":
                assert system.open_executor().name == "ray"
                assert len(system.open_executor()._workers) == 2  # the work left this process
            system.open_executor().close()

    for executor, (answer, stats, calls, spans) in results.items():
        assert NEEDLE in answer.answer, executor
        assert answer.chunks["total"] == answer.chunks["read"] == CHUNKS, executor
        assert answer.failures == [] and answer.stopped_by is None, executor
        # every request the provider answered was counted, priced and recorded in the driver
        assert stats["completed"] == stats["requests"] == answer.usage.calls, executor
        assert answer.usage.input_tokens == stats["prompt_tokens"], executor
        assert answer.usage.output_tokens == stats["completion_tokens"], executor
        assert len(calls) == answer.usage.calls, executor
        assert sum(c["input_tokens"] for c in calls) == answer.usage.input_tokens, executor
        assert sum(c["role"] == "map" for c in calls) == CHUNKS, executor
        # the span tree is whole: every map item (made in a worker under ray) hangs under the
        # strategy's span, and every LM call has its span
        (strategy,) = [s for s in spans if s.type == SpanType.STRATEGY]
        items = [s for s in spans if s.type == SpanType.CHUNK and s.name.startswith("map[")]
        assert len(items) == CHUNKS and {s.parent_id for s in items} == {strategy.id}, executor
        assert sum(s.type == SpanType.LLM for s in spans) == answer.usage.calls, executor

    threads, ray_ = results["threads"][0], results["ray"][0]
    assert ray_.usage.calls == threads.usage.calls == CHUNKS + 1  # one combine call
    assert ray_.usage.input_tokens == threads.usage.input_tokens
    assert ray_.usage.output_tokens == threads.usage.output_tokens
    assert ray_.chunks["largest_prompt_tokens"] == threads.chunks["largest_prompt_tokens"]


def test_a_killed_worker_loses_nothing(tmp_path, corpus):
    with isolated_user_dir(tmp_path / "home"), FakeProvider(
            mode="oracle", needles={"MAGIC_PORT": NEEDLE}, latency=(0.02, 0, 0),
            max_lifetime=240) as provider:
        system = make_system(tmp_path, provider, "ray",
                             extra="num_workers = 2\nthreads_per_worker = 2\n")
        executor = system.open_executor()
        killed: list[int] = []

        def kill_one_worker() -> None:
            end = time.monotonic() + 120
            while time.monotonic() < end and not killed:
                if executor._workers and provider.stats()["completed"] >= 40:
                    pid = executor.worker_pids()[0]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.01)

        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        answer = system.ask(QUESTION, [str(corpus)])
        killer.join(timeout=10)
        stats = provider.stats()
        calls = recorded_calls(system, answer.run_id)
        lost, resubmitted = executor.lost_workers, executor.resubmitted
        executor.close()

    assert killed, "the test never killed a worker"
    assert lost == 1 and resubmitted >= 1
    # nothing lost: every chunk was read, once, and the needle found
    assert answer.failures == [] and answer.chunks["read"] == CHUNKS
    assert NEEDLE in answer.answer
    assert any("ray worker loss" in p for p in answer.problems)
    # accounted: what the driver counts is what it recorded, and every request that reached the
    # provider is counted (the dead worker's from the ledger); a request noted as sent may have
    # died before it reached the provider, so the provider saw at most the in-flight ones fewer
    assert len(calls) == answer.usage.calls
    # every chunk once, plus a lost item's map call that was answered before its worker died
    # (taken from the ledger: served, so counted) when the kill lands in that instant
    maps = sum(c["role"] == "map" for c in calls)
    assert CHUNKS <= maps <= CHUNKS + executor.lost_requests["records"]
    in_flight = executor.lost_requests["in_flight"]
    assert stats["requests"] <= answer.usage.calls <= stats["requests"] + in_flight
    assert in_flight <= 2 * (1 + 0)  # threads_per_worker = 2 items, max_retries = 0


#: ChatAdapter's prompts get a reply without its sections, so DSPy asks again with JSONAdapter:
#: every call is two requests, and a call can die between them
TWO_REQUESTS = [(r"ending with the marker for `\[\[ ## completed ## \]\]`",
                 "no sections here [[ ## completed ## ]]")]


def test_a_killed_worker_loses_no_count_its_requests_come_from_the_ledger(tmp_path):
    """Kill a worker while each of its two items has one request answered and one at the
    provider: the answered ones are counted from the ledger with their usage, the ones in flight
    as attempted calls with estimated prompt tokens; nothing is counted twice."""
    files = 12
    corpus = make_corpus(tmp_path / "c", files=files, needles=(5,))
    with isolated_user_dir(tmp_path / "home"), FakeProvider(
            mode="rules", rules=TWO_REQUESTS, default_reply=NEEDLE, latency=(1.0, 0, 0),
            max_lifetime=240) as provider:
        system = make_system(tmp_path, provider, "ray",
                             extra="num_workers = 2\nthreads_per_worker = 2\n")
        executor = system.open_executor()
        # both workers warm (their LM clients built), so the next map's four items run in step
        system.ask(QUESTION, [str(make_corpus(tmp_path / "warm", files=4, needles=(1,)))])
        pids = executor.worker_pids()  # asked now: a busy actor answers only between items
        provider.reset()
        killed: list[dict] = []

        def kill_when_every_item_is_in_its_second_request() -> None:
            end = time.monotonic() + 120
            while time.monotonic() < end and not killed:
                stats = provider.stats()
                if stats["completed"] >= 4 and stats["in_flight"] == 4:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(stats)
                time.sleep(0.01)

        killer = threading.Thread(target=kill_when_every_item_is_in_its_second_request,
                                  daemon=True)
        killer.start()
        answer = system.ask(QUESTION, [str(corpus)])
        killer.join(timeout=10)
        stats = provider.stats()
        calls = recorded_calls(system, answer.run_id)
        taken = dict(executor.lost_requests)
        executor.close()
        from ponder.plugins._ray_ledger import _running

        # close() returns once its workers' processes are gone: none sends a request after
        assert not any(_running(pid) for pid in pids), pids

    assert killed and killed[0]["completed"] == 4, killed
    # nothing lost: every chunk read once, the needle found
    assert answer.failures == [] and answer.chunks["read"] == files
    assert NEEDLE in answer.answer
    # the killed worker held two items, each with one request answered (absorbed from the
    # ledger) and one at the provider, which the provider dropped when the worker died
    assert taken["absorbed"] == 2 and taken["in_flight"] == 2 and stats["aborted"] == 2
    # every request that reached the provider is counted, none twice
    assert answer.usage.calls == stats["requests"] == stats["completed"] + stats["aborted"]
    assert answer.usage.output_tokens == stats["completion_tokens"]
    assert answer.usage.input_tokens == stats["prompt_tokens"] + taken["estimated_tokens"]
    assert taken["estimated_tokens"] > 0
    # recorded in the run store exactly once: what the answer counts
    assert sum(c["input_tokens"] for c in calls) == answer.usage.input_tokens
    assert sum(c["output_tokens"] for c in calls) == answer.usage.output_tokens
    lost = [c for c in calls if c["role"] == "map:lost"]
    assert len(lost) == 4 and all(c["error"].startswith("WorkerLost") for c in lost)
    assert sum(c["role"] == "map" for c in calls) == files  # each chunk's finished call once
    assert any("estimated prompt tokens" in p for p in answer.problems)


def test_tpm_held_in_one_actor_keeps_workers_under_the_providers_bucket(tmp_path):
    files = 12
    corpus = make_corpus(tmp_path / "small", files=files, needles=(7,))
    # a map call is ~500 tokens: 4 calls fit a window, so the 12-chunk run needs 3 windows;
    # unlimited, any pace over one call a second overruns it
    window_s, tpm = 4.0, 2000
    outcomes = {}
    with isolated_user_dir(tmp_path / "home"):
        for limited in (False, True):
            with FakeProvider(mode="oracle", needles={"MAGIC_PORT": NEEDLE}, tpm=tpm,
                              tpm_window_s=window_s, max_lifetime=120) as provider:
                system = make_system(tmp_path, provider, "ray",
                                     extra="num_workers = 2\nthreads_per_worker = 2\n")
                if limited:  # [adapter] tpm, over the fake's short window instead of 60 s
                    system.rate_limiter = system.open_executor().rate_limiter(
                        None, tpm, window_s=window_s)
                answer = system.ask(QUESTION, [str(corpus)])
                outcomes[limited] = (answer, provider.stats(),
                                     system.rate_limiter.stats() if limited else None)
                system.open_executor().close()

    unlimited, stats_unlimited, _ = outcomes[False]
    assert stats_unlimited["failures"]["tpm"] > 0, "the provider's bucket should bite unlimited"
    assert unlimited.failures  # max_retries = 0: each rejection is a failed chunk

    answer, stats, limiter = outcomes[True]
    assert stats["failures"]["tpm"] == 0, "ponder overran the provider's tokens per window"
    assert answer.failures == [] and answer.chunks["read"] == files
    assert NEEDLE in answer.answer
    assert limiter["admitted"] == stats["requests"] and limiter["waits"] > 0
    assert stats["prompt_tokens"] + stats["completion_tokens"] > tpm  # it had to wait


def test_a_spent_cost_limit_stops_every_worker_and_cancels_the_queue(tmp_path, corpus):
    price = 0.001  # per output token; a map reply is ~20 tokens: ~$0.02 a call
    with isolated_user_dir(tmp_path / "home"), FakeProvider(
            mode="oracle", needles={"MAGIC_PORT": NEEDLE}, latency=(0.02, 0, 0),
            max_lifetime=120) as provider:
        system = make_system(
            tmp_path, provider, "ray", concurrency=4,
            extra="num_workers = 2\nthreads_per_worker = 2\n",
            adapter_extra=f"input_cost_per_token = 0.0\noutput_cost_per_token = {price}\n")
        system.config.limits.max_cost = 0.2
        answer = system.ask(QUESTION, [str(corpus)])
        stats = provider.stats()
        system.open_executor().close()

    assert answer.stopped_by == "max_cost"
    # every chunk accounted: read, or listed as stopped
    assert answer.chunks["read"] + len(answer.failures) == CHUNKS
    assert all(f.kind == "max_cost" for f in answer.failures)
    # the provider saw only what was counted; the hand-out stopped within one round
    assert stats["completed"] == answer.usage.calls
    per_call = answer.usage.cost_usd / answer.usage.calls
    assert answer.usage.calls <= 0.2 / per_call + 4
    assert answer.chunks["read"] < CHUNKS // 2


def test_an_unreachable_provider_fails_every_worker_fast(tmp_path):
    """The first item that finds no server makes it the run's fatal error; the items handed
    out after that fail at once in their workers, with no request of their own."""
    import socket

    corpus = make_corpus(tmp_path / "small", files=20, needles=(3,))
    with socket.socket() as sock:  # a port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with isolated_user_dir(tmp_path / "home"):
        cfg = tmp_path / "ponder.toml"
        cfg.write_text(
            '[strategy]\nname = "map_reduce"\nchunk_tokens = 128\n'
            "[limits]\nconcurrency = 2\nmax_retries = 1\n[cache]\nenabled = false\n"
            '[storage]\nname = "memory"\n[executor]\nname = "ray"\nnum_workers = 2\n'
            f'[adapter]\nname = "openai_compatible"\nbase_url = "http://127.0.0.1:{port}/v1"\n'
            'model = "fake-model"\n', encoding="utf-8")
        system = System(load_config(str(cfg)), progress="silent")
        answer = system.ask(QUESTION, [str(corpus)])
        system.open_executor().close()

    assert answer.chunks["read"] == 0 and len(answer.failures) == 20
    assert {f.kind for f in answer.failures} == {"ProviderUnreachable"}
    assert f"127.0.0.1:{port}" in answer.failures[0].error
    # at most the first round (two items in flight, each with its retry) made requests
    assert sum(f.attempts for f in answer.failures) <= 2 * 2


def test_rays_token_auth_notice_is_quiet_on_the_cluster_ponder_starts(monkeypatch):
    """Ray warns on every ``ray.init()`` that it turned token auth on; for the private cluster
    ponder starts that is noise on stderr. Ray's own warning function, inside and outside
    the guard ponder starts its cluster in; a user's explicit RAY_AUTH_MODE is left alone."""
    import logging

    from ray._private.authentication import authentication_token_setup as setup

    from ponder.plugins.executor_ray import _quiet_token_auth_notice

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger(setup.__name__)
    logger.addHandler(handler)
    try:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        with _quiet_token_auth_notice():
            setup._warn_token_auth_enabled()
            setup._warn_token_auth_disabled()  # any other warning still shows
        assert len(seen) == 1 and "disabled" in seen[0]
        setup._warn_token_auth_enabled()  # outside the guard: Ray's notice as ever
        assert len(seen) == 2 and "is enabled" in seen[1]
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        with _quiet_token_auth_notice():
            setup._warn_token_auth_enabled()
        assert len(seen) == 3
    finally:
        logger.removeHandler(handler)
