"""The instruction optimizers ``mipro`` and ``simba`` over the loopback fake provider.

The landscape (:mod:`ponder.testing.instruction_landscape`): a question marked ``Answer
plainly.`` is always answered right; a hard one only when the request's *instructions* hold the
landscape's mark (``needs="instruction"``), or when it holds the mark **and** a demo
(``needs="both"``). The proposal and reflection calls the optimizers make are answered by the
same provider, so every one of them is a real HTTP request the provider counts, and the test
compares that count with what the study says it spent. Train: three easy questions and two
hard; val: three hard, so the baseline scores 0 on val. Real direct strategy, evaluator, SQLite
run store and Optuna storage throughout; the LM response cache is off, so a repeated call
would reach the provider and be seen.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ponder.testing import isolated_user_dir, run_cli
from ponder.testing.instruction_landscape import MARK, PROPOSALS, InstructionLandscapeProvider
from ponder.testing.optimizer_conformance import OptimizerConformance
from ponder.testing.prompt_landscape import question_for, write_code_corpus

pytestmark = pytest.mark.fault

CODES = {"alpha": "A17", "beta": "B29", "gamma": "C31", "delta": "D43", "eps": "E59",
         "zeta": "Z61", "eta": "H73", "theta": "T87"}
EASY = {"alpha", "beta", "gamma"}
TRAIN = ["alpha", "beta", "gamma", "delta", "eps"]
VAL = ["zeta", "eta", "theta"]
#: the first line of the Answer signature's own instructions
DEFAULT_INSTRUCTIONS = "Answer the question using only the source text given."


class TestMiproOptimizer(OptimizerConformance):
    name = "mipro"


class TestSimbaOptimizer(OptimizerConformance):
    name = "simba"


@contextlib.contextmanager
def landscape_dir(root: Path, optimizer: str, *, needs: str, extra: str = "",
                  **options: Any) -> Iterator[Any]:
    """The corpus, dataset, space and config in ``root``, over a provider with ``options``."""
    with isolated_user_dir(root) as home, \
            InstructionLandscapeProvider(needs=needs, **options) as provider:
        work = home / "work"
        write_code_corpus(work, CODES)
        lines = [json.dumps({"id": n, "question": question_for(n, easy=n in EASY),
                             "sources": [f"codes/{n}.txt"], "answer": CODES[n],
                             "split": "train" if n in TRAIN else "val"}) for n in CODES]
        (work / "qa.jsonl").write_text("\n".join(lines) + "\n")
        (work / "space.toml").write_text(
            f'[optimize.space]\n"predictor.prompt" = {{ prompt = "{optimizer}" }}\n')
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

[cache]
enabled = false
{extra}""")
        yield work, provider


def optimize(*args: str) -> dict:
    result = run_cli(["optimize", "qa.jsonl", "--space", "space.toml", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def show(name: str) -> list[dict]:
    return json.loads(run_cli(["optimize", "show", name, "--json"]).stdout)["trials"]


def ask(name: str, *args: str) -> str:
    result = run_cli(["ask", question_for(name), f"codes/{name}.txt", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["answer"]


def kinds(provider: InstructionLandscapeProvider, start: int = 0) -> dict[str, int]:
    out: dict[str, int] = {}
    for request in provider.requests[start:]:
        out[request["kind"]] = out.get(request["kind"], 0) + 1
    return out


# --- mipro --------------------------------------------------------------------------------------
MIPRO = "[optimize.mipro]\nnum_instruct_candidates = 3\nnum_demo_sets = 3\n" \
        "max_bootstrapped_demos = 2\nn_startup_trials = 4\n"
SIMBA = "[optimize.simba]\nbsize = 4\nnum_candidates = 2\nmax_steps = 3\n"


def test_mipro_finds_the_instruction_and_demos_together_and_the_program_applies_them(
        tmp_path: Path) -> None:
    with landscape_dir(tmp_path, "mipro", needs="both", extra=MIPRO) as (work, provider):
        before = provider.stats()["requests"]
        out = optimize("--optimizer", "mipro", "--trials", "12", "--name", "mipro",
                       "--out", "best.toml", "--seed", "0")
        requests = provider.stats()["requests"] - before
        # every request the provider served is in what the study spent: the pilot, the
        # teacher, the two proposals (num_instruct_candidates - 1 for one signature), the
        # combinations (repeats read back) and the two val evals
        assert out["spent"]["calls"] == requests
        assert kinds(provider)["proposal"] == 2
        assert out["baseline_val"]["score"] == 0.0
        assert out["best_val"]["score"] == 1.0
        trials = show("mipro")
        assert trials[0]["number"] == 0 and trials[0]["score"] == 0.6  # the teacher
        assert max(t["score"] for t in trials) == 1.0
        # only the good proposal with a demo set answers the hard train questions: the others
        # score 0.6, so TPE had to find that combination among 3 x 3
        assert sorted({t["score"] for t in trials}) == [0.6, 1.0]

        program = tomllib.loads((work / "best.toml").read_text())
        state = json.loads(program["optimize"]["prompts"]["Answer"])
        assert state["signature"]["instructions"] == PROPOSALS[1]
        assert MARK in state["signature"]["instructions"]
        assert 1 <= len(state["demos"]) <= 2

        # the program's instructions are what the provider is sent, in place of the default
        start = len(provider.requests)
        for name in VAL:
            assert CODES[name] in ask(name, "--program", "best.toml")
        sent = provider.answers()[-1]
        assert len(provider.requests) == start + 3
        assert MARK in sent["system"] and DEFAULT_INSTRUCTIONS not in sent["system"]
        assert sent["demo"]
        for name in VAL:
            assert CODES[name] not in ask(name)
        sent = provider.answers()[-1]
        assert MARK not in sent["system"] and DEFAULT_INSTRUCTIONS in sent["system"]


def test_bootstrap_fewshot_alone_does_not_reach_what_mipro_reaches(tmp_path: Path) -> None:
    """The same landscape, demos only: the instruction is what mipro added."""
    with landscape_dir(tmp_path, "bootstrap_fewshot", needs="both") as (_, provider):
        out = optimize("--optimizer", "bootstrap_fewshot", "--trials", "2", "--name", "bfs")
        assert out["best_val"]["score"] == 0.0
        assert [t["score"] for t in show("bfs")] == [0.6, 0.6]
        assert "proposal" not in kinds(provider)


def test_mipro_searches_the_config_variables_with_the_prompt(tmp_path: Path) -> None:
    """Temperature as a config variable (above 0.3 nothing is answered right): TPE searches it
    with the instruction and demo indices. Seed 1 samples the teacher at temperature 0, whose
    traces teach; a teacher at 0.7 (seed 0) would learn no demos (see docs/optimization.md)."""
    with landscape_dir(tmp_path, "mipro", needs="both", extra=MIPRO,
                       max_temperature=0.3) as (work, provider):
        with (work / "space.toml").open("a") as f:
            f.write('"adapter.temperature" = { choice = [0.0, 0.7] }\n')
        out = optimize("--optimizer", "mipro", "--trials", "12", "--name", "joint",
                       "--seed", "1")
        assert out["spent"]["calls"] == provider.stats()["requests"]
        trials = show("joint")
        assert trials[0]["assignment"] == {"adapter.temperature": 0.0}  # the teacher
        assert {t["assignment"]["adapter.temperature"] for t in trials} == {0.0, 0.7}
        assert all(t["score"] == 0.0 for t in trials
                   if t["assignment"]["adapter.temperature"] == 0.7)
        assert out["best"]["assignment"]["adapter.temperature"] == 0.0
        assert "predictor.prompt" in out["best"]["assignment"]
        assert out["best"]["score"] == 1.0 and out["best_val"]["score"] == 1.0


def test_mipro_max_calls_binds_the_proposal_calls(tmp_path: Path) -> None:
    with landscape_dir(tmp_path, "mipro", needs="both", extra=MIPRO) as (_, provider):
        before = provider.stats()["requests"]
        # pilot 1 + teacher 5 = 6; the 7th call is the first proposal; the second is refused
        out = optimize("--optimizer", "mipro", "--trials", "12", "--name", "capped",
                       "--max-calls", "7", "--yes")
        requests = provider.stats()["requests"] - before
        assert requests == 7 == out["spent"]["calls"]
        assert "max_calls 7" in out["stopped_by"]
        assert kinds(provider) == {"answer": 6, "proposal": 1}
        assert out["best_val"]["score"] is None and "max_calls" in out["val_missing"]


@pytest.mark.parametrize("strategy, optimizer, extra, own", [
    ("direct", "mipro", MIPRO, 2),        # (3 candidates - its own) x Answer
    ("map_reduce", "mipro", MIPRO, 4),    # x Extract and Combine
    ("direct", "simba", SIMBA, 6),        # 3 steps x 2 candidates, each a rule at most
])
def test_the_dry_run_estimate_counts_the_optimizers_own_calls(
        tmp_path: Path, strategy: str, optimizer: str, extra: str, own: int) -> None:
    with landscape_dir(tmp_path, optimizer, needs="both", extra=extra) as (work, provider):
        config = (work / "ponder.toml").read_text()
        # map_reduce with single_read off: Extract and Combine even over a small context
        strategy_line = (f'name = "{strategy}"' if strategy != "map_reduce"
                         else 'name = "map_reduce"\nsingle_read = false')
        (work / "ponder.toml").write_text(config.replace('name = "direct"', strategy_line))
        out = optimize("--optimizer", optimizer, "--trials", "12", "--dry-run")
        estimate = out["estimate"]
        assert estimate["optimizer_calls"] == own
        per_call = estimate["per_example"]["calls"]
        expected = estimate["per_trial"]["calls"] * 12 + per_call * 2 * 3 + own
        assert estimate["total"]["calls"] == pytest.approx(expected)
        assert provider.stats()["requests"] == per_call  # the pilot only


def test_a_resumed_mipro_study_repeats_no_call(tmp_path: Path) -> None:
    with landscape_dir(tmp_path / "whole", "mipro", needs="both", extra=MIPRO) as (_, provider):
        whole = optimize("--optimizer", "mipro", "--trials", "8", "--name", "r", "--seed", "1")
        uninterrupted = provider.stats()["requests"]
        assert whole["spent"]["calls"] == uninterrupted
    with landscape_dir(tmp_path / "split", "mipro", needs="both", extra=MIPRO) as (_, provider):
        first = optimize("--optimizer", "mipro", "--trials", "8", "--name", "r", "--seed", "1",
                         "--max-calls", "7", "--yes")
        assert "max_calls 7" in first["stopped_by"]
        result = run_cli(["optimize", "--resume", "r", "--max-calls", "1000", "--json"])
        assert result.exit_code == 0, result.output
        again = json.loads(result.stdout)
        # the stopped run plus its resume ask the provider exactly what the whole run asked:
        # the proposal made before the stop is read back from the study's record
        assert provider.stats()["requests"] == uninterrupted
        assert first["spent"]["calls"] + again["spent"]["calls"] == uninterrupted
        assert kinds(provider)["proposal"] == 2
        assert again["best_val"]["score"] == whole["best_val"]["score"]
        # the same trial wins (its state's digest differs: the demos hold the corpus's paths)
        assert again["best"]["number"] == whole["best"]["number"]


# --- simba --------------------------------------------------------------------------------------
def test_simba_learns_a_rule_from_the_failures_and_the_program_applies_it(
        tmp_path: Path) -> None:
    with landscape_dir(tmp_path, "simba", needs="instruction", extra=SIMBA) as (work, provider):
        before = provider.stats()["requests"]
        out = optimize("--optimizer", "simba", "--trials", "14", "--name", "simba",
                       "--out", "best.toml", "--seed", "0")
        requests = provider.stats()["requests"] - before
        assert out["spent"]["calls"] == requests  # the reflection calls too
        assert kinds(provider).get("advice", 0) >= 1
        assert out["baseline_val"]["score"] == 0.0
        assert out["best_val"]["score"] == 1.0
        trials = show("simba")
        assert trials[0]["score"] == 0.6 and trials[0]["minibatch"] is None  # the baseline
        batches = [t for t in trials if t["minibatch"] is not None]
        assert batches and all(t["examples"] == 4 for t in batches)
        assert out["best"]["minibatch"] is None and out["best"]["score"] == 1.0
        assert out["stopped_by"].startswith("simba finished")

        program = tomllib.loads((work / "best.toml").read_text())
        instructions = json.loads(program["optimize"]["prompts"]["Answer"])["signature"][
            "instructions"]
        # a rule appended to the signature's own instructions (SIMBA's append_a_rule)
        assert instructions.startswith(DEFAULT_INSTRUCTIONS) and MARK in instructions
        assert CODES["zeta"] in ask("zeta", "--program", "best.toml")
        sent = provider.answers()[-1]
        assert MARK in sent["system"] and DEFAULT_INSTRUCTIONS in sent["system"]


def test_simba_writes_a_rule_for_each_signature_map_reduce_calls(tmp_path: Path) -> None:
    """map_reduce: Extract and Combine both need the instruction. A first rule fixes Extract
    (the only module in a failed trajectory that never reached Combine); a later step's
    reflection on that program's own failing trajectory names Combine too."""
    extra = SIMBA.replace("max_steps = 3", "max_steps = 6")
    with landscape_dir(tmp_path, "simba", needs="instruction", extra=extra) as (work, provider):
        config = (work / "ponder.toml").read_text()
        (work / "ponder.toml").write_text(config.replace(
            'name = "direct"', 'name = "map_reduce"\nsingle_read = false'))
        out = optimize("--optimizer", "simba", "--trials", "24", "--name", "mr", "--seed", "0",
                       "--out", "best.toml")
        assert out["spent"]["calls"] == provider.stats()["requests"]
        assert out["baseline_val"]["score"] == 0.0 and out["best_val"]["score"] == 1.0
        prompts = tomllib.loads((work / "best.toml").read_text())["optimize"]["prompts"]
        for name in ("Extract", "Combine"):
            assert MARK in json.loads(prompts[name])["signature"]["instructions"], name


def test_simba_max_calls_binds(tmp_path: Path) -> None:
    with landscape_dir(tmp_path, "simba", needs="instruction", extra=SIMBA) as (_, provider):
        before = provider.stats()["requests"]
        out = optimize("--optimizer", "simba", "--trials", "14", "--name", "capped",
                       "--max-calls", "9", "--concurrency", "1", "--yes")
        requests = provider.stats()["requests"] - before
        assert out["spent"]["calls"] == requests
        assert "max_calls 9" in out["stopped_by"]
        # the study's rule: a reflection is asked only under the cap, and an eval stops handing
        # out examples at the cap, the one in flight (concurrency 1, one call each) finishing
        assert 9 <= requests <= 9 + 1


def test_a_resumed_simba_study_repeats_no_call(tmp_path: Path) -> None:
    with landscape_dir(tmp_path / "whole", "simba", needs="instruction", extra=SIMBA) \
            as (_, provider):
        whole = optimize("--optimizer", "simba", "--trials", "14", "--name", "r",
                         "--concurrency", "1")
        uninterrupted = provider.stats()["requests"]
    with landscape_dir(tmp_path / "split", "simba", needs="instruction", extra=SIMBA) \
            as (_, provider):
        first = optimize("--optimizer", "simba", "--trials", "14", "--name", "r",
                         "--concurrency", "1", "--max-calls", "8", "--yes")
        assert "max_calls 8" in first["stopped_by"]
        result = run_cli(["optimize", "--resume", "r", "--max-calls", "1000", "--json"])
        assert result.exit_code == 0, result.output
        again = json.loads(result.stdout)
        assert provider.stats()["requests"] == uninterrupted
        assert again["best_val"]["score"] == whole["best_val"]["score"] == 1.0


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("optimizer", "section", "key"), [
    ("mipro", "[optimize.mipro]\nnum_demo_sets = 0\n", "optimize.mipro.num_demo_sets"),
    ("simba", "[optimize.simba]\nstrategies = [\"guess\"]\n", "optimize.simba.strategies"),
    ("simba", "[optimize.simba]\nbsise = 3\n", "optimize.simba"),
])
def test_bad_settings_name_the_file_and_key(tmp_path: Path, optimizer: str, section: str,
                                            key: str) -> None:
    with landscape_dir(tmp_path, optimizer, needs="both", extra=section) as (_, provider):
        result = run_cli(["optimize", "qa.jsonl", "--space", "space.toml", "--optimizer",
                          optimizer, "--trials", "4", "--json"])
        assert result.exit_code == 2, result.output
        error = json.loads(result.stdout)["error"]
        assert key in error and "ponder.toml" in error, error
        assert provider.stats()["requests"] == 0  # refused before any call


def test_mipro_without_optuna_names_the_extra() -> None:
    code = ("import sys\n"
            "sys.modules['optuna'] = None\n"  # as if not installed: import and find_spec fail
            "from ponder.plugins.optimizer_mipro import MiproOptimizer\n"
            "try:\n    MiproOptimizer()\nexcept Exception as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "mipro optimizer needs Optuna: pip install -e '.[optimize]'" in out.stdout


@pytest.mark.parametrize("optimizer", ["mipro", "simba"])
def test_another_optimizer_over_their_space_is_refused_not_ignored(tmp_path: Path,
                                                                    optimizer: str) -> None:
    with landscape_dir(tmp_path, optimizer, needs="both") as (_, provider):
        result = run_cli(["optimize", "qa.jsonl", "--space", "space.toml", "--optimizer",
                          "tpe", "--trials", "4", "--json"])
        assert result.exit_code == 2, result.output
        error = json.loads(result.stdout)["error"]
        assert f"optimizer {optimizer!r} cannot run a joint search with --optimizer tpe" \
            in error and "space.toml" in error, error
        assert provider.stats()["requests"] == 0


def test_a_proposal_the_client_retries_is_counted_request_by_request(tmp_path: Path) -> None:
    """A server error on a proposal is retried by the services; the failed request reached
    the provider too, so the study's calls plus retries are what the provider served."""
    with landscape_dir(tmp_path, "mipro", needs="both", extra=MIPRO,
                       failing_proposals=1) as (_, provider):
        out = optimize("--optimizer", "mipro", "--trials", "3", "--name", "retried", "--yes")
        stats = provider.stats()
        assert stats["failures"]["server_error"] == 1
        assert kinds(provider)["proposal"] == 2  # both proposals, after the retry
        assert out["spent"]["calls"] + out["spent"]["retries"] == stats["requests"]
        assert out["spent"]["retries"] == 1
