"""Issue 15, walked through as a user: what the first fixes left untrue, each through ``ponder``.

- a model that ignores the output format, with a huge reply: the parse error quotes the whole
  reply, which reached stderr, ``--json`` (once per failed chunk) and the run store (the error of
  every call, run and span: 300 MB for two runs) unbounded, and was called an "internal error";
- a rate limit that outlasts the retries, in a one-call run: the error still said "lm15 never
  retries for you" (ponder's words were only used for failed chunks);
- ponder's own "cannot reach the provider at http://127.0.0.1:PORT/v1" note was read as a
  citation and reported as a dropped one; a citation of the path as given on the command line
  (``corpus/f1.py`` for ``f1.py`` loaded from ``corpus/``) was dropped as "not a loaded document";
- a provider key in the environment that is not key-shaped (``OPENAI_API_KEY=plain…``) was shown
  in clear by ``ponder plugins``, ``plugins --json`` and ``config check`` when a plugin's error
  held it;
- ``pipeline run --json`` failing printed ``{"error", "partial"}``, without ``exit_code``, and
  nothing on stderr;
- an unrecorded run (the store could not be opened) still printed ``run ID`` as if
  ``ponder runs show ID`` would find it;
- ``LimitsConfig(max_cost=nan)`` in Python raised a ValueError that printed as a tuple.

The provider is the loopback fake over real HTTP; the store is the real SQLite file.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from ponder.testing import run_cli
from ponder.testing.fake_provider import FakeProvider

#: stdout/stderr/--json/store text allowed for a failure whose reply was HUGE characters
BOUND = 20_000
HUGE = "all work and no play " * 100_000  # 2.1 MB: 100 times the bound, quick to parse


def write_config(tmp_path: Path, base_url: str, *, extra: str = "") -> str:
    path = tmp_path / "ponder.toml"
    path.write_text(
        f"{extra}\n[limits]\nconcurrency = 2\nmax_retries = 0\n"
        '[adapter]\nname = "openai_compatible"\n'
        f'base_url = "{base_url}"\nmodel = "fake-model"\n'
        "context_window = 8192\nmax_output_tokens = 256\n")
    return str(path)


def corpus(tmp_path: Path, files: int = 2) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(files):
        (root / f"f{i}.py").write_text("".join(f"value_{i}_{j} = {j}\n" for j in range(20)))
    return root


def stored(cfg: str, run_id: str | None = None) -> dict:
    if run_id is None:
        listed = run_cli(["--config", cfg, "runs", "--json"])
        run_id = json.loads(listed.stdout)[0]["id"]
    shown = run_cli(["--config", cfg, "runs", "show", run_id, "--json"])
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.stdout)


# --- a huge reply in the wrong format ---------------------------------------------------------
def test_a_huge_unparseable_reply_in_a_one_call_run_is_named_and_cut(tmp_path):
    with FakeProvider(rules=[(r".", HUGE)], dspy_format=False) as fake:
        cfg = write_config(tmp_path, fake.base_url)
        src = str(corpus(tmp_path, files=1) / "f0.py")
        plain = run_cli(["--config", cfg, "ask", "What?", src, "--strategy", "direct",
                         "--no-cache"])
        as_json = run_cli(["--config", cfg, "ask", "What?", src, "--strategy", "direct",
                           "--no-cache", "--json"])
    assert plain.exit_code == 1 and as_json.exit_code == 1
    assert "internal error" not in plain.stderr
    assert "the model's reply did not follow the output format" in plain.stderr
    assert "cut by ponder" in plain.stderr and "(run with -vv for the traceback)" in plain.stderr
    assert len(plain.stderr) < BOUND and len(as_json.stdout) < BOUND
    assert json.loads(as_json.stdout)["exit_code"] == 1
    # the run store keeps what it cost, and a bounded error (run, spans and calls)
    record = stored(cfg)
    assert record["status"] == "failed" and record["usage"]["calls"] == 2  # + DSPy's re-ask
    assert len(json.dumps(record)) < 4 * BOUND


def test_a_huge_unparseable_reply_per_chunk_is_cut_in_json_text_and_store(tmp_path):
    with FakeProvider(rules=[(r".", HUGE)], dspy_format=False) as fake:
        cfg = write_config(tmp_path, fake.base_url)
        src = str(corpus(tmp_path, files=2))
        result = run_cli(["--config", cfg, "ask", "What?", src, "--strategy", "map_reduce",
                          "--chunk-tokens", "100", "--no-cache", "--json"])
    assert result.exit_code == 1, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert data["status"] == "failed" and len(data["failures"]) >= 2
    assert all(len(f["error"]) < 3_000 for f in data["failures"])
    assert len(result.stdout) < 2 * BOUND and len(result.stderr) < 2 * BOUND
    assert len(json.dumps(stored(cfg, data["run_id"]))) < 8 * BOUND


# --- ponder's words for a rate limit that outlasts the retries -----------------------------------
def test_a_rate_limit_in_a_one_call_run_is_in_ponders_words(tmp_path):
    with FakeProvider(fail_first_n=5, fail_first_kind="rate_limit", retry_after=0.01) as fake:
        cfg = write_config(tmp_path, fake.base_url)
        src = str(corpus(tmp_path, files=1) / "f0.py")
        result = run_cli(["--config", cfg, "ask", "What?", src, "--strategy", "direct",
                          "--no-cache", "--json"])
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert "never retries for you" not in error and "never retries" not in result.stderr
    assert "ponder retries rate-limited calls" in error


def test_a_failed_one_call_run_still_reports_every_request_it_made(tmp_path):
    """The run's error carries its id and usage: each request the provider answered with an
    error is a failed request (counted, priced at zero), in --json, on stderr and in the store."""
    with FakeProvider(fault_rate=1.0, fault_kinds=("server_error",)) as fake:
        cfg = write_config(tmp_path, fake.base_url, extra="")
        cfg_text = Path(cfg).read_text().replace("max_retries = 0", "max_retries = 2")
        Path(cfg).write_text(cfg_text)
        src = str(corpus(tmp_path, files=1) / "f0.py")
        result = run_cli(["--config", cfg, "ask", "What?", src, "--strategy", "direct",
                          "--no-cache", "--json"])
        requests = fake.stats()["requests"]
    assert result.exit_code == 1 and requests == 3
    data = json.loads(result.stdout)
    assert data["usage"]["failed_requests"] == requests and data["usage"]["calls"] == 0
    assert data["usage"]["retries"] == 2 and data["usage"]["cost_usd"] == 0.0
    assert f"run {data['run_id']} recorded: 0 calls served, 3 requests failed" in result.stderr
    assert stored(cfg, data["run_id"])["usage"]["failed_requests"] == requests


# --- citations -----------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_provider_url_in_ponders_note_is_no_dropped_citation(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    cfg = write_config(tmp_path, url)
    result = run_cli(["--config", cfg, "ask", "What?", str(corpus(tmp_path)), "--strategy",
                      "map_reduce", "--chunk-tokens", "100", "--no-cache", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 1 and f"cannot reach the provider at {url}" in data["note"]
    assert data["citations_dropped"] == []
    assert not any("citation" in problem for problem in data["problems"])


def test_credentials_in_the_base_url_are_named_as_the_cause(tmp_path):
    """``http://user:pw@host/v1`` failed as "the host name does not resolve" for a host that
    does resolve: the message hides the user:password@ that the HTTP client choked on."""
    cfg = write_config(tmp_path, f"http://user:pw@127.0.0.1:{_closed_port()}/v1")
    result = run_cli(["--config", cfg, "ask", "What?", str(corpus(tmp_path, files=1)),
                      "--strategy", "direct", "--no-cache", "--json"])
    error = json.loads(result.stdout)["error"]
    assert result.exit_code == 1 and "cannot reach the provider at http://127.0.0.1:" in error
    assert "base_url holds user:password@" in error and "pw@" not in error


def test_a_citation_of_the_path_as_given_on_the_command_line_is_kept(tmp_path, monkeypatch):
    root = corpus(tmp_path, files=1)
    monkeypatch.chdir(tmp_path)  # the user types `corpus`, the document is `f0.py`
    reply = {"answer": "value_0_3 is 3 (corpus/f0.py:4)"}
    with FakeProvider(rules=[(r"`answer`", reply)]) as fake:
        cfg = write_config(tmp_path, fake.base_url)
        result = run_cli(["--config", cfg, "ask", "What is value_0_3?", root.name,
                          "--strategy", "direct", "--no-cache", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0, result.stderr
    assert data["citations"] == [{"path": "f0.py", "line": 4}]
    assert data["citations_dropped"] == []


# --- an environment key that is not key-shaped ---------------------------------------------------
def test_a_plain_provider_key_from_the_environment_is_masked_in_plugin_errors(tmp_path):
    key = "plainvalue-walkthrough-4711-zz"
    plugin = tmp_path / "leaky_env.py"
    plugin.write_text('import os\nraise RuntimeError("bad key " + os.environ["OPENAI_API_KEY"])\n')
    env = {"OPENAI_API_KEY": key, "PONDER_STRICT_PLUGINS": None}
    shown = [run_cli(["--plugin", str(plugin), *args], env=env)
             for args in (["plugins"], ["plugins", "--json"], ["config", "check"])]
    for result in shown:
        assert key not in result.stdout + result.stderr
    assert "bad key ********" in shown[0].stdout + shown[0].stderr
    listed = {p["name"]: p for p in json.loads(shown[1].stdout)}
    assert listed[str(plugin)]["error"].endswith("bad key ********")


# --- one JSON shape for every failure ------------------------------------------------------------
def test_pipeline_run_json_failure_has_the_common_shape(tmp_path):
    result = run_cli(["pipeline", "run", str(tmp_path / "nope.toml"), "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": f"{tmp_path / 'nope.toml'}: pipeline file "
                                                  "not found", "exit_code": 2}
    assert "pipeline file not found" in result.stderr


# --- an unrecorded run says so -------------------------------------------------------------------
def test_an_unrecorded_run_says_runs_show_will_not_find_it(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "ponder.sqlite").write_text("this is not a database, " * 20)
    with FakeProvider(rules=[(r"`answer`", {"answer": "value_0_3 is 3"})]) as fake:
        cfg = write_config(tmp_path, fake.base_url)
        result = run_cli(["--config", cfg, "ask", "What?", str(corpus(tmp_path, files=1)),
                          "--strategy", "direct", "--no-cache", "--json"],
                         env={"PONDER_DATA_DIR": str(data_dir)})
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["answer"] == "value_0_3 is 3"
    assert any(p.startswith(f"run {data['run_id']} is not recorded") for p in data["problems"])


def test_a_recorded_run_has_no_such_problem(tmp_path):
    with FakeProvider(rules=[(r"`answer`", {"answer": "value_0_3 is 3"})]) as fake:
        cfg = write_config(tmp_path, fake.base_url)
        result = run_cli(["--config", cfg, "ask", "What?", str(corpus(tmp_path, files=1)),
                          "--strategy", "direct", "--no-cache", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["problems"] == []
    assert stored(cfg, data["run_id"])["status"] == "ok"


# --- Python API ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"max_cost": float("nan")}, "max_cost: must be a finite number, got nan"),
    ({"timeout": float("inf")}, "timeout: must be a finite number, got inf"),
    ({"max_cost": -1.0}, "max_cost: must be >= 0, got -1.0"),
])
def test_a_refused_limit_built_in_python_reads_as_a_sentence(kwargs, expected):
    from ponder.kernel.config import LimitsConfig

    with pytest.raises(ValueError) as caught:
        LimitsConfig(**kwargs)
    assert str(caught.value) == expected


# --- a study's limits are limits too -------------------------------------------------------------
@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--max-cost", "nan", "Invalid value for '--max-cost': expected a finite number, got nan"),
    ("--timeout", "inf", "Invalid value for '--timeout': expected a finite number, got inf"),
    ("--max-cost", "-1", "Invalid value for '--max-cost': expected a number >= 0, got -1.0"),
])
def test_optimize_refuses_a_limit_that_is_no_limit(tmp_path, flag, value, expected):
    """``ask`` refused ``--max-cost nan``; ``optimize`` took it and its budget never bound."""
    dataset = tmp_path / "qa.jsonl"
    dataset.write_text("".join(json.dumps({"question": f"q{i}", "answer": "a"}) + "\n"
                               for i in range(3)))
    space = tmp_path / "space.toml"
    space.write_text('[optimize.space]\n"strategy.name" = { choice = ["direct", "map_reduce"] }\n')
    result = run_cli(["optimize", str(dataset), "--space", str(space), flag, value,
                      "--dry-run", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": expected, "exit_code": 2}
