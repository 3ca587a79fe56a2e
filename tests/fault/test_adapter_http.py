"""The hosted-model adapters (litellm, openai_compatible, gemini) over real loopback HTTP.

litellm and openai_compatible talk to :class:`FakeProvider` (OpenAI's chat-completions API).
Gemini's API has another shape (``POST {base}/models/{model}:generateContent``, key in the
``x-goog-api-key`` header), so the gemini adapter is pointed with ``api_base`` at a small
Gemini-shaped stub defined here, which records what litellm really sent. Nothing is mocked.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from dspy.utils.exceptions import LMError

from ponder.errors import ConfigError
from ponder.kernel.config import structure_settings
from ponder.plugins.gemini import DEFAULT_MODEL, GeminiAdapter, GeminiSettings
from ponder.plugins.litellm_adapter import (
    FALLBACK_CONTEXT_WINDOW,
    LiteLLMAdapter,
    LiteLLMSettings,
)
from ponder.plugins.openai_compatible import (
    NO_KEY,
    OpenAICompatibleAdapter,
    OpenAICompatibleSettings,
)
from ponder.testing.fake_provider import FakeProvider

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

pytestmark = pytest.mark.fault

KEY = "sk-fake-right-0123456789"


@pytest.fixture(scope="module")
def dspy():
    import dspy as _dspy

    return _dspy


@pytest.fixture(scope="module")
def litellm():
    import litellm as _litellm

    _litellm.suppress_debug_info = True
    return _litellm


@pytest.fixture
def provider(request: pytest.FixtureRequest):
    config = getattr(request, "param", None) or {}
    options = {"max_lifetime": 120, "rules": [("capital of France", "Paris")], **config}
    with FakeProvider(**options) as p:
        yield p


def predict(dspy, lm, question="What is the capital of France?"):
    with dspy.context(lm=lm):
        return dspy.Predict("question -> answer")(question=question)


def litellm_adapter(provider, **options) -> LiteLLMAdapter:
    options = {
        "model": "openai/fake-model",
        "api_base": provider.base_url,
        "api_key": "sk-any-key-0123456789",  # the fake accepts any key unless it is given one
        **options,
    }
    return LiteLLMAdapter(structure_settings(LiteLLMSettings, options, section="adapter"))


def compatible_adapter(provider, **options) -> OpenAICompatibleAdapter:
    options = {"base_url": provider.base_url, "model": "fake-model", **options}
    settings = structure_settings(OpenAICompatibleSettings, options, section="adapter")
    return OpenAICompatibleAdapter(settings)


# ------------------------------------------------------------------------------------ litellm
def test_litellm_predict_returns_the_fake_reply(dspy, provider):
    result = predict(dspy, litellm_adapter(provider).build_lm())
    assert result.answer == "Paris"
    assert provider.stats()["requests"] == 1


@pytest.mark.parametrize("provider", [{"api_key": KEY}], indirect=True)
def test_litellm_env_secret_reaches_the_server(dspy, provider, monkeypatch):
    monkeypatch.setenv("PONDER_TEST_KEY", KEY)
    lm = litellm_adapter(provider, api_key="$env:PONDER_TEST_KEY").build_lm()
    assert predict(dspy, lm).answer == "Paris"
    assert provider.stats()["failures"].get("auth", 0) == 0

    monkeypatch.setenv("PONDER_TEST_KEY", "sk-fake-wrong-0123456789")
    wrong = litellm_adapter(provider, api_key="$env:PONDER_TEST_KEY").build_lm()
    with pytest.raises(LMError, match=r"(?i)auth|api key"):
        predict(dspy, wrong)
    stats = provider.stats()
    assert stats["failures"]["auth"] == 1
    assert stats["requests"] == 2  # one accepted, one refused, and the refusal not retried


@pytest.mark.parametrize("kind", ["server_error", "rate_limit"])
def test_litellm_layer_does_not_retry(dspy, kind):
    with FakeProvider(max_lifetime=120, fail_first_n=1, fail_first_kind=kind) as fake:
        lm = litellm_adapter(fake).build_lm()
        with pytest.raises(LMError) as info:
            lm("hello")
        stats = fake.stats()
    assert stats["requests"] == 1, f"{kind}: litellm/openai retried under ponder's retry layer"
    assert sum(stats["failures"].values()) == 1
    assert getattr(info.value, "status", None) in {429, 500, 503}


def test_litellm_timeout_is_one_attempt(dspy):
    with FakeProvider(
        max_lifetime=120, fail_first_n=1, fail_first_kind="timeout", timeout_sleep=5
    ) as fake:
        lm = litellm_adapter(fake, timeout_s=0.5).build_lm()
        with pytest.raises(LMError, match=r"(?i)time"):
            lm("hello")
        assert fake.stats()["requests"] == 1


def test_litellm_extra_reaches_the_request(dspy, provider):
    adapter = litellm_adapter(provider, extra={"extra_headers": {"X-Fake-Reply": "from extra"}})
    assert predict(dspy, adapter.build_lm()).answer == "from extra"


def test_litellm_lm_is_built_without_retries_or_cache(provider):
    lm = litellm_adapter(provider).build_lm()
    assert lm.num_retries == 0
    assert lm.cache is False
    assert lm.engine == "litellm"


def test_litellm_model_info_from_the_bundled_map(litellm):
    known = litellm.get_model_info("openai/gpt-4o-mini")
    info = LiteLLMAdapter(LiteLLMSettings(model="openai/gpt-4o-mini")).model_info()
    assert info.context_window == known["max_input_tokens"]
    assert info.input_cost_per_token == known["input_cost_per_token"] > 0
    assert info.output_cost_per_token == known["output_cost_per_token"] > 0
    assert info.max_output_tokens == 1024


def test_litellm_model_info_settings_override_the_map():
    settings = LiteLLMSettings(
        model="openai/gpt-4o-mini",
        context_window=1000,
        input_cost_per_token=0.5,
        output_cost_per_token=0.25,
    )
    info = LiteLLMAdapter(settings).model_info()
    assert (info.context_window, info.input_cost_per_token, info.output_cost_per_token) == (
        1000,
        0.5,
        0.25,
    )


def test_litellm_unknown_model_falls_back_with_a_note(caplog):
    with caplog.at_level(logging.WARNING, logger="ponder.plugins.litellm_adapter"):
        info = LiteLLMAdapter(LiteLLMSettings(model="openai/no-such-model-xyz")).model_info()
    assert info.context_window == FALLBACK_CONTEXT_WINDOW
    assert info.input_cost_per_token == 0.0
    assert "context_window" in caplog.text


def test_litellm_without_model_is_a_config_error():
    adapter = LiteLLMAdapter(LiteLLMSettings())
    with pytest.raises(ConfigError, match="model"):
        adapter.build_lm()
    with pytest.raises(ConfigError, match="model"):
        adapter.model_info()


@pytest.mark.parametrize("bad", [{"num_retries": 3}, {"cache": True}])
def test_litellm_extra_cannot_add_a_retry_layer(bad):
    with pytest.raises(ConfigError, match=r"adapter\.extra"):
        structure_settings(LiteLLMSettings, {"model": "openai/x", "extra": bad}, section="adapter")


# -------------------------------------------------------------------------- openai_compatible
def test_compatible_predict_returns_the_fake_reply(dspy, provider):
    adapter = compatible_adapter(provider)
    assert adapter.litellm_model == "openai/fake-model"
    assert predict(dspy, adapter.build_lm()).answer == "Paris"
    assert provider.stats()["requests"] == 1


@pytest.mark.parametrize("provider", [{"api_key": NO_KEY}], indirect=True)
def test_compatible_without_key_sends_the_dummy_not_the_ambient_key(dspy, provider, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient-should-not-be-sent")
    assert predict(dspy, compatible_adapter(provider).build_lm()).answer == "Paris"
    assert provider.stats()["failures"].get("auth", 0) == 0


@pytest.mark.parametrize("provider", [{"api_key": KEY}], indirect=True)
def test_compatible_file_secret_reaches_the_server(dspy, provider, tmp_path):
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    adapter = compatible_adapter(provider, api_key=f"$file:{key_file}")
    assert predict(dspy, adapter.build_lm()).answer == "Paris"

    with pytest.raises(LMError, match=r"(?i)auth|api key"):
        predict(dspy, compatible_adapter(provider).build_lm())  # no key: the dummy is refused
    assert provider.stats()["failures"]["auth"] == 1


def test_compatible_does_not_retry():
    with FakeProvider(max_lifetime=120, fail_first_n=1, fail_first_kind="server_error") as fake:
        with pytest.raises(LMError):
            compatible_adapter(fake).build_lm()("hello")
        assert fake.stats()["requests"] == 1


def test_compatible_settings():
    adapter = OpenAICompatibleAdapter(OpenAICompatibleSettings(base_url="http://h:1/v1"))
    info = adapter.model_info()
    assert (info.context_window, info.input_cost_per_token, info.output_cost_per_token) == (
        8192,
        0.0,
        0.0,
    )
    with pytest.raises(ConfigError, match="base_url"):
        OpenAICompatibleAdapter(OpenAICompatibleSettings()).build_lm()
    with pytest.raises(ConfigError, match=r"adapter\.base_url"):
        structure_settings(OpenAICompatibleSettings, {"base_url": "localhost"}, section="adapter")


# ------------------------------------------------------------------------------------- gemini
class GeminiStub:
    """A loopback server shaped like Google's Gemini API; records each request."""

    def __init__(self, reply: str = "Paris", fail_first: int = 0):
        self.reply = reply
        self.fail_first = fail_first
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(
                    {"path": self.path, "key": self.headers.get("x-goog-api-key"), "body": body}
                )
                if len(stub.requests) <= stub.fail_first:
                    status = 500
                    out: dict[str, Any] = {
                        "error": {"code": 500, "message": "stub failure", "status": "INTERNAL"}
                    }
                else:
                    status, out = 200, stub.answer(body)
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        from ponder.support.dspy_format import format_for_dspy

        system = " ".join(
            p.get("text", "") for p in body.get("system_instruction", {}).get("parts", [])
        )
        messages = [{"role": "system", "content": system}] + [
            {
                "role": c.get("role", "user"),
                "content": " ".join(p.get("text", "") for p in c["parts"]),
            }
            for c in body.get("contents", [])
        ]
        text = format_for_dspy(messages, self.reply)
        return {
            "candidates": [
                {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP"}
            ],
            "usageMetadata": {
                "promptTokenCount": 11,
                "candidatesTokenCount": 3,
                "totalTokenCount": 14,
            },
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1beta"

    def __enter__(self) -> GeminiStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def no_gemini_env(monkeypatch):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def gemini_adapter(stub: GeminiStub, **options) -> GeminiAdapter:
    options = {"api_base": stub.base_url, **options}
    return GeminiAdapter(structure_settings(GeminiSettings, options, section="adapter"))


def test_gemini_predict_with_key_from_env_and_thinking_off(dspy, no_gemini_env, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "gk-from-env-0123456789")
    with GeminiStub() as stub:
        result = predict(dspy, gemini_adapter(stub).build_lm())
    assert result.answer == "Paris"
    (request,) = stub.requests
    assert request["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request["key"] == "gk-from-env-0123456789"
    config = request["body"]["generationConfig"]
    assert config["thinkingConfig"]["thinkingBudget"] == 0
    assert config["temperature"] == 0.0


def test_gemini_google_api_key_and_thinking_budget(dspy, no_gemini_env, monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "gk-google-0123456789")
    with GeminiStub() as stub:
        predict(dspy, gemini_adapter(stub, thinking_budget=512).build_lm())
    (request,) = stub.requests
    assert request["key"] == "gk-google-0123456789"
    assert request["body"]["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 512


def test_gemini_settings_secret_wins_over_env(dspy, no_gemini_env, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "gk-ambient-0123456789")
    monkeypatch.setenv("MY_GEMINI", "gk-configured-0123456789")
    with GeminiStub() as stub:
        predict(dspy, gemini_adapter(stub, api_key="$env:MY_GEMINI").build_lm())
    assert stub.requests[0]["key"] == "gk-configured-0123456789"


def test_gemini_does_not_retry(dspy, no_gemini_env, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "gk-from-env-0123456789")
    with GeminiStub(fail_first=1) as stub, pytest.raises(LMError):
        gemini_adapter(stub).build_lm()("hello")
    assert len(stub.requests) == 1


def test_gemini_without_key_names_the_variables(no_gemini_env):
    with pytest.raises(ConfigError) as info:
        GeminiAdapter(GeminiSettings()).build_lm()
    assert "GEMINI_API_KEY" in str(info.value)
    assert "GOOGLE_API_KEY" in str(info.value)


def test_gemini_thinking_on_a_model_without_it_is_a_config_error(no_gemini_env, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "gk-from-env-0123456789")
    settings = GeminiSettings(model="gemini/gemini-2.0-flash", thinking_budget=256)
    with pytest.raises(ConfigError, match="thinking"):
        GeminiAdapter(settings).build_lm()


def test_gemini_model_info_from_the_bundled_map(litellm):
    known = litellm.get_model_info(DEFAULT_MODEL)
    info = GeminiAdapter(GeminiSettings()).model_info()
    assert info.model == DEFAULT_MODEL
    assert info.context_window == known["max_input_tokens"] >= 1_000_000
    assert info.input_cost_per_token == known["input_cost_per_token"] > 0
    assert info.output_cost_per_token == known["output_cost_per_token"] > 0
    assert GeminiAdapter(GeminiSettings(model="gemini-2.5-flash")).litellm_model == DEFAULT_MODEL
