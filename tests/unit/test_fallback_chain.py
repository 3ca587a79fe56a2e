"""The fallback chain's routing and error mapping, without dspy or HTTP (the fault tests in
tests/fault/test_fallback.py run the same paths over real HTTP)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ponder.engine.fallback import (
    AdapterAuthError,
    AllAdaptersFailed,
    ChainLink,
    EmptyReply,
    FallbackChain,
    chain_model_info,
    describe_auth_error,
    failure_kind,
    key_variable,
)
from ponder.kernel.kinds import ModelInfo
from ponder.support.retry import is_retryable
from ponder.support.secrets import Secret


class ProviderError(Exception):
    def __init__(self, status: int, message: str = "", retry_after: float | None = None):
        super().__init__(message or f"HTTP {status}")
        self.status_code = status
        if retry_after is not None:
            self.retry_after = retry_after


class AuthenticationError(Exception):  # litellm's name, recognised by class name
    pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def links(*names: str, window: int = 1000) -> list[ChainLink]:
    return [ChainLink(name, lm=name, model_info=ModelInfo(name, window + i),
                      key_variable=f"{name.upper()}_KEY") for i, name in enumerate(names)]


class Script:
    """invoke(link): pops the next outcome scripted for that adapter (an exception or a reply)."""

    def __init__(self, **outcomes: list[Any]) -> None:
        self.outcomes = {name: list(items) for name, items in outcomes.items()}
        self.calls: list[str] = []

    def __call__(self, link: ChainLink) -> Any:
        self.calls.append(link.name)
        outcome = self.outcomes[link.name].pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def test_outage_falls_over_and_opens_the_breaker(caplog):
    clock = FakeClock()
    chain = FallbackChain(links("a", "b"), breaker_failures=2, breaker_cooldown=10, clock=clock)
    script = Script(a=[ProviderError(503), ProviderError(500), ["from a"]],
                    b=[["b1"], ["b2"], ["b3"]])
    with caplog.at_level(logging.INFO, logger="ponder.engine.fallback"):
        assert chain.call(script) == ["b1"]
    assert "adapter a failed (server error (HTTP 503)); falling back to b" in caplog.text
    assert chain.served_by() == "b"
    assert chain.call(script) == ["b2"]
    assert chain.call(script) == ["b3"]  # a is open: not even tried
    assert script.calls == ["a", "b", "a", "b", "b"]
    assert chain.stats()["a"] == {"served": 0, "failed": 2, "skipped_open": 1, "state": "open"}
    clock.now = 10
    assert chain.call(script) == ["from a"]  # the half-open trial succeeds
    assert chain.served_by() == "a" and chain.stats()["a"]["state"] == "closed"


def test_bad_request_is_raised_at_once_without_failing_over():
    chain = FallbackChain(links("a", "b"))
    bad = ProviderError(400, "bad request")
    script = Script(a=[bad], b=[["never"]])
    with pytest.raises(ProviderError) as caught:
        chain.call(script)
    assert caught.value is bad
    assert script.calls == ["a"]
    assert chain.stats()["a"]["failed"] == 0 and chain.stats()["a"]["state"] == "closed"


def test_auth_opens_for_good_and_moves_on():
    clock = FakeClock()
    chain = FallbackChain(links("a", "b"), breaker_failures=3, breaker_cooldown=1, clock=clock)
    script = Script(a=[ProviderError(401, "Incorrect API key provided: Bearer fk-abc-123456")],
                    b=[["b1"], ["b2"]])
    assert chain.call(script) == ["b1"]
    clock.now = 1_000_000
    assert chain.call(script) == ["b2"]
    assert script.calls == ["a", "b", "b"]
    assert chain.stats()["a"]["state"] == "open"


def test_chain_of_one_is_transparent_but_names_the_key():
    outage = ProviderError(503)
    chain = FallbackChain(links("solo"))
    with pytest.raises(ProviderError) as caught:
        chain.call(Script(solo=[outage]))
    assert caught.value is outage  # the retry layer sees the provider's own error
    for _ in range(5):  # no breaker: a chain of one never refuses a call
        with pytest.raises(ProviderError):
            chain.call(Script(solo=[ProviderError(503)]))
    with pytest.raises(AdapterAuthError) as auth:
        chain.call(Script(solo=[AuthenticationError("key sk-live-abcdefghijklmnop1234 bad")]))
    assert str(auth.value) == ("adapter 'solo': the provider rejected the API key (HTTP 401); "
                               "check SOLO_KEY")
    assert not is_retryable(auth.value)
    assert auth.value.__suppress_context__


@pytest.mark.parametrize("reply", [[], [""], ["  "], [{"text": ""}], None])
def test_empty_reply_is_an_outage(reply):
    chain = FallbackChain(links("a", "b"))
    assert chain.call(Script(a=[reply], b=[["ok"]])) == ["ok"]
    assert chain.stats()["a"]["failed"] == 1
    with pytest.raises(EmptyReply) as caught:
        FallbackChain(links("solo")).call(Script(solo=[reply]))
    assert is_retryable(caught.value)


def test_tool_calls_without_text_are_not_empty():
    reply = [{"text": "", "tool_calls": [{"name": "f"}]}]
    assert FallbackChain(links("a", "b")).call(Script(a=[reply], b=[])) == reply


def test_all_failed_lists_each_adapter_and_is_retryable():
    chain = FallbackChain(links("a", "b", "c"))
    script = Script(a=[ProviderError(503, "overloaded", retry_after=2.0)],
                    b=[ProviderError(429, "slow down", retry_after=1.0)],
                    c=[ProviderError(401, "Incorrect API key provided: fk-secret-000111")])
    with pytest.raises(AllAdaptersFailed) as caught:
        chain.call(script)
    error = caught.value
    text = str(error)
    assert text.splitlines()[0] == "every adapter failed:"
    assert "  - a: server error (HTTP 503): ProviderError: overloaded" in text
    assert "  - b: rate limited (HTTP 429): ProviderError: slow down" in text
    assert "  - c: the provider rejected the API key (HTTP 401); check C_KEY" in text
    assert "fk-secret-000111" not in text
    assert [f.adapter for f in error.failures] == ["a", "b", "c"]
    assert error.retryable and is_retryable(error)
    assert error.retry_after == 1.0  # the soonest hint


def test_all_auth_failures_are_not_retryable():
    chain = FallbackChain(links("a", "b"))
    with pytest.raises(AllAdaptersFailed) as caught:
        chain.call(Script(a=[ProviderError(401)], b=[ProviderError(403)]))
    assert not is_retryable(caught.value)
    assert "HTTP 403" in str(caught.value) and "check B_KEY" in str(caught.value)


def test_open_circuits_report_their_cooldown():
    clock = FakeClock()
    chain = FallbackChain(links("a", "b"), breaker_failures=1, breaker_cooldown=30, clock=clock)
    with pytest.raises(AllAdaptersFailed):
        chain.call(Script(a=[ProviderError(500)], b=[ProviderError(502)]))
    clock.now = 5
    script = Script(a=[], b=[])
    with pytest.raises(AllAdaptersFailed) as caught:
        chain.call(script)
    assert script.calls == []  # nothing was tried: both circuits are open
    assert "a: circuit open (server error (HTTP 500); next trial in 25s)" in str(caught.value)
    assert caught.value.retryable and caught.value.retry_after == 25.0
    assert chain.stats()["b"]["skipped_open"] == 1


def test_a_transient_failure_without_a_hint_leaves_the_backoff_to_the_policy():
    chain = FallbackChain(links("a", "b"))
    with pytest.raises(AllAdaptersFailed) as caught:
        chain.call(Script(a=[ProviderError(500)], b=[ProviderError(503, retry_after=3)]))
    assert caught.value.retry_after is None


def test_interrupt_releases_a_half_open_trial():
    clock = FakeClock()
    chain = FallbackChain(links("a", "b"), breaker_failures=1, breaker_cooldown=1, clock=clock)
    chain.call(Script(a=[ProviderError(500)], b=[["b"]]))
    clock.now = 1
    with pytest.raises(KeyboardInterrupt):
        chain.call(Script(a=[KeyboardInterrupt()], b=[]))
    assert chain.call(Script(a=[["a again"]], b=[])) == ["a again"]  # the trial was given back


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ProviderError(503), "server error (HTTP 503)"),
        (ProviderError(429), "rate limited (HTTP 429)"),
        (ProviderError(401), "auth (HTTP 401)"),
        (ProviderError(403), "auth (HTTP 403)"),
        (AuthenticationError("x"), "auth"),
        (TimeoutError(), "timeout"),
        (ConnectionRefusedError(), "connection error"),
        (EmptyReply("x"), "empty reply"),
        (ProviderError(400), None),
        (ProviderError(404), None),
        (ValueError("a bug"), None),
    ],
)
def test_failure_kind(exc, kind):
    assert failure_kind(exc) == kind


def test_describe_auth_error_never_shows_the_key():
    message = describe_auth_error("gw", ProviderError(401, "Bearer sk-abcdefghijklmnopqrstu"),
                                  "GW_KEY")
    assert message == "adapter 'gw': the provider rejected the API key (HTTP 401); check GW_KEY"
    assert describe_auth_error("gw", 403, None) == (
        "adapter 'gw': the provider refused access with this API key (HTTP 403)")


class Settings:
    def __init__(self, api_key: Any = None, model: str | None = None) -> None:
        self.api_key = api_key
        self.model = model


def test_key_variable_sources(tmp_path):
    env = {"GOOGLE_API_KEY": "g"}
    assert key_variable("x", Settings(Secret("$env:MY_KEY"))) == "MY_KEY"
    key_file = f"{tmp_path}/k"
    assert key_variable("x", Settings(Secret(f"$file:{key_file}"))) == f"the key file {key_file}"
    assert key_variable("x", Settings(Secret("literal-value-123"))) == \
        "the api_key setting of adapter 'x'"
    assert key_variable("gemini", Settings(), environ=env) == "GOOGLE_API_KEY"
    assert key_variable("gemini", Settings(), environ={}) == "GEMINI_API_KEY"
    assert key_variable("litellm", Settings(model="anthropic/claude")) == "ANTHROPIC_API_KEY"
    assert key_variable("litellm", Settings(model="gpt-4o")) == "OPENAI_API_KEY"
    assert key_variable("litellm", Settings(model="mistral/small")) == "MISTRAL_API_KEY"
    assert "dummy" in key_variable("openai_compatible", Settings())

    class Hooked:
        settings = Settings(Secret("$env:IGNORED"))

        def key_variable(self) -> str:
            return "HOOKED_KEY"

    assert key_variable("custom", adapter=Hooked()) == "HOOKED_KEY"
    assert key_variable("custom", Settings()) is None


def test_chain_model_info_plans_for_the_smallest():
    infos = [ModelInfo("p", 8000, 1024, 1e-6, 2e-6), ModelInfo("f", 4000, 2048, 9e-6, 9e-6)]
    info = chain_model_info(infos)
    assert (info.model, info.context_window, info.max_output_tokens) == ("p", 4000, 1024)
    assert (info.input_cost_per_token, info.output_cost_per_token) == (1e-6, 2e-6)


def test_duplicate_adapters_are_refused():
    with pytest.raises(ValueError, match="once"):
        FallbackChain(links("a", "a"))
