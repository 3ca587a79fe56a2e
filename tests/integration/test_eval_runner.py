"""The eval runner end to end over the loopback fake provider: exact scores, failures listed,
one concurrency budget, resuming, the judge's usage apart, comparisons and the report."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import attrs
import pytest

from ponder.evaluate import ConcurrencyBudget, Evaluator, evaluate, load_dataset
from ponder.kernel.config import CacheConfig, Component, Config, LimitsConfig
from ponder.testing.fake_provider import FakeProvider
from ponder.testing.needle_dataset import needle_dataset

pytestmark = pytest.mark.fault

NEEDLE = "48213"


def config(provider: FakeProvider, tmp_path: Path, *, strategy: str = "direct",
           concurrency: int = 4, retries: int = 3, price: float = 0.0, **strategy_options):
    return Config(
        limits=LimitsConfig(concurrency=concurrency, max_retries=retries),
        cache=CacheConfig(enabled=False),
        adapter=Component("openai_compatible", {
            "base_url": provider.base_url, "model": "fake-model",
            "input_cost_per_token": price, "output_cost_per_token": price}),
        strategy=Component(strategy, strategy_options),
        storage=Component("sqlite", {"path": str(tmp_path / "runs.sqlite")}))


def corpus(tmp_path: Path, present: int, absent: int, *, files: int = 1,
           lines: int = 5) -> Path:
    """``present`` folders holding the needle's line and ``absent`` ones without it, and a
    dataset asking each; ids say which."""
    return needle_dataset(tmp_path, present, absent, needle=NEEDLE, files=files, lines=lines,
                          absolute=False)


def test_exact_score_needle_present_and_absent(tmp_path: Path):
    dataset = corpus(tmp_path, present=4, absent=2)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        result = evaluate(config(provider, tmp_path), dataset, metrics=["contains", "exact_match"])
        requests = provider.stats()["requests"]
    assert result.examples == 6 and result.failed == 0
    assert result.scores["contains"]["mean"] == pytest.approx(4 / 6)
    assert result.scores["exact_match"]["mean"] == pytest.approx(4 / 6)
    assert {r.id: r.scores["contains"] for r in result.per_example} == {
        "present0": 1.0, "present1": 1.0, "present2": 1.0, "present3": 1.0,
        "absent0": 0.0, "absent1": 0.0}
    assert result.by_tag == {"absent": {"contains": 0.0, "exact_match": 0.0},
                             "present": {"contains": 1.0, "exact_match": 1.0}}
    assert requests == 6 and result.usage["calls"] == 6  # one call per example, all counted
    data = result.to_dict()
    for key in ("eval_id", "dataset", "examples", "failed", "scores", "score", "usage",
                "latency_s", "per_example"):
        assert key in data
    assert data["score"] == pytest.approx(4 / 6)
    assert set(data["usage"]) >= {"calls", "tokens", "cost"}
    assert set(data["per_example"][0]) >= {"id", "scores", "answer", "failure"}
    assert all(r.run_id for r in result.per_example)  # each links to its ask run


def test_injected_faults_are_listed_not_zeroed(tmp_path: Path):
    dataset = corpus(tmp_path, present=4, absent=0)
    with dataset.open("a") as handle:  # an example whose sources do not exist fails alone
        handle.write(json.dumps({"id": "nosrc", "question": "q?", "answer": NEEDLE,
                                 "sources": ["corpus/missing"]}) + "\n")
    # the first two requests fail with a 500 and there are no retries: two examples fail
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}, fail_first_n=2,
                      fail_first_kind="server_error") as provider:
        cfg = config(provider, tmp_path, concurrency=1, retries=0)
        result = evaluate(cfg, dataset, metrics=["contains"])
        assert len(result.per_example) == 5  # none lost
        failed = {r.id: r.failure for r in result.failures}
        assert len(failed) == 3 and "no such file or directory" in failed["nosrc"]
        # (not "500" anywhere: the missing path may be under pytest-500/)
        assert sum("500" in f or "Internal" in f or "Server" in f
                   for i, f in failed.items() if i != "nosrc") == 2
        # the score is over the two that ran, both right: not 2/5
        assert result.scores["contains"] == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 2}
        # a failed ask still reports its run and the request the provider answered with a 500
        served = [r for i, r in ((r.id, r) for r in result.failures) if i != "nosrc"]
        assert all(r.run_id and r.usage["failed_requests"] == 1 for r in served)
        assert result.usage["failed_requests"] == 2
        before = provider.stats()["requests"]
        # a rerun asks only the failed ones again (the provider no longer fails)
        again = evaluate(cfg, dataset, metrics=["contains"])
        assert provider.stats()["requests"] - before == 2
    assert again.failed == 1 and again.resumed == 2
    assert again.scores["contains"]["mean"] == 1.0 and again.scores["contains"]["n"] == 4


def test_one_budget_bounds_requests_in_flight(tmp_path: Path):
    # 8 examples of 8 chunks each under map_reduce, at most 4 at once overall
    dataset = corpus(tmp_path, present=8, absent=0, files=8, lines=40)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}, latency=(0.05, 0, 0)) as provider:
        cfg = config(provider, tmp_path, strategy="map_reduce", chunk_tokens=300)
        budget = ConcurrencyBudget(4)
        evaluator = Evaluator(cfg, ["contains"], budget=budget)
        result = evaluator.run(dataset)
        stats = provider.stats()
    assert result.failed == 0 and result.scores["contains"]["mean"] == 1.0
    assert result.usage["calls"] == stats["requests"] > 8  # several map calls per example
    assert stats["max_in_flight"] <= 4 and budget.peak <= 4
    assert budget.held == 0  # every slot given back


def test_a_lone_example_widens_into_the_budget(tmp_path: Path):
    dataset = corpus(tmp_path, present=1, absent=0, files=8, lines=40)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}, latency=(0.2, 0, 0)) as provider:
        cfg = config(provider, tmp_path, strategy="map_reduce", chunk_tokens=300, concurrency=1)
        result = evaluate(cfg, dataset, metrics=["contains"], concurrency=4)
        stats = provider.stats()
    assert result.scores["contains"]["mean"] == 1.0
    # the example holds one slot and its map borrowed the other three
    assert 2 <= stats["max_in_flight"] <= 4


def test_resume_reads_back_and_rescores_a_changed_gold(tmp_path: Path):
    dataset = corpus(tmp_path, present=3, absent=1)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        cfg = config(provider, tmp_path)
        first = evaluate(cfg, dataset, metrics=["contains"])
        assert provider.stats()["requests"] == 4
        again = evaluate(cfg, dataset, metrics=["contains", "exact_match"])
        assert provider.stats()["requests"] == 4  # nothing asked again, a new metric scored
        assert again.resumed == 4 and again.scores["exact_match"]["mean"] == 0.75
        assert again.eval_id != first.eval_id  # another metric set is another eval
        # the gold answer of absent0 corrected to what it said: rescored, not asked
        rows = [json.loads(line) for line in dataset.read_text().splitlines()]
        rows[-1]["answer"] = "NOT FOUND"
        dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
        fixed = evaluate(cfg, dataset, metrics=["contains"])
        assert provider.stats()["requests"] == 4
        assert fixed.scores["contains"]["mean"] == 1.0
        fresh = evaluate(cfg, dataset, metrics=["contains"], resume=False)
        assert provider.stats()["requests"] == 8 and fresh.resumed == 0


def test_the_judge_is_counted_and_priced_apart(tmp_path: Path):
    dataset = corpus(tmp_path, present=2, absent=1)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as system_provider, \
            FakeProvider(mode="rules", rules=[(r"## answer ## \]\]\s*48213", {
                "score": "1", "feedback": "same value"})],
                default_reply='{"score": "0", "feedback": "different"}') as judge_provider:
        cfg = config(system_provider, tmp_path, price=1e-6)
        cfg.sections["eval"] = {"metric": {"llm_judge": {
            "adapter": "openai_compatible",
            "settings": {"base_url": judge_provider.base_url, "model": "judge",
                         "input_cost_per_token": 3e-6, "output_cost_per_token": 3e-6}}}}
        result = evaluate(cfg, dataset, metrics=["llm_judge", "contains"])
        system_stats, judge_stats = system_provider.stats(), judge_provider.stats()
    assert [r.scores["llm_judge"] for r in result.per_example] == [1.0, 1.0, 0.0]
    usage = result.usage
    assert usage["calls"] == system_stats["requests"] == 3
    assert usage["judge"]["calls"] == judge_stats["requests"] == 3
    system_tokens = system_stats["prompt_tokens"] + system_stats["completion_tokens"]
    judge_tokens = judge_stats["prompt_tokens"] + judge_stats["completion_tokens"]
    assert usage["tokens"] == system_tokens and usage["judge"]["tokens"] == judge_tokens
    assert usage["cost"] == pytest.approx(system_tokens * 1e-6)
    assert usage["judge"]["cost"] == pytest.approx(judge_tokens * 3e-6)


def test_significant_and_insignificant_comparisons(tmp_path: Path):
    dataset = corpus(tmp_path, present=12, absent=0)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as good, \
            FakeProvider(mode="oracle", needles={"port": NEEDLE}) as same, \
            FakeProvider(mode="rules", default_reply="NOT FOUND") as blind:
        base = evaluate(config(good, tmp_path), dataset, label="good")
        twin = evaluate(config(same, tmp_path), dataset, label="twin")
        worse = evaluate(config(blind, tmp_path), dataset, label="blind")
    real = base.compare(worse).metrics["contains"]
    assert real["diff"] == -1.0 and real["mcnemar_p"] < 0.001 and real["significant"]
    noise = base.compare(twin).metrics["contains"]
    assert noise["diff"] == 0.0 and noise["significant"] is False


def test_report_holds_the_plots(tmp_path: Path):
    from ponder.evaluate.report import pareto_front, write_report

    dataset = corpus(tmp_path, present=3, absent=2)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as good, \
            FakeProvider(mode="rules", default_reply="NOT FOUND") as blind:
        a = evaluate(config(good, tmp_path, price=1e-6), dataset, label="oracle")
        b = evaluate(config(blind, tmp_path, price=2e-6), dataset, label="blind")
    path = write_report(tmp_path / "report", [a, b], [a.compare(b)])
    text = path.read_text()
    images = dict(re.findall(r'<img id="([\w-]+)"[^>]*src="data:image/png;base64,([^"]+)"', text))
    assert set(images) == {"score-cost", "per-tag"}
    for data in images.values():
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "absent0" in text and "NOT FOUND" in text  # the worst examples with their answers
    assert "Compared with oracle" in text
    # cost down, score up: (1, 0.9) dominates (2, 0.5); (0.5, 0.2) is cheaper, so kept
    assert pareto_front([(1, 0.9), (2, 0.5), (0.5, 0.2)]) == [0, 2]


def test_iter_streams_and_stops_early(tmp_path: Path):
    dataset = load_dataset(corpus(tmp_path, present=6, absent=0))
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        evaluator = Evaluator(config(provider, tmp_path), ["contains"], concurrency=1)
        stream = evaluator.iter(dataset)
        first = next(stream)
        stream.close()  # a pruner that has seen enough
        assert first.scores == {"contains": 1.0}
        assert provider.stats()["requests"] <= 2  # the one yielded, at most one in flight


@pytest.mark.parametrize("judge_kw", [
    # the grade does not parse: one request, sent and priced, and no score
    {"mode": "rules", "default_reply": '{"score": "excellent", "feedback": "fine"}'},
    # the judge's provider fails every request past the retries
    {"mode": "rules", "default_reply": "x", "fault_rate": 1.0, "fault_kinds": ["server_error"]},
], ids=["unparsable-grade", "server-errors"])
def test_a_failed_judge_call_is_still_counted_and_priced(tmp_path: Path, judge_kw):
    dataset = corpus(tmp_path, present=2, absent=0)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as system_provider, \
            FakeProvider(**judge_kw) as judge_provider:
        cfg = config(system_provider, tmp_path)
        cfg.sections["eval"] = {"metric": {"llm_judge": {
            "adapter": "openai_compatible", "max_retries": 1,
            "settings": {"base_url": judge_provider.base_url, "model": "judge",
                         "input_cost_per_token": 3e-6, "output_cost_per_token": 3e-6}}}}
        result = evaluate(cfg, dataset, metrics=["llm_judge", "contains"])
        judge_stats = judge_provider.stats()
    # every example failed on its judge, and says so; none is scored 0 in disguise
    assert result.failed == 2 and result.scores["llm_judge"]["n"] == 0
    assert all(r.failure.startswith("metric llm_judge: ") for r in result.per_example)
    # ... and what the judge spent trying is in the judge usage, every served request (a 500
    # is not billed: it counts as a retry, not a call), its tokens and their price
    assert result.usage["judge"]["calls"] == judge_stats["completed"]
    judge_tokens = judge_stats["prompt_tokens"] + judge_stats["completion_tokens"]
    assert result.usage["judge"]["tokens"] == judge_tokens
    assert result.usage["judge"]["cost"] == pytest.approx(judge_tokens * 3e-6)
    assert result.usage["calls"] == 2  # the system's own, apart
    if "fault_rate" in judge_kw:
        assert judge_stats["requests"] == 4  # two examples, one retry each
        assert judge_tokens == 0
    else:
        assert judge_stats["requests"] == judge_stats["completed"] == 2 and judge_tokens > 0
        assert all(r.judge_usage["calls"] == 1 for r in result.per_example)
        assert all("not a number" in r.failure for r in result.per_example)


COUNTING_STORE = """
from ponder import hookimpl
from ponder.plugins.memory_store import MemoryStorage

OPENED = []


class CountingStorage(MemoryStorage):
    def __init__(self, settings=None):
        super().__init__(settings)
        OPENED.append(self)


@hookimpl
def ponder_register_storage(register):
    register("counting", CountingStorage)
"""


def test_one_store_per_variant_not_per_example(tmp_path: Path):
    import sys

    from ponder.kernel.loader import load_plugins

    (tmp_path / "counting_store.py").write_text(COUNTING_STORE)
    plugins = load_plugins(modules=[str(tmp_path / "counting_store.py")])
    dataset = corpus(tmp_path, present=8, absent=0)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        cfg = attrs.evolve(config(provider, tmp_path, concurrency=4),
                           storage=Component("counting", {}))
        evaluator = Evaluator(cfg, ["contains"], plugins=plugins)
        try:
            result = evaluator.run(dataset)
            opened = sys.modules[plugins.get("storage", "counting").factory.__module__].OPENED
            # one store for the eval's records and every ask's run, not one per ask
            (store,) = opened
            runs = store.list_runs(limit=100)
            assert {r.run_id for r in result.per_example} == {r["id"] for r in runs}
            assert len(runs) == 8 and all(r["status"] == "ok" for r in runs)
            assert len(store.list_records("eval", "example/")) == 8
        finally:
            evaluator.close()
    assert result.score == 1.0 and result.failed == 0
    assert len(opened) == 1  # and closed once, at the end
    with pytest.raises(Exception, match="closed"):
        store.list_runs()


def test_an_unreachable_provider_stops_the_eval_instead_of_failing_every_example(
        tmp_path: Path):
    dataset = corpus(tmp_path, present=6, absent=0)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as gone:
        pass  # stopped: nothing listens at its URL any more
    cfg = config(gone, tmp_path, concurrency=1, retries=0)
    result = evaluate(cfg, dataset, metrics=["contains"])
    # the first example fails with the reason; the rest are not run (not five more failures
    # after the same retries each), and say so
    assert result.failed == 1 and len(result.not_run) == 5
    assert result.status == "stopped"
    assert "cannot reach the provider" in result.stop_reason
    assert result.to_dict()["stop_reason"] == result.stop_reason
    # with the provider back, a rerun asks all six (the failure is asked again)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as back:
        again = evaluate(config(back, tmp_path, concurrency=1), dataset, metrics=["contains"])
        assert back.stats()["requests"] == 6
    assert again.score == 1.0 and again.failed == 0 and again.stop_reason is None


COUNTING_EXECUTOR = """
from ponder import hookimpl
from ponder.engine.executor import ThreadExecutor

MAPS = []


class CountingExecutor(ThreadExecutor):
    name = "counting"

    def map(self, task, items, *, services, concurrency):
        MAPS.append((type(items[0]).__name__ if items else None, len(items), concurrency))
        yield from super().map(task, items, services=services, concurrency=concurrency)


@hookimpl
def ponder_register_executors(register):
    register("counting", CountingExecutor)
"""


def test_the_examples_go_through_the_configured_executor(tmp_path: Path):
    """``[executor] name`` runs the eval's examples (one map of them all) and, inside each
    example's ask, the strategy's map calls: one executor for both, one budget."""
    import os
    import sys

    from ponder.kernel.loader import load_plugins

    (tmp_path / "counting_executor.py").write_text(COUNTING_EXECUTOR)
    plugins = load_plugins(modules=[str(tmp_path / "counting_executor.py")])
    dataset = corpus(tmp_path, present=3, absent=1, files=3, lines=40)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        cfg = attrs.evolve(config(provider, tmp_path, strategy="map_reduce", chunk_tokens=300,
                                  concurrency=3), executor=Component("counting", {}))
        evaluator = Evaluator(cfg, ["contains"], plugins=plugins)
        try:
            result = evaluator.run(dataset)
        finally:
            evaluator.close()
        requests = provider.stats()["requests"]
    maps = sys.modules[plugins.get("executor", "counting").factory.__module__].MAPS
    assert result.score == 0.75 and result.failed == 0
    assert result.usage["calls"] == requests
    # one map of the four examples at the eval's concurrency, then each ask's map of chunks
    assert maps[0] == ("Example", 4, 3)
    chunk_maps = maps[1:]
    assert len(chunk_maps) >= 4 and all(kind != "Example" for kind, _, _ in chunk_maps)
    assert evaluator.asked_in == {os.getpid(): 4}  # asked on this process's threads
