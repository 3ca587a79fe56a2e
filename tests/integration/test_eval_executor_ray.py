"""An eval's examples on the ``ray`` executor: a real local Ray cluster (``ray.init(num_cpus=2)``,
one for the module, shut down at the end) against the loopback fake provider over HTTP.

Each example is one work item asked on a Ray actor (the System built there once); its usage
and run record come back to the driver, which records and scores it. The same eval under
``threads`` and under ``ray`` gives the same scores and the same requests at the provider,
every request is counted in the eval's usage and recorded in the driver's run store, and a
failing example is listed (not zeroed) and asked again by a rerun.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from ponder.evaluate import Evaluator, evaluate
from ponder.kernel.config import CacheConfig, Component, Config, LimitsConfig
from ponder.testing import isolated_user_dir
from ponder.testing.fake_provider import FakeProvider
from ponder.testing.needle_dataset import needle_dataset

pytestmark = pytest.mark.slow

NEEDLE = "48213"


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(autouse=True)
def home(tmp_path):
    with isolated_user_dir(tmp_path / "home"):
        yield


def config(base_url: str, tmp_path: Path, executor: str, *, strategy: str = "direct",
           concurrency: int = 4, retries: int = 3, **strategy_options) -> Config:
    return Config(
        limits=LimitsConfig(concurrency=concurrency, max_retries=retries),
        cache=CacheConfig(enabled=False),
        adapter=Component("openai_compatible", {"base_url": base_url, "model": "fake-model"}),
        strategy=Component(strategy, strategy_options),
        executor=Component(executor, {"num_workers": 2} if executor == "ray" else {}),
        storage=Component("sqlite", {"path": str(tmp_path / f"runs-{executor}.sqlite")}))


def corpus(tmp_path: Path, present: int, absent: int, *, files: int = 1,
           lines: int = 5) -> Path:
    """``present`` folders holding the needle's line and ``absent`` ones without it, and a
    dataset (absolute source paths: the workers read them) asking each; ids say which."""
    return needle_dataset(tmp_path, present, absent, needle=NEEDLE, files=files, lines=lines,
                          absolute=True)


def run_eval(cfg: Config, dataset: Path, metrics: list[str]) -> tuple:
    """The result, where the examples were asked, the actors' pids (ray), the run store."""
    evaluator = Evaluator(cfg, metrics)
    try:
        result = evaluator.run(dataset)
        executor = evaluator.system.open_executor()
        pids = set(executor.worker_pids()) if executor.name == "ray" else {os.getpid()}
        storage = evaluator.system.shared_storage()
        runs = {r.run_id: storage.get_run(r.run_id) for r in result.per_example if r.run_id}
        records = storage.list_records("eval", "example/")
        return result, dict(evaluator.asked_in), pids, runs, records
    finally:
        evaluator.close()


def test_six_examples_under_ray_score_and_count_what_threads_does(tmp_path: Path):
    # map_reduce over three files a folder: each example makes several requests, its own map
    # on the worker's threads
    dataset = corpus(tmp_path, present=4, absent=2, files=3, lines=40)
    outcomes = {}
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        for executor in ("threads", "ray"):
            provider.reset()
            cfg = config(provider.base_url, tmp_path, executor, strategy="map_reduce",
                         chunk_tokens=300)
            outcomes[executor] = (*run_eval(cfg, dataset, ["contains", "exact_match"]),
                                  provider.stats())

    for executor, (result, asked_in, pids, runs, records, stats) in outcomes.items():
        assert result.examples == 6 and result.failed == 0, executor
        assert result.scores["contains"]["mean"] == pytest.approx(4 / 6), executor
        # every request the provider answered is in the eval's usage ...
        assert result.usage["calls"] == stats["requests"] == stats["completed"] > 6, executor
        assert result.usage["input_tokens"] == stats["prompt_tokens"], executor
        assert result.usage["output_tokens"] == stats["completion_tokens"], executor
        # ... and recorded in the driver's run store, one run per example with its calls
        assert len(runs) == 6 and all(run is not None for run in runs.values()), executor
        assert all(run["status"] == "ok" for run in runs.values()), executor
        assert sum(len(run["calls"]) for run in runs.values()) == stats["requests"], executor
        for r in result.per_example:
            assert len(runs[r.run_id]["calls"]) == r.usage["calls"], executor
        assert len(records) == 6, executor  # each example's eval record (resume)
        # where the examples were asked: this process, or the Ray actors and only there
        assert sum(asked_in.values()) == 6 and set(asked_in) <= pids, executor

    threads, ray_ = outcomes["threads"][0], outcomes["ray"][0]
    assert set(outcomes["ray"][1]).isdisjoint({os.getpid()})  # the work left this process
    # each run the driver recorded says which actor asked it
    ray_runs, ray_pids = outcomes["ray"][3], outcomes["ray"][2]
    assert {run["worker"]["pid"] for run in ray_runs.values()} <= ray_pids
    assert all("worker" not in run for run in outcomes["threads"][3].values())
    assert {r.id: r.scores for r in ray_.per_example} == \
        {r.id: r.scores for r in threads.per_example}
    assert ray_.scores == threads.scores
    assert ray_.usage["calls"] == threads.usage["calls"]
    assert outcomes["ray"][5]["requests"] == outcomes["threads"][5]["requests"]


def test_a_failing_example_is_listed_not_zeroed_and_asked_again(tmp_path: Path):
    dataset = corpus(tmp_path, present=4, absent=0)
    with dataset.open("a") as handle:  # an example whose sources do not exist fails alone
        handle.write(json.dumps({"id": "nosrc", "question": "q?", "answer": NEEDLE,
                                 "sources": [str(tmp_path / "corpus" / "missing")]}) + "\n")
    # the first two requests fail with a 500 and there are no retries: two examples fail
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}, fail_first_n=2,
                      fail_first_kind="server_error") as provider:
        cfg = config(provider.base_url, tmp_path, "ray", concurrency=2, retries=0)
        result = evaluate(cfg, dataset, metrics=["contains"])
        assert len(result.per_example) == 5  # none lost
        failed = {r.id: r.failure for r in result.failures}
        assert len(failed) == 3 and "no such file or directory" in failed["nosrc"]
        # (not "500" anywhere: the missing path may be under pytest-500/)
        assert sum("500" in f or "Internal" in f or "Server" in f
                   for i, f in failed.items() if i != "nosrc") == 2
        # the score is over the two that ran, both right: not 2/5
        assert result.scores["contains"] == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 2}
        assert result.usage["calls"] == provider.stats()["completed"] == 2
        before = provider.stats()["requests"]
        # a rerun reads the two back in the driver and asks only the failed ones again
        again = evaluate(cfg, dataset, metrics=["contains"])
        assert provider.stats()["requests"] - before == 2
    assert again.failed == 1 and again.resumed == 2
    assert again.scores["contains"]["mean"] == 1.0 and again.scores["contains"]["n"] == 4


def test_an_unreachable_provider_stops_the_ray_eval(tmp_path: Path):
    dataset = corpus(tmp_path, present=6, absent=0)
    with socket.socket() as sock:  # a port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = config(f"http://127.0.0.1:{port}/v1", tmp_path, "ray", concurrency=1, retries=0)
    result = evaluate(cfg, dataset, metrics=["contains"])
    # the first example's verdict came back from its worker and stopped the hand-out there
    assert result.failed == 1 and len(result.not_run) == 5
    assert result.status == "stopped" and "cannot reach the provider" in result.stop_reason


def test_judge_scoring_stays_in_the_driver_and_is_priced_apart(tmp_path: Path):
    dataset = corpus(tmp_path, present=2, absent=1)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as system_provider, \
            FakeProvider(mode="rules", rules=[(r"## answer ## \]\]\s*48213", {
                "score": "1", "feedback": "same value"})],
                default_reply='{"score": "0", "feedback": "different"}') as judge_provider:
        cfg = config(system_provider.base_url, tmp_path, "ray")
        cfg.sections["eval"] = {"metric": {"llm_judge": {
            "adapter": "openai_compatible",
            "settings": {"base_url": judge_provider.base_url, "model": "judge",
                         "input_cost_per_token": 3e-6, "output_cost_per_token": 3e-6}}}}
        result = evaluate(cfg, dataset, metrics=["llm_judge", "contains"])
        system_stats, judge_stats = system_provider.stats(), judge_provider.stats()
    assert [r.scores["llm_judge"] for r in result.per_example] == [1.0, 1.0, 0.0]
    assert result.usage["calls"] == system_stats["requests"] == 3
    assert result.usage["judge"]["calls"] == judge_stats["requests"] == 3
    judge_tokens = judge_stats["prompt_tokens"] + judge_stats["completion_tokens"]
    assert result.usage["judge"]["cost"] == pytest.approx(judge_tokens * 3e-6)


def test_ponder_eval_under_ray_asks_on_the_actors(tmp_path: Path, capsys):
    """The command: its plugin set (handed to the Evaluator) reaches the workers or is loaded
    there from the config; every run it records names an actor's process, not this one."""
    from ponder.cli.main import main
    from ponder.plugins.sqlite_store import SQLiteSettings, SQLiteStorage

    dataset = corpus(tmp_path, present=2, absent=1)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        cfg = tmp_path / "ponder.toml"
        cfg.write_text(
            "[limits]\nconcurrency = 2\n[cache]\nenabled = false\n"
            f'[storage]\nname = "sqlite"\npath = "{tmp_path / "cli.sqlite"}"\n'
            '[executor]\nname = "ray"\nnum_workers = 2\n'
            f'[adapter]\nname = "openai_compatible"\nbase_url = "{provider.base_url}"\n'
            'model = "fake-model"\n', encoding="utf-8")
        code = main(["--config", str(cfg), "eval", str(dataset), "--json"])
        requests = provider.stats()["requests"]
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["examples"] == 3 and out["failed"] == 0
    assert out["score"] == pytest.approx(2 / 3)
    assert out["usage"]["calls"] == requests == 3
    storage = SQLiteStorage(SQLiteSettings(path=str(tmp_path / "cli.sqlite")))
    try:
        runs = [storage.get_run(r["id"]) for r in storage.list_runs(limit=10)]
    finally:
        storage.close()
    assert len(runs) == 3 and all(len(run["calls"]) == 1 for run in runs)
    assert all(run["worker"]["pid"] != os.getpid() for run in runs)


def test_a_killed_worker_loses_no_example(tmp_path: Path):
    """An actor killed mid-eval: its examples are asked again on a new actor (the ray
    executor's retry), every example is scored once and recorded."""
    import signal
    import threading
    import time

    dataset = corpus(tmp_path, present=6, absent=2, files=3, lines=40)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}, latency=(0.05, 0, 0),
                      max_lifetime=240) as provider:
        cfg = config(provider.base_url, tmp_path, "ray", concurrency=2, strategy="map_reduce",
                     chunk_tokens=300)
        evaluator = Evaluator(cfg, ["contains"])
        executor = evaluator.system.open_executor()
        killed: list[int] = []

        def kill_one_worker() -> None:
            end = time.monotonic() + 120
            while time.monotonic() < end and not killed:
                if executor._workers and provider.stats()["completed"] >= 10:
                    pid = executor.worker_pids()[0]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.01)

        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        try:
            result = evaluator.run(dataset)
            killer.join(timeout=10)
            storage = evaluator.system.shared_storage()
            runs = [storage.get_run(r.run_id) for r in result.per_example]
            records = storage.list_records("eval", "example/")
            lost, resubmitted = executor.lost_workers, executor.resubmitted
        finally:
            evaluator.close()
        completed, requests = provider.stats()["completed"], provider.stats()["requests"]
    assert killed, "the test never killed a worker"
    assert lost == 1 and resubmitted >= 1  # the example it held was handed out again
    assert result.failed == 0 and not result.not_run and len(result.per_example) == 8
    assert result.score == 0.75  # six of eight hold the needle
    assert all(run is not None and run["status"] == "ok" for run in runs)
    assert len(records) == 8
    # the examples' recorded calls, plus the killed attempts' requests taken from the dead
    # actor's request journal: every request the provider served is counted; one sent but never
    # answered is counted as attempted (docs/executors.md)
    lost_calls = result.lost_usage["calls"]
    assert sum(len(run["calls"]) for run in runs) + lost_calls == result.usage["calls"]
    assert completed <= result.usage["calls"] <= requests + lost_calls


def test_requests_of_an_example_lost_with_its_worker_are_counted(tmp_path: Path):
    """Killed while its examples' requests are at the provider (1 s each): those requests were
    journaled by the actor before they left, so the eval counts them (``usage.lost``), with the
    estimated prompt tokens of a request never answered."""
    import signal
    import threading
    import time

    dataset = corpus(tmp_path, present=4, absent=0)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}, latency=1.0,
                      max_lifetime=240) as provider:
        cfg = config(provider.base_url, tmp_path, "ray", concurrency=2)
        evaluator = Evaluator(cfg, ["contains"])
        executor = evaluator.system.open_executor()
        killed: list[int] = []

        def kill_while_in_flight() -> None:
            # every worker, the moment a request is at the provider (it takes 1 s): whichever
            # worker sent it, it dies unanswered with it
            end = time.monotonic() + 120
            while time.monotonic() < end and not killed:
                if executor._workers and provider.stats()["in_flight"] >= 1:
                    for pid in executor.worker_pids():
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                time.sleep(0.01)

        killer = threading.Thread(target=kill_while_in_flight, daemon=True)
        killer.start()
        try:
            result = evaluator.run(dataset)
            killer.join(timeout=10)
        finally:
            evaluator.close()
        stats = provider.stats()
    assert killed and result.failed == 0 and len(result.per_example) == 4
    examples = sum(r.usage["calls"] for r in result.per_example)
    lost = result.usage.get("lost", {"calls": 0})["calls"]
    assert result.usage["calls"] == examples + lost
    # every request that reached the provider is counted: the killed attempts' (the provider
    # saw more requests than the examples' own calls: nearly every run) from the journal
    assert lost >= stats["requests"] - examples
    if lost:
        assert result.usage["lost"]["input_tokens"] > 0  # sent, never answered: estimated
    assert stats["completed"] <= result.usage["calls"] <= stats["requests"] + \
        executor.lost_requests["in_flight"]


def test_ctrl_c_under_ray_ends_interrupted_and_a_rerun_asks_the_rest(tmp_path: Path):
    """``ponder eval`` under ray (its own local cluster, in a child process), SIGINT once some
    examples are recorded: it ends ``interrupted`` (exit 3) without taking its closed workers
    for lost ones, and a rerun asks only what was not recorded."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    dataset = corpus(tmp_path, present=12, absent=0)
    store = tmp_path / "ctrl-c.sqlite"

    def recorded() -> int:
        try:
            with sqlite3.connect(store) as db:
                return db.execute("SELECT count(*) FROM records WHERE namespace = 'eval' "
                                  "AND key LIKE 'example/%'").fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0

    with FakeProvider(mode="oracle", needles={"port": NEEDLE}, latency=(0.3, 0, 0),
                      max_lifetime=240) as provider:
        cfg = tmp_path / "ponder.toml"
        cfg.write_text(
            "[limits]\nconcurrency = 2\n[cache]\nenabled = false\n"
            f'[storage]\nname = "sqlite"\npath = "{store}"\n'
            '[executor]\nname = "ray"\nnum_cpus = 2\nnum_workers = 2\n'
            f'[adapter]\nname = "openai_compatible"\nbase_url = "{provider.base_url}"\n'
            'model = "fake-model"\n', encoding="utf-8")
        command = [sys.executable, "-m", "ponder", "--config", str(cfg), "eval", str(dataset)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        child = subprocess.Popen(
            [*command, "--progress", "plain"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            for _ in range(2400):  # bounded poll: until some examples are recorded
                if recorded() >= 3 or child.poll() is not None:
                    break
                time.sleep(0.05)
            assert child.poll() is None, child.communicate()[1].decode()
            child.send_signal(signal.SIGINT)
            _, stderr = (b.decode() for b in child.communicate(timeout=90))
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
        assert child.returncode == 3, stderr
        assert "cancelled by Ctrl-C" in stderr
        assert "worker loss" not in stderr and "lost" not in stderr  # closed, not lost
        finished = recorded()
        assert 3 <= finished < 12
        before = provider.stats()["requests"]
        again = subprocess.run([*command, "--json"], capture_output=True, env=env, timeout=180)
        asked = provider.stats()["requests"] - before
    assert again.returncode == 0, again.stderr.decode()
    out = json.loads(again.stdout)
    assert out["failed"] == 0 and out["resumed"] == finished
    # one call an example, only those not recorded (the message says what the rerun counted)
    assert asked == 12 - finished, (asked, finished, out.get("usage"), out.get("examples"),
                                    again.stderr.decode()[-3000:], stderr[-3000:])
