"""The ``scripted`` adapter: a deterministic dspy LM for tests, demos and benchmarks."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import threading

import dspy
import pytest

from ponder.errors import ConfigError
from ponder.kernel.config import structure_settings
from ponder.kernel.kinds import Adapter, ModelInfo
from ponder.plugins import scripted
from ponder.plugins.scripted import (
    ScriptedAdapter,
    ScriptedSettings,
    ScriptExhaustedError,
    load_script_file,
)

ADAPTERS = [dspy.ChatAdapter, dspy.JSONAdapter]


def make_lm(**options):
    """Build through the plugin path: config dict -> settings (cattrs) -> adapter -> LM."""
    settings = structure_settings(ScriptedSettings, options, section="adapter")
    return ScriptedAdapter(settings).build_lm()


def ask(lm, question, adapter=None, module=dspy.Predict, signature="question -> answer"):
    with dspy.context(lm=lm, adapter=adapter or dspy.ChatAdapter()):
        return module(signature)(question=question)


def exhausted(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, ScriptExhaustedError):
            return True
        exc = exc.__cause__
    return False


# -- choosing replies ---------------------------------------------------------------------------
def test_first_matching_rule_wins_over_later_rules_and_replies():
    lm = make_lm(
        rules=[
            {"pattern": "capital of France", "reply": "Paris"},
            {"pattern": "France", "reply": "wrong: a later rule"},
        ],
        replies=["wrong: a reply"],
    )
    assert ask(lm, "What is the capital of France?").answer == "Paris"
    assert lm.calls[0]["source"] == "rule"
    assert lm.calls[0]["which"] == 0


def test_rule_regex_spans_lines():
    lm = make_lm(rules=[{"pattern": "alpha.*omega", "reply": "spanned"}])
    assert ask(lm, "alpha\nbeta\nomega").answer == "spanned"


def test_replies_are_used_in_order_then_default_then_error():
    lm = make_lm(replies=["one", "two"], default="fallback")
    assert [ask(lm, f"q{i}").answer for i in range(4)] == ["one", "two", "fallback", "fallback"]
    assert [c["source"] for c in lm.calls] == ["reply", "reply", "default", "default"]

    strict = make_lm(replies=["only"])
    assert ask(strict, "q").answer == "only"
    with pytest.raises(Exception) as info:
        ask(strict, "q again")
    assert exhausted(info.value)
    assert "no rule matched" in str(info.value)


def test_cycle_restarts_the_replies():
    lm = make_lm(replies=["a", "b"], cycle=True)
    assert [ask(lm, "q").answer for _ in range(5)] == ["a", "b", "a", "b", "a"]


def test_dict_reply_fills_named_fields():
    lm = make_lm(replies=[{"answer": "42", "confidence": "high"}])
    result = ask(lm, "q", signature="question -> answer, confidence")
    assert (result.answer, result.confidence) == ("42", "high")


def test_reset_forgets_calls_and_restarts_replies():
    lm = make_lm(replies=["a", "b"])
    ask(lm, "q")
    lm.reset()
    assert lm.calls == []
    assert ask(lm, "q").answer == "a"


# -- DSPy integration ---------------------------------------------------------------------------
@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.__name__)
@pytest.mark.parametrize("module", [dspy.Predict, dspy.ChainOfThought], ids=["predict", "cot"])
def test_works_under_dspy_modules_and_adapters(adapter, module):
    lm = make_lm(rules=[{"pattern": "capital of France", "reply": "Paris"}])
    result = ask(lm, "What is the capital of France?", adapter=adapter(), module=module)
    assert result.answer == "Paris"
    # exactly one LM call: the reply parsed first time (no ChatAdapter -> JSONAdapter fallback)
    assert len(lm.calls) == 1
    if module is dspy.ChainOfThought:
        assert result.reasoning
    if adapter is dspy.JSONAdapter:
        assert json.loads(lm.calls[0]["reply"])["answer"] == "Paris"
    else:
        assert "[[ ## answer ## ]]" in lm.calls[0]["reply"]


def test_is_a_dspy_lm_and_emits_no_deprecation_warning():
    lm = make_lm(default="ok")
    assert isinstance(lm, dspy.BaseLM)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert ask(lm, "q").answer == "ok"
        assert lm("plain prompt") == ["ok"]


def test_async_calls():
    lm = make_lm(replies=["async ok"])

    async def main():
        with dspy.context(lm=lm):
            return await dspy.Predict("question -> answer").acall(question="q")

    assert asyncio.run(main()).answer == "async ok"


# -- recording and usage ------------------------------------------------------------------------
def test_records_every_call():
    lm = make_lm(rules=[{"pattern": "sky", "reply": "blue"}], replies=["r0"])
    ask(lm, "What colour is the sky?")
    ask(lm, "Something else")
    first, second = lm.calls
    assert first["index"] == 0 and second["index"] == 1
    assert "What colour is the sky?" in first["prompt"]
    assert first["messages"][0]["role"] == "system"
    assert first["prompt"] == "\n\n".join(m["content"] for m in first["messages"])
    assert "blue" in first["reply"]
    assert (second["source"], second["which"]) == ("reply", 0)


def test_reports_usage_as_chars_over_four():
    lm = make_lm(replies=["forty-two"])
    with dspy.context(lm=lm, track_usage=True):
        result = dspy.Predict("question -> answer")(question="How many?")
    call = lm.calls[0]
    expected_prompt = math.ceil(len(call["prompt"]) / 4)
    expected_completion = math.ceil(len(call["reply"]) / 4)
    assert expected_prompt > 0 and expected_completion > 0
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] == expected_prompt
    assert usage["completion_tokens"] == expected_completion
    tracked = result.get_lm_usage()["scripted"]
    assert (tracked["prompt_tokens"], tracked["completion_tokens"]) == (
        expected_prompt,
        expected_completion,
    )


def test_thread_safe_each_reply_used_exactly_once():
    n = 24
    replies = [f"reply-{i}" for i in range(n)]
    lm = make_lm(replies=replies)
    answers: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            answers.append(ask(lm, f"question {i}").answer)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(answers) == sorted(replies)
    assert len(lm.calls) == n
    assert sorted(c["index"] for c in lm.calls) == list(range(n))
    assert sorted(c["which"] for c in lm.calls) == list(range(n))


def test_latency_is_simulated_with_sleep(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(scripted.time, "sleep", slept.append)
    lm = make_lm(replies=["x"], latency_s=0.25)
    ask(lm, "q")
    assert slept == [0.25]


# -- files --------------------------------------------------------------------------------------
def test_loads_rules_and_replies_from_toml(tmp_path):
    script = tmp_path / "script.toml"
    # TOML: top-level keys must come before the array-of-tables
    script.write_text(
        'replies = ["from file"]\ndefault = "file default"\n\n'
        '[[rules]]\npattern = "ping"\nreply = "pong"\n\n'
        '[[rules]]\npattern = "both please"\nreply = { answer = "A", confidence = "low" }\n',
        encoding="utf-8",
    )
    lm = make_lm(file=str(script), replies=["inline first"])
    assert ask(lm, "ping?").answer == "pong"
    assert ask(lm, "other").answer == "inline first"
    assert ask(lm, "other").answer == "from file"
    assert ask(lm, "other").answer == "file default"
    result = ask(lm, "both please", signature="question -> answer, confidence")
    assert (result.answer, result.confidence) == ("A", "low")


def test_loads_json_file(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps({"rules": [{"pattern": "x", "reply": "from json"}], "cycle": True}),
        encoding="utf-8",
    )
    assert ask(make_lm(file=str(script)), "x").answer == "from json"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.toml", None, "cannot read"),
        ("broken.toml", "rules = [", "not valid"),
        ("broken.json", "{", "not valid"),
        ("unknown.toml", 'answers = ["x"]', "unknown keys"),
        ("badrule.json", json.dumps({"rules": [{"pattern": "("}]}), "pattern"),
    ],
)
def test_bad_script_file_is_a_config_error(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_script_file(path)


# -- settings and plugin ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"rules": [{"pattern": "(", "reply": "x"}]}, "adapter.rules"),
        ({"rules": [{"pattern": "x"}]}, "adapter.rules"),
        ({"replies": [3]}, "adapter.replies"),
        ({"latency_s": -1.0}, "adapter.latency_s"),
        ({"context_window": 0}, "adapter.context_window"),
        ({"repiles": ["x"]}, "adapter.repiles"),
    ],
)
def test_invalid_settings_name_the_key(options, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        structure_settings(ScriptedSettings, options, section="adapter")


def test_model_info_and_protocol():
    adapter = ScriptedAdapter(ScriptedSettings(context_window=4096, model="fake"))
    assert isinstance(adapter, Adapter)
    info = adapter.model_info()
    assert info == ModelInfo(model="fake", context_window=4096, max_output_tokens=1024)
    assert info.cost(10_000, 10_000) == 0.0
    assert adapter.build_lm().model == "fake"


def test_python_api_accepts_tuples():
    lm = scripted.ScriptedLM(rules=[("hello", "world")])
    assert ask(lm, "hello?").answer == "world"


def test_registers_through_the_hook():
    registered = {}

    def register(name, factory, *, settings=None):
        registered[name] = (factory, settings)

    scripted.ponder_register_adapters(register)
    assert registered == {"scripted": (ScriptedAdapter, ScriptedSettings)}


def test_plugin_modules_import_without_heavy_dependencies():
    modules = ["scripted", "local", "litellm_adapter", "gemini", "openai_compatible"]
    code = (
        "import sys\n"
        + "".join(f"import ponder.plugins.{m}\n" for m in modules)
        + "print(sorted(m for m in ('dspy', 'litellm', 'llama_cpp', 'openai') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
