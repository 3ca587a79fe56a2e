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


class TestRetrieveThenRead(StrategyConformance):
    name = "retrieve_then_read"


def test_every_first_party_plugin_has_a_conformance_suite():
    """A new first-party plugin cannot land without running its kind's suite somewhere."""
    import ast
    from pathlib import Path

    from ponder.kernel.loader import load_plugins

    plugins = load_plugins(strict=True)
    registered = {(kind, name)
                  for kind, registry in plugins.registries.items()
                  for name in registry.names()
                  if registry.entry(name).provider.distribution == "ponder"}
    covered = set()
    for path in Path(__file__).parents[1].rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
            kind = next((k for k in ("Adapter", "Strategy", "Predictor", "Retriever", "Storage",
                                     "Tool", "Metric", "Optimizer", "Executor", "Exporter")
                         if any(b.endswith(f"{k}Conformance") for b in bases)),
                        None)
            for item in node.body:
                if (kind and isinstance(item, (ast.Assign, ast.AnnAssign))
                        and getattr(item.targets[0] if isinstance(item, ast.Assign)
                                    else item.target, "id", "") == "name"
                        and isinstance(item.value, ast.Constant)):
                    covered.add((kind.lower(), item.value.value))
    assert len(covered) >= 20
    assert registered - covered == set()
