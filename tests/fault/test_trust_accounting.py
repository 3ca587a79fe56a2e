"""Issue 15, the engine's side of "every figure true, every limit binding": real HTTP to the
loopback fake provider through the real ``openai_compatible`` (and ``litellm``) adapters.

Each test compares what ponder says it spent with what the provider says it served, read over
HTTP from ``GET /stats``:

- a reply DSPy cannot parse (a model ignoring the output format) is still a metered call: its
  requests, tokens and cost are counted and recorded, and ``max_cost`` applies to them;
- ``rlm`` counts every root request, the last one (the extract call) included;
- ``max_tokens``/``max_cost`` bind with 16 calls in flight: the overshoot is under one call's
  worst case (before the fix: every call in flight, 16 of them);
- a failed chunk reports the requests it really made (``attempts``);
- a 20 MB reply is cut to what ``max_output_tokens`` allows, and the run says so;
- connection refused names the base URL and gives up after the retry policy's attempts, missing
  credentials are an auth error at once, and a 429's text is ponder's, not lm15's.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from typing import Any

import attrs
import pytest

from ponder.context.sources import Context, Document
from ponder.engine.services import Services
from ponder.plugins import direct, map_reduce, predict, rlm
from ponder.plugins.openai_compatible import OpenAICompatibleAdapter, OpenAICompatibleSettings
from ponder.support.retry import RetryPolicy
from ponder.testing import plugin_set
from ponder.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.fault

QUESTION = "Which setting is MAGIC_PORT?"
PRICE_IN, PRICE_OUT = 1e-6, 2e-6
MAX_OUTPUT = 256


def http_stats(provider: FakeProvider) -> dict[str, Any]:
    with urllib.request.urlopen(provider.url + "/stats", timeout=10) as reply:
        return json.load(reply)


def corpus(files: int = 6, lines: int = 40) -> Context:
    docs = [Document(path=f"notes/part_{i:02d}.txt",
                     text="".join(f"setting_{i}_{k} = {(i * 31 + k) % 97} lorem ipsum\n"
                                  for k in range(lines)))
            for i in range(files)]
    return Context(documents=docs, sources=["notes"])


def services_for(provider: FakeProvider | None, *, base_url: str | None = None,
                 concurrency: int = 4, retry: RetryPolicy | None = None,
                 records: list[dict[str, Any]] | None = None, **limits: Any) -> Services:
    adapter = OpenAICompatibleAdapter(OpenAICompatibleSettings(
        base_url=base_url or provider.base_url, model="fake-model", context_window=8000,
        max_output_tokens=MAX_OUTPUT, input_cost_per_token=PRICE_IN,
        output_cost_per_token=PRICE_OUT, timeout_s=30))
    return Services(lm=adapter.build_lm(), model_info=adapter.model_info(),
                    predictor=predict.PredictPredictor(),
                    plugin_set=plugin_set(map_reduce, direct, rlm, predict),
                    progress_mode="silent", chunk_tokens=300, concurrency=concurrency,
                    retry=retry or RetryPolicy(max_retries=0),
                    on_call=records.append if records is not None else None, **limits)


def served_tokens(stats: dict[str, Any]) -> int:
    return stats["prompt_tokens"] + stats["completion_tokens"]


def served_cost(stats: dict[str, Any]) -> float:
    return stats["prompt_tokens"] * PRICE_IN + stats["completion_tokens"] * PRICE_OUT


# --- 1. every request that reached the provider is counted --------------------------------------
def test_replies_dspy_cannot_parse_are_counted_priced_and_recorded():
    """The model ignores the output format: every map call fails to parse (DSPy's ChatAdapter,
    then its JSON re-ask: two requests a chunk). Before the fix ponder recorded 0 calls, $0."""
    records: list[dict[str, Any]] = []
    with FakeProvider(default_reply="I will not use your format.", dspy_format=False) as fake:
        services = services_for(fake, records=records)
        draft = map_reduce.MapReduceStrategy().run(QUESTION, corpus(), services)
        stats = http_stats(fake)

    assert draft.chunks_read == 0 and draft.failures
    assert all(f.kind == "AdapterParseError" for f in draft.failures)
    usage = services.usage
    assert stats["requests"] == stats["completed"] == usage.calls > 0
    assert usage.calls == 2 * len(draft.failures)  # the ChatAdapter reply and the JSON re-ask
    assert usage.input_tokens == stats["prompt_tokens"]
    assert usage.output_tokens == stats["completion_tokens"]
    assert usage.cost_usd == pytest.approx(served_cost(stats), rel=1e-9)
    # each failed call is a record with its tokens, cost and error
    assert len(records) == len(draft.failures)
    assert all(r["error"] and r["input_tokens"] > 0 and r["cost_usd"] > 0 for r in records)
    assert sum(r["input_tokens"] for r in records) == stats["prompt_tokens"]
    assert sum(r["cost_usd"] for r in records) == pytest.approx(usage.cost_usd, rel=1e-9)


def test_max_cost_applies_to_replies_dspy_cannot_parse():
    """Before the fix ``--max-cost`` never saw these calls: all 24 requests were made."""
    with FakeProvider(default_reply="I will not use your format.", dspy_format=False) as fake:
        one_chunk = services_for(fake)
        map_reduce.MapReduceStrategy().run(QUESTION, corpus(files=1), one_chunk)
        per_chunk = http_stats(fake)
        fake.reset()
        max_cost = 2.5 * served_cost(per_chunk) / one_chunk.usage.calls * 2  # ~2.5 chunks
        services = services_for(fake, concurrency=1, max_cost=max_cost)
        draft = map_reduce.MapReduceStrategy().run(QUESTION, corpus(), services)
        stats = http_stats(fake)

    assert services.stopped_by == "max_cost"
    assert {f.kind for f in draft.failures} >= {"max_cost"}
    assert stats["requests"] == services.usage.calls < 2 * len(draft.failures)
    assert services.usage.cost_usd == pytest.approx(served_cost(stats), rel=1e-9)
    assert services.usage.cost_usd >= max_cost  # it ran to the limit...
    worst_call = (one_chunk.largest_prompt_tokens * 4 + MAX_OUTPUT) * 2 * PRICE_OUT
    assert services.usage.cost_usd < max_cost + worst_call  # ...and at most one call past it


def test_rlm_counts_every_root_request_including_the_last():
    """One iteration, no SUBMIT: a root call, then dspy.RLM's extract call after the loop. The
    extract call came after the last metering point, so it was never counted (1 of 2)."""
    context = corpus(files=3)
    with FakeProvider(mode="oracle", needles={"x": "setting_1_3"}, rlm_root=True) as fake:
        services = services_for(fake)
        draft = rlm.RLMStrategy(rlm.RLMSettings(max_iterations=1)).run(QUESTION, context,
                                                                        services)
        stats = http_stats(fake)
    assert draft.text
    assert stats["requests"] == stats["completed"] == services.usage.calls == 2
    assert services.usage.input_tokens == stats["prompt_tokens"]
    assert services.usage.output_tokens == stats["completion_tokens"]


# --- 2. limits bind with 16 calls in flight ----------------------------------------------------
@pytest.mark.parametrize("limit", [1, 15_000])
def test_max_tokens_binds_with_sixteen_calls_in_flight(limit):
    """40 chunks, 16 at a time, each call held 0.3 s so they are all in flight together. Before
    the fix ``max_tokens = 1`` let the first 16 calls through (≈9,400 tokens)."""
    context = corpus(files=40)
    with FakeProvider(mode="oracle", needles={"x": "setting_3_4 "}, latency=0.3) as fake:
        services = services_for(fake, concurrency=16, max_tokens=limit)
        draft = map_reduce.MapReduceStrategy().run(QUESTION, context, services)
        stats = http_stats(fake)

    assert services.stopped_by == "max_tokens"
    assert services.usage.input_tokens + services.usage.output_tokens == served_tokens(stats)
    calls = stats["completed"]
    assert calls == services.usage.calls >= 1
    one_call = served_tokens(stats) / calls
    # the bound: under one call's worth past the limit (a call starts only while what was spent
    # plus the worst case of every call in flight is below the limit)
    assert served_tokens(stats) - limit < one_call + MAX_OUTPUT
    if limit > 1:
        assert stats["max_in_flight"] > 1  # far from the limit, calls still ran in parallel
        assert draft.chunks_read > 1
    else:
        assert calls == 1


def test_max_cost_binds_with_sixteen_calls_in_flight():
    context = corpus(files=40)
    with FakeProvider(mode="oracle", needles={"x": "setting_3_4 "}, latency=0.3) as fake:
        services = services_for(fake, concurrency=16, max_cost=0.02)
        map_reduce.MapReduceStrategy().run(QUESTION, context, services)
        stats = http_stats(fake)
    assert services.stopped_by == "max_cost"
    assert services.usage.cost_usd == pytest.approx(served_cost(stats), rel=1e-9)
    one_call = served_cost(stats) / stats["completed"]
    assert served_cost(stats) - 0.02 < one_call + MAX_OUTPUT * PRICE_OUT
    assert stats["max_in_flight"] > 1


# --- 3. attempts ---------------------------------------------------------------------------------
def test_a_failed_chunk_reports_the_requests_it_made():
    """Every request gets a 503: each chunk makes 1 + max_retries requests, and says so."""
    policy = RetryPolicy(max_retries=3, base_delay=0.0, jitter=0.0)
    with FakeProvider(fault_rate=1.0, fault_kinds=("server_error",), retry_after=0.01) as fake:
        services = services_for(fake, retry=policy, concurrency=2)
        draft = map_reduce.MapReduceStrategy().run(QUESTION, corpus(files=3), services)
        stats = http_stats(fake)
    assert draft.failures and draft.chunks_read == 0
    assert [f.attempts for f in draft.failures] == [4] * len(draft.failures)
    assert stats["requests"] == sum(f.attempts for f in draft.failures)
    assert services.usage.retries == 3 * len(draft.failures)


# --- 4. a reply far beyond max_output_tokens ----------------------------------------------------
def test_a_twenty_megabyte_reply_is_cut_and_the_run_says_so():
    huge = "all work and no play " * 1_000_000  # 21 MB
    records: list[dict[str, Any]] = []
    with FakeProvider(rules=[(r"`answer`", {"answer": huge})]) as fake:
        services = services_for(fake, records=records)
        draft = direct.DirectStrategy().run(QUESTION, corpus(files=1, lines=5), services)
    # what is kept is bounded by max_output_tokens (a few KB here), not by what was sent
    assert len(draft.text) < 100_000 < len(huge) and "cut by ponder" in draft.text
    assert len(records) == 1 and len(records[0]["reply"]) < 100_000
    assert any("reply was cut" in p and "max_output_tokens" in p for p in services.problems)


# --- 5. errors that name their cause --------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_names_the_base_url_and_gives_up_after_the_policy():
    """Nothing listens: the first calls exhaust the retry policy, and every later call fails at
    once with the same error naming the base URL (before: each chunk retried on its own, 75
    requests over 118 s for a small corpus)."""
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    policy = RetryPolicy(max_retries=2, base_delay=0.01, jitter=0.0)
    services = services_for(None, base_url=url, retry=policy, concurrency=2)
    draft = map_reduce.MapReduceStrategy().run(QUESTION, corpus(files=8), services)
    assert draft.chunks_read == 0 and len(draft.failures) == draft.chunks_total > 4
    for failure in draft.failures:
        assert f"cannot reach the provider at {url}" in failure.error
        assert "connection refused" in failure.error
    # bounded: only the calls in flight when the first one gave up made the policy's attempts;
    # every later one failed without a request
    attempts = [f.attempts for f in draft.failures]
    assert max(attempts) == policy.max_retries + 1
    assert sum(attempts) <= 2 * (policy.max_retries + 1)
    assert attempts.count(0) >= len(attempts) - 2
    assert "cannot reach the provider" in draft.text


def test_missing_credentials_are_an_auth_error_at_once(monkeypatch):
    """litellm reports a missing key as an HTTP 500, which was retried as an outage (33 times)."""
    from ponder.engine.fallback import ChainLink, build_fallback_lm, key_variable
    from ponder.plugins.litellm_adapter import LiteLLMAdapter, LiteLLMSettings

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeProvider() as fake:
        settings = LiteLLMSettings(model="openai/gpt-4o-mini", api_base=fake.base_url)
        adapter = LiteLLMAdapter(settings)
        lm = build_fallback_lm([ChainLink("litellm", adapter.build_lm(), adapter.model_info(),
                                          key_variable("litellm", settings))])
        services = Services(lm=lm, model_info=adapter.model_info(),
                            predictor=predict.PredictPredictor(),
                            plugin_set=plugin_set(map_reduce, predict), progress_mode="silent",
                            chunk_tokens=300, retry=RetryPolicy(max_retries=3, base_delay=0.01))
        draft = map_reduce.MapReduceStrategy().run(QUESTION, corpus(files=3), services)
        stats = http_stats(fake)
    assert stats["requests"] == 0
    assert services.usage.retries == 0
    assert draft.failures and all(f.kind == "AdapterAuthError" for f in draft.failures)
    for failure in draft.failures:
        assert "adapter 'litellm'" in failure.error and "OPENAI_API_KEY" in failure.error
        assert "no API key" in failure.error and failure.attempts <= 1


def test_a_rate_limit_is_described_in_ponders_words():
    with FakeProvider(fault_rate=1.0, fault_kinds=("rate_limit",), retry_after=0.01) as fake:
        services = services_for(fake)
        draft = map_reduce.MapReduceStrategy().run(QUESTION, corpus(files=1), services)
    assert draft.failures
    error = draft.failures[0].error
    assert "lm15" not in error and "never retries" not in error
    assert "ponder retries rate-limited calls" in error


def test_fatal_errors_do_not_count_as_requests():
    """The usage of a run whose provider is unreachable is zero calls, zero cost."""
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    services = services_for(None, base_url=url, retry=RetryPolicy(max_retries=0))
    map_reduce.MapReduceStrategy().run(QUESTION, corpus(files=2), services)
    assert attrs.asdict(services.usage) == {"calls": 0, "input_tokens": 0, "output_tokens": 0,
                                            "cost_usd": 0.0, "retries": 0, "cached_calls": 0,
                                            "failed_requests": 0}
