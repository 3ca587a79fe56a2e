"""The ``predict`` and ``chain_of_thought`` predictors: registration, settings, modules, calls."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, ClassVar

import pytest

from ponder.engine.services import Services
from ponder.errors import ConfigError
from ponder.kernel.config import structure_settings
from ponder.plugins import _signatures, chain_of_thought, predict
from ponder.plugins._common import PredictorSettings
from ponder.plugins.scripted import ScriptedAdapter, ScriptedSettings
from ponder.testing import plugin_set
from ponder.testing.conformance import PredictorConformance


class TestPredictConformance(PredictorConformance):
    name = "predict"
    plugins = (predict,)


class TestChainOfThoughtConformance(PredictorConformance):
    name = "chain_of_thought"
    plugins = (chain_of_thought,)
    settings: ClassVar[dict[str, Any]] = {"temperature": 0.0}


def test_both_register_with_the_shared_settings_class() -> None:
    plugins = plugin_set(predict, chain_of_thought)
    assert plugins.predictors.names() == ["chain_of_thought", "predict"]
    for name in ("predict", "chain_of_thought"):
        assert plugins.get("predictor", name).settings is PredictorSettings


def test_build_returns_the_dspy_module_for_the_signature() -> None:
    import dspy

    signature = _signatures.answer_signature()
    module = predict.PredictPredictor().build(signature)
    assert type(module) is dspy.Predict and module.signature is signature
    cot = chain_of_thought.ChainOfThoughtPredictor().build(signature)
    assert isinstance(cot, dspy.ChainOfThought)
    assert list(cot.predict.signature.output_fields) == ["reasoning", "answer"]


def test_settings_become_per_call_lm_config() -> None:
    settings = structure_settings(PredictorSettings, {"temperature": 0.2, "max_tokens": 300},
                                  section="predictor")
    assert settings.lm_config() == {"temperature": 0.2, "max_tokens": 300}
    assert PredictorSettings().lm_config() == {}
    module = predict.PredictPredictor(settings).build(_signatures.answer_signature())
    assert module.config == {"temperature": 0.2, "max_tokens": 300}
    with pytest.raises(ConfigError, match=r"predictor\.temperature"):
        structure_settings(PredictorSettings, {"temperature": -1.0}, section="predictor")


@pytest.mark.parametrize("predictor, reasoning", [(predict.PredictPredictor(), False),
                                                  (chain_of_thought.ChainOfThoughtPredictor(),
                                                   True)])
def test_services_predict_runs_through_the_predictor(predictor, reasoning: bool) -> None:
    adapter = ScriptedAdapter(ScriptedSettings(rules=[
        {"pattern": r"`partial_answers`.*48213", "reply": {"answer": "It is 48213 (a.py:3)."}},
    ]))
    services = Services(lm=adapter.build_lm(), model_info=adapter.model_info(),
                        predictor=predictor, progress_mode="silent")
    prediction = services.predict(_signatures.combine_signature(), role="reduce",
                                  question="What is MAGIC_PORT?",
                                  partial_answers="--- finding 1 ---\na.py:3: MAGIC_PORT = 48213")
    assert prediction.answer == "It is 48213 (a.py:3)."
    assert ("`reasoning`" in services.lm.calls[0]["prompt"]) is reasoning
    assert services.usage.calls == 1 and len(services.lm.calls) == 1
    # built once per run and reused
    again = services.module_for(_signatures.combine_signature())
    assert again is services.module_for(_signatures.combine_signature())


def test_signatures_are_built_once_and_ask_for_citations() -> None:
    builders = [_signatures.answer_signature, _signatures.extract_signature,
                _signatures.combine_signature, _signatures.refine_signature,
                _signatures.rlm_signature, _signatures.sub_query_signature]
    for build in builders:
        signature = build()
        assert build() is signature
        assert "`path:line`" in signature.instructions
        assert "does not" in signature.instructions or "NOT FOUND" in signature.instructions
    extract = _signatures.extract_signature()
    assert list(extract.output_fields) == ["relevant_info", "confidence"]


def test_importing_the_shared_modules_is_light() -> None:
    code = ("import sys, ponder.plugins._signatures, ponder.plugins._common, "
            "ponder.plugins.predict, ponder.plugins.chain_of_thought; "
            "print(','.join(m for m in ('dspy', 'litellm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""
