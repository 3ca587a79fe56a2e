"""The fake provider's scripted RLM root: code that searches, reads with llm_query and submits.

The ``rlm`` strategy runs for real (dspy.RLM, the Monty sandbox, the openai_compatible adapter
over loopback HTTP); only the model is fake: root prompts get :func:`rlm_root_code`, sub-calls the
oracle's reply.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from ponder.context.sources import Context, Document
from ponder.engine.services import Services
from ponder.plugins import predict, rlm
from ponder.plugins.openai_compatible import OpenAICompatibleAdapter, OpenAICompatibleSettings
from ponder.testing import plugin_set
from ponder.testing.fake_provider import (
    FakeProvider,
    FakeProviderConfig,
    _build_parser,
    rlm_root_code,
    rlm_root_turn,
)

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
pytest.importorskip("pydantic_monty")

pytestmark = pytest.mark.fault

HOP_A = "def handshake_timeout(): return grace_window_seconds()"
HOP_B = "def grace_window_seconds(): return 731"
LITERAL = "MAGIC_PORT = 48213"


def context() -> Context:
    docs = []
    for i in range(12):
        text = "".join(f"def step_{i}_{k}(x):\n    return x + {k}\n\n" for k in range(30))
        if i == 3:
            text += HOP_B + "\n"
        if i == 9:
            text += f"{HOP_A}\n\n{LITERAL}\n"
        docs.append(Document(path=f"pkg/mod_{i:02d}.py", text=text))
    return Context(documents=docs, sources=["pkg"])


def run_rlm(provider: FakeProvider, question: str) -> tuple[Any, Services]:
    adapter = OpenAICompatibleAdapter(OpenAICompatibleSettings(
        base_url=provider.base_url, model="fake-model", context_window=32_000))
    services = Services(lm=adapter.build_lm(), model_info=adapter.model_info(),
                        predictor=predict.PredictPredictor(),
                        plugin_set=plugin_set(rlm, predict), progress_mode="silent")
    draft = rlm.RLMStrategy(rlm.RLMSettings(max_iterations=4)).run(question, context(), services)
    return draft, services


def test_root_code_looks_first_then_reads_and_submits() -> None:
    first, second = rlm_root_code(1), rlm_root_code(2, pattern=r"MAGIC_\w+", max_hits=3)
    for code in (first, second):
        compile(code, "<rlm-root>", "exec")  # valid Python
    assert "print(" in first and "SUBMIT(" not in first and "llm_query" not in first
    assert "llm_query(prompt)" in second and "SUBMIT(answer=answer)" in second
    assert "PATTERN = 'MAGIC_\\\\w+'" in second and "MAX_HITS = 3" in second


def test_turn_detection_needs_a_code_output_field() -> None:
    root = ("Your input fields are:\n1. `variables_info` (str)\n2. `repl_history`\n"
            "3. `iteration` (str)\nYour output fields are:\n1. `reasoning` (str)\n"
            "2. `code` (str)\n\nAll interactions ...\n[[ ## iteration ## ]]\n3/12\n")
    assert rlm_root_turn(root) == 3
    extract = root.replace("`code`", "`answer`")
    assert rlm_root_turn(extract) is None
    assert rlm_root_turn("Your output fields are:\n1. `code` (str)\n") is None  # no REPL


def test_oracle_two_hop_through_the_rlm_strategy() -> None:
    needles = {"a": HOP_A, "b": HOP_B}
    with FakeProvider(mode="oracle", needles=needles, rlm_root=True, max_lifetime=120) as p:
        draft, services = run_rlm(p, "What value does handshake_timeout() return?")
        stats = p.stats()
    # found by the identifier, then one hop to the definition it calls; read by one sub-call
    assert HOP_A in draft.text and HOP_B in draft.text
    sub_calls = [s for s in services.tracker.spans if s.attributes.get("role") == "sub"]
    assert len(sub_calls) == 1
    assert services.usage.calls == stats["requests"] == 3  # two root turns + the sub-call
    assert stats["failures"]["bad_request"] == 0


def test_pattern_option_and_no_match() -> None:
    with FakeProvider(mode="oracle", needles={"port": LITERAL}, rlm_root=True,
                      rlm_pattern=r"MAGIC_\w+ =", max_lifetime=120) as p:
        draft, _ = run_rlm(p, "Which port is configured?")  # no identifier in the question
        assert LITERAL in draft.text
    with FakeProvider(mode="oracle", needles={"port": LITERAL}, rlm_root=True,
                      rlm_pattern=r"NO_SUCH_NAME", max_lifetime=120) as p:
        draft, services = run_rlm(p, "What is MAGIC_PORT?")
        assert "no lines matching" in draft.text and LITERAL not in draft.text
        assert services.usage.calls == 2  # nothing to read: no sub-call


def test_other_prompts_get_the_mode_reply() -> None:
    import dspy

    with FakeProvider(mode="oracle", needles={"port": LITERAL}, rlm_root=True,
                      max_lifetime=60) as p:
        lm = dspy.LM("openai/fake-model", api_base=p.base_url, api_key="sk-x", cache=False,
                     num_retries=0)
        with dspy.context(lm=lm):
            out = dspy.Predict("text -> answer")(text=f"here: {LITERAL}")
    assert out.answer == LITERAL


def test_config_and_cli() -> None:
    with pytest.raises(ValueError, match="not a valid regex"):
        FakeProviderConfig(rlm_pattern="(")
    with pytest.raises(ValueError):
        FakeProviderConfig(rlm_max_hits=0)
    args = _build_parser().parse_args(["--rlm-root", "--rlm-pattern", "X_\\w+",
                                       "--rlm-max-hits", "5"])
    assert (args.rlm_root, args.rlm_pattern, args.rlm_max_hits) == (True, "X_\\w+", 5)
    assert FakeProviderConfig().rlm_root is False
