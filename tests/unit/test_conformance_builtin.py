"""ponder's first-party plugins pass the same conformance suites third-party authors use."""

from ponder.testing.conformance import (
    AdapterConformance,
    PredictorConformance,
    StrategyConformance,
)


class TestScriptedAdapter(AdapterConformance):
    name = "scripted"


class TestLiteLLMAdapter(AdapterConformance):
    name = "litellm"
    settings = {"model": "openai/gpt-4o-mini", "api_base": "http://127.0.0.1:9/v1"}


class TestOpenAICompatibleAdapter(AdapterConformance):
    name = "openai_compatible"
    settings = {"base_url": "http://127.0.0.1:9/v1"}


class TestGeminiAdapter(AdapterConformance):
    name = "gemini"
    settings = {"api_key": "test-not-a-real-key-000"}


class TestLocalAdapter(AdapterConformance):
    name = "local"


class TestPredict(PredictorConformance):
    name = "predict"


class TestChainOfThought(PredictorConformance):
    name = "chain_of_thought"


class TestDirect(StrategyConformance):
    name = "direct"


class TestMapReduce(StrategyConformance):
    name = "map_reduce"


class TestIterative(StrategyConformance):
    name = "iterative"


class TestHierarchical(StrategyConformance):
    name = "hierarchical"


class TestAuto(StrategyConformance):
    name = "auto"


class TestRLM(StrategyConformance):
    name = "rlm"
