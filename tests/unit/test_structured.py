"""The ``structured`` predictor: typed outputs validated, one JSON retry, then a clear error."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from ponder.engine.services import Services
from ponder.plugins import structured
from ponder.plugins._common import PredictorSettings
from ponder.plugins.scripted import ScriptedAdapter, ScriptedLM, ScriptedSettings
from ponder.plugins.structured import StructuredOutputError, StructuredPredictor
from ponder.signatures.schema import ConfidenceLabel, Embedding, Probability
from ponder.testing import plugin_set
from ponder.testing.conformance import PredictorConformance

JSON_PROMPT = "Outputs will be a JSON object with the following fields."


class TestStructuredConformance(PredictorConformance):
    name = "structured"
    plugins = (structured,)
    settings: ClassVar[dict[str, Any]] = {"temperature": 0.0, "max_tokens": 256}


_signature: Any = None


def rate_signature() -> Any:
    global _signature
    if _signature is None:
        import dspy

        class Rate(dspy.Signature):
            """Rate how likely the claim is true."""

            claim: str = dspy.InputField()
            probability: Probability = dspy.OutputField()
            confidence: ConfidenceLabel = dspy.OutputField()
            vector: Embedding(3) = dspy.OutputField(desc="an embedding of the claim")
            sources: int = dspy.OutputField()

        _signature = Rate
    return _signature


def reply(**changes: Any) -> dict[str, Any]:
    values = {"probability": 0.25, "confidence": "low", "vector": [0.5, 1, -2], "sources": 2}
    return {**values, **changes}


def run(lm: Any, predictor: StructuredPredictor | None = None, **context: Any) -> Any:
    import dspy

    module = (predictor or StructuredPredictor()).build(rate_signature())
    with dspy.context(lm=lm, **context):
        return module(claim="The sky is green.")


def is_json_prompt(call: dict[str, Any]) -> bool:
    return JSON_PROMPT in call["prompt"]


def test_a_valid_reply_passes_with_typed_values_in_one_call() -> None:
    lm = ScriptedLM(replies=[reply(probability="0.25", sources="2")])
    prediction = run(lm)
    assert prediction.probability == 0.25 and isinstance(prediction.probability, float)
    assert prediction.confidence == "low"
    assert prediction.vector == [0.5, 1.0, -2.0]
    assert all(isinstance(x, float) for x in prediction.vector)
    assert prediction.sources == 2 and isinstance(prediction.sources, int)
    assert len(lm.calls) == 1 and not is_json_prompt(lm.calls[0])
    assert "[[ ## probability ## ]]\n0.25" in lm.calls[0]["reply"]  # the chat format


def test_the_model_is_told_each_constraint() -> None:
    lm = ScriptedLM(replies=[reply()])
    run(lm)
    prompt = lm.calls[0]["prompt"]
    assert "`probability` (float): a probability in [0, 1]" in prompt
    assert "`vector` (list[float]): an embedding of the claim (a list of exactly 3 finite " \
           "floats)" in prompt


@pytest.mark.parametrize("bad", [1.7, "1.7", -0.5])
def test_an_out_of_range_value_is_retried_once_with_the_json_adapter(bad: Any, logged) -> None:
    lm = ScriptedLM(replies=[reply(probability=bad), reply(probability=0.75)])
    prediction = run(lm)
    assert prediction.probability == 0.75
    assert len(lm.calls) == 2
    assert not is_json_prompt(lm.calls[0]) and is_json_prompt(lm.calls[1])
    assert lm.calls[1]["reply"].startswith("{")  # answered as the JSON adapter asked
    assert any("ChatAdapter reply for Rate does not fit: field 'probability': expected a "
               "probability in [0, 1]" in r.getMessage() for r in logged)


def test_an_unparseable_value_is_retried_with_json_and_may_then_pass() -> None:
    lm = ScriptedLM(replies=[reply(probability="very"), reply(probability="0.5")])
    prediction = run(lm)
    assert prediction.probability == 0.5 and len(lm.calls) == 2
    assert is_json_prompt(lm.calls[1])


def test_still_invalid_after_the_retry_raises_naming_signature_field_and_error() -> None:
    lm = ScriptedLM(replies=[reply(probability="very"), reply(probability=1.7)])
    with pytest.raises(StructuredOutputError) as caught:
        run(lm)
    error = caught.value
    assert error.signature == "Rate" and error.field == "probability"
    message = str(error)
    assert message.startswith("signature 'Rate': the model's reply does not fit the declared "
                              "output types, even after a retry with JSONAdapter: field "
                              "'probability': expected a probability in [0, 1], got 1.7")
    assert "first try, ChatAdapter: field 'probability': the reply could not be parsed as a " \
           "probability in [0, 1]" in message
    assert len(error.errors) == 2
    assert error.get_lm_usage() == {}  # usage tracking was off
    # exactly one retry: DSPy's own ChatAdapter -> JSON fallback is off
    assert len(lm.calls) == 2 and [is_json_prompt(c) for c in lm.calls] == [False, True]


def test_an_embedding_of_the_wrong_size_or_with_nan_is_never_accepted() -> None:
    lm = ScriptedLM(replies=[reply(vector=[1.0, 2.0]), reply(vector=[1.0, "nan", 3.0])])
    with pytest.raises(StructuredOutputError) as caught:
        run(lm)
    assert caught.value.field == "vector"
    assert caught.value.errors == [
        "field 'vector': expected a list of exactly 3 finite floats, got a list of 2 values",
        "field 'vector': expected a list of exactly 3 finite floats, got a list of 3 values "
        "(item 1 is nan, not a finite number)",
    ]


def test_a_reply_missing_a_field_is_retried_then_named() -> None:
    partial = "[[ ## probability ## ]]\n0.5\n\n[[ ## completed ## ]]"
    lm = ScriptedLM(replies=[partial, {"probability": 0.5}])  # JSON retry: placeholders only
    with pytest.raises(StructuredOutputError) as caught:
        run(lm)
    assert "ChatAdapter: the reply lacks field(s) 'confidence', 'vector', 'sources'" in \
        str(caught.value)
    assert caught.value.field == "vector"  # the JSON retry's placeholder [] has 0 values


def test_a_configured_dspy_adapter_does_not_change_the_order() -> None:
    import dspy

    lm = ScriptedLM(replies=[reply(confidence="very"), reply()])
    prediction = run(lm, adapter=dspy.JSONAdapter())
    assert prediction.confidence == "low"
    assert [is_json_prompt(c) for c in lm.calls] == [False, True]


def test_settings_become_per_call_lm_config() -> None:
    settings = PredictorSettings(temperature=0.0, max_tokens=256)
    module = StructuredPredictor(settings).build(rate_signature())
    assert module.predict.config == {"temperature": 0.0, "max_tokens": 256}
    assert plugin_set(structured).get("predictor", "structured").settings is PredictorSettings


def test_through_services_a_bad_reply_is_not_retried_by_the_kernel() -> None:
    adapter = ScriptedAdapter(ScriptedSettings(replies=[reply(probability=3), reply(probability=4),
                                                        reply()]))
    services = Services(lm=adapter.build_lm(), model_info=adapter.model_info(),
                        predictor=StructuredPredictor(), progress_mode="silent")
    with pytest.raises(StructuredOutputError, match="got 4"):
        services.predict(rate_signature(), role="rate", claim="x")
    assert len(services.lm.calls) == 2 and services.usage.retries == 0
    prediction = services.predict(rate_signature(), role="rate", claim="x")
    assert prediction.probability == 0.25 and len(services.lm.calls) == 3


def test_the_async_path_validates_and_retries_the_same_way() -> None:
    import dspy

    lm = ScriptedLM(replies=[reply(sources="many"), reply(sources=7)])
    module = StructuredPredictor().build(rate_signature())

    async def main() -> Any:
        with dspy.context(lm=lm):
            return await module.acall(claim="x")

    prediction = asyncio.run(main())
    assert prediction.sources == 7 and [is_json_prompt(c) for c in lm.calls] == [False, True]


def test_the_json_retry_is_metered_with_the_first_try() -> None:
    adapter = ScriptedAdapter(ScriptedSettings(replies=[reply(probability=3), reply()]))
    services = Services(lm=adapter.build_lm(), model_info=adapter.model_info(),
                        predictor=StructuredPredictor(), progress_mode="silent")
    services.predict(rate_signature(), role="rate", claim="x")
    calls = services.lm.calls
    assert len(calls) == 2
    assert services.usage.input_tokens == calls[0]["prompt_tokens"] + calls[1]["prompt_tokens"]
    assert services.usage.output_tokens == \
        calls[0]["completion_tokens"] + calls[1]["completion_tokens"]


def test_a_failed_prediction_reports_the_tokens_both_attempts_used() -> None:
    import dspy

    lm = ScriptedLM(replies=[reply(probability=2), reply(probability=3)])
    module = StructuredPredictor().build(rate_signature())
    with dspy.context(lm=lm, track_usage=True), pytest.raises(StructuredOutputError) as caught:
        module(claim="x")
    usage = caught.value.get_lm_usage()["scripted"]
    assert usage["prompt_tokens"] == sum(call["prompt_tokens"] for call in lm.calls)
    assert usage["completion_tokens"] == sum(call["completion_tokens"] for call in lm.calls)
