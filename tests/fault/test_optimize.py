"""``ponder optimize`` over the loopback fake provider with a known quality landscape.

The landscape (:mod:`ponder.testing.landscape`): with ``map_reduce`` the answer is right exactly
when ``adapter.temperature <= 0.3`` and ``strategy.chunk_tokens`` is large enough for the first
chunk to hold both the key line and the value line (``>= 1400`` here). Every request goes over
real HTTP through the real strategy, evaluator and store; Optuna's storage is a real SQLite file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ponder.testing import isolated_user_dir, run_cli
from ponder.testing.landscape import LandscapeProvider, write_landscape_corpus

pytestmark = pytest.mark.fault

SPACE = """
[optimize.space]
"adapter.temperature"   = { float = [0.0, 1.0], step = 0.1 }
"strategy.chunk_tokens" = { int = [200, 2000], step = 200 }
"""
QUESTIONS = ["Which port does the service use?", "What port is LANDSCAPE_KEY?",
             "Name the service port.", "Which port is configured?", "What is the port?"]


def _good(assignment: dict) -> bool:
    return assignment["adapter.temperature"] <= 0.3 and assignment["strategy.chunk_tokens"] >= 1400


@pytest.fixture
def landscape(tmp_path: Path):
    with isolated_user_dir(tmp_path) as root, LandscapeProvider() as provider:
        work = root / "work"
        write_landscape_corpus(work / "corpus")
        lines = [json.dumps({"id": str(i), "question": q, "sources": ["corpus/service.txt"],
                             "answer": "48213"}) for i, q in enumerate(QUESTIONS)]
        (work / "qa.jsonl").write_text("\n".join(lines) + "\n")
        (work / "space.toml").write_text(SPACE)
        (work / "ponder.toml").write_text(f"""
[adapter]
name = "openai_compatible"
base_url = "{provider.base_url}"
model = "fake"
temperature = 0.7
context_window = 8192
input_cost_per_token = 0.000001
output_cost_per_token = 0.000002

[strategy]
name = "map_reduce"
chunk_tokens = 400

[cache]
enabled = false

[storage]
name = "sqlite"
path = "{work / 'runs.sqlite'}"
""")
        yield work, provider


def optimize(*args: str):
    result = run_cli(["optimize", "qa.jsonl", "--space", "space.toml", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def show(name: str) -> dict:
    result = run_cli(["optimize", "show", name, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_tpe_finds_the_good_region_and_random_needs_more(landscape) -> None:
    found = {}
    for optimizer in ("tpe", "random"):
        out = optimize("--optimizer", optimizer, "--trials", "16", "--name", optimizer,
                       "--seed", "3")
        trials = show(optimizer)["trials"]
        assert len(trials) == 16
        good = [t for t in trials if _good(t["assignment"])]
        # the landscape is exact: a trial scores 1 exactly in the good region
        for t in trials:
            assert t["score"] == (1.0 if _good(t["assignment"]) else 0.0), t
        found[optimizer] = len(good)
        assert out["best"]["score"] == 1.0
        assert out["best_val"]["score"] == 1.0
        assert out["baseline_val"]["score"] == 0.0  # temperature 0.7, 400-token chunks
    # the same 16 trials: TPE spends more of them in the good region than random does
    assert found["tpe"] > found["random"], found


def test_pareto_front_holds_the_cheap_correct_point(landscape) -> None:
    work, _ = landscape
    out = optimize("--optimizer", "tpe", "--trials", "16", "--objectives", "score,cost",
                   "--name", "moo", "--seed", "2", "--report", "report")
    assert (work / "report" / "pareto.png").stat().st_size > 1000
    assert 'src="pareto.png"' in (work / "report" / "index.html").read_text().replace("'", '"')
    text = run_cli(["optimize", "show", "moo"])
    assert text.exit_code == 0 and "pareto front: trials" in text.stdout
    listing = run_cli(["optimize", "show"])
    assert listing.exit_code == 0 and listing.stdout.startswith("moo  done  tpe  qa.jsonl")
    front = out["pareto"]
    correct = [t for t in show("moo")["trials"] if t["score"] == 1.0]
    assert correct, "no correct trial in 16"
    cheapest = min(t["cost"] for t in correct)
    assert any(t["score"] == 1.0 and t["cost"] == cheapest for t in front), front
    # nothing on the front is beaten on both objectives by another trial
    for t in front:
        assert not any(o["score"] >= t["score"] and o["cost"] < t["cost"] for o in correct)


def test_budget_caps_stop_the_run(landscape) -> None:
    _, provider = landscape
    provider.reset()
    out = optimize("--optimizer", "random", "--trials", "40", "--max-calls", "30", "--yes",
                   "--name", "capped", "--concurrency", "1")
    assert "max_calls 30" in out["stopped_by"]
    study_calls = out["spent"]["calls"]
    served = study_calls + out["spent"]["retries"]  # a retried request reached the provider too
    # checked as each example finishes: passed by at most the one example in flight (200-token
    # chunks: 10 map calls and a combine)
    assert 30 <= study_calls <= 30 + 11
    assert provider.stats()["requests"] == served  # the val evals were not run over it
    assert out["val_missing"].startswith("not scored on val: max_calls 30")
    trials = show("capped")["trials"]
    assert len(trials) < 40 and trials[-1]["status"] == "stopped"


def test_estimate_over_budget_refuses_without_yes(landscape) -> None:
    result = run_cli(["optimize", "qa.jsonl", "--space", "space.toml", "--trials", "40",
                      "--max-calls", "20", "--optimizer", "random"])
    assert result.exit_code == 2
    assert "exceeds the budget" in result.stderr and "--max-calls 20" in result.stderr
    dry = run_cli(["optimize", "qa.jsonl", "--space", "space.toml", "--trials", "40",
                   "--max-calls", "20", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    estimate = json.loads(dry.stdout)["estimate"]
    assert estimate["per_example"]["calls"] >= 1 and estimate["over_budget"]
    assert estimate["allowed_trials"] < estimate["min_trials"]
    assert "needs at least" in dry.stderr


def test_resume_repeats_no_finished_call(landscape) -> None:
    work, provider = landscape
    first = optimize("--optimizer", "tpe", "--trials", "6", "--name", "resumable")
    assert len(show("resumable")["trials"]) == 6
    provider.reset()
    # the same study, resumed with the same number of trials: everything is recorded
    again = run_cli(["optimize", "--resume", "resumable", "--json"])
    assert again.exit_code == 0, again.output
    assert provider.stats()["requests"] == 0, (json.loads(again.stdout), first)
    assert json.loads(again.stdout)["best"]["number"] == first["best"]["number"]
    # more trials: only the new ones ask the provider
    before = show("resumable")["trials"]
    more = run_cli(["optimize", "--resume", "resumable", "--trials", "8", "--json"])
    assert more.exit_code == 0, more.output
    data = json.loads(more.stdout)
    after = show("resumable")["trials"]
    assert len(after) == 8 and after[:6] == before  # the finished trials are kept as they were
    # every request is one this process counted as new (a candidate met before is free)
    assert provider.stats()["requests"] == data["spent"]["calls"] + data["spent"]["retries"]
    new = [t for t in after[6:] if t["resumed"] < t["evaluated"]]
    assert data["spent"]["calls"] >= sum(t["calls"] for t in new)
    assert (Path(work) / "optuna.sqlite").is_file()


def test_program_reproduces_the_best_score(landscape) -> None:
    work, _ = landscape
    out = optimize("--optimizer", "tpe", "--trials", "10", "--name", "prog", "--out",
                   "best.toml", "--seed", "2")
    assert out["best"]["score"] == 1.0
    text = (work / "best.toml").read_text()
    assert "[optimize.program]" in text and 'study = "prog"' in text
    for source in ("best.toml", "prog"):  # the file, and the program stored in the run store
        answer = run_cli(["ask", QUESTIONS[0], "corpus/service.txt", "--program", source,
                          "--json"])
        assert answer.exit_code == 0, answer.output
        assert "48213" in json.loads(answer.stdout)["answer"]
    baseline = run_cli(["ask", QUESTIONS[0], "corpus/service.txt", "--json"])
    assert "48213" not in json.loads(baseline.stdout)["answer"]
    assert out["best_val"]["score"] == 1.0


def test_wilcoxon_pruner_stops_bad_trials_and_reports_the_calls_saved(landscape) -> None:
    work, provider = landscape
    lines = [json.dumps({"id": f"q{i}", "question": f"{QUESTIONS[i % 5]} ({i})",
                         "sources": ["corpus/service.txt"], "answer": "48213"})
             for i in range(10)]
    (work / "qa.jsonl").write_text("\n".join(lines) + "\n")  # 7 train, 3 val
    provider.reset()
    # one example at a time: with more, the examples already running when a trial is pruned
    # finish (and are counted), so pruning the 4th of 7 would save nothing
    out = optimize("--optimizer", "tpe", "--trials", "14", "--seed", "2", "--name", "pruned",
                   "--concurrency", "1")
    trials = show("pruned")["trials"]
    pruned = [t for t in trials if t["status"] == "pruned"]
    assert pruned, [(t["number"], t["status"], t["score"]) for t in trials]
    for t in pruned:  # stopped early on the stream, and nothing good was pruned
        assert t["evaluated"] < t["examples"] and not _good(t["assignment"])
        assert t["calls_saved"] > 0
    assert out["calls_saved"] == sum(t["calls_saved"] for t in trials) > 0


def test_resume_on_a_larger_dataset_warm_starts(landscape) -> None:
    import optuna

    work, provider = landscape
    def write(n_train: int) -> None:
        rows = [{"id": f"t{i}", "question": f"{QUESTIONS[i % 5]} (train {i})", "split": "train"}
                for i in range(n_train)]
        rows += [{"id": f"v{i}", "question": f"{QUESTIONS[i]} (val {i})", "split": "val"}
                 for i in range(2)]
        (work / "qa.jsonl").write_text("\n".join(
            json.dumps({**r, "sources": ["corpus/service.txt"], "answer": "48213"})
            for r in rows) + "\n")

    write(3)
    optimize("--optimizer", "tpe", "--trials", "6", "--seed", "2", "--name", "grow")
    write(5)  # two more train examples: a new dataset digest
    provider.reset()
    more = run_cli(["optimize", "--resume", "grow", "qa.jsonl", "--trials", "4", "--json"])
    assert more.exit_code == 0, more.output
    data = json.loads(more.stdout)
    trials = show("grow")["trials"]
    assert len(trials) == 10  # 6 on the old train examples, 4 on the new ones
    assert all(t["examples"] == 5 for t in trials[6:])
    # the 6 earlier trials are the Optuna study's warm start
    study = optuna.load_study(study_name="grow", storage=f"sqlite:///{work / 'optuna.sqlite'}")
    assert len(study.trials) >= 10
    # a candidate met before asked only its new examples: every request is a counted new call
    assert provider.stats()["requests"] == data["spent"]["calls"] + data["spent"]["retries"]
    assert data["best"]["examples"] == 5


def test_the_space_may_live_in_ponder_toml(landscape) -> None:
    work, _ = landscape
    (work / "ponder.toml").write_text((work / "ponder.toml").read_text() + SPACE)
    result = run_cli(["optimize", "qa.jsonl", "--optimizer", "grid", "--trials", "2", "--json",
                      "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["trials"] == 2
    assert show(json.loads(result.stdout)["study"])["plan"]["space_path"] == "ponder.toml"
