"""The ``react`` predictor end to end on the scripted model: tools run on the context, the loop is
bounded, failures become observations, and bad settings are clear errors."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import pytest

from ponder.context.sources import Context, Document
from ponder.engine.services import LimitReached
from ponder.errors import ConfigError, PonderError
from ponder.kernel.config import structure_settings
from ponder.plugins import react, tools
from ponder.plugins.react import ReactPredictor, ReactSettings
from ponder.plugins.scripted import ScriptedLM, ScriptExhaustedError
from ponder.testing import plugin_set
from ponder.testing.conformance import PredictorConformance

SETTINGS = "HOST = 'localhost'\nDEBUG = False\nMAGIC_PORT = 48213\n"

#: the extract call (after the loop) is the only prompt whose first output is `reasoning`
EXTRACT = r"Your output fields are:\s*1\. `reasoning`"
#: every loop step asks for `next_tool_name`
STEP = r"`next_tool_name`"


class TestReactConformance(PredictorConformance):
    name = "react"
    plugins = (react,)
    settings: ClassVar[dict[str, Any]] = {"tools": ["search_context"], "max_iters": 3}


def question_signature() -> Any:
    import dspy

    class Ask(dspy.Signature):
        """Answer the question about the loaded files, citing `path:line`."""

        question: str = dspy.InputField()
        answer: str = dspy.OutputField()

    return Ask


def bound_tools(**extra: Any) -> dict[str, Any]:
    context = Context([Document("config/settings.py", SETTINGS),
                       Document("src/app.py", "import settings\nprint(settings.HOST)\n")])
    return {**tools.bind_tools(context), **extra}


def step(tool: str, **args: Any) -> dict[str, Any]:
    return {"next_thought": f"call {tool}", "next_tool_name": tool, "next_tool_args": args}


def run(predictor: ReactPredictor, lm: Any, tool_map: dict[str, Any], **inputs: Any) -> Any:
    import dspy

    module = predictor.build(question_signature(), tools=tool_map)
    with dspy.context(lm=lm):
        return module(**inputs)


def test_the_tool_runs_on_the_context_and_its_result_reaches_the_answer(logged) -> None:
    found = r"observation_0 ## \]\]\n[^\[]*config/settings\.py:3: MAGIC_PORT = 48213"
    lm = ScriptedLM(rules=[
        (EXTRACT + ".*" + found, {"reasoning": "the search found it",
                                  "answer": "MAGIC_PORT is 48213 (config/settings.py:3)"}),
        (STEP + ".*" + found, step("finish")),
        (STEP, step("search_context", query="MAGIC_PORT")),
    ])
    prediction = run(ReactPredictor(), lm, bound_tools(), question="Which port is used?")

    assert prediction.answer == "MAGIC_PORT is 48213 (config/settings.py:3)"
    # only the tool could have put the planted value and its line into a prompt
    assert "48213" not in lm.calls[0]["prompt"]
    assert "config/settings.py:3: MAGIC_PORT = 48213" in lm.calls[1]["prompt"]
    trajectory = prediction.trajectory
    assert trajectory["tool_name_0"] == "search_context"
    assert trajectory["tool_args_0"] == {"query": "MAGIC_PORT"}
    assert trajectory["observation_0"].splitlines() == [
        "1 match for 'MAGIC_PORT' in 1 file (showing 1):",
        "config/settings.py:3: MAGIC_PORT = 48213",
    ]
    assert trajectory["tool_name_1"] == "finish" and "observation_2" not in trajectory
    assert len(lm.calls) == 3  # two steps, one answer
    messages = [record.getMessage() for record in logged]
    assert "react step 1: search_context({'query': 'MAGIC_PORT'})" in messages
    assert any(m.startswith("react step 1: search_context returned") for m in messages)


def test_the_loop_stops_at_max_iters_and_answers_from_the_trajectory(logged) -> None:
    lm = ScriptedLM(rules=[
        (EXTRACT, {"reasoning": "out of steps", "answer": "partial: see trajectory"}),
        (STEP, step("list_files")),  # never finishes
    ])
    predictor = ReactPredictor(ReactSettings(max_iters=3))
    prediction = run(predictor, lm, bound_tools(), question="Loop forever?")
    assert prediction.answer == "partial: see trajectory"
    assert len(lm.calls) == 4  # max_iters steps, then the answer
    assert [k for k in prediction.trajectory if k.startswith("tool_name_")] == [
        "tool_name_0", "tool_name_1", "tool_name_2"]
    assert "config/settings.py (module config.settings, lines 1-3" in \
        prediction.trajectory["observation_2"]
    assert any("no `finish` after 3 steps (max_iters=3)" in r.getMessage() for r in logged)


def test_a_per_call_max_iters_cannot_exceed_the_setting() -> None:
    lm = ScriptedLM(rules=[(EXTRACT, {"answer": "done"}), (STEP, step("list_files"))])
    prediction = run(ReactPredictor(ReactSettings(max_iters=2)), lm, bound_tools(),
                     question="q", max_iters=100)
    assert len(lm.calls) == 3 and "tool_name_2" not in prediction.trajectory


def test_a_failing_tool_becomes_an_observation_and_the_run_goes_on() -> None:
    def explode(path: str) -> str:
        """Always fails."""
        raise RuntimeError(f"disk on fire reading {path}")

    lm = ScriptedLM(rules=[
        (EXTRACT, {"reasoning": "tools failed", "answer": "could not read it"}),
        (STEP + r".*observation_1 ## \]\]", step("finish")),
        (STEP + r".*observation_0 ## \]\]", step("read_lines")),  # missing its `path`
        (STEP, step("explode", path="a.txt")),
    ])
    prediction = run(ReactPredictor(), lm, bound_tools(explode=explode), question="q")
    trajectory = prediction.trajectory
    assert trajectory["observation_0"] == \
        "Execution error in explode: RuntimeError: disk on fire reading a.txt"
    assert trajectory["observation_1"].startswith("Execution error in read_lines: TypeError:")
    assert "path" in trajectory["observation_1"]
    assert trajectory["tool_name_2"] == "finish"
    assert prediction.answer == "could not read it" and len(lm.calls) == 4


def test_a_run_limit_raised_inside_a_tool_still_stops_the_run() -> None:
    def metered(query: str) -> str:
        """Spends budget."""
        raise LimitReached("max_cost", "the cost limit of $1 was reached")

    lm = ScriptedLM(rules=[(EXTRACT, {"answer": "x"}), (STEP, step("metered", query="q"))])
    with pytest.raises(LimitReached, match="cost limit"):
        run(ReactPredictor(), lm, bound_tools(metered=metered), question="q")
    assert len(lm.calls) == 1


def test_a_step_naming_an_unknown_tool_ends_the_loop_not_the_run(logged) -> None:
    lm = ScriptedLM(rules=[
        (EXTRACT, {"reasoning": "no tool", "answer": "answered without tools"}),
        (STEP, step("rm_rf", path="/")),
    ])
    prediction = run(ReactPredictor(), lm, bound_tools(), question="q")
    assert prediction.answer == "answered without tools"
    assert prediction.trajectory == {}
    # the step, DSPy's one JSON retry of it, then the answer
    assert len(lm.calls) == 3
    assert any("did not name a valid tool call" in r.getMessage()
               and r.levelno == logging.WARNING for r in logged)


def test_observations_are_cut_to_max_observation_chars() -> None:
    def flood() -> str:
        """Returns a lot."""
        return "z" * 5000

    lm = ScriptedLM(rules=[(EXTRACT, {"answer": "ok"}),
                           (STEP + r".*observation_0", step("finish")),
                           (STEP, step("flood"))])
    predictor = ReactPredictor(ReactSettings(max_observation_chars=300))
    prediction = run(predictor, lm, {"flood": flood}, question="q")
    observation = prediction.trajectory["observation_0"]
    assert observation.startswith("z" * 300 + "\n[… observation cut at 300 of 5,000")
    assert "z" * 301 not in observation


# --- building ---------------------------------------------------------------------------------
def test_the_settings_choose_and_order_the_tools() -> None:
    predictor = ReactPredictor(ReactSettings(tools=["read_lines", "search_context"]))
    module = predictor.build(question_signature(), tools=bound_tools())
    assert list(module.tools) == ["read_lines", "search_context", "finish"]
    every = ReactPredictor().build(question_signature(), tools=bound_tools())
    assert sorted(every.tools) == ["finish", "list_files", "read_lines", "search_context"]
    assert ReactPredictor.needs_tools is True
    # the model is told each tool's arguments from its type hints and docstring
    instructions = module.react.signature.instructions
    assert "read_lines, whose description is <desc>Return lines `start` to `end`" in instructions


def test_an_unknown_tool_name_is_a_clear_error() -> None:
    predictor = ReactPredictor(ReactSettings(tools=["search_context", "serch_context"]))
    with pytest.raises(ConfigError) as caught:
        predictor.build(question_signature(), tools=bound_tools())
    assert str(caught.value) == (
        "predictor.tools: unknown tool 'serch_context'; did you mean 'search_context'? "
        "(available: list_files, read_lines, search_context)")
    with pytest.raises(ConfigError, match=r"unknown tool 'grep' \(available: none are"):
        ReactPredictor(ReactSettings(tools=["grep"])).build(question_signature(), tools={})


def test_building_without_the_kernels_tools_is_a_clear_error() -> None:
    with pytest.raises(PonderError, match=r"needs the run's tools.*needs_tools = True"):
        ReactPredictor().build(question_signature())


def test_a_tool_named_finish_is_refused() -> None:
    def finish() -> str:
        """Shadows the loop's own finish."""
        return ""

    with pytest.raises(ConfigError, match="may not be named 'finish'"):
        ReactPredictor().build(question_signature(), tools={"finish": finish})


@pytest.mark.parametrize("options, message", [
    ({"max_iters": 0}, r"predictor\.max_iters: 'max_iters' must be >= 1"),
    ({"max_iters": 51}, r"predictor\.max_iters: 'max_iters' must be <= 50"),
    ({"tools": []}, r"predictor\.tools: 'tools' must name at least one tool"),
    ({"tools": ["read_lines", "read_lines"]}, r"names read_lines more than once"),
    ({"tools": "search_context"}, r"predictor\.tools: expected a list of strings"),
    ({"max_observation_chars": 10}, r"predictor\.max_observation_chars"),
])
def test_settings_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        structure_settings(ReactSettings, options, section="predictor")


def test_settings_become_per_call_lm_config_on_both_inner_predictors() -> None:
    settings = structure_settings(ReactSettings, {"temperature": 0.0, "max_tokens": 300,
                                                  "max_iters": 4}, section="predictor")
    module = ReactPredictor(settings).build(question_signature(), tools=bound_tools())
    assert module.max_iters == 4
    assert module.react.config == {"temperature": 0.0, "max_tokens": 300}
    assert module.extract.predict.config == {"temperature": 0.0, "max_tokens": 300}


def test_registered_with_its_settings_class() -> None:
    entry = plugin_set(react).get("predictor", "react")
    assert entry.settings is ReactSettings and entry.factory is ReactPredictor


def test_an_exhausted_script_still_fails_loudly() -> None:
    """The scripted model is strict: a run needing an unscripted reply does not pass quietly."""
    lm = ScriptedLM(rules=[(STEP, step("finish"))])
    with pytest.raises(Exception, match="no reply for call #2") as caught:
        run(ReactPredictor(), lm, bound_tools(), question="q")
    assert isinstance(caught.value.__cause__, ScriptExhaustedError)  # DSPy wraps it


def test_through_services_the_kernel_binds_the_registered_tools_to_the_run_context() -> None:
    from ponder.engine.services import Services
    from ponder.plugins.scripted import ScriptedAdapter, ScriptedSettings

    found = r"observation_0 ## \]\]\n[^\[]*config/settings\.py:3: MAGIC_PORT = 48213"
    adapter = ScriptedAdapter(ScriptedSettings(rules=[
        {"pattern": EXTRACT + ".*" + found, "reply": {"answer": "48213 (config/settings.py:3)"}},
        {"pattern": STEP + ".*" + found, "reply": step("finish")},
        {"pattern": STEP, "reply": step("search_context", query="MAGIC_PORT")},
    ]))
    context = Context([Document("config/settings.py", SETTINGS)])
    services = Services(lm=adapter.build_lm(), model_info=adapter.model_info(),
                        predictor=ReactPredictor(ReactSettings(tools=["search_context"])),
                        plugin_set=plugin_set(react, tools), context=context,
                        progress_mode="silent")
    assert sorted(services.tools) == ["list_files", "read_lines", "search_context"]
    prediction = services.predict(question_signature(), role="agent", question="Which port?")
    assert prediction.answer == "48213 (config/settings.py:3)"
    assert prediction.trajectory["tool_name_0"] == "search_context"
    assert len(services.lm.calls) == 3


def test_the_async_path_runs_the_same_bounded_loop() -> None:
    import asyncio

    import dspy

    def explode(path: str) -> str:
        """Always fails."""
        raise OSError("gone")

    lm = ScriptedLM(rules=[(EXTRACT, {"answer": "async answer"}),
                           (STEP + r".*observation_0", step("rm_rf")),  # invalid: ends loop
                           (STEP, step("explode", path="x"))])
    module = ReactPredictor().build(question_signature(), tools=bound_tools(explode=explode))

    async def main() -> Any:
        with dspy.context(lm=lm):
            return await module.acall(question="q")

    prediction = asyncio.run(main())
    assert prediction.answer == "async answer"
    assert prediction.trajectory["observation_0"] == "Execution error in explode: OSError: gone"
    assert "tool_name_1" not in prediction.trajectory
