"""``ponder batch`` end to end against the loopback fake provider's Files and Batch APIs, through
litellm (create_file/create_batch/retrieve_batch/cancel_batch) and ``stream_download``: results
arrive shuffled and are joined on custom_id, error-file and expired requests are retried live
or listed, never dropped, costs are at the batch price, and the job lives in the run store so
other processes (real ``python -m ponder`` subprocesses) see, cancel and resume it."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ponder.testing import run_cli
from ponder.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.fault

KEY = "sk-batch-test-key-0123456789abcdef"
VALUES = {f"KEY_{name}": str(1000 + i * 111) for i, name in enumerate("ABCDEFGH")}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Eight questions, each over its own file holding one value, plus ponder.toml."""
    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for name, value in VALUES.items():
        (src / f"{name.lower()}.py").write_text(f"# settings\n{name} = {value}\n")
        rows.append({"id": name, "question": f"What is {name}?",
                     "sources": [f"src/{name.lower()}.py"], "answer": value})
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


@pytest.fixture
def provider():
    needles = dict(VALUES)
    with FakeProvider(mode="oracle", needles=needles, api_key=KEY) as fake:
        yield fake


def write_config(project: Path, provider: FakeProvider, extra: str = "") -> Path:
    config = project / "ponder.toml"
    config.write_text(
        f'[adapter]\nname = "litellm"\nmodel = "openai/gpt-4o-mini"\n'
        f'api_base = "{provider.base_url}"\napi_key = "{KEY}"\n'
        f'[batch]\npoll_interval = 0.05\n{extra}')
    return config


def cli(config: Path, *args: str):
    return run_cli(["--config", str(config), "batch", *args])


def as_json(result) -> dict:
    assert result.stdout.strip(), result.output
    return json.loads(result.stdout)


def list_price(tokens_in: int, tokens_out: int) -> float:
    from ponder.plugins.litellm_adapter import litellm_model_info

    return litellm_model_info("openai/gpt-4o-mini").cost(tokens_in, tokens_out)


def test_submit_wait_joins_shuffled_results_and_retries_the_error_file(project, provider):
    provider.batches.configure(validating_s=0.05, in_progress_s=0.2, finalizing_s=0.05,
                               error_rate=0.4, seed=7)
    config = write_config(project, provider)
    result = cli(config, "submit", str(project / "questions.jsonl"), "--wait", "--json")
    assert result.exit_code == 0, result.output
    job = as_json(result)
    answers = {a["custom_id"]: a for a in job["answers"]}
    assert set(answers) == set(VALUES)  # nothing dropped
    for name, value in VALUES.items():  # joined on custom_id: each answer is its own question's
        assert answers[name]["answer"] == value, answers[name]
    live = [a for a in answers.values() if a["source"] == "live-retry"]
    batch = [a for a in answers.values() if a["source"] == "batch"]
    stats = provider.batches.stats()
    assert stats["answered"] == len(batch) and 0 < len(live) < len(VALUES)
    assert all("HTTP 500" in a["batch_error"] for a in live)
    # every live retry is one chat request the provider served; the batch answered the rest
    assert provider.stats()["by_path"].get("/v1/chat/completions", 0) == len(live)
    usage = job["usage"]
    assert usage["batch"]["calls"] == len(batch) and usage["live"]["calls"] == len(live)
    tokens_in = sum(a["input_tokens"] for a in batch)
    tokens_out = sum(a["output_tokens"] for a in batch)
    assert usage["batch"]["input_tokens"] == tokens_in
    assert usage["batch"]["cost_usd"] == pytest.approx(0.5 * list_price(tokens_in, tokens_out))
    assert usage["live"]["cost_usd"] == pytest.approx(list_price(
        sum(a["input_tokens"] for a in live), sum(a["output_tokens"] for a in live)))
    assert job["pricing"]["mode"] == "batch" and job["pricing"]["discount"] == 0.5
    # the output file really was out of order
    output = Path(job["results_path"]).parent / "output.jsonl"
    order = [json.loads(line)["custom_id"] for line in output.read_text().splitlines()]
    assert order != sorted(order, key=list(VALUES).index)
    # recorded as a run, with its calls and the total cost
    runs = json.loads(run_cli(["--config", str(config), "runs", "--json"]).stdout)
    run = next(r for r in runs if r["id"] == job["run_id"])
    assert run["strategy"] == "batch"
    assert run["cost_usd"] == pytest.approx(usage["cost_usd"])
    assert KEY not in result.output


def test_expired_requests_are_listed_without_retry_and_answered_with_it(project, provider):
    provider.batches.configure(outcome="expired", expire_fraction=0.5, shuffle=True)
    config = write_config(project, provider, "retry_failed = false\n")
    submitted = as_json(cli(config, "submit", str(project / "questions.jsonl"), "--json"))
    listed = cli(config, "results", submitted["id"], "--json")
    assert listed.exit_code == 3, listed.output  # partial: some not answered
    job = as_json(listed)
    assert job["status"] == "expired"
    failed = [a for a in job["answers"] if a["source"] == "failed"]
    assert len(failed) == len(VALUES) // 2 == job["failed"]
    assert all("batch_expired" in a["error"] for a in failed)
    assert len(job["answers"]) == len(VALUES)
    # a second submit, retrying live: everything answered, the expired half at list price
    config = write_config(project, provider)
    again = as_json(cli(config, "submit", str(project / "questions.jsonl"), "--wait", "--json"))
    assert again["failed"] == 0 and again["usage"]["live"]["calls"] == len(VALUES) // 2
    assert {a["answer"] for a in again["answers"]} == set(VALUES.values())


def test_a_failed_batch_lists_every_request_with_the_reason(project, provider):
    provider.batches.configure(outcome="failed")
    config = write_config(project, provider, "retry_failed = false\n")
    submitted = as_json(cli(config, "submit", str(project / "questions.jsonl"), "--json"))
    result = cli(config, "results", submitted["id"])
    assert result.exit_code == 3
    assert "the batch failed" in result.stdout
    assert result.stdout.count("(failed)") == len(VALUES)


def _ponder(config: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ponder", "--config", str(config), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def test_a_poller_killed_mid_wait_resumes_from_the_store(project, provider):
    provider.batches.configure(validating_s=0.2, in_progress_s=4.0)
    config = write_config(project, provider)
    waiter = _ponder(config, "batch", "submit", str(project / "questions.jsonl"), "--wait")
    try:
        seen = []
        for line in waiter.stderr:  # the waiter reports each poll; kill it mid-run
            seen.append(line)
            if ": in_progress," in line:
                break
    finally:
        waiter.kill()
        waiter.wait(timeout=30)
    job_id = seen[0].split()[1]
    assert job_id.startswith("batch_")
    status = as_json(cli(config, "status", job_id, "--json"))  # another process: the store
    assert status["status"] in ("in_progress", "finalizing", "completed")
    resumed = cli(config, "results", job_id[:14], "--json")  # a unique prefix is enough
    assert resumed.exit_code == 0, resumed.output
    job = as_json(resumed)
    assert job["status"] == "completed" and job["answered"] == len(VALUES)
    assert provider.batches.stats()["jobs"] == 1  # resumed, not resubmitted
    # asking again reads the finished job: no download, no second charge
    before = provider.stats()["requests"]
    assert as_json(cli(config, "results", job_id, "--json"))["usage"] == job["usage"]
    assert provider.stats()["requests"] == before


def test_cancel_from_another_process(project, provider):
    provider.batches.configure(validating_s=0.05, in_progress_s=30.0)
    config = write_config(project, provider, "retry_failed = false\n")
    submitted = as_json(cli(config, "submit", str(project / "questions.jsonl"), "--json"))
    time.sleep(0.2)  # not a threshold: only so the job has left validating
    proc = _ponder(config, "batch", "cancel", submitted["id"], "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["status"] in ("cancelling", "cancelled")
    job = as_json(cli(config, "results", submitted["id"], "--json"))
    assert job["status"] == "cancelled"
    assert len(job["answers"]) == len(VALUES)  # every request accounted for
    assert all(a["source"] in ("batch", "failed") for a in job["answers"])
    assert any("batch_cancelled" in (a.get("error") or "") for a in job["answers"])


def test_waiting_prints_a_line_per_change_not_per_poll(project, provider):
    # 2 s of validating, where nothing changes, polled every 0.05 s: many polls and one line
    # (counts grow with time during in_progress, so that phase may print a line per poll on a
    # slow machine; the quiet phase is what shows that unchanged polls print nothing)
    provider.batches.configure(validating_s=2.0, in_progress_s=0.3)
    config = write_config(project, provider)
    result = cli(config, "submit", str(project / "questions.jsonl"), "--wait")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("batch_fake_")]
    polls = provider.stats()["by_path"].get(f"/v1/batches/{lines[0].split(':')[0]}", 0)
    assert any(": validating," in line for line in lines)
    assert any(": completed," in line for line in lines)
    assert all(a != b for a, b in itertools.pairwise(lines)), lines
    assert polls > len(lines), (polls, lines)


def test_cancelling_a_finished_job_says_there_was_nothing_to_cancel(project, provider):
    config = write_config(project, provider)
    done = as_json(cli(config, "submit", str(project / "questions.jsonl"), "--wait",
                       "--json"))
    assert done["status"] == "completed"
    again = cli(config, "cancel", done["id"], "--json")
    assert again.exit_code == 0
    record = as_json(again)
    assert record["status"] == "completed" and "nothing to cancel" in record["note"]
    human = cli(config, "cancel", done["id"])
    assert "had already ended (completed)" in human.stderr
    # the answers are untouched
    assert as_json(cli(config, "results", done["id"], "--json"))["answered"] == len(VALUES)


def test_bad_questions_file_names_the_line(project, provider):
    config = write_config(project, provider)
    bad = project / "bad.jsonl"
    bad.write_text('{"question": "ok?", "sources": ["src"]}\n{"question": "", "sources": []}\n')
    result = cli(config, "submit", str(bad), "--json")
    assert result.exit_code == 2
    error = as_json(result)
    assert f"{bad}:2" in error["error"] and "question" in error["error"]
    assert provider.stats()["requests"] == 0  # nothing uploaded


def test_an_adapter_without_a_batch_api_is_refused(project, provider):
    config = project / "ponder.toml"
    config.write_text('[adapter]\nname = "litellm"\nmodel = "gemini/gemini-2.0-flash"\n'
                      'api_key = "not-a-real-key-000000000000"\n')
    result = cli(config, "submit", str(project / "questions.jsonl"))
    assert result.exit_code == 2
    assert "gemini" in result.stderr and "not supported" in result.stderr
    assert provider.stats()["requests"] == 0


def test_an_unknown_job_id_is_bad_input(project, provider):
    config = write_config(project, provider)
    result = cli(config, "status", "batch_nope", "--json")
    assert result.exit_code == 2
    assert "no batch job 'batch_nope'" in as_json(result)["error"]


def test_the_fake_fails_a_batch_whose_input_is_invalid(provider):
    """The fake validates input files as OpenAI does: a line without custom_id fails the job."""
    import litellm

    kwargs = {"custom_llm_provider": "openai", "api_base": provider.base_url, "api_key": KEY}
    line = {"method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "hi"}]}}
    uploaded = litellm.create_file(file=("in.jsonl", (json.dumps(line) + "\n").encode()),
                                   purpose="batch", **kwargs)
    batch = litellm.create_batch(completion_window="24h", endpoint="/v1/chat/completions",
                                 input_file_id=uploaded.id, **kwargs)
    batch = litellm.retrieve_batch(batch_id=batch.id, **kwargs)
    assert batch.status == "failed"
    assert "custom_id" in batch.errors.data[0].message
    assert batch.output_file_id is None


def test_max_cost_binds_the_live_retries(project, provider):
    """[limits] max_cost counts the batch's answers: past it, failures are listed, not retried."""
    provider.batches.configure(outcome="expired", expire_fraction=0.5)
    config = write_config(project, provider, "[limits]\nmax_cost = 0.000001\n")
    result = cli(config, "submit", str(project / "questions.jsonl"), "--wait", "--json")
    assert result.exit_code == 3, result.output
    job = as_json(result)
    assert job["usage"]["live"]["calls"] == 0
    assert provider.stats()["by_path"].get("/v1/chat/completions", 0) == 0
    failed = [a for a in job["answers"] if a["source"] == "failed"]
    assert len(failed) == len(VALUES) // 2
    assert all("not retried live: the max_cost limit" in a["error"] for a in failed)


def test_ask_batch_runs_the_map_phase_as_one_job(project, provider):
    """`ponder ask --batch`: map_reduce's chunks go as one batch job; the run then reuses every
    reply the batch gave (response cache hits), asks the chunks it did not answer live, and
    reduces live. Run again, it finds the same job instead of submitting another."""
    for i in range(6):  # enough text for a dozen chunks
        (project / "src" / f"filler_{i}.py").write_text(
            "".join(f"filler_{i}_{j} = {j}\n" for j in range(40)))
    provider.batches.configure(validating_s=0.05, in_progress_s=0.2, error_rate=0.3, seed=5)
    config = write_config(project, provider)
    args = ["--config", str(config), "ask", "--batch", "What is KEY_E?", str(project / "src"),
            "--chunk-tokens", "64", "--json"]
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    batch = data["batch"]
    assert "1444" in data["answer"]
    assert batch["status"] == "completed"
    assert batch["chunks"] == data["chunks"]["total"] > 1  # the run's own chunks
    assert 0 < batch["cached"] == batch["answered"] < batch["chunks"]
    assert data["usage"]["cached_calls"] == batch["cached"]  # every batch reply was reused
    chat = provider.stats()["by_path"]["/v1/chat/completions"]
    assert chat == data["usage"]["calls"]  # live: the chunks the batch failed, and the reduce
    assert batch["usage"]["batch"]["cost_usd"] == pytest.approx(0.5 * list_price(
        batch["usage"]["batch"]["input_tokens"], batch["usage"]["batch"]["output_tokens"]))
    again = run_cli(args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["batch"]["id"] == batch["id"]
    assert provider.batches.stats()["jobs"] == 1


def test_ask_batch_over_a_context_one_call_could_read_still_uses_the_job(project, provider):
    """A small project fits one call, so a plain map_reduce run would read it in one answer call
    (single read); under --batch the run makes the map calls the job answered, from the cache,
    and only the combine goes live."""
    provider.batches.configure(validating_s=0.05, in_progress_s=0.1, error_rate=0.0, seed=1)
    config = write_config(project, provider)
    result = run_cli(["--config", str(config), "ask", "--batch", "What is KEY_E?",
                      str(project / "src"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    batch = data["batch"]
    assert "1444" in data["answer"] and batch["status"] == "completed"
    assert batch["chunks"] == data["chunks"]["total"] == batch["answered"] == batch["cached"] >= 1
    assert data["usage"]["cached_calls"] == batch["cached"]
    assert provider.stats()["by_path"]["/v1/chat/completions"] == data["usage"]["calls"] == 1


# --- Anthropic's Message Batches (ponder's thin client; the fake's /v1/messages/batches) -------
ANTHROPIC_MODEL = "anthropic/claude-haiku-4-5"


def write_anthropic_config(project: Path, provider: FakeProvider, extra: str = "") -> Path:
    config = project / "ponder.toml"
    config.write_text(
        f'[adapter]\nname = "litellm"\nmodel = "{ANTHROPIC_MODEL}"\n'
        # Anthropic's base URL has no /v1 (litellm's anthropic adapter adds /v1/messages)
        f'api_base = "{provider.base_url.removesuffix("/v1")}"\napi_key = "{KEY}"\n'
        f'[batch]\npoll_interval = 0.05\n{extra}')
    return config


def anthropic_list_price(tokens_in: int, tokens_out: int) -> float:
    from ponder.plugins.litellm_adapter import litellm_model_info

    return litellm_model_info(ANTHROPIC_MODEL).cost(tokens_in, tokens_out)


def test_anthropic_batch_joins_results_and_retries_errored_requests_live(project, provider):
    provider.batches.configure(in_progress_s=0.2, error_rate=0.4, seed=7)
    config = write_anthropic_config(project, provider)
    result = cli(config, "submit", str(project / "questions.jsonl"), "--wait", "--json")
    assert result.exit_code == 0, result.output
    job = as_json(result)
    assert job["id"].startswith("msgbatch_") and job["provider"] == "anthropic"
    answers = {a["custom_id"]: a for a in job["answers"]}
    assert set(answers) == set(VALUES)  # nothing dropped
    for name, value in VALUES.items():  # joined on custom_id
        assert answers[name]["answer"] == value, answers[name]
    live = [a for a in answers.values() if a["source"] == "live-retry"]
    batch = [a for a in answers.values() if a["source"] == "batch"]
    assert 0 < len(live) < len(VALUES)
    assert all(a["batch_error"].startswith("api_error:") for a in live)
    by_path = provider.stats()["by_path"]
    # one create with the requests inline (no upload), one results download, and every live
    # retry one Messages API request (litellm's anthropic completion)
    assert by_path["/v1/messages/batches"] == 1
    assert by_path[f"/v1/messages/batches/{job['id']}/results"] == 1
    assert by_path.get("/v1/messages", 0) == len(live) == provider.batches.anthropic.live
    assert "/v1/files" not in by_path and "/v1/chat/completions" not in by_path
    assert provider.batches.anthropic.stats()["answered"] == len(batch)
    # priced at Anthropic's documented batch discount (50%), live retries at the list price
    usage = job["usage"]
    tokens_in = sum(a["input_tokens"] for a in batch)
    tokens_out = sum(a["output_tokens"] for a in batch)
    assert usage["batch"]["calls"] == len(batch) and tokens_in > 0
    assert usage["batch"]["cost_usd"] == pytest.approx(
        0.5 * anthropic_list_price(tokens_in, tokens_out))
    assert usage["live"]["cost_usd"] == pytest.approx(anthropic_list_price(
        sum(a["input_tokens"] for a in live), sum(a["output_tokens"] for a in live)))
    assert job["pricing"]["mode"] == "batch" and job["pricing"]["discount"] == 0.5
    # the provider's results really were out of order
    from ponder.batchjobs.anthropic_client import from_anthropic_id

    raw = Path(job["results_path"]).parent / "output.anthropic.jsonl"
    order = [from_anthropic_id(json.loads(line)["custom_id"])  # as sent: "_" escaped as "__"
             for line in raw.read_text().splitlines()]
    assert sorted(order) == sorted(VALUES) and order != list(VALUES)
    runs = json.loads(run_cli(["--config", str(config), "runs", "--json"]).stdout)
    run = next(r for r in runs if r["id"] == job["run_id"])
    assert run["cost_usd"] == pytest.approx(usage["cost_usd"])
    assert KEY not in result.output


def test_anthropic_status_and_cancel_from_other_processes(project, provider):
    provider.batches.configure(in_progress_s=30.0, finalizing_s=0.2)
    config = write_anthropic_config(project, provider, "retry_failed = false\n")
    submitted = as_json(cli(config, "submit", str(project / "questions.jsonl"), "--json"))
    proc = _ponder(config, "batch", "status", submitted["id"], "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    status = json.loads(out)
    assert status["status"] == "in_progress" and status["request_counts"]["total"] == len(VALUES)
    proc = _ponder(config, "batch", "cancel", submitted["id"], "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["status"] in ("cancelling", "cancelled")
    result = cli(config, "results", submitted["id"], "--json")
    job = as_json(result)
    assert job["status"] == "cancelled"
    assert len(job["answers"]) == len(VALUES)  # every request accounted for
    cancelled = [a for a in job["answers"] if "batch_cancelled" in (a.get("error") or "")]
    assert cancelled and all(a["source"] == "failed" for a in cancelled)
    assert result.exit_code == 3  # some not answered, each listed with the reason


def test_anthropic_expired_requests_are_listed_or_answered_live(project, provider):
    provider.batches.configure(outcome="expired", expire_fraction=0.5)
    config = write_anthropic_config(project, provider, "retry_failed = false\n")
    submitted = as_json(cli(config, "submit", str(project / "questions.jsonl"), "--json"))
    listed = cli(config, "results", submitted["id"], "--json")
    assert listed.exit_code == 3, listed.output
    job = as_json(listed)
    assert job["status"] == "expired"
    failed = [a for a in job["answers"] if a["source"] == "failed"]
    assert len(failed) == len(VALUES) // 2 and all("batch_expired" in a["error"] for a in failed)
    config = write_anthropic_config(project, provider)
    again = as_json(cli(config, "submit", str(project / "questions.jsonl"), "--wait", "--json"))
    assert again["failed"] == 0 and again["usage"]["live"]["calls"] == len(VALUES) // 2
    assert {a["answer"] for a in again["answers"]} == set(VALUES.values())


def test_anthropic_custom_ids_are_escaped_reversibly_and_checked_by_the_fake(provider):
    import httpx

    from ponder.batchjobs.anthropic_client import from_anthropic_id, to_anthropic_id

    for custom_id in ("q00001", "port", "a.b:c_d", "x__y", "_d"):
        escaped = to_anthropic_id(custom_id)
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", escaped)
        assert from_anthropic_id(escaped) == custom_id
    # the fake refuses what Anthropic refuses, at creation
    base = provider.base_url.removesuffix("/v1")
    bad = httpx.post(f"{base}/v1/messages/batches", headers={"x-api-key": KEY},
                     json={"requests": [{"custom_id": "a.b", "params": {
                         "model": "m", "max_tokens": 8,
                         "messages": [{"role": "user", "content": "hi"}]}}]})
    assert bad.status_code == 400 and "custom_id" in bad.json()["error"]["message"]


def test_anthropic_ask_batch_reuses_the_batch_replies_and_asks_the_rest_live(project, provider):
    for i in range(6):  # enough text for a dozen chunks
        (project / "src" / f"filler_{i}.py").write_text(
            "".join(f"filler_{i}_{j} = {j}\n" for j in range(40)))
    provider.batches.configure(in_progress_s=0.2, error_rate=0.3, seed=5)
    config = write_anthropic_config(project, provider)
    result = run_cli(["--config", str(config), "ask", "--batch", "What is KEY_E?",
                      str(project / "src"), "--chunk-tokens", "64", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    batch = data["batch"]
    assert "1444" in data["answer"] and batch["status"] == "completed"
    assert 0 < batch["cached"] == batch["answered"] < batch["chunks"] == data["chunks"]["total"]
    assert data["usage"]["cached_calls"] == batch["cached"]
    # live: the chunks the batch did not answer and the reduce, each one Messages API request
    assert provider.stats()["by_path"]["/v1/messages"] == data["usage"]["calls"] > 0
