"""`ponder ask`'s run controls end to end: Ctrl-C, ``--max-cost`` on a priced model, the progress
display, and the ``rlm`` strategy, each as a real ``python -m ponder`` subprocess talking real HTTP
to the loopback :class:`~ponder.testing.fake_provider.FakeProvider` (which runs in this process,
so its counters say what the child really sent).

No test synchronises on a sleep or asserts a wall-clock figure: a test waits for a condition
(the provider's ``/stats``, the child's exit) in a loop bounded by a generous deadline, which only
guards against a hang.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ponder.testing import rlm_needle_script, run_cli
from ponder.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.fault

QUESTION = "What is MAGIC_PORT?"
NEEDLE = "MAGIC_PORT = 48213"
ANSWER = "MAGIC_PORT is 48213."
#: a hang guard for one child process, never a timing assertion
CHILD_DEADLINE_S = 120

# Replies keyed on the DSPy signatures' field names (how their prompts list them): a map prompt
# holding the needle line ("  7| MAGIC_PORT = 48213") finds it, any other finds nothing; a combine
# prompt echoes the answer once a finding holds the needle.
NEEDLE_RULES: list[tuple[str, Any]] = [
    (r"`relevant_info`.*\d+\| MAGIC_PORT = 48213",
     {"relevant_info": NEEDLE, "confidence": "high"}),
    (r"`relevant_info`", {"relevant_info": "NOT FOUND", "confidence": "none"}),
    (r"`partial_answers`.*48213", {"answer": ANSWER}),
    (r"`partial_answers`", {"answer": "The text does not say."}),
]


# --- helpers -------------------------------------------------------------------------------------
def make_corpus(root: Path, *, files: int, lines: int = 30, needle_file: int | None = None,
                needle_line: int = 7) -> Path:
    """``files`` text files of ``lines`` filler lines each; the needle replaces one line."""
    for i in range(files):
        body = [f"setting_{i}_{j} = {(i * 37 + j * 11) % 997}  # filler for the controls tests"
                for j in range(1, lines + 1)]
        if i == needle_file:
            body[needle_line - 1] = NEEDLE
        path = root / f"part_{i:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(body) + "\n")
    return root


def write_config(tmp_path: Path, provider: FakeProvider, *, strategy: str = "map_reduce",
                 concurrency: int = 2, adapter: str | None = None, extra: str = "") -> str:
    """A ponder.toml pointing the openai_compatible adapter at ``provider``."""
    adapter = adapter or (
        '[adapter]\nname = "openai_compatible"\n'
        f'base_url = "{provider.base_url}"\nmodel = "fake-model"\n'
        "context_window = 8192\nmax_output_tokens = 256\n"
    )
    path = tmp_path / "ponder.toml"
    # max_retries = 0: a fault would show up as a failure here, never as a hidden extra call
    path.write_text(f'strategy = "{strategy}"\n{extra}\n[limits]\nconcurrency = {concurrency}\n'
                    f"max_retries = 0\n{adapter}")
    return str(path)


def ponder_command(*args: str) -> list[str]:
    """``python -m ponder ARGS``, with Ctrl-C turned back into KeyboardInterrupt.

    A shell that starts the test run as a background job hands its children SIGINT *ignored*,
    and a Python started that way never installs its KeyboardInterrupt handler; a user's
    terminal never does that, so the child restores Python's own handler first.
    """
    boot = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "runpy.run_module('ponder', run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", boot, *args]


def start_ponder(*args: str, stderr: Any = subprocess.PIPE, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[str]:
    return subprocess.Popen(ponder_command(*args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=stderr, text=True,
                            env={**os.environ, **(env or {})})


def run_ponder(*args: str) -> tuple[int, str, str]:
    proc = start_ponder(*args)
    try:
        stdout, stderr = proc.communicate(timeout=CHILD_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"`ponder {' '.join(args)}` hung; stderr:\n{stderr[-3000:]}")
    return proc.returncode, stdout, stderr


def http_stats(provider: FakeProvider) -> dict[str, Any]:
    """The provider's counters over its own HTTP control endpoint, ``GET /stats``."""
    with urllib.request.urlopen(provider.url + "/stats", timeout=10) as reply:
        return json.load(reply)


def parse_json(stdout: str, stderr: str) -> dict[str, Any]:
    assert stdout.strip(), f"no JSON on stdout; stderr:\n{stderr[-3000:]}"
    return json.loads(stdout)


# --- 1. Ctrl-C -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_stops_with_a_partial_answer_naming_the_unread_chunks(tmp_path):
    """SIGINT in the middle of the map phase: the child stops promptly, exits 3 (partial), and
    its JSON says it was interrupted, what it read, and which chunks it did not."""
    concurrency = 2
    # every chunk "finds" something, so the partial answer is the findings read so far
    rules = [(r"`relevant_info`", {"relevant_info": "a setting line", "confidence": "low"})]
    with FakeProvider(rules=rules, latency=0.3, max_lifetime=300) as provider:
        corpus = make_corpus(tmp_path / "corpus", files=40)
        cfg = write_config(tmp_path, provider, concurrency=concurrency)
        proc = start_ponder("--config", cfg, "ask", QUESTION, str(corpus), "--chunk-tokens",
                            "300", "--json")
        try:
            # wait (bounded) until the run is well inside the map phase
            deadline = time.monotonic() + CHILD_DEADLINE_S
            while (seen := http_stats(provider))["completed"] < 3:
                assert proc.poll() is None, f"ponder exited early: {proc.communicate()}"
                assert time.monotonic() < deadline, f"no LM call completed: {seen}"
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=CHILD_DEADLINE_S)  # a hang guard only
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        stats = http_stats(provider)

    assert proc.returncode == 3, f"exit {proc.returncode}; stderr:\n{stderr[-3000:]}"
    data = parse_json(stdout, stderr)
    assert data["stopped_by"] == "interrupted" and data["partial"] is True
    total, read = data["chunks"]["total"], data["chunks"]["read"]
    failures = data["failures"]
    # the run really was cut short, and every chunk is either read or listed as not read
    assert 0 < read < total and failures
    assert read + len(failures) == total
    unread = {f["index"] for f in failures}
    assert len(unread) == len(failures) and unread <= set(range(total))
    assert all(f["kind"] == "interrupted" for f in failures), failures
    # the note names the unread chunks (the first five, then a count)
    ordered = sorted(failures, key=lambda f: f["index"])
    assert data["note"].startswith(
        f"stopped by interrupted; answered from {read} of {total} chunks; "
        f"{len(failures)} failed: chunk {ordered[0]['index']} (")
    if len(failures) > 5:
        assert data["note"].endswith(f"and {len(failures) - 5} more")
    # the partial answer holds the findings read so far, with no combine call after the stop
    assert data["answer"].startswith("[partial: the run stopped (interrupted)")
    assert data["answer"].count("--- finding ") == read
    # no call started after the signal: at most `concurrency` were in flight when it came (they
    # are abandoned, their chunks listed as cancelled), and no combine call followed
    assert seen["completed"] - concurrency <= read <= stats["completed"]
    assert stats["requests"] <= read + concurrency
    # the usage counts every call read, and none the provider did not answer
    assert read <= data["usage"]["calls"] <= stats["completed"]


#: how long the provider holds each call in the tests below, and the hang guard for the exit
HELD_S = 600
EXIT_GUARD_S = 30

def interrupt_while_calls_hang(tmp_path: Path, *extra: str, signal_it: bool = True
                               ) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Run ponder against a provider that holds every call far longer than the hang guard;
    once a call is in flight, send SIGINT (or let ``--timeout`` fire); return the exit code,
    the JSON, and the provider's stats taken right after the child exited."""
    concurrency = 2
    with FakeProvider(rules=NEEDLE_RULES, latency=HELD_S, max_lifetime=2 * HELD_S) as provider:
        corpus = make_corpus(tmp_path / "corpus", files=6)
        cfg = write_config(tmp_path, provider, concurrency=concurrency)
        proc = start_ponder("--config", cfg, "ask", QUESTION, str(corpus), "--chunk-tokens",
                            "300", "--json", *extra)
        try:
            deadline = time.monotonic() + CHILD_DEADLINE_S
            while (seen := http_stats(provider))["in_flight"] < 1:
                if proc.poll() is not None:  # a --timeout run may end first on a slow machine
                    assert not signal_it, f"ponder exited early: {proc.communicate()}"
                    break
                assert time.monotonic() < deadline, f"no call ever started: {seen}"
                time.sleep(0.05)
            if signal_it:
                proc.send_signal(signal.SIGINT)
            try:
                # the provider holds the calls far longer than this guard (and than the adapter's
                # 120 s HTTP timeout): an exit within it means ponder did not wait for them
                stdout, stderr = proc.communicate(timeout=EXIT_GUARD_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
                pytest.fail("ponder did not exit while its abandoned LM calls were still held by "
                            f"the provider; stdout:\n{stdout[-2000:]}\nstderr:\n{stderr[-2000:]}")
            stats = http_stats(provider)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return proc.returncode, parse_json(stdout, stderr), stats


@pytest.mark.slow
def test_ctrl_c_exits_promptly_while_calls_are_still_in_flight(tmp_path):
    """A user's Ctrl-C while the provider is slow: the answer says nothing was read, and the
    process ends instead of waiting out calls whose results it has already given up on."""
    code, data, stats = interrupt_while_calls_hang(tmp_path)
    assert code == 3
    assert data["stopped_by"] == "interrupted" and data["chunks"]["read"] == 0
    assert len(data["failures"]) == data["chunks"]["total"]
    assert data["answer"].startswith("No answer: the run stopped (interrupted) before any of")
    assert stats["completed"] == 0  # the abandoned calls were never answered


@pytest.mark.slow
def test_timeout_exits_promptly_while_calls_are_still_in_flight(tmp_path):
    """``--timeout`` is documented as a hard limit: the run ends at it even with calls in flight."""
    # 15 s: the first call must reach the provider before the limit even on a loaded machine
    # (importing litellm alone takes seconds); the exit guard starts once a call is in flight
    code, data, stats = interrupt_while_calls_hang(tmp_path, "--timeout", "15",
                                                   signal_it=False)
    # nothing was read: no evidence, no answer, a failed run (issue 15), not a partial one
    assert code == 1
    assert data["status"] == "failed" and data["partial"] is False and data["answer"] == ""
    assert data["stopped_by"] == "timeout" and data["chunks"]["read"] == 0
    assert stats["requests"] >= 1 and stats["completed"] == 0


# --- 2. --max-cost on a priced model -------------------------------------------------------------
@pytest.mark.slow
def test_max_cost_stops_a_priced_model_within_one_round_of_calls(tmp_path):
    """Configured per-token prices make each call cost a known amount; ``--max-cost`` allows a
    few calls, then the run stops with a partial answer and the cost it ran up."""
    concurrency = 2
    price_out = 0.001  # USD per output token; input is free, so every call costs the same
    with FakeProvider(rules=NEEDLE_RULES, max_lifetime=300) as provider:
        corpus = make_corpus(tmp_path / "corpus", files=24)
        adapter = (
            '[adapter]\nname = "openai_compatible"\n'
            f'base_url = "{provider.base_url}"\nmodel = "fake-model"\n'
            "context_window = 8192\nmax_output_tokens = 256\n"
            f"input_cost_per_token = 0.0\noutput_cost_per_token = {price_out}\n"
        )
        cfg = write_config(tmp_path, provider, concurrency=concurrency, adapter=adapter)
        # one map reply ("NOT FOUND", confidence none) is ≈20 tokens: ≈$0.02 a call, so a
        # budget of $0.07 buys about four calls of the 24+ the run needs
        max_cost = 0.07
        code, stdout, stderr = run_ponder("--config", cfg, "ask", QUESTION, str(corpus),
                                          "--chunk-tokens", "300", "--max-cost", str(max_cost),
                                          "--json")
        stats = http_stats(provider)

    assert code == 3, f"exit {code}; stderr:\n{stderr[-3000:]}"
    data = parse_json(stdout, stderr)
    assert data["stopped_by"] == "max_cost"
    assert data["failures"] and all(f["kind"] == "max_cost" for f in data["failures"])
    assert data["chunks"]["read"] + len(data["failures"]) == data["chunks"]["total"]
    assert data["note"].startswith("stopped by max_cost; answered from")

    # every call the provider answered was metered, at the configured price
    calls = stats["completed"]
    assert stats["requests"] == calls == data["usage"]["calls"]
    assert data["usage"]["output_tokens"] == stats["completion_tokens"]
    assert stats["completion_tokens"] % calls == 0, "the replies were meant to be equal in size"
    per_call = stats["completion_tokens"] // calls * price_out
    cost = data["usage"]["cost_usd"]
    assert cost == pytest.approx(calls * per_call, rel=1e-6)
    assert cost == pytest.approx(stats["completion_tokens"] * price_out, rel=1e-6)

    # The budget bound. The limit is checked before each call, and a call starts only while the
    # cost so far is below max_cost; up to `concurrency` calls run at once, so when the last one
    # starts at most `concurrency - 1` others are still in flight, unmetered. Hence: enough calls
    # were made to reach the budget (that is why it stopped), and at most `concurrency - 1` more
    # than that: the overshoot is under one round of parallel calls.
    needed = math.ceil(max_cost / per_call)
    assert cost >= max_cost
    assert needed <= calls <= needed + concurrency - 1, (calls, needed, per_call)
    assert cost < max_cost + concurrency * per_call


@pytest.mark.slow
def test_max_cost_uses_litellm_prices_of_a_known_model(tmp_path):
    """No prices in the config: litellm's bundled price of ``openai/gpt-4o-mini`` applies (the
    fake provider serves it through ``api_base``); a budget below one call's cost lets exactly
    one call through: the second one waits for the first one's reservation (issue 15), then finds
    the budget spent."""
    import litellm

    prices = litellm.model_cost["gpt-4o-mini"]
    price_in, price_out = prices["input_cost_per_token"], prices["output_cost_per_token"]
    assert price_in > 0 and price_out > 0
    concurrency = 2
    with FakeProvider(rules=NEEDLE_RULES, max_lifetime=300) as provider:
        corpus = make_corpus(tmp_path / "corpus", files=12)
        adapter = ('[adapter]\nname = "litellm"\nmodel = "openai/gpt-4o-mini"\n'
                   f'api_base = "{provider.base_url}"\napi_key = "sk-fake-0123456789abcdef"\n'
                   "max_output_tokens = 256\n")
        cfg = write_config(tmp_path, provider, concurrency=concurrency, adapter=adapter)
        code, stdout, stderr = run_ponder("--config", cfg, "ask", QUESTION, str(corpus),
                                          "--chunk-tokens", "300", "--max-cost", "1e-9",
                                          "--json")
        stats = http_stats(provider)

    assert code == 3, f"exit {code}; stderr:\n{stderr[-3000:]}"
    data = parse_json(stdout, stderr)
    assert data["stopped_by"] == "max_cost" and data["model"] == "openai/gpt-4o-mini"
    # the first call is let through at a cost of 0; the second waits for its reservation, and
    # then finds the budget spent: the overshoot is one call, not one round of parallel calls
    assert stats["completed"] == stats["requests"] == 1 == data["usage"]["calls"]
    assert data["chunks"]["read"] == 1
    assert data["usage"]["input_tokens"] == stats["prompt_tokens"]
    assert data["usage"]["output_tokens"] == stats["completion_tokens"]
    expected = stats["prompt_tokens"] * price_in + stats["completion_tokens"] * price_out
    assert data["usage"]["cost_usd"] == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert data["usage"]["cost_usd"] > 0


# --- 3. progress ---------------------------------------------------------------------------------
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\r")


def run_with_terminal_stderr(*args: str) -> tuple[int, str, str]:
    """Run ponder with stderr on a pseudo-terminal (as in a user's shell) and stdout a pipe."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = start_ponder(*args, stderr=slave,
                            env={"TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"})
    finally:
        os.close(slave)
    try:
        stdout, _ = proc.communicate(timeout=CHILD_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"`ponder {' '.join(args)}` hung")
    finally:
        reader.join(timeout=30)
        os.close(master)
    return proc.returncode, stdout, ANSI.sub("", b"".join(chunks).decode(errors="replace"))


@pytest.fixture
def progress_run(tmp_path):
    """A provider, a three-file corpus with the needle in one file, and a config for it."""
    with FakeProvider(rules=NEEDLE_RULES, latency=0.05, max_lifetime=300) as provider:
        corpus = make_corpus(tmp_path / "corpus", files=3, lines=40, needle_file=1)
        yield provider, corpus, write_config(tmp_path, provider)


def chunk_args(cfg: str, corpus: Path, *extra: str) -> list[str]:
    return ["--config", cfg, "ask", QUESTION, str(corpus), "--chunk-tokens", "400", *extra]


@pytest.mark.slow
def test_progress_on_a_terminal_shows_chunk_counts_and_stdout_stays_clean(progress_run):
    provider, corpus, cfg = progress_run
    code, stdout, stderr = run_with_terminal_stderr(*chunk_args(cfg, corpus))
    stats = http_stats(provider)
    assert code == 0, stderr[-3000:]
    # one map call per chunk, then one combine call (one chunk found the needle)
    chunks = stats["completed"] - 1
    assert chunks >= 3 and stats["requests"] == chunks + 1
    # the bars: the map phase reached N/N of the chunks, the reduce its single group
    assert re.search(rf"map \(fake-model\).*\b{chunks}/{chunks}\b", stderr), stderr
    assert re.search(r"reduce level 1 \(fake-model\).*\b1/1\b", stderr), stderr
    # the summary follows the bars on stderr
    assert "strategy: map_reduce" in stderr
    assert f"model: fake-model; calls: {chunks + 1};" in stderr
    # stdout is exactly the answer: no bar, escape code or summary leaked into it
    assert stdout == ANSWER + "\n", repr(stdout)


@pytest.mark.slow
def test_progress_is_off_when_quiet_or_when_stderr_is_not_a_terminal(progress_run):
    provider, corpus, cfg = progress_run
    bar = re.compile(r"\(fake-model\)|\b\d+/\d+\b|items/s")

    # -q on a terminal: neither progress nor summary
    code, stdout, stderr = run_with_terminal_stderr(*chunk_args(cfg, corpus, "-q"))
    assert code == 0, stderr[-3000:]
    assert stdout.strip() == ANSWER
    assert not bar.search(stderr) and "strategy:" not in stderr, stderr

    # stderr a pipe (a log file, CI): the summary, but no progress
    code, stdout, stderr = run_ponder(*chunk_args(cfg, corpus))
    assert code == 0, stderr[-3000:]
    assert stdout.strip() == ANSWER
    assert "strategy: map_reduce" in stderr
    assert not bar.search(stderr), stderr
    assert http_stats(provider)["requests"] > 0


def test_plain_progress_lines_can_be_asked_for_in_logs(progress_run):
    _provider, corpus, cfg = progress_run
    result = run_cli(chunk_args(cfg, corpus, "--progress", "plain"))
    assert result.exit_code == 0, result.output
    assert re.search(r"map \(fake-model\): done (\d+)/\1 in ", result.stderr), result.stderr


# --- 4. rlm through the CLI ----------------------------------------------------------------------
SEARCH_CODE, SUBMIT_CODE = rlm_needle_script("MAGIC_PORT")
RLM_RULES: list[tuple[str, Any]] = [
    # the sub-call llm_query makes (first: root prompts from turn 2 on quote the code)
    (r"`response`.*Which port does this line set", {"response": ANSWER}),
    # the root model writes SEARCH_CODE at iteration 1, SUBMIT_CODE at iteration 2
    (r"\[\[ ## iteration ## \]\]\s*1/", {"reasoning": "search", "code": SEARCH_CODE}),
    (r"\[\[ ## iteration ## \]\]\s*2/", {"reasoning": "ask and submit", "code": SUBMIT_CODE}),
]


RLM_PRICE_IN, RLM_PRICE_OUT = 1e-6, 4e-6


@pytest.mark.slow
def test_rlm_searches_in_code_sub_calls_and_submits_through_the_cli(tmp_path):
    with FakeProvider(rules=RLM_RULES, max_lifetime=300) as provider:
        corpus = make_corpus(tmp_path / "corpus", files=30, needle_file=17, needle_line=12)
        adapter = ('[adapter]\nname = "openai_compatible"\n'
                   f'base_url = "{provider.base_url}"\nmodel = "fake-model"\n'
                   "context_window = 32000\nmax_output_tokens = 1024\n"
                   f"input_cost_per_token = {RLM_PRICE_IN}\n"
                   f"output_cost_per_token = {RLM_PRICE_OUT}\n")
        cfg = write_config(tmp_path, provider, strategy="rlm", adapter=adapter)
        code, stdout, stderr = run_ponder("--config", cfg, "ask", QUESTION, str(corpus), "--json")
        stats = http_stats(provider)

    assert code == 0, f"exit {code}; stderr:\n{stderr[-3000:]}"
    data = parse_json(stdout, stderr)
    assert data["strategy"] == "rlm" and data["stopped_by"] is None and data["failures"] == []
    # the root's code found the needle, llm_query phrased it, SUBMIT carried its path:line
    assert data["answer"] == f"{ANSWER} (part_017.txt:12)"
    assert {"path": "part_017.txt", "line": 12} in data["citations"]
    # two root turns (made by dspy.RLM itself) plus one llm_query sub-call (made through
    # ponder's services), all over HTTP, all metered: calls, tokens and cost
    assert stats["requests"] == stats["completed"] == 3
    assert data["usage"]["calls"] == 3
    assert data["usage"]["input_tokens"] == stats["prompt_tokens"]
    assert data["usage"]["output_tokens"] == stats["completion_tokens"]
    expected = stats["prompt_tokens"] * RLM_PRICE_IN + stats["completion_tokens"] * RLM_PRICE_OUT
    assert data["usage"]["cost_usd"] == pytest.approx(expected, rel=1e-4)
