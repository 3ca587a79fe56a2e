"""The hosted adapters on dspy's native engine (``dspy.lm15``), over real loopback HTTP.

``openai_compatible`` declares its server to lm15 (one provider per base URL) and must not
import litellm to make a call; errors keep the classes and fields ponder's retry and fallback
layers read. Also: dspy's truncation warning is reported once in ponder's words, and the
embedded demo model says once what it is.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from ponder.kernel.config import structure_settings
from ponder.plugins._native_lm import declare_openai_compatible, provider_id
from ponder.plugins.openai_compatible import OpenAICompatibleAdapter, OpenAICompatibleSettings
from ponder.support.retry import is_retryable, retry_after
from ponder.testing.fake_provider import FakeProvider

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

pytestmark = pytest.mark.fault


def adapter(provider: FakeProvider, **options) -> OpenAICompatibleAdapter:
    settings = {"base_url": provider.base_url, "model": "fake-model", **options}
    return OpenAICompatibleAdapter(structure_settings(OpenAICompatibleSettings, settings,
                                                      section="adapter"))


def test_a_call_goes_out_without_importing_litellm(tmp_path) -> None:
    """In a fresh process: one openai_compatible call, and litellm never imported."""
    script = textwrap.dedent("""
        import json, sys
        from ponder.testing.fake_provider import FakeProvider
        from ponder.kernel.config import structure_settings
        from ponder.plugins.openai_compatible import (OpenAICompatibleAdapter,
                                                      OpenAICompatibleSettings)
        import dspy
        with FakeProvider(default_reply="Paris", max_lifetime=60) as p:
            s = structure_settings(OpenAICompatibleSettings,
                                   {"base_url": p.base_url, "model": "m"}, section="adapter")
            lm = OpenAICompatibleAdapter(s).build_lm()
            out = lm("What is the capital of France?")
            print(json.dumps({"out": out, "litellm": "litellm" in sys.modules,
                              "requests": p.stats()["requests"]}))
    """)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["requests"] == 1 and "Paris" in result["out"][0]
    assert result["litellm"] is False


def test_the_server_is_declared_once_per_base_url() -> None:
    a = declare_openai_compatible("http://127.0.0.1:1/v1")
    assert declare_openai_compatible("http://127.0.0.1:1/v1/") == a == provider_id(
        "http://127.0.0.1:1/v1")
    assert declare_openai_compatible("http://127.0.0.1:2/v1") != a


def test_requests_carry_max_tokens_and_the_key() -> None:
    seen: list[dict] = []
    with FakeProvider(default_reply="ok", api_key="sk-native-0123456789",
                      max_lifetime=60) as provider:
        original = provider._parse_request

        def record(h, kind, body):  # the provider's own parser, keeping what arrived
            seen.append(body)
            return original(h, kind, body)

        provider._parse_request = record  # type: ignore[method-assign]
        lm = adapter(provider, api_key="sk-native-0123456789", max_output_tokens=77).build_lm()
        lm("hi")
    assert seen[0]["max_tokens"] == 77 and "max_completion_tokens" not in seen[0]
    assert seen[0]["model"] == "fake-model"


def test_a_declared_server_skips_dspys_per_call_plan_unless_litellm_must_carry_a_setting(
) -> None:
    """No ``extra`` client setting only litellm carries: ``engine="lm15"`` (dspy then does not
    build and encode each request twice to plan it); with ``extra_headers``: ``"auto"``, and
    that call goes through litellm with the header. Both reach the server."""
    headers: list[dict] = []
    with FakeProvider(default_reply="ok", max_lifetime=60) as provider:
        original = provider._parse_request

        def record(h, kind, body):
            headers.append(dict(h.headers))
            return original(h, kind, body)

        provider._parse_request = record  # type: ignore[method-assign]
        plain = adapter(provider, extra={"top_p": 0.5}).build_lm()
        assert plain._engine_spec == "lm15" and plain("hi") == ["ok"]
        carried = adapter(provider, extra={"extra_headers": {"X-Ponder-Test": "1"}}).build_lm()
        assert carried._engine_spec == "auto" and carried("hi") == ["ok"]
    assert headers[-1].get("X-Ponder-Test") == "1"
    assert "X-Ponder-Test" not in headers[0]


@pytest.mark.parametrize("kind, status, retryable", [
    ("rate_limit", 429, True), ("server_error", None, True), ("malformed", None, True)])
def test_errors_keep_what_retry_reads(kind, status, retryable) -> None:
    from dspy.utils.exceptions import LMError

    with FakeProvider(fail_first_n=1, fail_first_kind=kind, retry_after=3,
                      max_lifetime=60) as provider, pytest.raises(LMError) as info:
        adapter(provider).build_lm()("hello")
    assert is_retryable(info.value) is retryable
    if status is not None:
        assert info.value.status == status
        assert retry_after(info.value) == pytest.approx(3.0)


def test_a_reply_with_no_choices_is_retried_as_an_empty_reply() -> None:
    """Two empty-choices replies in a row (the call, then dspy's JSON fallback) end in dspy's
    AdapterParseError; ponder retries that as the empty reply it is, counts both requests as
    failed ones, and the third request answers."""
    from dspy.utils.exceptions import AdapterParseError

    from ponder.engine.failures import failure_kind
    from ponder.engine.services import Services
    from ponder.plugins._signatures import answer_signature
    from ponder.plugins.predict import PredictPredictor
    from ponder.support.retry import RetryPolicy, reached_provider

    with FakeProvider(fail_first_n=2, fail_first_kind="empty_choices", max_lifetime=60) as p:
        lm_adapter = adapter(p)
        services = Services(lm=lm_adapter.build_lm(), model_info=lm_adapter.model_info(),
                            predictor=PredictPredictor(),
                            retry=RetryPolicy(max_retries=2, base_delay=0.01, jitter=0.0))
        prediction = services.predict(answer_signature(), role="answer", question="q?",
                                      context="some text")
        assert prediction.answer and services.usage.retries == 1
        assert p.stats()["requests"] == 3 == services.usage.calls + 2
    with FakeProvider(fail_first_n=2, fail_first_kind="empty_choices", max_lifetime=60) as p:
        import dspy

        with pytest.raises(AdapterParseError) as info:
            dspy.Predict(answer_signature())(question="q?", context="x", lm=adapter(p).build_lm())
    assert is_retryable(info.value) and reached_provider(info.value)
    assert failure_kind(info.value) == "empty reply"


def test_auth_errors_are_not_retried() -> None:
    from dspy.utils.exceptions import LMAuthError

    with FakeProvider(api_key="sk-right-0123456789", max_lifetime=60) as provider, \
            pytest.raises(LMAuthError) as info:
        adapter(provider, api_key="sk-wrong-0123456789").build_lm()("hello")
    assert not is_retryable(info.value)


def test_truncation_is_reported_once_in_ponders_words(caplog) -> None:
    from ponder.plugins._native_lm import _truncation_state, report_truncation_once

    _truncation_state["reported"] = False
    report_truncation_once("local", 512)
    dspy_log = logging.getLogger("dspy.clients.lm")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # what dspy logs on every cut-off reply
            dspy_log.warning("LM response was truncated; increase max_tokens or inspect history.")
        dspy_log.warning("something else")
    ours = [r for r in caplog.records if r.name == "ponder"]
    assert len(ours) == 1
    assert "adapter] max_output_tokens" in ours[0].getMessage()
    assert "512" in ours[0].getMessage()
    assert not [r for r in caplog.records if "increase max_tokens" in r.getMessage()]
    assert [r for r in caplog.records if r.getMessage() == "something else"]


def test_the_demo_model_says_once_what_it_is() -> None:
    from ponder.plugins import local

    local._demo_said.clear()
    stream = io.StringIO()
    assert local.say_demo_model_once(stream) is True
    assert local.say_demo_model_once(stream) is False
    text = stream.getvalue()
    assert text.count("demo model") == 1
    assert "[adapter]" in text and "openai_compatible" in text
