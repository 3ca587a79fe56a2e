"""Pipelines over the loopback fake provider (real HTTP, real SQLite run store).

Overlap is asserted from the stage spans the run store recorded, never from a wall-clock
threshold; the stage cache from the requests the fake provider counted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ponder.engine.system import System
from ponder.kernel.config import load_config
from ponder.pipeline.check import check_pipeline, critical_path
from ponder.pipeline.model import Pipeline, PipelineError
from ponder.pipeline.run import run_pipeline
from ponder.testing import run_cli
from ponder.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.fault

RULES = [
    # most specific first: a rule matches anywhere in the prompt
    (r"`explanation`", {"reasoning": "r", "explanation": "start() at app.py:3",
                        "confidence": "0.8"}),
    (r"BROKEN", {"reasoning": "r", "score": "7.5"}),  # not a Probability: the stage fails
    (r"(?s)`rating`.*\[\[ ## file ## \]\]\s*cli\.py", {"rating": "1.7"}),  # one item fails
    (r"`rating`", {"rating": "0.5"}),
    (r"`files`", {"files": '["app.py", "util.py", "cli.py"]', "reasoning": "app.py starts"}),
    (r"`relevant_info`", {"relevant_info": "app.py:3 def start()", "confidence": "high"}),
    (r"ALPHA", {"answer": "alpha is app.py:1"}),
    (r"BETA", {"answer": "beta is util.py:1"}),
]


@pytest.fixture
def provider():
    with FakeProvider(rules=RULES, default_reply="an answer", latency=0.3) as fake:
        yield fake


@pytest.fixture
def sources(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("MAGIC_PORT = 48213\n\ndef start():\n    return MAGIC_PORT\n")
    (src / "util.py").write_text("def helper():\n    return 1\n")
    (src / "cli.py").write_text("import app\n")
    return str(src)


def make_config(tmp_path: Path, provider, extra: str = "") -> Path:
    path = tmp_path / "ponder.toml"
    path.write_text(f'[adapter]\nname = "openai_compatible"\nbase_url = "{provider.base_url}"\n'
                    f'model = "m"\n[cache]\nenabled = false\n[limits]\nconcurrency = 4\n{extra}')
    return path


def system_for(tmp_path, provider, extra: str = "") -> System:
    return System(load_config(make_config(tmp_path, provider, extra)), progress="silent")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipe.toml"
    path.write_text(text)
    return path


TWO = '''
[[pipeline.stages]]
name = "alpha"
uses = "direct"
inputs = { question = "ALPHA: ${input.question}" }

[[pipeline.stages]]
name = "beta"
uses = "direct"
inputs = { question = "BETA: what is beta?" }

[[pipeline.stages]]
name = "join"
uses = "predict"
signature = "a: str, b: str -> answer: str"
inputs = { a = "${alpha.answer}", b = "${beta.answer}" }
'''


def stored_spans(system: System, run_id: str) -> dict[str, dict]:
    storage = system.open_storage()
    try:
        run = storage.get_run(run_id)
    finally:
        storage.close()
    return {s["name"][6:]: s for s in run["spans"] if s["name"].startswith("stage:")}


def test_independent_stages_overlap(tmp_path, provider, sources):
    system = system_for(tmp_path, provider)
    plan = check_pipeline(Pipeline.from_file(write(tmp_path, TWO)), system.plugins)
    assert plan.levels == [["alpha", "beta"], ["join"]]
    result = run_pipeline(plan, system, sources=[sources], inputs={"question": "q"})
    assert not result.partial, result.note
    assert result.stages["alpha"].outputs == {"answer": "alpha is app.py:1"}
    spans = stored_spans(system, result.run_id)
    alpha, beta, join = spans["alpha"], spans["beta"], spans["join"]
    # alpha and beta ran at the same time; join started after both ended
    assert alpha["start"] < beta["end"] and beta["start"] < alpha["end"]
    assert join["start"] >= max(alpha["end"], beta["end"])
    assert result.stage_sum_s == pytest.approx(sum(s.elapsed_s for s in result.stages.values()))
    assert result.speedup == pytest.approx(result.stage_sum_s / result.wall_s)
    assert {n: s.calls for n, s in result.stages.items()} == {"alpha": 1, "beta": 1, "join": 1}
    assert provider.stats()["requests"] == 3
    # each recorded call names its stage (a strategy's "answer" call is "alpha.answer")
    storage = system.open_storage()
    try:
        roles = sorted(call["role"] for call in storage.get_run(result.run_id)["calls"])
    finally:
        storage.close()
    assert roles == ["alpha.answer", "beta.answer", "join"]


FAN = '''
[[pipeline.stages]]
name = "entrypoints"
uses = "map_reduce"
signature = "question -> files: list[str], reasoning: str"
inputs = { question = "Which modules start the service?" }

[[pipeline.stages]]
name = "per_file"
uses = "direct"
for_each = "${entrypoints.files}"
inputs = { question = "What does ${item} do?" }

[[pipeline.stages]]
name = "explain"
uses = "chain_of_thought"
signature = "question: str, files: list[str] -> explanation: str, confidence: Probability"
inputs = { question = "${input.question}", files = "${entrypoints.files}" }
'''


def test_for_each_fans_out_and_types_are_validated(tmp_path, provider, sources):
    system = system_for(tmp_path, provider)
    plan = check_pipeline(Pipeline.from_file(write(tmp_path, FAN)), system.plugins)
    result = run_pipeline(plan, system, sources=[sources], inputs={"question": "How?"})
    assert not result.partial, result.note
    assert result.stages["entrypoints"].outputs["files"] == ["app.py", "util.py", "cli.py"]
    per_file = result.stages["per_file"]
    assert per_file.items == 3 and per_file.calls == 3
    assert per_file.outputs == {"answer": ["an answer"] * 3}
    # the Probability came back as text and was validated into a float
    assert result.stages["explain"].outputs["confidence"] == 0.8
    # the three items were in flight together
    storage = system.open_storage()
    spans = [s for s in storage.get_run(result.run_id)["spans"]
             if s["name"].startswith("per_file[")]
    storage.close()
    assert len(spans) == 3
    assert max(s["start"] for s in spans) < min(s["end"] for s in spans)
    assert provider.stats()["max_in_flight"] <= 4  # one budget: [limits] concurrency


COUNTING_EXECUTOR = """
from ponder import hookimpl
from ponder.engine.executor import ThreadExecutor

MAPS = []


class CountingExecutor(ThreadExecutor):
    name = "counting"

    def map(self, task, items, *, services, concurrency):
        MAPS.append(len(items))
        yield from super().map(task, items, services=services, concurrency=concurrency)


@hookimpl
def ponder_register_executors(register):
    register("counting", CountingExecutor)
"""


def test_stage_maps_go_through_the_executor_and_rate_limits(tmp_path, provider, sources):
    """The run's ``[executor]`` runs a stage's maps (the for_each items, a strategy's chunks)
    and ``[adapter] rpm`` binds the whole pipeline."""
    import sys

    from ponder.kernel.loader import load_plugins

    (tmp_path / "counting_executor.py").write_text(COUNTING_EXECUTOR)
    plugins = load_plugins(modules=[str(tmp_path / "counting_executor.py")])
    config = load_config(make_config(tmp_path, provider, '[executor]\nname = "counting"\n'))
    config.adapter.rpm = 6000.0
    system = System(config, plugins=plugins, progress="silent")
    plan = check_pipeline(Pipeline.from_file(write(tmp_path, FAN)), system.plugins)
    result = run_pipeline(plan, system, sources=[sources], inputs={"question": "How?"})
    assert not result.partial, result.note
    maps = sys.modules[plugins.get("executor", "counting").factory.__module__].MAPS
    assert 3 in maps  # per_file's three items, on the configured executor
    assert system.rate_limiter is not None and system.rate_limiter.rpm == 6000.0


def test_a_failing_item_leaves_a_for_each_stage_partial(tmp_path, provider, sources):
    text = FAN + '''
[[pipeline.stages]]
name = "rate"
uses = "predict"
signature = "file -> rating: Probability"
for_each = "${entrypoints.files}"
inputs = { file = "${item}" }

[[pipeline.stages]]
name = "total"
uses = "predict"
signature = "ratings: list[float] -> answer: str"
inputs = { ratings = "${rate.rating}" }
'''
    system = system_for(tmp_path, provider)
    plan = check_pipeline(Pipeline.from_file(write(tmp_path, text)), system.plugins)
    result = run_pipeline(plan, system, sources=[sources], inputs={"question": "How?"})
    rate = result.stages["rate"]
    assert rate.status == "partial" and rate.items == 3
    assert rate.outputs == {"rating": [0.5, 0.5]}  # app.py and util.py, in order
    (failed,) = rate.failed_items
    assert failed["item"] == "cli.py" and failed["index"] == 2 and "1.7" in failed["error"]
    assert result.stages["total"].status == "ok"  # it ran on the items that succeeded
    assert result.partial and result.missing == []
    assert "rate partial (1 item(s) failed)" in result.note


def test_one_budget_across_stages(tmp_path, provider, sources):
    system = system_for(tmp_path, provider, "")
    system.config.limits.concurrency = 1
    plan = check_pipeline(Pipeline.from_file(write(tmp_path, FAN)), system.plugins)
    result = run_pipeline(plan, system, sources=[sources], inputs={"question": "How?"})
    assert not result.partial
    assert provider.stats()["max_in_flight"] == 1  # explain and 3 per_file items: one at a time


BROKEN = TWO + '''
[[pipeline.stages]]
name = "score"
uses = "chain_of_thought"
signature = "question -> score: Probability"
inputs = { question = "BROKEN ${input.question}" }

[[pipeline.stages]]
name = "report"
uses = "predict"
signature = "score: float -> answer: str"
inputs = { score = "${score.score}" }
'''


def test_a_failing_stage_leaves_its_branch_partial(tmp_path, provider, sources):
    system = system_for(tmp_path, provider)
    plan = check_pipeline(Pipeline.from_file(write(tmp_path, BROKEN)), system.plugins)
    result = run_pipeline(plan, system, sources=[sources], inputs={"question": "q"})
    status = {name: stage.status for name, stage in result.stages.items()}
    assert status == {"alpha": "ok", "beta": "ok", "join": "ok", "score": "failed",
                      "report": "skipped"}
    assert "score.score" in result.stages["score"].error and "7.5" in result.stages["score"].error
    assert result.stages["report"].waited_for == ["score"]
    assert result.partial and result.missing == ["score", "report"]
    assert result.outputs == {"join": {"answer": "an answer"}}
    assert "3 of 5 stages complete" in result.note


def test_limits_bind_over_the_whole_pipeline(tmp_path, provider, sources):
    system = system_for(tmp_path, provider)
    system.config.limits.max_tokens = 1  # spent by the first call of either first-level stage
    system.config.limits.concurrency = 1
    plan = check_pipeline(Pipeline.from_file(write(tmp_path, TWO)), system.plugins)
    result = run_pipeline(plan, system, sources=[sources], inputs={"question": "q"})
    assert result.stopped_by == "max_tokens"
    assert provider.stats()["requests"] == 1  # the other stage never got to call
    status = sorted(s.status for s in result.stages.values())
    assert status == ["failed", "ok", "skipped"]
    assert result.stages["join"].waited_for


def test_stage_cache_reruns_only_what_changed(tmp_path, provider, sources):
    system = system_for(tmp_path, provider)
    plan = check_pipeline(Pipeline.from_file(write(tmp_path, TWO)), system.plugins)
    first = run_pipeline(plan, system, sources=[sources], inputs={"question": "one"})
    assert provider.stats()["requests"] == 3 and not first.partial
    again = run_pipeline(plan, system, sources=[sources], inputs={"question": "one"})
    assert {s.status for s in again.stages.values()} == {"cached"}
    assert provider.stats()["requests"] == 3  # nothing asked again
    assert again.speedup == 1.0  # no stage ran: no speedup to claim (it read 0.00x)
    assert again.outputs == first.outputs
    changed = run_pipeline(plan, system, sources=[sources], inputs={"question": "two"})
    status = {name: stage.status for name, stage in changed.stages.items()}
    # alpha reads the input and runs again; beta is unchanged; alpha's reply is the same as
    # before, so join's inputs are too: it is cached by value, not re-run because alpha ran
    assert status == {"alpha": "ok", "beta": "cached", "join": "cached"}
    assert provider.stats()["requests"] == 4
    beta = plan.pipeline.with_value("stages.beta.inputs.question", "BETA: and now?")
    status = {name: stage.status for name, stage in run_pipeline(
        check_pipeline(beta, system.plugins), system, sources=[sources],
        inputs={"question": "two"}).stages.items()}
    assert status == {"alpha": "cached", "beta": "ok", "join": "cached"}
    assert provider.stats()["requests"] == 5


@pytest.fixture
def plugins():
    from ponder.kernel.loader import load_plugins

    return load_plugins()


def check_errors(tmp_path, text, plugins) -> str:
    with pytest.raises(PipelineError) as info:
        check_pipeline(Pipeline.from_file(write(tmp_path, text)), plugins)
    return str(info.value)


def test_cycle_is_named(tmp_path, plugins):
    text = '''
[[pipeline.stages]]
name = "a"
uses = "predict"
signature = "x -> y"
inputs = { x = "${b.y}" }

[[pipeline.stages]]
name = "b"
uses = "predict"
signature = "x -> y"
inputs = { x = "${a.y}" }
'''
    message = check_errors(tmp_path, text, plugins)
    path = tmp_path / "pipe.toml"
    assert message.startswith(f"{path}: stages form a cycle: ")
    assert "a -> b -> a" in message or "b -> a -> b" in message


def test_unknown_field_stage_and_plugin(tmp_path, plugins):
    text = FAN.replace("${entrypoints.files}\"\ninputs = { question = \"What",
                       "${entrypoint.files}\"\ninputs = { question = \"What")
    text = text.replace('files = "${entrypoints.files}"', 'files = "${entrypoints.filez}"')
    text += '\n[[pipeline.stages]]\nname = "extra"\nuses = "mapreduce"\n' \
            'inputs = { question = "q" }\n'
    lines = check_errors(tmp_path, text, plugins).splitlines()
    path = tmp_path / "pipe.toml"
    assert (f"{path}: stage 'extra': uses: unknown plugin 'mapreduce'; did you mean "
            f"'map_reduce'?") in lines[0]
    assert (f"{path}: stage 'per_file': for_each: ${{entrypoint.files}}: unknown stage "
            f"'entrypoint'; did you mean 'entrypoints'?") in "\n".join(lines)
    assert (f"{path}: stage 'explain': inputs.files: ${{entrypoints.filez}}: unknown field "
            f"'filez' of stage 'entrypoints'; did you mean 'files'? (its outputs: files, "
            f"reasoning)") in lines


def test_type_mismatch(tmp_path, plugins):
    text = FAN.replace('files = "${entrypoints.files}"', 'files = "${entrypoints.reasoning}"')
    message = check_errors(tmp_path, text, plugins)
    assert message == (f"{tmp_path / 'pipe.toml'}: stage 'explain': inputs.files: "
                       "${entrypoints.reasoning} is str, but field 'files' of the signature is "
                       "list[str]")


def test_bad_settings_key_and_signature_name_file_stage_key(tmp_path, plugins):
    text = '''
[[pipeline.stages]]
name = "a"
uses = "map_reduce"
settings = { fan_in = "four" }
inputs = { question = "q" }

[[pipeline.stages]]
name = "b"
uses = "predict"
signature = "x -> y: flot"
inputs = { x = "q" }
colour = "red"
'''
    message = check_errors(tmp_path, text, plugins)
    path = tmp_path / "pipe.toml"
    assert f"{path}: stage 'b': colour: unknown key" in message
    with pytest.raises(PipelineError) as info:
        check_pipeline(Pipeline.from_file(write(tmp_path, text.replace('colour = "red"\n', ""))),
                       plugins)
    message = str(info.value)
    assert f"{path}: stage 'a': settings.fan_in: expected int, got 'four'" in message
    assert f"{path}: stage 'b': signature: signature 'x -> y: flot': column 9: unknown type " \
           "'flot'; did you mean 'float'?" in message


def test_levels_and_critical_path(tmp_path, plugins):
    plan = check_pipeline(Pipeline.from_file(write(tmp_path, FAN)), plugins)
    assert plan.levels == [["entrypoints"], ["per_file", "explain"]]
    assert critical_path(plan)[0] in (["entrypoints", "per_file"], ["entrypoints", "explain"])
    path, length = critical_path(plan, {"entrypoints": 1.0, "per_file": 0.5, "explain": 2.0})
    assert path == ["entrypoints", "explain"] and length == 3.0


def test_code_and_toml_build_the_same_pipeline(tmp_path):
    from_toml = Pipeline.from_file(write(tmp_path, FAN))
    in_code = (Pipeline("pipe")
               .stage("entrypoints", uses="map_reduce",
                      signature="question -> files: list[str], reasoning: str",
                      inputs={"question": "Which modules start the service?"})
               .stage("per_file", uses="direct", for_each="${entrypoints.files}",
                      inputs={"question": "What does ${item} do?"})
               .stage("explain", uses="chain_of_thought",
                      signature="question: str, files: list[str] -> explanation: str, "
                                "confidence: Probability",
                      inputs={"question": "${input.question}",
                              "files": "${entrypoints.files}"}))
    assert in_code == from_toml
    again = tmp_path / "again.toml"
    again.write_text(in_code.to_toml())
    assert Pipeline.from_file(again) == in_code
    tuned = in_code.with_value("pipeline.stages.entrypoints.settings.fan_in", 4)
    assert tuned.get("entrypoints").settings == {"fan_in": 4}


def test_cli_run_check_show(tmp_path, provider, sources):
    config = str(make_config(tmp_path, provider))
    pipe = str(write(tmp_path, BROKEN))
    result = run_cli(["--config", config, "pipeline", "run", pipe, sources,
                      "--input", "question=q", "--json"])
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    assert data["missing"] == ["score", "report"] and data["partial"] is True
    assert data["speedup"] > 0 and data["stage_sum_s"] > 0
    checked = run_cli(["--config", config, "pipeline", "check", pipe])
    assert checked.exit_code == 0 and "5 stages in 2 levels" in checked.stdout
    bad = run_cli(["--config", config, "pipeline", "run", pipe, sources, "--json"])
    assert bad.exit_code == 2
    assert "needs input(s) question" in json.loads(bad.stdout)["error"]
    shown = run_cli(["--config", config, "pipeline", "show", pipe, "--format", "mermaid"])
    assert shown.exit_code == 0 and "alpha ==> join" in shown.stdout
    assert "beta --> join" in shown.stdout and "score --> report" in shown.stdout


def test_a_stage_may_use_its_own_adapter(tmp_path, provider, sources):
    with FakeProvider(rules=[("BETA", {"answer": "from the second provider"})]) as other:
        text = TWO.replace('inputs = { question = "BETA: what is beta?" }',
                           'inputs = { question = "BETA: what is beta?" }\n'
                           f'adapter = {{ name = "openai_compatible", base_url = '
                           f'"{other.base_url}", model = "other" }}')
        system = system_for(tmp_path, provider)
        plan = check_pipeline(Pipeline.from_file(write(tmp_path, text)), system.plugins)
        result = run_pipeline(plan, system, sources=[sources], inputs={"question": "q"})
        assert result.stages["beta"].outputs == {"answer": "from the second provider"}
        assert other.stats()["requests"] == 1
    assert provider.stats()["requests"] == 2  # alpha and join


def test_pipeline_section_in_ponder_toml(tmp_path, provider):
    config_path = make_config(tmp_path, provider, TWO)
    config = load_config(config_path)
    pipeline = Pipeline.from_config(config)
    assert [s.name for s in pipeline.stages] == ["alpha", "beta", "join"]
    assert pipeline == Pipeline.from_file(config_path)  # the same file read as a pipeline
    bad = tmp_path / "bad.toml"
    bad.write_text(TWO.replace('uses = "predict"', 'uses = "predikt"'))
    with pytest.raises(PipelineError, match=r"bad.toml: stage 'join': uses: unknown plugin "
                                            r"'predikt'; did you mean 'predict'\?"):
        check_pipeline(Pipeline.from_config(load_config(bad)), system_for(
            tmp_path, provider).plugins)


def test_strategy_stages_with_a_retriever_run_side_by_side(tmp_path, provider, sources):
    text = TWO.replace('uses = "direct"', 'uses = "retrieve_then_read"\nsettings = { top_k = 2 }')
    system = system_for(tmp_path, provider, '[retriever]\nname = "bm25"\n')
    plan = check_pipeline(Pipeline.from_file(write(tmp_path, text)), system.plugins)
    result = run_pipeline(plan, system, sources=[sources], inputs={"question": "q"})
    assert not result.partial, result.note
    assert result.stages["alpha"].outputs == {"answer": "alpha is app.py:1"}
    assert result.stages["beta"].outputs == {"answer": "beta is util.py:1"}
    assert result.stages["alpha"].citations == [{"path": "app.py", "line": 1}]


WIDE = "".join(f'''
[[pipeline.stages]]
name = "s{n}"
uses = "direct"
inputs = {{ question = "ALPHA {n}" }}
''' for n in range(4))


def _most_at_once(spans: dict[str, dict]) -> int:
    """The most stage spans open at one moment (from the recorded starts and ends)."""
    events = sorted([(s["start"], 1) for s in spans.values()]
                    + [(s["end"], -1) for s in spans.values()])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_stage_threads_draw_from_the_runs_one_budget(tmp_path, provider, sources):
    # four independent stages, concurrency 2: two stage threads at a time, never four
    system = system_for(tmp_path, provider)
    system.config.limits.concurrency = 2
    plan = check_pipeline(Pipeline.from_file(write(tmp_path, WIDE)), system.plugins)
    assert plan.levels == [["s0", "s1", "s2", "s3"]]
    result = run_pipeline(plan, system, sources=[sources])
    assert not result.partial, result.note
    assert _most_at_once(stored_spans(system, result.run_id)) == 2
    assert provider.stats()["max_in_flight"] == 2


def test_a_shared_budget_is_borrowed_not_multiplied(tmp_path, provider, sources):
    # an eval's budget: the caller holds one slot, so the pipeline gets that one plus one free
    from ponder.engine.budget import ConcurrencyBudget

    system = system_for(tmp_path, provider)
    system.budget = budget = ConcurrencyBudget(2)
    plan = check_pipeline(Pipeline.from_file(write(tmp_path, WIDE)), system.plugins)
    with budget.slot():
        result = run_pipeline(plan, system, sources=[sources])
    assert not result.partial, result.note
    assert budget.peak == 2 and budget.held == 0
    assert _most_at_once(stored_spans(system, result.run_id)) == 2


def test_check_lists_shape_and_reference_problems_in_one_round(tmp_path, plugins):
    # a misspelt key in one stage used to hide every other problem until it was fixed
    from ponder.pipeline.check import check_file

    text = TWO.replace('name = "beta"', 'name = "beta"\nsetings = { fan_in = 2 }') + \
        """
[[pipeline.stages]]
name = "broken"
uses = 3

[[pipeline.stages]]
name = "late"
uses = "predict"
signature = "a: str, b: str -> answer: str"
inputs = { a = "${alpha.answr}", b = "${broken.answer}" }
"""
    with pytest.raises(PipelineError) as info:
        check_file(write(tmp_path, text), plugins)
    lines = str(info.value).splitlines()
    assert any("stage 'beta': setings: unknown key; did you mean 'settings'?" in x for x in lines)
    assert any("stage 'broken': uses:" in x for x in lines)
    assert any("stage 'late': inputs.a: ${alpha.answr}: unknown field 'answr'" in x
               for x in lines)
    assert not any("unknown stage 'broken'" in x for x in lines)  # reported once, above


def test_a_long_stage_error_is_one_line_in_the_table_and_whole_in_json(tmp_path, provider,
                                                                        sources):
    from ponder.pipeline.run import PipelineResult, StageResult, first_line

    error = "AdapterParseError: Failed to parse field files\n  Input should be a list\n..."
    assert first_line(error) == "AdapterParseError: Failed to parse field files …"
    assert first_line("x" * 300).endswith("…") and len(first_line("x" * 300)) < 170
    from ponder.engine.answer import Usage

    result = PipelineResult("p", {"a": StageResult("a", "failed", error=error)}, {}, Usage(),
                            1.0, "r")
    assert result.note == "0 of 1 stages complete; a failed (" + first_line(error) + ")"
    assert result.to_dict()["stages"]["a"]["error"] == error


def test_mermaid_marks_only_the_critical_paths_own_edges(tmp_path, provider):
    # a -> b -> c is the critical path; the direct edge a -> c is not on it
    text = """
[[pipeline.stages]]
name = "a"
uses = "direct"
inputs = { question = "q" }

[[pipeline.stages]]
name = "b"
uses = "predict"
inputs = { x = "${a.answer}" }

[[pipeline.stages]]
name = "c"
uses = "predict"
inputs = { x = "${b.answer}", y = "${a.answer}" }
"""
    config = str(make_config(tmp_path, provider))
    shown = run_cli(["--config", config, "pipeline", "show", str(write(tmp_path, text)),
                     "--format", "mermaid"])
    assert shown.exit_code == 0, shown.output
    assert "a ==> b" in shown.stdout and "b ==> c" in shown.stdout
    assert "a --> c" in shown.stdout


def test_the_optimizer_side_with_value_value_and_check(tmp_path, plugins):
    # what an optimizer's trial does with `pipeline.stages.<name>.<key>`: read the baseline,
    # set the trial's values, check the result (plugin settings are validated there)
    pipeline = Pipeline.from_file(write(tmp_path, FAN))
    key = "pipeline.stages.entrypoints.settings.fan_in"
    assert pipeline.value(key) is None and pipeline.value(key, 8) == 8
    tuned = pipeline.with_values({key: 2, "stages.per_file.uses": "map_reduce"})
    assert tuned.value(key) == 2 and tuned.get("per_file").uses == "map_reduce"
    assert pipeline.value(key) is None  # immutable: the original is unchanged
    plan = check_pipeline(tuned, plugins)
    assert plan.stages["entrypoints"].settings.fan_in == 2
    with pytest.raises(PipelineError) as info:
        check_pipeline(pipeline.with_value(key, "four"), plugins)
    assert str(info.value) == (f"{pipeline.origin}, Pipeline.with_value('{key}'): stage "
                               "'entrypoints': settings.fan_in: expected int, got 'four'")
    with pytest.raises(PipelineError) as info:
        pipeline.with_value("pipeline.stages.entrypoint.settings.fan_in", 2)
    assert str(info.value).startswith(
        "Pipeline.with_value('pipeline.stages.entrypoint.settings.fan_in'): unknown stage "
        "'entrypoint'; did you mean 'entrypoints'?")
    with pytest.raises(PipelineError) as info:
        pipeline.with_value("pipeline.stages.entrypoints.setings.fan_in", 2)
    assert "'setings' is not a stage key that can change; did you mean 'settings'?" in str(
        info.value)
    with pytest.raises(PipelineError, match=r"expected pipeline\.stages\.<stage>\.<key>"):
        pipeline.with_value("pipeline.entrypoints", 2)


def test_check_json_keeps_a_signature_error_with_its_caret(tmp_path, provider):
    text = TWO.replace('"a: str, b: str -> answer: str"', '"a: str, b: str -> answer: strr"')
    config = str(make_config(tmp_path, provider))
    checked = run_cli(["--config", config, "pipeline", "check", str(write(tmp_path, text)),
                       "--json"])
    assert checked.exit_code == 2
    errors = json.loads(checked.stdout)["errors"]
    assert len(errors) == 1 and "unknown type 'strr'" in errors[0]
    assert errors[0].splitlines()[-1].strip() == "^"  # the caret stays with its error


def test_a_deadline_cancels_in_flight_stages_and_says_so(tmp_path, sources):
    # calls take 2 s: alpha and beta are in flight when the 0.8 s deadline passes
    with FakeProvider(rules=RULES, latency=2.0) as slow:
        system = system_for(tmp_path, slow)
        system.config.limits.timeout = 0.8
        plan = check_pipeline(Pipeline.from_file(write(tmp_path, TWO)), system.plugins)
        result = run_pipeline(plan, system, sources=[sources], inputs={"question": "q"})
    alpha, join = result.stages["alpha"], result.stages["join"]
    assert alpha.status == "failed" and alpha.error == "cancelled: timeout"
    assert alpha.start is not None and alpha.end >= alpha.start  # it ran: its time is kept
    assert alpha.elapsed_s == pytest.approx(alpha.end - alpha.start)
    assert join.status == "skipped" and join.why_skipped == "stopped by timeout"
    assert "join skipped (stopped by timeout)" in result.note


def test_a_misspelt_input_is_named_before_the_missing_one(tmp_path, provider, sources):
    config = str(make_config(tmp_path, provider))
    result = run_cli(["--config", config, "pipeline", "run", str(write(tmp_path, TWO)), sources,
                      "--input", "questoin=q", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"] == (
        "--input questoin: the pipeline reads no input 'questoin'; did you mean 'question'? "
        "(it reads: question)")
    shown = run_cli(["--config", config, "pipeline", "show", str(write(tmp_path, "[[x]]")),
                     "--format", "json"])
    assert shown.exit_code == 2 and json.loads(shown.stdout)["ok"] is False


def test_an_optimizer_names_its_trial_in_errors(tmp_path, plugins):
    pipeline = Pipeline.from_file(write(tmp_path, FAN))
    key = "pipeline.stages.entrypoints.settings.fan_in"
    trial = pipeline.with_values({key: "four"}, origin="optimize trial 7")
    with pytest.raises(PipelineError) as info:
        check_pipeline(trial, plugins)
    assert str(info.value) == (f"{pipeline.origin}, optimize trial 7: {key}: stage "
                               "'entrypoints': settings.fan_in: expected int, got 'four'")
    with pytest.raises(PipelineError) as info:
        pipeline.with_values({"pipeline.stages.nope.uses": "direct"}, origin="optimize trial 8")
    assert str(info.value).startswith("optimize trial 8: pipeline.stages.nope.uses: unknown "
                                      "stage 'nope'")
