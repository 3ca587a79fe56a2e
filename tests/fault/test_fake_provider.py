"""The loopback fake provider, exercised over real HTTP (urllib, litellm, dspy); no mocks."""

from __future__ import annotations

import http.client
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from ponder.support.dspy_format import detect_output_fields, format_for_dspy
from ponder.testing.fake_provider import (
    FAULT_KINDS,
    FakeProvider,
    FakeProviderConfig,
    count_tokens,
    embed_text,
)

# litellm must not fetch its model cost map from the network (there is none here).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

pytestmark = pytest.mark.fault

CONNECTION_ERRORS = (urllib.error.URLError, ConnectionError, http.client.HTTPException, OSError)


# ----------------------------------------------------------------------------------- helpers


@pytest.fixture
def provider(request: pytest.FixtureRequest):
    """A started FakeProvider; parametrize indirectly with a dict of config fields."""
    config = getattr(request, "param", None) or {}
    with FakeProvider(**{"max_lifetime": 120, **config}) as p:
        yield p


@pytest.fixture(scope="module")
def litellm():
    import litellm as _litellm

    _litellm.suppress_debug_info = True
    return _litellm


@pytest.fixture(scope="module")
def dspy():
    import dspy as _dspy

    return _dspy


def http(
    method: str,
    url: str,
    payload: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15,
) -> tuple[int, dict[str, str], bytes]:
    """One request with urllib; HTTP errors come back as (status, headers, body)."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def chat(
    p: FakeProvider, content: str = "hello", headers: dict[str, str] | None = None, **extra: Any
) -> tuple[int, dict[str, str], bytes]:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": content}], **extra}
    return http("POST", p.base_url + "/chat/completions", body, headers)


def outcome(p: FakeProvider, headers: dict[str, str] | None = None) -> str:
    """A request's outcome as a short label (status, or the fault seen from the client)."""
    try:
        status, _, body = chat(p, headers=headers)
    except CONNECTION_ERRORS:
        return "dropped"
    if status != 200:
        return str(status)
    try:
        doc = json.loads(body)
    except ValueError:
        return "malformed"
    return "ok" if doc["choices"] else "empty"


def wait_until(predicate, limit: float = 15.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` at most ``limit`` seconds (a bounded loop)."""
    for _ in range(int(limit / step) + 1):
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# ----------------------------------------------------------------------------------- basics


def test_chat_completion_over_urllib(provider: FakeProvider) -> None:
    content = "x" * 41
    status, headers, body = chat(provider, content)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["object"] == "chat.completion"
    assert doc["id"] and isinstance(doc["created"], int)
    assert doc["model"] == "fake-model"
    choice = doc["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "OK"}
    assert choice["finish_reason"] == "stop"
    assert doc["usage"] == {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}
    stats = provider.stats()
    assert stats["requests"] == 1 and stats["completed"] == 1
    assert stats["by_path"] == {"/v1/chat/completions": 1}
    assert stats["prompt_tokens"] == 11 and stats["completion_tokens"] == 1
    assert stats["failures"] == dict.fromkeys(stats["failures"], 0)


def test_paths_without_v1_models_stats_and_reset(provider: FakeProvider) -> None:
    assert chat(provider)[0] == 200
    status, _, body = http(
        "POST", provider.url + "/chat/completions", {"messages": [{"role": "user", "content": "a"}]}
    )
    assert status == 200 and json.loads(body)["choices"]
    status, _, body = http("GET", provider.base_url + "/models")
    assert status == 200 and json.loads(body)["data"][0]["id"] == "fake-model"
    status, _, body = http("GET", provider.url + "/stats")
    stats = json.loads(body)
    assert stats["requests"] == 3 and stats["completed"] == 2
    assert stats["by_path"]["/chat/completions"] == 1
    assert http("POST", provider.url + "/reset", {})[0] == 200
    stats = provider.stats()
    assert stats["requests"] == 0 and stats["completed"] == 0 and stats["by_path"] == {}
    assert http("GET", provider.url + "/nope")[0] == 404
    assert provider.stats()["failures"]["not_found"] == 1


def test_bad_requests_get_400(provider: FakeProvider) -> None:
    status, _, body = chat(provider, stream=True)
    assert status == 400 and "stream" in json.loads(body)["error"]["message"]
    assert http("POST", provider.base_url + "/chat/completions", {"messages": []})[0] == 400
    assert chat(provider, headers={"X-Fake-Fault": "explode"})[0] == 400
    assert chat(provider, headers={"X-Fake-Mode": "telepathy"})[0] == 400
    assert provider.stats()["failures"]["bad_request"] == 4


@pytest.mark.parametrize(
    "provider",
    [{"rules": [(r"capital of\s+France", "Paris"), ("France", "wrong: second rule")]}],
    indirect=True,
)
def test_rules_echo_and_reply_header(provider: FakeProvider) -> None:
    def reply(content: str, headers: dict[str, str] | None = None) -> str:
        return json.loads(chat(provider, content, headers)[2])["choices"][0]["message"]["content"]

    assert reply("What is the capital of\nFrance?") == "Paris"
    assert reply("France is big") == "wrong: second rule"
    assert reply("Spain") == "OK"
    assert reply("say this back", {"X-Fake-Mode": "echo"}) == "say this back"
    assert reply("whatever", {"X-Fake-Reply": "forced"}) == "forced"


@pytest.mark.parametrize(
    "provider", [{"mode": "oracle", "needles": {"MAGIC_PORT": "MAGIC_PORT = 48213"}}], indirect=True
)
def test_oracle_mode_survives_map_reduce(provider: FakeProvider) -> None:
    def reply(content: str) -> str:
        return json.loads(chat(provider, content)[2])["choices"][0]["message"]["content"]

    chunk_with = "filler\nMAGIC_PORT = 48213\nmore filler"
    chunk_without = "filler only; MAGIC_PORT is asked about but absent"
    mapped = [reply(f"Find MAGIC_PORT in:\n{c}") for c in (chunk_with, chunk_without)]
    assert mapped == ["MAGIC_PORT = 48213", "NOT FOUND"]
    reduced = reply("Combine these partial answers:\n" + "\n---\n".join(mapped))
    assert "48213" in reduced


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        FakeProviderConfig(fault_rate=1.5)
    with pytest.raises(ValueError):
        FakeProviderConfig(fault_kinds=["meteor"])
    with pytest.raises(ValueError):
        FakeProviderConfig(host="0.0.0.0")  # loopback only
    with pytest.raises(ValueError):
        FakeProviderConfig(rules=[("(unclosed", "x")])
    with pytest.raises(ValueError):
        FakeProviderConfig(latency=(0.1, -1))
    cfg = FakeProviderConfig(latency=0.2, api_key="sk-secret")
    assert cfg.latency == (0.2, 0.0, 0.0)
    assert "sk-secret" not in repr(cfg)


# ----------------------------------------------------------------------------------- litellm


@pytest.mark.parametrize("provider", [{"rules": [("France", "Paris")]}], indirect=True)
def test_litellm_completion(provider: FakeProvider, litellm) -> None:
    resp = litellm.completion(
        model="openai/fake-model",
        api_base=provider.base_url,
        api_key="sk-test",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        num_retries=0,
    )
    assert resp.choices[0].message.content == "Paris"
    assert resp.usage.prompt_tokens == count_tokens(len("What is the capital of France?"))
    assert provider.stats()["completed"] == 1


def test_litellm_embedding(provider: FakeProvider, litellm) -> None:
    texts = ["the cat sat on the mat", "the cat sat on a mat", "quantum flux capacitor"]
    resp = litellm.embedding(
        model="openai/fake-embed", api_base=provider.base_url, api_key="sk-test", input=texts
    )
    vecs = [d["embedding"] for d in resp.data]
    assert [len(v) for v in vecs] == [64, 64, 64]
    for v in vecs:
        assert math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4)
    for got, text in zip(vecs, texts, strict=True):  # base64 float32 round trip
        assert all(
            math.isclose(a, b, abs_tol=1e-6) for a, b in zip(got, embed_text(text), strict=True)
        )

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2])
    assert resp.usage.prompt_tokens == count_tokens(sum(len(t) for t in texts))
    # plain float format over urllib, and dimensions
    status, _, body = http(
        "POST",
        provider.url + "/embeddings",
        {"input": "hi there", "encoding_format": "float", "dimensions": 8},
    )
    assert status == 200 and len(json.loads(body)["data"][0]["embedding"]) == 8
    assert provider.stats()["by_path"] == {"/v1/embeddings": 1, "/embeddings": 1}


@pytest.mark.parametrize(
    "provider", [{"fail_first_n": 1, "fail_first_kind": "rate_limit"}], indirect=True
)
def test_litellm_num_retries_zero_makes_one_attempt(provider: FakeProvider, litellm) -> None:
    with pytest.raises(litellm.RateLimitError):
        litellm.completion(
            model="openai/fake-model",
            api_base=provider.base_url,
            api_key="sk-test",
            messages=[{"role": "user", "content": "hi"}],
            num_retries=0,
        )
    assert provider.stats()["requests"] == 1


# ----------------------------------------------------------------------------------- dspy


@pytest.mark.parametrize("provider", [{"rules": [("capital of France", "Paris")]}], indirect=True)
@pytest.mark.parametrize(
    ("adapter", "model"),
    [
        ("chat", "fake-model"),
        # dspy sends no response_format for a model litellm does not know: JSON from the prompt
        ("json", "fake-model"),
        # a known model gets response_format=json_schema: JSON from the request
        ("json", "gpt-4o-mini"),
    ],
)
def test_dspy_predict(provider: FakeProvider, dspy, adapter: str, model: str) -> None:
    lm = dspy.LM(
        f"openai/{model}",
        api_base=provider.base_url,
        api_key="sk-test",
        cache=False,
        num_retries=0,
    )
    kwargs = {"lm": lm}
    if adapter == "json":
        kwargs["adapter"] = dspy.JSONAdapter()
    with dspy.context(**kwargs):
        pred = dspy.Predict("question -> answer")(question="What is the capital of France?")
    assert pred.answer == "Paris"
    # one call: the reply parsed the first time (ChatAdapter would otherwise fall back to JSON)
    assert provider.stats()["requests"] == 1


def test_json_response_format_without_dspy_markers_is_plain(provider: FakeProvider) -> None:
    status, _, body = chat(provider, "hi", response_format={"type": "json_object"})
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "OK"
    system = "Your output fields are:\n1. `answer` (str): \n2. `score` (float): "
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "q"}]
    status, _, body = http(
        "POST",
        provider.base_url + "/chat/completions",
        {"messages": msgs, "response_format": {"type": "json_object"}},
    )
    content = json.loads(body)["choices"][0]["message"]["content"]
    assert json.loads(content) == {"answer": "OK", "score": 0.0}


@pytest.mark.parametrize("provider", [{"rules": [("capital", "Paris")]}], indirect=True)
def test_dspy_chain_of_thought_with_typed_fields(provider: FakeProvider, dspy) -> None:
    lm = dspy.LM(
        "openai/fake-model", api_base=provider.base_url, api_key="k", cache=False, num_retries=0
    )
    sig = "question -> answer, confidence: float, sources: list[str], sure: bool"
    with dspy.context(lm=lm):
        pred = dspy.ChainOfThought(sig)(question="capital of France?")
    assert pred.answer == "Paris"
    assert pred.confidence == 0.9 and pred.sources == [] and pred.sure is False
    assert provider.stats()["requests"] == 1


@pytest.mark.parametrize(
    "provider", [{"mode": "oracle", "needles": {"MAGIC_PORT": "MAGIC_PORT = 48213"}}], indirect=True
)
def test_dspy_oracle(provider: FakeProvider, dspy) -> None:
    lm = dspy.LM(
        "openai/fake-model", api_base=provider.base_url, api_key="k", cache=False, num_retries=0
    )
    qa = dspy.Predict("context, question -> answer")
    with dspy.context(lm=lm):
        hit = qa(context="a\nMAGIC_PORT = 48213\nb", question="What is MAGIC_PORT?")
        miss = qa(context="nothing here", question="What is MAGIC_PORT?")
    assert "48213" in hit.answer
    assert miss.answer == "NOT FOUND"


def test_format_for_dspy_plain_and_dict() -> None:
    plain = [{"role": "user", "content": "hi"}]
    assert format_for_dspy(plain, "text") == "text"
    system = (
        "Your output fields are:\n1. `answer` (str): \n2. `n` (int): the count\nAll interactions"
    )
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "q"}]
    assert detect_output_fields(msgs) == [("answer", "str"), ("n", "int")]
    assert format_for_dspy(msgs, {"answer": "a", "n": 3}) == (
        "[[ ## answer ## ]]\na\n\n[[ ## n ## ]]\n3\n\n[[ ## completed ## ]]"
    )
    assert json.loads(format_for_dspy(msgs, "a", json_mode=True)) == {"answer": "a", "n": 0}


# ----------------------------------------------------------------------------------- faults


def _check_fault(p: FakeProvider, kind: str, headers: dict[str, str] | None) -> None:
    if kind == "timeout":
        with pytest.raises(CONNECTION_ERRORS):
            chat(p, headers=headers)
    else:
        status, resp_headers, body = chat(p, headers=headers)
        if kind == "rate_limit":
            assert status == 429
            assert float(resp_headers["Retry-After"]) > 0
            assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
        elif kind == "server_error":
            assert status in (500, 503)
            assert json.loads(body)["error"]["type"] == "server_error"
            if status == 503:
                assert "Retry-After" in resp_headers
        elif kind == "malformed":
            assert status == 200
            with pytest.raises(ValueError):
                json.loads(body)
        else:
            assert status == 200 and json.loads(body)["choices"] == []


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_forced_by_header(kind: str) -> None:
    with FakeProvider(timeout_sleep=0.2, max_lifetime=60) as p:
        _check_fault(p, kind, {"X-Fake-Fault": kind})
        assert wait_until(lambda: p.stats()["in_flight"] == 0)
        stats = p.stats()
        assert stats["failures"][kind] == 1
        assert sum(stats["failures"].values()) == 1
        assert stats["completed"] == 0
        assert outcome(p) == "ok"  # the next request is fine


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_fail_first_n(kind: str) -> None:
    with FakeProvider(
        fail_first_n=2, fail_first_kind=kind, timeout_sleep=0.2, max_lifetime=60
    ) as p:
        _check_fault(p, kind, None)
        # a forced "none" neither fails nor uses up the countdown
        assert outcome(p, {"X-Fake-Fault": "none"}) == "ok"
        _check_fault(p, kind, None)
        assert outcome(p) == "ok"
        assert wait_until(lambda: p.stats()["in_flight"] == 0)
        stats = p.stats()
        assert stats["failures"][kind] == 2
        assert stats["completed"] == 2


def test_fault_header_switch_off() -> None:
    with FakeProvider(fault_header=False, max_lifetime=60) as p:
        assert outcome(p, {"X-Fake-Fault": "rate_limit"}) == "ok"


def test_seeded_fault_rate_is_reproducible() -> None:
    kinds = ["rate_limit", "server_error", "malformed", "empty_choices"]

    def run(seed: int) -> list[str]:
        with FakeProvider(fault_rate=0.5, fault_kinds=kinds, seed=seed, max_lifetime=60) as p:
            first = [outcome(p) for _ in range(16)]
            p.reset()  # reset re-seeds: the same sequence again
            again = [outcome(p) for _ in range(16)]
            assert first == again
            stats = p.stats()  # counts since the reset: the second run only
            assert stats["completed"] == again.count("ok")
            assert stats["failures"]["rate_limit"] == again.count("429")
            assert stats["failures"]["server_error"] == again.count("500") + again.count("503")
            assert stats["failures"]["malformed"] == again.count("malformed")
            assert stats["failures"]["empty_choices"] == again.count("empty")
            return first

    a = run(7)
    assert a == run(7)
    assert a != run(8)
    assert "ok" in a and len(set(a)) > 2  # a real mix, for this seed


# ----------------------------------------------------------------------------------- capacity


@pytest.mark.parametrize("provider", [{"max_in_flight": 2, "retry_after": 0.5}], indirect=True)
def test_in_flight_cap(provider: FakeProvider) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def hold() -> None:
        r = outcome(provider, {"X-Fake-Latency": "60"})  # held until the provider stops
        with lock:
            results.append(r)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    assert wait_until(lambda: provider.stats()["in_flight"] == 2)
    status, headers, body = chat(provider)  # deterministic: both slots are held
    assert status == 429
    assert headers["Retry-After"] == "0.5" and headers["Retry-After-Ms"] == "500"
    assert "concurrent" in json.loads(body)["error"]["message"]
    stats = provider.stats()
    assert stats["failures"]["in_flight_cap"] == 1
    assert stats["in_flight"] == 2 and stats["max_in_flight"] == 2
    provider.stop()  # wakes the held requests: they end without a reply
    for t in holders:
        t.join(20)
    assert results == ["dropped", "dropped"]
    assert provider.stats()["aborted"] == 2


@pytest.mark.parametrize("provider", [{"max_in_flight": 3}], indirect=True)
def test_in_flight_cap_under_a_burst(provider: FakeProvider) -> None:
    n = 24
    barrier = threading.Barrier(n)
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait(10)
        r = outcome(provider, {"X-Fake-Latency": "0.3"})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stats = provider.stats()
    assert len(results) == n
    assert set(results) <= {"ok", "429"}
    assert stats["completed"] == results.count("ok")
    assert stats["failures"]["in_flight_cap"] == results.count("429")
    assert 1 <= stats["max_in_flight"] <= 3
    assert stats["in_flight"] == 0


def test_sixty_four_concurrent_connections() -> None:
    with FakeProvider(max_lifetime=60) as p:
        n = 64
        barrier = threading.Barrier(n)
        results: list[str] = []
        lock = threading.Lock()

        def worker() -> None:
            barrier.wait(10)
            r = outcome(p, {"X-Fake-Latency": "0.5"})
            with lock:
                results.append(r)

        threads = [threading.Thread(target=worker) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == ["ok"] * n
        stats = p.stats()
        assert stats["completed"] == n and 1 <= stats["max_in_flight"] <= n


@pytest.mark.parametrize("provider", [{"tpm": 100}], indirect=True)
def test_tpm_bucket(provider: FakeProvider) -> None:
    prompt = "y" * 200  # 50 prompt tokens + 1 completion token ("OK")
    assert chat(provider, prompt)[0] == 200
    status, headers, body = chat(provider, prompt)
    assert status == 429
    assert 1 <= float(headers["Retry-After"]) <= 60
    assert "TPM" in json.loads(body)["error"]["message"]
    assert chat(provider, "small")[0] == 200  # 2 + 1 tokens still fit
    stats = provider.stats()
    assert stats["failures"]["tpm"] == 1
    assert stats["completed"] == 2
    assert stats["prompt_tokens"] + stats["completion_tokens"] <= 100


# ----------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("provider", [{"api_key": "sk-right"}], indirect=True)
def test_401_echoes_the_presented_key(provider: FakeProvider, litellm) -> None:
    status, _, body = chat(provider, headers={"Authorization": "Bearer sk-wrong-SECRET-123"})
    assert status == 401
    assert "sk-wrong-SECRET-123" in json.loads(body)["error"]["message"]
    assert chat(provider)[0] == 401  # no header at all
    assert chat(provider, headers={"Authorization": "Bearer sk-right"})[0] == 200
    with pytest.raises(litellm.AuthenticationError) as info:
        litellm.completion(
            model="openai/fake-model",
            api_base=provider.base_url,
            api_key="sk-litellm-LEAKME",
            messages=[{"role": "user", "content": "hi"}],
            num_retries=0,
        )
    assert "sk-litellm-LEAKME" in str(info.value)  # the nastiness reaches the exception text
    assert provider.stats()["failures"]["auth"] == 3


# ----------------------------------------------------------------------------------- latency


def test_latency_header_and_model_take_at_least_that_long() -> None:
    with FakeProvider(latency=(0.2, 0.0, 0.0), max_lifetime=60) as p:
        start = time.monotonic()
        assert chat(p, headers={"X-Fake-Latency": "0.3"})[0] == 200
        assert time.monotonic() - start >= 0.3
        start = time.monotonic()
        assert chat(p)[0] == 200
        assert time.monotonic() - start >= 0.2


def test_stop_wakes_sleeping_requests() -> None:
    p = FakeProvider(max_lifetime=60).start()
    results: list[str] = []
    t = threading.Thread(target=lambda: results.append(outcome(p, {"X-Fake-Latency": "50"})))
    t.start()
    assert wait_until(lambda: p.stats()["in_flight"] == 1)
    p.stop()
    t.join(20)
    assert not t.is_alive()
    assert results == ["dropped"]
    assert not p.running and p.stop_reason == "stopped"


# ----------------------------------------------------------------------------------- lifetime


def test_lifetime_exit() -> None:
    p = FakeProvider(max_lifetime=1).start()
    assert p.running
    assert p.wait(15)  # it stops by itself
    assert not p.running and p.stop_reason == "max_lifetime"
    with pytest.raises(CONNECTION_ERRORS):
        chat(p)
    p.stop()  # idempotent


def test_max_requests_exit() -> None:
    p = FakeProvider(max_requests=2, max_lifetime=60).start()
    assert [outcome(p), outcome(p)] == ["ok", "ok"]
    assert p.wait(15)
    assert p.stop_reason == "max_requests"
    assert outcome(p) == "dropped"


def test_cli_subprocess() -> None:
    cmd = [
        sys.executable,
        "-m",
        "ponder.testing.fake_provider",
        "--port",
        "0",
        "--mode",
        "oracle",
        "--needle",
        "MAGIC_PORT=48213",
        "--latency",
        "0.01",
        "--max-lifetime",
        "4",
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            body = {"messages": [{"role": "user", "content": "x\nMAGIC_PORT=48213\ny"}]}
            status, _, raw = http("POST", url + "/v1/chat/completions", body)
            assert status == 200
            assert json.loads(raw)["choices"][0]["message"]["content"] == "48213"
            _, err = proc.communicate(timeout=30)  # it exits by itself when its lifetime ends
            assert proc.returncode == 0, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
