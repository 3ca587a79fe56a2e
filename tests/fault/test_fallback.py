"""Adapter fallback chains over real loopback HTTP: the first-party adapters' real LMs (litellm
underneath, retries off) talk to :class:`FakeProvider` instances; nothing is mocked.

Breakers get a fake clock, so cooldowns pass by assignment, never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import traceback
from typing import Any

import pytest

from ponder.engine.fallback import (
    AdapterAuthError,
    AllAdaptersFailed,
    ChainLink,
    build_fallback_lm,
    key_variable,
)
from ponder.engine.services import Services
from ponder.kernel.config import structure_settings
from ponder.plugins.litellm_adapter import LiteLLMAdapter, LiteLLMSettings
from ponder.plugins.openai_compatible import OpenAICompatibleAdapter, OpenAICompatibleSettings
from ponder.plugins.predict import PredictPredictor
from ponder.support.retry import RetryPolicy, is_retryable
from ponder.testing import run_cli
from ponder.testing.fake_provider import FakeProvider

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

pytestmark = pytest.mark.fault

QUESTION = "What is the capital of France?"
RULES = [("capital of France", "Paris")]
RIGHT_KEY = "fk-right-key-5d1e77a0"
WRONG_KEY = "fk-wrong-key-7f3a9c1e"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def dspy():
    import dspy as _dspy
    import litellm

    litellm.suppress_debug_info = True
    return _dspy


def provider(**options: Any) -> FakeProvider:
    return FakeProvider(**{"max_lifetime": 120, "rules": RULES, **options})


def down(**options: Any) -> FakeProvider:
    """A provider whose every chat request fails with 500 or 503."""
    return provider(fault_rate=1.0, fault_kinds=("server_error",), **options)


def compatible(fake: FakeProvider | str, **options: Any) -> tuple[str, Any, Any]:
    url = fake if isinstance(fake, str) else fake.base_url
    settings = structure_settings(OpenAICompatibleSettings,
                                  {"base_url": url, "model": "fake-model", **options},
                                  section="adapters.openai_compatible")
    return "openai_compatible", OpenAICompatibleAdapter(settings), settings


def litellm(fake: FakeProvider, **options: Any) -> tuple[str, Any, Any]:
    settings = structure_settings(
        LiteLLMSettings,
        {"model": "openai/fake-model", "api_base": fake.base_url, "api_key": "fk-any-0123456",
         "context_window": 4096, **options},
        section="adapters.litellm")
    return "litellm", LiteLLMAdapter(settings), settings


def chain(*adapters: tuple[str, Any, Any], clock: FakeClock | None = None,
          failures: int = 3, cooldown: float = 30.0) -> Any:
    links = [ChainLink(name, adapter.build_lm(), adapter.model_info(),
                       key_variable(name, settings, adapter=adapter))
             for name, adapter, settings in adapters]
    return build_fallback_lm(links, breaker_failures=failures, breaker_cooldown=cooldown,
                             clock=clock or FakeClock())


def ask(dspy, lm, question: str = QUESTION) -> str:
    with dspy.context(lm=lm, track_usage=True):
        return dspy.Predict("question -> answer")(question=question).answer


def services(lm, *, max_retries: int = 3) -> Services:
    # no waiting between retries: the retries themselves are what these tests count
    policy = RetryPolicy(max_retries=max_retries, base_delay=0, jitter=0, max_delay=0)
    return Services(lm=lm, model_info=lm.model_info, predictor=PredictPredictor(), retry=policy,
                    progress_mode="silent")


def chat_requests(fake: FakeProvider) -> int:
    return fake.stats()["by_path"].get("/v1/chat/completions", 0)


# ----------------------------------------------------------------------------- primary down
def test_primary_always_down_every_call_served_by_the_fallback(dspy, caplog):
    with down() as primary, provider() as backup:
        lm = chain(compatible(primary), litellm(backup))
        with caplog.at_level(logging.INFO, logger="ponder.engine.fallback"):
            answers = [ask(dspy, lm) for _ in range(5)]
            assert lm.served_by() == "litellm"
        assert answers == ["Paris"] * 5
        assert chat_requests(primary) == 3  # then its circuit is open: no more traffic
        assert backup.stats()["completed"] == 5
    assert lm.stats() == {
        "openai_compatible": {"served": 0, "failed": 3, "skipped_open": 2, "state": "open"},
        "litellm": {"served": 5, "failed": 0, "skipped_open": 0, "state": "closed"},
    }
    assert caplog.text.count("adapter openai_compatible failed (server error (HTTP 50") == 3
    assert "falling back to litellm" in caplog.text


def test_usage_is_counted_once_under_the_serving_model(dspy):
    with down() as primary, provider() as backup:
        lm = chain(compatible(primary), litellm(backup, model="openai/backup-model"))
        with dspy.context(lm=lm, track_usage=True):
            prediction = dspy.Predict("question -> answer")(question=QUESTION)
        usage = prediction.get_lm_usage()
        stats = backup.stats()
    assert list(usage) == ["openai/backup-model"]
    assert usage["openai/backup-model"]["prompt_tokens"] == stats["prompt_tokens"]
    assert usage["openai/backup-model"]["completion_tokens"] == stats["completion_tokens"]


def test_chain_model_info_plans_for_the_smallest_window():
    lm = chain(compatible("http://127.0.0.1:9/v1", context_window=32768,
                          input_cost_per_token=1e-6),
               ("litellm", *litellm_settings_only(context_window=4096)))
    assert lm.model_info.context_window == 4096
    assert lm.model_info.model == "fake-model"
    assert lm.model_info.input_cost_per_token == 1e-6  # the primary's price
    assert lm.model_info_of("litellm").context_window == 4096


def litellm_settings_only(**options: Any) -> tuple[Any, Any]:
    settings = LiteLLMSettings(model="openai/fake-model", api_base="http://127.0.0.1:9/v1",
                               **options)
    return LiteLLMAdapter(settings), settings


@pytest.mark.parametrize("kind", ["rate_limit", "malformed", "empty_choices"])
def test_other_outages_fall_over(dspy, kind):
    with provider(fail_first_n=1, fail_first_kind=kind) as primary, provider() as backup:
        lm = chain(compatible(primary), litellm(backup))
        assert ask(dspy, lm) == "Paris"
        assert lm.served_by() == "litellm"
        assert ask(dspy, lm) == "Paris"
        assert lm.served_by() == "openai_compatible"  # one failure does not open the circuit
        assert chat_requests(primary) == 2


def test_timeout_and_refused_connection_fall_over(dspy):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    with provider(fail_first_n=1, fail_first_kind="timeout", timeout_sleep=30) as slow, \
            provider() as backup:
        lm = chain(compatible(dead), ("litellm", *litellm(slow, timeout_s=0.5)[1:]),
                   ("backup", *litellm(backup)[1:]))
        assert ask(dspy, lm) == "Paris"
        assert lm.served_by() == "backup"
        stats = lm.stats()
        assert stats["openai_compatible"]["failed"] == 1
        assert stats["litellm"]["failed"] == 1
        assert slow.stats()["failures"]["timeout"] == 1


def test_primary_heals_breaker_half_opens_and_traffic_returns(dspy):
    clock = FakeClock()
    with provider(fail_first_n=2) as primary, provider() as backup:
        lm = chain(compatible(primary), litellm(backup), clock=clock, failures=2, cooldown=30)
        served = []
        for _ in range(3):
            assert ask(dspy, lm) == "Paris"
            served.append(lm.served_by())
        assert served == ["litellm"] * 3
        assert lm.stats()["openai_compatible"]["state"] == "open"
        assert chat_requests(primary) == 2  # the third call skipped the open circuit

        clock.now = 29.9
        assert ask(dspy, lm) == "Paris" and lm.served_by() == "litellm"
        assert chat_requests(primary) == 2

        clock.now = 30.0  # half-open: one trial reaches the (now healthy) primary
        assert ask(dspy, lm) == "Paris" and lm.served_by() == "openai_compatible"
        assert ask(dspy, lm) == "Paris" and lm.served_by() == "openai_compatible"
        assert chat_requests(primary) == 4
        assert backup.stats()["completed"] == 4
    assert lm.stats()["openai_compatible"] == {"served": 2, "failed": 2, "skipped_open": 2,
                                               "state": "closed"}


def test_a_failed_trial_reopens_the_circuit(dspy):
    clock = FakeClock()
    with provider(fail_first_n=3) as primary, provider() as backup:
        lm = chain(compatible(primary), litellm(backup), clock=clock, failures=2, cooldown=10)
        for _ in range(2):
            ask(dspy, lm)
        clock.now = 10
        ask(dspy, lm)  # the trial: the primary's third failure
        assert lm.served_by() == "litellm"
        assert lm.stats()["openai_compatible"]["state"] == "open"
        ask(dspy, lm)  # no new trial before another full cooldown
        assert chat_requests(primary) == 3
        clock.now = 20
        ask(dspy, lm)
        assert lm.served_by() == "openai_compatible"
        assert chat_requests(primary) == 4


def test_async_calls_fall_over_too(dspy):
    with down() as primary, provider() as backup:
        lm = chain(compatible(primary), litellm(backup))

        async def go() -> str:
            with dspy.context(lm=lm):
                prediction = await dspy.Predict("question -> answer").acall(question=QUESTION)
            return prediction.answer

        assert asyncio.run(go()) == "Paris"
        assert lm.stats()["litellm"]["served"] == 1
        assert lm.stats()["openai_compatible"]["failed"] == 1


# ------------------------------------------------------------------------------------- auth
def test_primary_401_opens_at_once_and_is_never_retried(dspy, monkeypatch, caplog):
    monkeypatch.setenv("PRIMARY_KEY", WRONG_KEY)
    clock = FakeClock()
    with provider(api_key=RIGHT_KEY) as primary, provider() as backup:
        lm = chain(compatible(primary, api_key="$env:PRIMARY_KEY"), litellm(backup), clock=clock)
        with caplog.at_level(logging.DEBUG, logger="ponder.engine.fallback"):
            assert ask(dspy, lm) == "Paris"
            clock.now = 10_000  # far past any cooldown: a rejected key does not heal
            assert ask(dspy, lm) == "Paris"
            assert ask(dspy, lm) == "Paris"
        assert primary.stats()["failures"]["auth"] == 1
        assert chat_requests(primary) == 1
    assert lm.stats()["openai_compatible"] == {"served": 0, "failed": 1, "skipped_open": 2,
                                               "state": "open"}
    assert "adapter openai_compatible failed (auth (HTTP 401)); falling back to litellm" \
        in caplog.text
    assert WRONG_KEY not in caplog.text


def test_401_with_no_fallback_left_fails_at_once_naming_the_variable(dspy, monkeypatch):
    monkeypatch.setenv("PRIMARY_KEY", WRONG_KEY)
    with provider(api_key=RIGHT_KEY) as primary:
        lm = chain(compatible(primary, api_key="$env:PRIMARY_KEY"))
        run = services(lm, max_retries=3)
        with pytest.raises(AdapterAuthError) as caught:
            run.predict("question -> answer", role="answer", question=QUESTION)
        assert chat_requests(primary) == 1  # the retry layer did not retry it
    error = caught.value
    assert str(error) == ("adapter 'openai_compatible': the provider rejected the API key "
                          "(HTTP 401); check PRIMARY_KEY")
    assert not is_retryable(error)
    assert run.usage.retries == 0
    shown = "".join(traceback.format_exception(error))
    assert WRONG_KEY not in shown and RIGHT_KEY not in shown
    assert "Incorrect API key" not in shown  # the provider's echo of the key is left out


def test_every_adapter_rejecting_its_key_is_not_retried(dspy, monkeypatch):
    monkeypatch.setenv("PRIMARY_KEY", WRONG_KEY)
    monkeypatch.setenv("BACKUP_KEY", WRONG_KEY + "-2")
    with provider(api_key=RIGHT_KEY) as primary, provider(api_key=RIGHT_KEY) as backup:
        lm = chain(compatible(primary, api_key="$env:PRIMARY_KEY"),
                   litellm(backup, api_key="$env:BACKUP_KEY"))
        with pytest.raises(AllAdaptersFailed) as caught:
            services(lm).predict("question -> answer", role="answer", question=QUESTION)
        assert chat_requests(primary) == chat_requests(backup) == 1
    text = str(caught.value)
    assert "openai_compatible: the provider rejected the API key (HTTP 401); check PRIMARY_KEY" \
        in text
    assert "litellm: the provider rejected the API key (HTTP 401); check BACKUP_KEY" in text
    assert WRONG_KEY not in text
    assert not is_retryable(caught.value)


# ------------------------------------------------------------------------- all adapters down
def test_all_down_lists_each_adapter_and_the_outer_retry_applies(dspy):
    with down() as first, provider(fault_rate=1.0, fault_kinds=("rate_limit",)) as second, \
            provider(fault_rate=1.0, fault_kinds=("empty_choices",)) as third:
        lm = chain(compatible(first), litellm(second),
                   ("third", *litellm(third, model="openai/third")[1:]))
        run = services(lm, max_retries=2)
        with pytest.raises(AllAdaptersFailed) as caught:
            run.predict("question -> answer", role="answer", question=QUESTION)
        # ponder's single retry layer ran the whole chain three times; litellm never retried
        assert [chat_requests(f) for f in (first, second, third)] == [3, 3, 3]
    assert run.usage.retries == 2
    error = caught.value
    assert error.retryable
    assert [f.adapter for f in error.failures] == ["openai_compatible", "litellm",
                                                   "third"]
    lines = str(error).splitlines()
    assert lines[0] == "every adapter failed:"
    assert lines[1].startswith("  - openai_compatible: server error (HTTP 50")
    assert lines[2].startswith("  - litellm: rate limited (HTTP 429)")
    assert lines[3].startswith("  - third: empty reply")
    # three consecutive failures each: every circuit is now open
    assert {name: s["state"] for name, s in lm.stats().items()} == {
        "openai_compatible": "open", "litellm": "open", "third": "open"}
    with pytest.raises(AllAdaptersFailed) as again:
        run.predict("question -> answer", role="answer", question=QUESTION + " ")
    assert all(f.kind == "circuit open" for f in again.value.failures)


# ------------------------------------------------------------------------------ bad request
def test_a_bad_request_is_not_failed_over(dspy):
    with provider() as primary, provider() as backup:
        lm = chain(compatible(primary, extra={"extra_headers": {"X-Fake-Latency": "abc"}}),
                   litellm(backup))
        run = services(lm, max_retries=3)
        with pytest.raises(Exception) as caught:
            run.predict("question -> answer", role="answer", question=QUESTION)
        assert getattr(caught.value, "status", None) == 400
        assert primary.stats()["failures"]["bad_request"] == 1
        assert chat_requests(primary) == 1  # neither retried nor failed over
        assert chat_requests(backup) == 0
    assert lm.stats()["openai_compatible"] == {"served": 0, "failed": 0, "skipped_open": 0,
                                               "state": "closed"}


# --------------------------------------------------------------------------- `ponder ask`
def test_ponder_ask_with_fallbacks_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKUP_KEY", RIGHT_KEY)
    notes = tmp_path / "notes.txt"
    notes.write_text("Travel notes.\nThe capital of France is Paris.\n", encoding="utf-8")
    with down() as primary, provider(api_key=RIGHT_KEY) as backup:
        config = tmp_path / "ponder.toml"
        config.write_text(
            'strategy = "direct"\n'
            "[limits]\nmax_retries = 0\n"
            "[adapter]\n"
            'name = "openai_compatible"\n'
            f'base_url = "{primary.base_url}"\n'
            'model = "fake-model"\n'
            'fallbacks = ["litellm"]\n'
            "[adapters.litellm]\n"
            'model = "openai/fake-model"\n'
            f'api_base = "{backup.base_url}"\n'
            'api_key = "$env:BACKUP_KEY"\n'
            "context_window = 8192\n",
            encoding="utf-8")
        result = run_cli(["--config", str(config), "ask", QUESTION, str(notes), "--json"])
        assert result.exit_code == 0, result.output
        assert chat_requests(primary) >= 1
        assert backup.stats()["completed"] >= 1
        assert backup.stats()["failures"]["auth"] == 0  # the key came from [adapters.litellm]
    data = json.loads(result.stdout)
    assert "Paris" in data["answer"]
    assert RIGHT_KEY not in result.output


def test_ponder_ask_single_adapter_auth_error_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_KEY", WRONG_KEY)
    notes = tmp_path / "notes.txt"
    notes.write_text("The capital of France is Paris.\n", encoding="utf-8")
    with provider(api_key=RIGHT_KEY) as gateway:
        config = tmp_path / "ponder.toml"
        config.write_text(
            'strategy = "direct"\n'
            "[adapter]\n"
            'name = "openai_compatible"\n'
            f'base_url = "{gateway.base_url}"\n'
            'api_key = "$env:GATEWAY_KEY"\n',
            encoding="utf-8")
        result = run_cli(["--config", str(config), "ask", QUESTION, str(notes)])
        assert chat_requests(gateway) == 1  # no retry of a refused key
    assert result.exit_code == 1
    assert "adapter 'openai_compatible': the provider rejected the API key (HTTP 401); " \
        "check GATEWAY_KEY" in result.stderr
    assert WRONG_KEY not in result.output and RIGHT_KEY not in result.output
