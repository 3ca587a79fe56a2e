"""``ponder ask --dry-run``: the plan is printed, and no model is called."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.testing.fake_provider import FakeProvider


def write_sources(root: Path, files: int = 40) -> None:
    for i in range(files):
        body = "\n".join(f"def f_{i}_{j}(x):\n    return x * {j} + {i}\n" for j in range(40))
        (root / f"mod_{i:02d}.py").write_text(body)


def ponder(args: list[str], config: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PONDER_CONFIG": str(config),
           "PONDER_DATA_DIR": str(home / "data"), "PONDER_CACHE_DIR": str(home / "cache"),
           "PONDER_CONFIG_DIR": str(home / "config")}
    return subprocess.run([sys.executable, "-m", "ponder", "ask", *args], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.fixture
def setup(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    write_sources(src)
    with FakeProvider(default_reply="NOT FOUND", max_lifetime=120) as provider:
        config = tmp_path / "ponder.toml"
        config.write_text(f'[adapter]\nname = "openai_compatible"\nbase_url = '
                          f'"{provider.base_url}"\ncontext_window = 8192\n'
                          "max_output_tokens = 512\ninput_cost_per_token = 0.000001\n"
                          "[limits]\nconcurrency = 4\n")
        yield provider, src, config, tmp_path


def test_dry_run_prints_the_plan_and_calls_nothing(setup) -> None:
    provider, src, config, home = setup
    done = ponder(["How many functions return x?", str(src), "--strategy", "map_reduce",
                   "--dry-run", "--json"], config, home)
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads(done.stdout)["plan"]
    assert plan["strategy"] == "map_reduce" and plan["chunks"] > 1
    n = plan["chunks"]
    assert plan["calls_min"] == n + 1 <= plan["calls_max"]
    assert "n + R(n)" in plan["formula"]
    # priced input tokens; output is free on this adapter (output_cost_per_token = 0)
    assert plan["cost_usd_max"] == pytest.approx(plan["prompt_tokens"] * 1e-6)
    assert plan["latency_s"] is None and "no recorded calls" in plan["latency_source"]
    assert provider.stats()["requests"] == 0


def test_dry_run_text_names_the_path_auto_takes(setup) -> None:
    provider, src, config, home = setup
    done = ponder(["Where is f_3_7 defined?", str(src), "--dry-run"], config, home)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("plan: auto → ")
    assert "why: context ≈" in done.stdout and "LM calls:" in done.stdout
    assert provider.stats()["requests"] == 0


def test_the_plan_uses_recorded_latency_after_a_run(setup) -> None:
    _provider, src, config, home = setup
    first = ponder(["Where is f_3_7 defined?", str(src / "mod_03.py"), "--json"], config, home)
    assert first.returncode == 0, first.stderr[-2000:]
    done = ponder(["Where is f_3_7 defined?", str(src), "--dry-run", "--json"], config, home)
    plan = json.loads(done.stdout)["plan"]
    assert plan["latency_s"] is not None and "recorded calls of" in plan["latency_source"]
    assert plan["estimated_seconds"] == pytest.approx(plan["waves"] * plan["latency_s"])


def test_probe_times_the_plan_with_one_recorded_call(setup) -> None:
    provider, src, config, home = setup
    done = ponder(["How many functions return x?", str(src), "--strategy", "map_reduce",
                   "--dry-run", "--probe", "--json"], config, home)
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads(done.stdout)["plan"]
    assert provider.stats()["requests"] == 1  # one call, not the plan's
    assert plan["latency_s"] > 0 and "one-call probe just now" in plan["latency_source"]
    # the probe read about one map call's worth of the sources: a chunk, not the corpus
    per_call = plan["prompt_tokens"] / plan["calls_max"]
    tokens = int(plan["latency_source"].split(": ")[1].split(" prompt")[0].replace(",", ""))
    assert 0.5 * per_call < tokens < 2 * per_call
    # recorded like any run: the next plan reads the same call, without a probe
    again = json.loads(ponder(["How many functions return x?", str(src), "--strategy",
                               "map_reduce", "--dry-run", "--json"], config, home).stdout)["plan"]
    assert again["latency_s"] == pytest.approx(plan["latency_s"])
    assert "recorded calls" in again["latency_source"]
    assert provider.stats()["requests"] == 1


def test_probe_without_dry_run_is_a_usage_error(setup) -> None:
    provider, src, config, home = setup
    done = ponder(["What?", str(src), "--probe", "--json"], config, home)
    assert done.returncode == 2 and "--probe" in json.loads(done.stdout)["error"]
    assert provider.stats()["requests"] == 0


def test_long_expensive_or_unknown_local_runs_are_announced() -> None:
    from ponder.engine.plan import Plan

    def plan(**changes):
        base = {"question": "q", "strategy": "map_reduce", "reason": "r", "model": "m",
                "adapter": "gemini", "chunks": 40, "calls_min": 41, "calls_max": 46,
                "formula": "f", "prompt_tokens": 1000, "cost_usd_max": 0.01, "concurrency": 8,
                "waves": 7, "latency_s": 1.0}
        return Plan(**{**base, **changes})

    assert not plan().long
    assert plan(latency_s=30.0).long                          # 7 rounds x 30 s > 2 min
    assert plan(cost_usd_max=2.0).long
    assert plan(adapter="local", latency_s=None).long        # 46 calls, speed unknown
    assert not plan(adapter="local", latency_s=None, calls_max=3).long
    assert "time: unknown" in plan(latency_s=None, latency_source="none").render()
