"""A 200-chunk ``map_reduce`` through the real ``openai_compatible`` adapter (dspy.lm15 over HTTP)
against the loopback :class:`FakeProvider` in oracle mode, with 20 % of the requests faulted
(every kind: 429 with Retry-After, 500/503, time-out, malformed JSON, empty choices).

What must hold, whatever request drew which fault:

- the run completes and every chunk is accounted for: read, or listed in ``failures`` with its
  error (``read + failed == 200``);
- ponder's own numbers agree with what the provider saw over HTTP (``GET /stats``): every faulted
  request was either retried (``usage.retries``, one ``retrying`` log line each, by exception
  class) or is the last attempt of a call that failed (a listed chunk, or a combine call, whose
  inputs then go up unchanged);
- Retry-After is honoured (a 429 is retried after the 0.1 s the provider asked for);
- the needle still reaches the answer.

The fault draws are seeded, but which call gets which draw depends on thread timing, so the
assertions are equations over the counts rather than fixed numbers. The needle line is planted in
two files, so losing it needs both chunks to fail every attempt.
"""

from __future__ import annotations

import json
import random
import re
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from ponder.testing import run_cli
from ponder.testing.fake_provider import FAULT_KINDS, FakeProvider

CHUNKS = 200
CHUNK_TOKENS = 96  # one file of the corpus per chunk: two never fit together
NEEDLE = "MAGIC_PORT = 48213"
NEEDLE_FILES = (57, 142)
RETRY_AFTER_S = 0.1
# the adapter's time-out: well above a healthy loopback reply, well below the provider's hold
ADAPTER_TIMEOUT_S = 3.0

#: the exception ponder sees (``FailedChunk.kind``, the ``retrying … after X`` log) per fault kind
EXCEPTION_OF = {
    "rate_limit": "LMRateLimitError",
    "server_error": "LMServerError",  # 500 and 503
    "malformed": "LMProviderError",  # dspy.lm15: an HTTP 200 whose body is not JSON
    "timeout": "LMTransportError",  # dspy.lm15: the read timed out
    "empty_choices": "EmptyReply",
}
_RETRY_LINE = re.compile(r"retrying (\w+) call in ([\d.]+)s after (\w+)")


def make_corpus(root: Path) -> Path:
    """200 small text files of ~65 estimated tokens each (so 96-token chunks hold one each)."""
    rng = random.Random(3)
    for i in range(CHUNKS):
        lines = [f"# note {i:03d}"]
        lines += [f"entry_{i:03d}_{j} = {rng.randint(0, 99_999)}" for j in range(8)]
        if i in NEEDLE_FILES:
            lines.insert(4, NEEDLE)
        path = root / f"part_{i // 50}" / f"note_{i:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def provider():
    with FakeProvider(
        mode="oracle",
        needles={"MAGIC_PORT": NEEDLE},
        fault_rate=0.2,
        fault_kinds=FAULT_KINDS,
        seed=11,
        retry_after=RETRY_AFTER_S,
        timeout_sleep=30,  # held until the client gives up (the adapter's time-out)
        max_lifetime=240,
    ) as fake:
        yield fake


def http_stats(provider: FakeProvider) -> dict:
    with urllib.request.urlopen(provider.url + "/stats", timeout=10) as response:
        return json.loads(response.read())


def ask(tmp_path: Path, provider: FakeProvider, corpus: Path, *, max_retries: int):
    cfg = tmp_path / "ponder.toml"
    cfg.write_text(
        '[strategy]\nname = "map_reduce"\n'
        f"[limits]\nconcurrency = 32\nmax_retries = {max_retries}\n"
        f'[adapter]\nname = "openai_compatible"\nbase_url = "{provider.base_url}"\n'
        f'model = "fake-model"\ntimeout_s = {ADAPTER_TIMEOUT_S}\n',
        encoding="utf-8",
    )
    result = run_cli(["-v", "--config", str(cfg), "ask", "What is MAGIC_PORT?", str(corpus),
                      "--set", f"strategy.chunk_tokens={CHUNK_TOKENS}", "--json"])
    assert result.stdout.strip(), result.stderr[-3000:]
    return result, json.loads(result.stdout)


def check_accounting(result, data: dict, stats: dict) -> dict[str, int]:
    """The equations between ponder's report and the provider's counters; returns the
    provider's fault counts by kind."""
    faults = {kind: stats["failures"][kind] for kind in FAULT_KINDS}
    others = {k: n for k, n in stats["failures"].items() if k not in FAULT_KINDS and n}
    assert not others, f"failures the test did not inject: {others}"
    assert stats["in_flight"] == 0

    # every chunk is accounted for, each failure once, with its error
    chunks, failures, usage = data["chunks"], data["failures"], data["usage"]
    assert chunks["total"] == CHUNKS
    failed = [f["index"] for f in failures]
    assert len(set(failed)) == len(failed) and all(0 <= i < CHUNKS for i in failed)
    assert chunks["read"] + len(failures) == CHUNKS
    for failure in failures:
        assert failure["error"].strip() and failure["kind"] in set(EXCEPTION_OF.values()), failure

    # one HTTP request per attempt: successes are the provider's 200s, and every faulted
    # request was retried or ended a call (a listed chunk, or a combine call)
    reduce_calls = usage["calls"] - chunks["read"]
    assert reduce_calls in (0, 1)  # one finding-bearing level: at most one combine call
    needle_read = data["answer"].count("48213") > 0
    reduce_failed = (1 if needle_read else 0) - reduce_calls
    assert reduce_failed in (0, 1)
    assert stats["completed"] == usage["calls"]
    assert sum(faults.values()) == usage["retries"] + len(failures) + reduce_failed
    assert stats["requests"] == stats["completed"] + sum(faults.values())

    # by exception class: provider faults = retries logged + chunks listed (+ a failed combine)
    retried = Counter(m.group(3) for m in _RETRY_LINE.finditer(result.stderr))
    assert sum(retried.values()) == usage["retries"]
    expected = Counter()
    for kind, n in faults.items():
        expected[EXCEPTION_OF[kind]] += n
    seen = retried + Counter(f["kind"] for f in failures)
    gap = {name: expected[name] - seen[name] for name in expected | seen}
    assert all(n >= 0 for n in gap.values()) and sum(gap.values()) == reduce_failed, (gap, seen)
    return faults


@pytest.mark.fault
@pytest.mark.slow
def test_two_hundred_chunks_survive_twenty_percent_faults(tmp_path, provider, corpus):
    result, data = ask(tmp_path, provider, corpus, max_retries=2)
    stats = http_stats(provider)
    faults = check_accounting(result, data, stats)

    # every kind was injected, and ponder retried its way through them
    assert all(n > 0 for n in faults.values()), faults
    assert data["usage"]["retries"] > 0
    # the run completed: at most a handful of chunks drew three faults in a row
    assert len(data["failures"]) <= 10, data["note"]
    assert result.exit_code == (3 if data["failures"] else 0), result.stderr[-2000:]
    if data["failures"]:
        assert data["note"].startswith(f"answered from {data['chunks']['read']} of 200 chunks")
    # the needle came through the faults into the answer
    assert "48213" in data["answer"]
    # Retry-After was honoured: every 429 was retried after the 0.1 s the provider asked for
    delays = [float(m.group(2)) for m in _RETRY_LINE.finditer(result.stderr)
              if m.group(3) == "LMRateLimitError"]
    assert delays and set(delays) == {RETRY_AFTER_S}


@pytest.mark.fault
@pytest.mark.slow
def test_without_retries_failures_are_listed_and_the_exit_code_is_partial(
        tmp_path, provider, corpus):
    result, data = ask(tmp_path, provider, corpus, max_retries=0)
    stats = http_stats(provider)
    faults = check_accounting(result, data, stats)

    assert data["usage"]["retries"] == 0 and "retrying" not in result.stderr
    # about a fifth of the chunks failed, each listed; the answer is partial
    assert data["failures"] and data["partial"] is True
    assert result.exit_code == 3, result.stderr[-2000:]
    assert data["note"].startswith(
        f"answered from {data['chunks']['read']} of 200 chunks; {len(data['failures'])} failed")
    assert sum(faults.values()) >= len(data["failures"]) > 0
    # each failure names what the provider did
    kinds = Counter(f["kind"] for f in data["failures"])
    assert set(kinds) <= set(EXCEPTION_OF.values())
    assert len(kinds) >= 3, kinds


def test_a_failed_combine_call_is_listed_in_the_answers_problems(tmp_path, corpus):
    """The map calls succeed, the combine call fails (the script has no reply for it): the
    findings go up uncombined, and the answer says a combine call failed."""
    cfg = tmp_path / "ponder.toml"
    cfg.write_text(
        '[strategy]\nname = "map_reduce"\n[limits]\nmax_retries = 0\n'
        '[adapter]\nname = "scripted"\ncontext_window = 8192\n'
        "[[adapter.rules]]\npattern = '(?s)`relevant_info`.*MAGIC_PORT = 48213'\n"
        'reply = { relevant_info = "MAGIC_PORT = 48213", confidence = "high" }\n'
        "[[adapter.rules]]\npattern = '`relevant_info`'\n"
        'reply = { relevant_info = "NOT FOUND", confidence = "none" }\n',
        encoding="utf-8")
    result = run_cli(["--config", str(cfg), "ask", "What is MAGIC_PORT?", str(corpus),
                      "--set", f"strategy.chunk_tokens={CHUNK_TOKENS}", "--json"])
    data = json.loads(result.stdout)
    assert data["chunks"]["read"] == CHUNKS and data["failures"] == []
    assert data["answer"].count(NEEDLE) == len(NEEDLE_FILES)  # uncombined, both findings kept
    assert any(p.startswith("a combine call failed") for p in data["problems"]), data
