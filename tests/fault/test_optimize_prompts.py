"""Prompt optimization (``bootstrap_fewshot``) over the loopback fake provider.

The landscape (:mod:`ponder.testing.prompt_landscape`): a question marked ``Answer plainly.``
is always answered right; any other only when the request holds a few-shot demo. The train
split has three easy and two hard questions, val three hard ones, so the baseline scores 0 on
val, and the demos DSPy's ``BootstrapFewShot`` keeps from the easy traces make it 1. Every
request goes over real HTTP through the real ``direct`` strategy, evaluator and SQLite store.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from ponder.testing import isolated_user_dir, run_cli
from ponder.testing.optimizer_conformance import OptimizerConformance
from ponder.testing.prompt_landscape import (
    DemoLandscapeProvider,
    question_for,
    write_code_corpus,
)

pytestmark = pytest.mark.fault

CODES = {"alpha": "A17", "beta": "B29", "gamma": "C31", "delta": "D43", "eps": "E59",
         "zeta": "Z61", "eta": "H73", "theta": "T87"}
EASY = {"alpha", "beta", "gamma"}
TRAIN = ["alpha", "beta", "gamma", "delta", "eps"]
VAL = ["zeta", "eta", "theta"]
SPACE = """
[optimize.space]
"predictor.prompt" = { prompt = "bootstrap_fewshot" }
"""


class TestBootstrapFewShotOptimizer(OptimizerConformance):
    name = "bootstrap_fewshot"


@pytest.fixture
def landscape(tmp_path: Path):
    with isolated_user_dir(tmp_path) as root, DemoLandscapeProvider() as provider:
        work = root / "work"
        write_code_corpus(work, CODES)
        lines = []
        for split, names in (("train", TRAIN), ("val", VAL)):
            for name in names:
                lines.append(json.dumps({
                    "id": name, "question": question_for(name, easy=name in EASY),
                    "sources": [f"codes/{name}.txt"], "answer": CODES[name], "split": split}))
        (work / "qa.jsonl").write_text("\n".join(lines) + "\n")
        (work / "space.toml").write_text(SPACE)
        (work / "ponder.toml").write_text(f"""
[adapter]
name = "openai_compatible"
base_url = "{provider.base_url}"
model = "fake"
context_window = 8192
input_cost_per_token = 0.000001
output_cost_per_token = 0.000002

[strategy]
name = "direct"

[storage]
name = "sqlite"
path = "{work / 'runs.sqlite'}"
""")
        yield work, provider


def optimize(*args: str) -> dict:
    result = run_cli(["optimize", "qa.jsonl", "--space", "space.toml", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def ask(name: str, *args: str) -> str:
    result = run_cli(["ask", question_for(name), f"codes/{name}.txt", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["answer"]


def test_bootstrap_fewshot_raises_val_from_0_to_1_and_the_program_reproduces_it(
        landscape) -> None:
    work, provider = landscape
    before = provider.stats()["requests"]
    out = optimize("--optimizer", "bootstrap_fewshot", "--trials", "2", "--name", "bfs",
                   "--out", "best.toml")
    requests = provider.stats()["requests"] - before
    # every request the provider served is counted (pilot, teacher, student, two val evals)
    assert out["spent"]["calls"] == requests
    assert out["baseline_val"]["score"] == 0.0
    assert out["best_val"]["score"] == 1.0
    trials = json.loads(run_cli(["optimize", "show", "bfs", "--json"]).stdout)["trials"]
    assert [t["score"] for t in trials] == [0.6, 1.0]  # teacher: the 3 easy of 5; student: all
    assert "predictor.prompt" in trials[1]["assignment"]

    # the program holds the compiled state as DSPy JSON (demos of the Answer signature)
    program = tomllib.loads((work / "best.toml").read_text())
    state = json.loads(program["optimize"]["prompts"]["Answer"])
    demos = state["demos"]
    assert 1 <= len(demos) <= 4
    assert all(d["augmented"] and d["answer"].startswith("The code of") for d in demos)
    assert {d["question"] for d in demos} <= {question_for(n, easy=True) for n in EASY}

    # `ponder ask --program` applies it: the hard val questions are answered; without, not
    for source in ("best.toml", "bfs"):
        for name in VAL:
            assert CODES[name] in ask(name, "--program", source, "--no-cache")
    for name in VAL:
        assert CODES[name] not in ask(name, "--no-cache")


def test_a_cached_reply_without_demos_is_not_served_to_a_prompt_with_demos(landscape) -> None:
    _, provider = landscape
    out = optimize("--optimizer", "bootstrap_fewshot", "--trials", "2", "--name", "cache",
                   "--out", "best.toml")
    assert out["best_val"]["score"] == 1.0
    assert CODES["zeta"] not in ask("zeta")  # cached without demos
    demos_before = provider.with_demos
    assert CODES["zeta"] in ask("zeta", "--program", "best.toml")
    assert provider.with_demos == demos_before + 1  # asked again, with the demos
    assert CODES["zeta"] in ask("zeta", "--program", "best.toml")
    assert provider.with_demos == demos_before + 1  # now from the cache


def test_the_max_calls_cap_binds_the_teacher_trial(landscape) -> None:
    _, provider = landscape
    before = provider.stats()["requests"]
    out = optimize("--optimizer", "bootstrap_fewshot", "--trials", "2", "--name", "capped",
                   "--max-calls", "3", "--yes")
    requests = provider.stats()["requests"] - before
    assert out["spent"]["calls"] == requests
    assert "max_calls" in (out["stopped_by"] or "")
    assert requests <= 3 + 4  # the cap plus the examples in flight (concurrency 4)


def test_a_bad_prompt_state_in_a_program_names_the_key(landscape) -> None:
    work, _ = landscape
    (work / "bad.toml").write_text('[optimize.prompts]\nAnswer = "{not json"\n')
    result = run_cli(["ask", question_for("zeta"), "codes/zeta.txt", "--program", "bad.toml"])
    assert result.exit_code == 2, result.output
    assert "optimize.prompts.Answer" in result.output and "not DSPy JSON" in result.output


def test_joint_search_grid_over_the_config_then_the_prompt_of_the_best(tmp_path: Path) -> None:
    with isolated_user_dir(tmp_path) as root, \
            DemoLandscapeProvider(max_temperature=0.3) as provider:
        work = root / "work"
        write_code_corpus(work, CODES)
        lines = [json.dumps({"id": n, "question": question_for(n, easy=n in EASY),
                             "sources": [f"codes/{n}.txt"], "answer": CODES[n],
                             "split": "train" if n in TRAIN else "val"}) for n in CODES]
        (work / "qa.jsonl").write_text("\n".join(lines) + "\n")
        (work / "space.toml").write_text(SPACE + '"adapter.temperature" = '
                                         '{ float = [0.0, 1.0], step = 0.5 }\n')
        (work / "ponder.toml").write_text(f"""
[adapter]
name = "openai_compatible"
base_url = "{provider.base_url}"
model = "fake"
temperature = 0.7
context_window = 8192

[strategy]
name = "direct"

[storage]
name = "sqlite"
path = "{work / 'runs.sqlite'}"

[optimize.bootstrap_fewshot]
top_k = 1
""")
        before = provider.stats()["requests"]
        # --optimizer grid over a space with a prompt variable: grid, then the prompt
        out = optimize("--optimizer", "grid", "--trials", "4", "--name", "joint")
        assert out["spent"]["calls"] == provider.stats()["requests"] - before
        trials = json.loads(run_cli(["optimize", "show", "joint", "--json"]).stdout)["trials"]
        # three grid points (only temperature 0 answers the easy ones), then the compiled
        # prompt over the best of them answers every train question
        assert [(t["assignment"]["adapter.temperature"], t["score"]) for t in trials[:3]] \
            == [(0.0, 0.6), (0.5, 0.0), (1.0, 0.0)]
        assert trials[3]["assignment"]["adapter.temperature"] == 0.0
        assert "predictor.prompt" in trials[3]["assignment"] and trials[3]["score"] == 1.0
        assert trials[3]["number"] == 10_000  # numbered apart from the grid's trials
        assert out["baseline_val"]["score"] == 0.0 and out["best_val"]["score"] == 1.0


def test_every_signature_the_strategy_calls_gets_demos(landscape) -> None:
    work, provider = landscape
    # single_read off: map_reduce's two signatures even where the context fits one call
    config = (work / "ponder.toml").read_text().replace(
        'name = "direct"', 'name = "map_reduce"\nsingle_read = false')
    (work / "ponder.toml").write_text(config)
    before = provider.stats()["requests"]
    out = optimize("--optimizer", "bootstrap_fewshot", "--trials", "3", "--name", "mr",
                   "--out", "best.toml")
    assert out["spent"]["calls"] == provider.stats()["requests"] - before
    assert out["baseline_val"]["score"] == 0.0 and out["best_val"]["score"] == 1.0
    prompts = tomllib.loads((work / "best.toml").read_text())["optimize"]["prompts"]
    demos = {name: json.loads(text)["demos"] for name, text in prompts.items()}
    assert set(demos) == {"Extract", "Combine"}, set(demos)
    assert all(d and all("question" in x for x in d) for d in demos.values())
    assert "chunk" in demos["Extract"][0] and "partial_answers" in demos["Combine"][0]


def test_a_second_round_learns_from_the_first_rounds_student(landscape) -> None:
    work, provider = landscape
    with (work / "ponder.toml").open("a") as f:
        f.write("\n[optimize.bootstrap_fewshot]\nmax_rounds = 2\nmax_bootstrapped_demos = 5\n")
    before = provider.stats()["requests"]
    out = optimize("--optimizer", "bootstrap_fewshot", "--trials", "5", "--name", "rounds")
    assert out["spent"]["calls"] == provider.stats()["requests"] - before
    assert "bootstrap_fewshot finished (2 rounds)" in out["stopped_by"]
    trials = json.loads(run_cli(["optimize", "show", "rounds", "--json"]).stdout)["trials"]
    assert [t["score"] for t in trials] == [0.6, 1.0, 1.0]
    # round 2's teacher was round 1's student, which answered the hard questions too
    from ponder.engine.system import System
    from ponder.kernel.config import load_config

    storage = System(load_config()).open_storage()
    record = storage.get_record("prompt", trials[2]["assignment"]["predictor.prompt"])
    questions = {d["question"] for d in json.loads(record["prompts"]["Answer"])["demos"]}
    assert questions & {question_for(n) for n in TRAIN if n not in EASY}, questions


def test_the_state_applies_to_chain_of_thought_too(landscape) -> None:
    optimize("--optimizer", "bootstrap_fewshot", "--trials", "2", "--name", "cot",
             "--out", "best.toml")
    for name in VAL:
        assert CODES[name] in ask(name, "--program", "best.toml", "--predictor",
                                  "chain_of_thought", "--no-cache")
        assert CODES[name] not in ask(name, "--predictor", "chain_of_thought", "--no-cache")


def test_a_resumed_study_compiles_from_the_stored_traces_and_repeats_no_call(landscape) -> None:
    _, provider = landscape
    before = provider.stats()["requests"]
    # the pilot (1) and the teacher trial (5) fit; the cap stops the study after the teacher
    first = optimize("--optimizer", "bootstrap_fewshot", "--trials", "2", "--name", "resumed",
                     "--max-calls", "6", "--yes", "--concurrency", "1")
    assert "max_calls 6" in first["stopped_by"]
    result = run_cli(["optimize", "--resume", "resumed", "--max-calls", "100", "--json"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    requests = provider.stats()["requests"] - before
    # the uninterrupted study makes 17 requests: so does the stopped one plus its resume
    assert requests == 17 == first["spent"]["calls"] + again["spent"]["calls"]
    assert again["best_val"]["score"] == 1.0 and again["baseline_val"]["score"] == 0.0
