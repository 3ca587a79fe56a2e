"""The prompt state (``ponder.engine.prompts``): config round trip, cache tag, applying."""

from __future__ import annotations

import json

import pytest

from ponder.engine.prompts import PromptState, predict_state
from ponder.errors import ConfigError
from ponder.kernel.config import Config


def _state() -> PromptState:
    demo = {"question": "q?", "context": "1| text", "answer": "a", "augmented": True}
    return PromptState({"Answer": predict_state([demo], "Answer briefly.")})


def test_the_state_round_trips_through_a_config_as_json_text() -> None:
    config = _state().with_config(Config())
    table = config.sections["optimize"]["prompts"]
    assert isinstance(table["Answer"], str) and json.loads(table["Answer"])["demos"]
    again = PromptState.from_config(config)
    assert again is not None and again.digest() == _state().digest()
    assert again.instructions_of("Answer") == "Answer briefly."
    assert PromptState.from_config(Config()) is None


def test_the_cache_tag_names_the_state_of_that_signature_only() -> None:
    from ponder.plugins._signatures import answer_signature, combine_signature

    state = _state()
    tag = state.cache_tag(answer_signature())
    assert tag.startswith("+prompts:")
    assert state.cache_tag(combine_signature()) == ""
    other = PromptState({"Answer": predict_state([{"question": "x", "answer": "y"}])})
    assert other.cache_tag(answer_signature()) != tag


@pytest.mark.parametrize("module", ["predict", "chain_of_thought"])
def test_apply_sets_the_demos_and_instructions_on_every_predict_part(module: str) -> None:
    import dspy

    from ponder.plugins._signatures import answer_signature

    signature = answer_signature()
    built = dspy.Predict(signature) if module == "predict" else dspy.ChainOfThought(signature)
    _state().apply(built, signature)
    parts = [p for _, p in built.named_predictors()]
    assert parts and all(len(p.demos) == 1 and p.demos[0].answer == "a" for p in parts)
    assert all(p.signature.instructions == "Answer briefly." for p in parts)


def test_a_state_that_is_not_json_names_its_key() -> None:
    config = Config(sections={"optimize": {"prompts": {"Answer": "{nope"}}},
                    origins={"optimize.prompts.Answer": "best.toml"})
    with pytest.raises(ConfigError, match=r"best.toml: optimize.prompts.Answer: not DSPy JSON"):
        PromptState.from_config(config)


@pytest.mark.parametrize("module", ["predict", "chain_of_thought"])
def test_a_collector_records_each_predict_call_once(module: str) -> None:
    import dspy
    from dspy.utils import DummyLM

    from ponder.engine.prompts import collecting
    from ponder.plugins._signatures import answer_signature

    signature = answer_signature()
    built = dspy.Predict(signature) if module == "predict" else dspy.ChainOfThought(signature)
    with collecting("unit") as collector:
        PromptState(collect="unit").apply(built, signature)
        reply = {"reasoning": "r", "answer": "42"}
        with dspy.context(lm=DummyLM([reply, reply])):
            built(question="q?", context="1| the answer is 42")
            built(question="q2?", context="1| 42")
    assert [(n, i["question"]) for n, i, _ in collector.calls] == [("Answer", "q?"),
                                                                   ("Answer", "q2?")]
    assert collector.calls[0][2]["answer"] == "42"
    assert collector.for_question("q2?") == [collector.calls[1]]
