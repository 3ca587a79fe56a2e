"""``ponder optimize --pipeline``: a space over ``pipeline.stages.<name>.<key>``, end to end.

The landscape (:mod:`ponder.testing.pipeline_landscape`): a two-stage pipeline, ``find``
(``map_reduce`` over the corpus) then ``report`` (``predict`` over find's answer). The report
is right exactly when find's ``settings.chunk_tokens >= 1400`` (its first chunk holds both
lines of the fact) and report's own ``adapter.temperature <= 0.3``; the base config's
temperature is 0.0, so the good region is decided by the two stage keys alone. Every request
goes over real HTTP through the real pipeline, evaluator and store; Optuna's storage is a real
SQLite file; requests are counted at the fake provider.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ponder.testing import isolated_user_dir, run_cli
from ponder.testing.pipeline_landscape import (
    PIPELINE,
    QUESTIONS,
    STAGE_SPACE,
    good_stage_point,
    write_pipeline_landscape,
)

pytestmark = pytest.mark.fault


@pytest.fixture
def landscape(tmp_path: Path):
    from ponder.testing.landscape import LandscapeProvider

    with isolated_user_dir(tmp_path) as root, LandscapeProvider() as provider:
        work = root / "work"
        write_pipeline_landscape(work, provider.base_url)
        yield work, provider


def optimize(*args: str) -> dict:
    result = run_cli(["optimize", "qa.jsonl", "--pipeline", "port.toml", "--space", "space.toml",
                      "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def show(name: str) -> dict:
    result = run_cli(["optimize", "show", name, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_tpe_and_random_find_the_region_a_stage_setting_decides(landscape) -> None:
    found = {}
    for optimizer in ("tpe", "random"):
        out = optimize("--optimizer", optimizer, "--trials", "16", "--name", optimizer,
                       "--seed", "3")
        assert out["pipeline"] == "port.toml"
        trials = show(optimizer)["trials"]
        assert len(trials) == 16
        # the landscape is exact: a trial scores 1 exactly in the good region
        for t in trials:
            assert t["score"] == (1.0 if good_stage_point(t["assignment"]) else 0.0), t
        found[optimizer] = sum(good_stage_point(t["assignment"]) for t in trials)
        assert out["best"]["score"] == 1.0 and good_stage_point(out["best"]["assignment"])
        assert out["best_val"]["score"] == 1.0
        assert out["baseline_val"]["score"] == 0.0  # 400-token chunks in the file
    # the same 16 trials: TPE spends more of them in the good region than random does
    assert found["tpe"] > found["random"], found


def test_a_mixed_space_of_system_and_stage_keys(landscape) -> None:
    """``adapter.temperature`` (every stage's) beside stage keys, and a ``uses`` choice; the
    space file names its pipeline itself (``[optimize] pipeline``), so no --pipeline."""
    work, _ = landscape
    (work / "ponder.toml").write_text((work / "ponder.toml").read_text().replace(
        "temperature = 0.0", "temperature = 0.7"))
    (work / "mixed.toml").write_text("""
[optimize]
pipeline = "port.toml"

[optimize.space]
"adapter.temperature" = { choice = [0.0, 0.7] }
"pipeline.stages.find.settings.chunk_tokens" = { choice = [400, 1600] }
"pipeline.stages.report.uses" = { choice = ["predict", "chain_of_thought"] }
""")
    result = run_cli(["optimize", "qa.jsonl", "--space", "mixed.toml", "--optimizer", "grid",
                      "--trials", "8", "--name", "mixed", "--json", "-q"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["pipeline"].endswith("port.toml")
    trials = show("mixed")["trials"]
    assert len(trials) == 8
    for t in trials:
        a = t["assignment"]
        good = a["adapter.temperature"] == 0.0 and \
            a["pipeline.stages.find.settings.chunk_tokens"] == 1600
        assert t["score"] == (1.0 if good else 0.0), t
    # 8 distinct candidates: each has its own eval records (the digest covers the stage keys)
    assert len({t["candidate"] for t in trials}) == 8
    assert out["best"]["assignment"]["adapter.temperature"] == 0.0


def test_budget_caps_bind_a_pipeline_study(landscape) -> None:
    _, provider = landscape
    provider.reset()
    out = optimize("--optimizer", "random", "--trials", "40", "--max-calls", "30", "--yes",
                   "--name", "capped", "--concurrency", "1")
    assert "max_calls 30" in out["stopped_by"]
    calls = out["spent"]["calls"]
    # checked as each example finishes: passed by at most the one example in flight (200-token
    # chunks: 10 map calls, a combine and the report)
    assert 30 <= calls <= 30 + 12
    assert provider.stats()["requests"] == calls + out["spent"]["retries"]
    assert out["val_missing"].startswith("not scored on val: max_calls 30")
    trials = show("capped")["trials"]
    assert len(trials) < 40 and trials[-1]["status"] == "stopped"


def test_resume_repeats_no_request(landscape) -> None:
    work, provider = landscape
    provider.reset()
    first = optimize("--optimizer", "tpe", "--trials", "6", "--name", "again", "--seed", "1")
    assert provider.stats()["requests"] == first["spent"]["calls"] + first["spent"]["retries"]
    provider.reset()
    again = run_cli(["optimize", "--resume", "again", "--json"])
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert provider.stats()["requests"] == 0, data
    assert data["spent"]["calls"] == 0
    assert data["best"]["number"] == first["best"]["number"]
    # more trials: only the new candidates ask the provider, and every request is counted
    more = run_cli(["optimize", "--resume", "again", "--trials", "9", "--json"])
    assert more.exit_code == 0, more.output
    data = json.loads(more.stdout)
    assert len(show("again")["trials"]) == 9
    assert provider.stats()["requests"] == data["spent"]["calls"] + data["spent"]["retries"]
    assert (work / "optuna.sqlite").is_file()


def test_the_program_holds_the_pipeline_and_reproduces_the_best(landscape) -> None:
    work, _ = landscape
    out = optimize("--optimizer", "tpe", "--trials", "12", "--name", "prog", "--seed", "2",
                   "--out", "best.toml")
    assert out["best"]["score"] == 1.0
    text = (work / "best.toml").read_text()
    assert "[[pipeline.stages]]" in text and 'pipeline = "port.toml"' in text
    chunk = out["best"]["assignment"]["pipeline.stages.find.settings.chunk_tokens"]
    assert f"settings = {{ chunk_tokens = {chunk} }}" in text
    question = ["--input", f"question={QUESTIONS[0]}", "--json", "--no-cache"]
    best = run_cli(["pipeline", "run", "best.toml", "corpus/service.txt", *question])
    assert best.exit_code == 0, best.output
    assert "48213" in json.loads(best.stdout)["outputs"]["report"]["answer"]
    baseline = run_cli(["pipeline", "run", "port.toml", "corpus/service.txt", *question])
    assert baseline.exit_code == 0, baseline.output
    assert "48213" not in json.loads(baseline.stdout)["outputs"]["report"]["answer"]
    # the program stored in the run store is the same text
    assert show("prog")["summary"]["pipeline"] == "port.toml"


def test_bad_stage_keys_name_the_file_and_the_key(landscape) -> None:
    work, provider = landscape
    (work / "bad.toml").write_text("""
[optimize.space]
"pipeline.stages.fnd.settings.chunk_tokens" = { int = [200, 2000] }
"pipeline.stages.find.settings.chunk_tokns" = { int = [200, 2000] }
"pipeline.stages.find.settings.fan_in" = { int = [1, 8] }
"pipeline.stages.find.setings.fan_in" = { int = [2, 8] }
"pipeline.stages.find.uses" = { choice = ["map_reduce", "mapreduce"] }
"pipeline.stages.report.adapter.temprature" = { float = [0.0, 1.0] }
""")
    provider.reset()
    result = run_cli(["optimize", "qa.jsonl", "--pipeline", "port.toml", "--space", "bad.toml"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.removeprefix("ponder: error: ").strip().splitlines()
    where = 'bad.toml: optimize.space."pipeline.stages.'
    expected = {
        "fnd.settings.chunk_tokens": "unknown stage 'fnd'; did you mean 'find'?",
        "find.settings.chunk_tokns": "unknown setting 'chunk_tokns' for 'map_reduce'",
        "find.settings.fan_in": "value 1 does not fit stage 'find': settings.fan_in",
        "find.setings.fan_in": "'setings' is not a stage key that can change; did you mean "
                               "'settings'?",
        "find.uses": "unknown plugin 'mapreduce'; did you mean 'map_reduce'?",
        "report.adapter.temprature": "unknown setting 'temprature' for adapter "
                                     "'openai_compatible'",
    }
    for key, text in expected.items():
        line = next((line for line in lines if line.startswith(f'{where}{key}"')), None)
        assert line is not None and text in line, (key, result.stderr)
    assert "did you mean 'chunk_tokens'?" in result.stderr
    assert "did you mean 'temperature'?" in result.stderr
    assert "'fan_in' must be >= 2" in result.stderr
    assert provider.stats()["requests"] == 0  # nothing ran: checked before the pilot
    # --json: one object, the same message
    as_json = run_cli(["optimize", "qa.jsonl", "--pipeline", "port.toml", "--space", "bad.toml",
                       "--json"])
    assert as_json.exit_code == 2
    assert "unknown stage 'fnd'" in json.loads(as_json.stdout)["error"]
    # stage keys without a pipeline, and a pipeline the examples cannot feed
    (work / "space.toml").write_text(STAGE_SPACE)
    alone = run_cli(["optimize", "qa.jsonl", "--space", "space.toml", "--json"])
    assert alone.exit_code == 2 and "give --pipeline FILE" in json.loads(alone.stdout)["error"]
    (work / "fixed.toml").write_text(PIPELINE.replace("${input.question}", "Which port?"))
    fixed = run_cli(["optimize", "qa.jsonl", "--pipeline", "fixed.toml", "--space", "space.toml"])
    assert fixed.exit_code == 2
    assert "fixed.toml: the pipeline reads no ${input.question}" in fixed.stderr


def test_a_failing_stage_fails_its_examples_and_says_what_is_missing(landscape) -> None:
    """A signature whose output the model cannot fill (a float): the report stage fails, the
    examples have no answer, and the trial says so instead of scoring 0."""
    work, _ = landscape
    (work / "space.toml").write_text("""
[optimize.space]
"pipeline.stages.report.signature" = { choice = ["question, finding -> answer",
                                                 "question, finding -> answer: float"] }
"pipeline.stages.find.settings.chunk_tokens" = { choice = [1600] }
""")
    out = optimize("--optimizer", "grid", "--trials", "2", "--name", "failing")
    trials = {t["assignment"]["pipeline.stages.report.signature"]: t
              for t in show("failing")["trials"]}
    ok, failed = trials["question, finding -> answer"], \
        trials["question, finding -> answer: float"]
    assert ok["status"] == "complete" and ok["score"] == 1.0
    assert failed["status"] == "failed" and failed["score"] is None
    assert failed["failed"] == failed["examples"] == 3
    assert out["best"]["number"] == ok["number"]
    # each example's record (the run store's eval records) says which stage is missing, why
    from ponder.engine.system import System
    from ponder.kernel.config import load_config

    storage = System(load_config()).open_storage()
    try:
        failures = [r["failure"] for _, r in storage.list_records("eval", "example/")
                    if r.get("failure")]
    finally:
        storage.close()
    assert len(failures) == 3, failures
    for failure in failures:
        assert failure.startswith("no answer: no value for the pipeline's output report.answer;")
        assert "report failed" in failure


def test_the_pipeline_may_live_in_ponder_toml(landscape) -> None:
    work, _ = landscape
    (work / "ponder.toml").write_text((work / "ponder.toml").read_text()
                                      + (work / "port.toml").read_text())
    result = run_cli(["optimize", "qa.jsonl", "--space", "space.toml", "--optimizer", "grid",
                      "--trials", "2", "--json", "-q", "--name", "inline"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pipeline"].endswith("ponder.toml")
    assert show("inline")["plan"]["pipeline"].endswith("ponder.toml")


def test_an_executor_with_worker_processes_is_refused(landscape) -> None:
    """Ray's workers build a plain System and would answer with the strategy, not the
    pipeline: refused before anything runs, naming the key."""
    work, provider = landscape
    (work / "ponder.toml").write_text((work / "ponder.toml").read_text()
                                      + '\n[executor]\nname = "ray"\n')
    provider.reset()
    result = run_cli(["optimize", "qa.jsonl", "--pipeline", "port.toml", "--space", "space.toml",
                      "--json"])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert "ponder.toml: executor.name: 'ray' asks examples in worker processes" in error
    assert provider.stats()["requests"] == 0


def test_a_setting_only_some_chosen_plugins_have_is_conditional(landscape) -> None:
    """``settings.fan_in`` with a ``uses`` choice of map_reduce and direct: active only while
    map_reduce is chosen; choosing direct drops the file's map_reduce settings."""
    work, _ = landscape
    (work / "cond.toml").write_text("""
[optimize]
pipeline = "port.toml"

[optimize.space]
"pipeline.stages.find.uses" = { choice = ["map_reduce", "direct"] }
"pipeline.stages.find.settings.fan_in" = { choice = [2] }
""")
    space = run_cli(["optimize", "space", "cond.toml", "--json"])
    assert space.exit_code == 0, space.output
    data = json.loads(space.stdout)
    assert data["size"] == 2
    assert data["conditional"] == ["pipeline.stages.find.settings.fan_in"]
    result = run_cli(["optimize", "qa.jsonl", "--space", "cond.toml", "--optimizer", "grid",
                      "--trials", "2", "--name", "cond", "--json", "-q"])
    assert result.exit_code == 0, result.output
    trials = {t["assignment"]["pipeline.stages.find.uses"]: t for t in show("cond")["trials"]}
    assert trials["map_reduce"]["assignment"]["pipeline.stages.find.settings.fan_in"] == 2
    assert "pipeline.stages.find.settings.fan_in" not in trials["direct"]["assignment"]
    # 400-token chunks (the file's) miss the fact; direct reads the whole file at once
    assert trials["map_reduce"]["score"] == 0.0
    assert trials["direct"]["status"] == "complete" and trials["direct"]["score"] == 1.0
