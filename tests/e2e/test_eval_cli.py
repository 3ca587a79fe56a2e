"""`ponder eval` from the command line: the table, --json, comparisons, the store commands,
make-dataset, every bad input (exit 2), and resuming after a SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ponder.testing import run_cli
from ponder.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.fault

NEEDLE = "48213"


def write_config(path: Path, provider: FakeProvider, strategy: str = "direct") -> Path:
    path.write_text(
        '[adapter]\nname = "openai_compatible"\n'
        f'base_url = "{provider.base_url}"\nmodel = "fake-model"\n'
        f'[strategy]\nname = "{strategy}"\n[cache]\nenabled = false\n')
    return path


def dataset(tmp_path: Path, present: int = 3, absent: int = 1) -> Path:
    rows = []
    for kind, count in (("present", present), ("absent", absent)):
        for i in range(count):
            folder = tmp_path / "corpus" / f"{kind}{i}"
            folder.mkdir(parents=True, exist_ok=True)
            body = "def helper():\n    return 1\n"
            if kind == "present":
                body += f"MAGIC_PORT = {NEEDLE}\n"
            (folder / "conf.py").write_text(body)
            rows.append({"id": f"{kind}{i}", "question": "What is MAGIC_PORT?",
                         "sources": [f"corpus/{kind}{i}"], "answer": NEEDLE, "tags": [kind],
                         "evidence": ["conf.py:3"] if kind == "present" else []})
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_table_json_and_store_commands(tmp_path: Path):
    data = dataset(tmp_path)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        cfg = write_config(tmp_path / "a.toml", provider)
        table = run_cli(["--config", str(cfg), "eval", str(data), "--metric", "contains"])
        assert table.exit_code == 0, table.output
        assert "contains (95% CI)" in table.stdout and "0.750 [" in table.stdout
        assert "eval id:" in table.stderr
        out = run_cli(["eval", str(data), "--config", str(cfg), "--json"])
    assert out.exit_code == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["score"] == 0.75 and result["resumed"] == 4  # read back, not asked again
    assert result["scores"]["contains"]["n"] == 4 and result["failed"] == 0
    listing = json.loads(run_cli(["eval", "list", "--json"]).stdout)
    assert [e["id"] for e in listing] == [result["eval_id"]]
    assert listing[0]["status"] == "done" and listing[0]["score"] == 0.75
    shown = run_cli(["eval", "show", result["eval_id"][:6], "--json"])
    assert json.loads(shown.stdout)["scores"] == result["scores"]
    assert "contains (95% CI)" in run_cli(["eval", "show", result["eval_id"]]).stdout


def test_two_configs_matrix_and_report(tmp_path: Path):
    data = dataset(tmp_path, present=6, absent=0)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as good, \
            FakeProvider(mode="rules", default_reply="NOT FOUND") as blind:
        a = write_config(tmp_path / "good.toml", good)
        b = write_config(tmp_path / "blind.toml", blind)
        out = run_cli(["eval", str(data), "--config", str(a), "--config", str(b),
                       "--report", str(tmp_path / "rep"), "--json"])
        assert out.exit_code == 0, out.stderr
        result = json.loads(out.stdout)
        assert [v["label"] for v in result["variants"]] == ["good", "blind"]
        (comparison,) = result["comparisons"]
        assert comparison["metrics"]["contains"]["diff"] == -1.0
        assert Path(result["report"]).is_file()
        table = run_cli(["eval", str(data), "--config", str(a), "--config", str(b)])
        assert "compared with good" in table.stdout and "real" in table.stdout
        grid = run_cli(["eval", str(data), "--config", str(a), "--json",
                        "--matrix", "strategy.name=direct,map_reduce"])
        assert grid.exit_code == 0, grid.stderr
        labels = [v["label"] for v in json.loads(grid.stdout)["variants"]]
        assert labels == ["strategy.name=direct", "strategy.name=map_reduce"]
        ids = [v["eval_id"] for v in json.loads(out.stdout)["variants"]]
        compared = run_cli(["eval", "compare", *ids, "--json"])
        assert json.loads(compared.stdout)["comparisons"][0]["metrics"]["contains"][
            "significant"] is True


def test_compare_evals_recorded_with_other_metrics(tmp_path: Path):
    data = dataset(tmp_path)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        cfg = write_config(tmp_path / "a.toml", provider)
        one = json.loads(run_cli(["--config", str(cfg), "eval", str(data), "--json",
                                  "--metric", "contains"]).stdout)
        two = json.loads(run_cli(["--config", str(cfg), "eval", str(data), "--json",
                                  "--metric", "contains", "--metric", "citations"]).stdout)
        asked = provider.stats()["requests"]
    assert asked == 4  # the second eval read the answers back and only scored citations
    table = run_cli(["--config", str(cfg), "eval", "compare", one["eval_id"], two["eval_id"]])
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if line.startswith("│ a ") and
               "citations" not in line)
    assert "citations (95% CI)" in table.stdout and " - " in row  # absent, not an error
    compared = json.loads(run_cli(["--config", str(cfg), "eval", "compare", one["eval_id"],
                                   two["eval_id"], "--json"]).stdout)
    (comparison,) = compared["comparisons"]
    assert list(comparison["metrics"]) == ["contains"]  # only what both have is compared
    assert comparison["metrics"]["contains"]["diff"] == 0.0


def test_default_sources_make_another_eval(tmp_path: Path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "conf.py").write_text(f"MAGIC_PORT = {NEEDLE}\n")
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "conf.py").write_text("OTHER = 1\n")
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"id": "q", "question": "What is MAGIC_PORT?",
                                "answer": NEEDLE}) + "\n")
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        cfg = write_config(tmp_path / "a.toml", provider)
        runs = [json.loads(run_cli(["--config", str(cfg), "eval", str(data), str(folder),
                                    "--json"]).stdout) for folder in (tmp_path / "one",
                                                                      tmp_path / "two")]
    assert [r["score"] for r in runs] == [1.0, 0.0]
    assert runs[0]["eval_id"] != runs[1]["eval_id"]  # two evals, each kept in the store
    listing = json.loads(run_cli(["--config", str(cfg), "eval", "list", "--json"]).stdout)
    assert sorted(e["score"] for e in listing) == [0.0, 1.0]


def test_an_unwritable_report_fails_before_any_call(tmp_path: Path):
    data = dataset(tmp_path, present=2, absent=0)
    (tmp_path / "taken").write_text("a file, not a folder")
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        cfg = write_config(tmp_path / "a.toml", provider)
        out = run_cli(["--config", str(cfg), "eval", str(data), "--report",
                       str(tmp_path / "taken"), "--json"])
        asked = provider.stats()["requests"]
    assert out.exit_code == 2
    assert "--report" in json.loads(out.stdout)["error"] and "taken" in out.stderr
    assert asked == 0


def test_failed_examples_exit_3_and_are_listed(tmp_path: Path):
    data = dataset(tmp_path, present=2, absent=0)
    with data.open("a") as handle:
        handle.write(json.dumps({"id": "gone", "question": "q?", "answer": "x",
                                 "sources": ["nowhere/"]}) + "\n")
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        cfg = write_config(tmp_path / "a.toml", provider)
        out = run_cli(["--config", str(cfg), "eval", str(data), "--json"])
    assert out.exit_code == 3
    result = json.loads(out.stdout)
    assert result["failed"] == 1 and result["failures"][0]["id"] == "gone"
    assert result["score"] == 1.0  # over the two that ran


@pytest.mark.parametrize(("args", "message"), [
    (["--metric", "contians"], "contains"),  # did you mean
    (["--matrix", "strategy.name"], "--matrix 'strategy.name': expected KEY=V1,V2"),
    (["--matrix", "strategy.name=a,a"], "a value is repeated"),
    (["--config", "missing.toml"], "--config missing.toml: no such file"),
    (["--split", "dev"], "--split: must be one of"),
    (["--limit", "0"], "--limit: must be at least 1"),
    (["--concurrency", "0"], "--concurrency: must be at least 1"),
    (["--metric", "contains", "--metric", "contains"], "given twice"),
    (["--tag", "nothing"], "no example matches tags"),
])
def test_bad_flags_exit_2_with_json(tmp_path: Path, args, message):
    data = dataset(tmp_path, present=1, absent=0)
    out = run_cli(["eval", str(data), *args, "--json"])
    assert out.exit_code == 2, out.output
    assert message in json.loads(out.stdout)["error"]
    assert message in out.stderr


def test_bad_dataset_names_the_line(tmp_path: Path):
    bad = tmp_path / "qa.jsonl"
    bad.write_text("".join(json.dumps({"question": "q", "answer": "a"}) + "\n" for _ in range(6))
                   + json.dumps({"answer": "a"}) + "\n")
    out = run_cli(["eval", str(bad)])
    assert out.exit_code == 2
    assert f'{bad}:7: missing "question"' in out.stderr
    out = run_cli(["eval", str(tmp_path / "none.jsonl"), "--json"])
    assert out.exit_code == 2 and "no such dataset file" in json.loads(out.stdout)["error"]
    assert run_cli(["eval", "show", "feedface", "--json"]).exit_code == 2


def test_make_dataset_writes_the_six_families(tmp_path: Path):
    out = run_cli(["eval", "make-dataset", str(tmp_path / "nd"), "--size", "60000", "--json"])
    assert out.exit_code == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["families"] == ["aggregation", "confusable", "literal", "pairs", "semantic",
                                "two_hop"]
    rows = [json.loads(line) for line in Path(made["dataset"]).read_text().splitlines()]
    assert len(rows) == made["examples"] == 22
    literal = next(r for r in rows if r["id"] == "literal-MAGIC_PORT")
    assert literal["answer"] == ["48213"]
    path, line = literal["evidence"][0].split(":")
    lines = (tmp_path / "nd" / "corpus" / path).read_text().splitlines()
    assert lines[int(line) - 1] == "MAGIC_PORT = 48213"
    confusable = next(r for r in rows if r["family"] == "confusable")
    assert len(confusable["must_not_include"]) == 5
    again = run_cli(["eval", "make-dataset", str(tmp_path / "nd")])
    assert again.exit_code == 2 and "not empty" in again.stderr
    only = run_cli(["eval", "make-dataset", str(tmp_path / "lit"), "--size", "60000",
                    "--family", "literal", "--json"])
    assert json.loads(only.stdout)["examples"] == 5


@pytest.mark.slow
def test_sigkilled_eval_resumes_without_repeating_a_finished_example(tmp_path: Path):
    data = dataset(tmp_path, present=12, absent=0)
    store = tmp_path / "runs.sqlite"
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}, latency=(0.3, 0, 0),
                      max_lifetime=240) as provider:
        cfg = write_config(tmp_path / "a.toml", provider)
        with cfg.open("a") as handle:
            handle.write(f'[storage]\nname = "sqlite"\npath = "{store}"\n')
        child = subprocess.Popen(
            [sys.executable, "-m", "ponder", "--config", str(cfg), "eval", str(data),
             "--concurrency", "2", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())

        def recorded() -> int:
            if not store.exists():
                return 0
            with sqlite3.connect(store) as conn:
                try:
                    return conn.execute("SELECT COUNT(*) FROM records WHERE namespace = 'eval' "
                                        "AND key LIKE 'example/%'").fetchone()[0]
                except sqlite3.OperationalError:  # the schema is not there yet
                    return 0

        try:
            for _ in range(1200):  # bounded poll: until some examples are recorded
                if recorded() >= 4 or child.poll() is not None:
                    break
                time.sleep(0.05)
            assert child.poll() is None, child.communicate()[1].decode()
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
            child.communicate()
        finished = recorded()
        assert 4 <= finished < 12
        # the killed eval's record still says running: `show` lists what it has not got
        (killed,) = json.loads(run_cli(["--config", str(cfg), "eval", "list",
                                        "--json"]).stdout)
        shown = run_cli(["--config", str(cfg), "eval", "show", killed["id"]])
        assert killed["status"] == "running"
        assert (f"not run (the eval is still running, or was killed): {12 - finished} "
                f"example(s)") in shown.stderr
        before = provider.stats()["requests"]
        out = run_cli(["--config", str(cfg), "eval", str(data), "--json"])
        asked = provider.stats()["requests"] - before
    assert out.exit_code == 0, out.stderr
    result = json.loads(out.stdout)
    # exactly the unfinished examples were asked (one call each); nothing finished was repeated
    assert asked == 12 - finished
    assert result["resumed"] == finished and result["examples"] == 12
    assert result["score"] == 1.0 and result["failed"] == 0


def recorded_ids(store: Path) -> set[str]:
    """The example ids whose outcome the eval has committed to the run store."""
    if not store.exists():
        return set()
    with sqlite3.connect(store) as conn:
        try:
            rows = conn.execute("SELECT data FROM records WHERE namespace = 'eval' "
                                "AND key LIKE 'example/%'").fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return set()
    return {json.loads(data)["example_id"] for (data,) in rows}


@pytest.mark.slow
def test_ctrl_c_lists_what_did_not_run_and_a_rerun_asks_only_that(tmp_path: Path):
    data = dataset(tmp_path, present=12, absent=0)
    store = tmp_path / "runs.sqlite"
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}, latency=(0.3, 0, 0),
                      max_lifetime=240) as provider:
        cfg = write_config(tmp_path / "a.toml", provider)
        with cfg.open("a") as handle:
            handle.write(f'[storage]\nname = "sqlite"\npath = "{store}"\n')
        # SIGINT as a terminal's Ctrl-C sends it; the child gets the default disposition even
        # when this test runs where SIGINT is ignored (a background job), so Python turns it
        # into KeyboardInterrupt as it would at a terminal
        child = subprocess.Popen(
            [sys.executable, "-m", "ponder", "--config", str(cfg), "eval", str(data),
             "--concurrency", "2", "--progress", "plain"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            for _ in range(1200):  # bounded poll: until some examples are recorded
                if len(recorded_ids(store)) >= 4 or child.poll() is not None:
                    break
                time.sleep(0.05)
            assert child.poll() is None, child.communicate()[1].decode()
            child.send_signal(signal.SIGINT)
            stdout, stderr = (b.decode() for b in child.communicate(timeout=60))
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
        assert child.returncode == 3, stderr
        finished = recorded_ids(store)
        assert 4 <= len(finished) < 12
        # the examples that did not run are named, the table says how many, and the progress
        # line's last word is why it stopped
        listed = re.search(r"not run \(interrupted\): (\d+) example\(s\): (.*)", stderr)
        assert listed, stderr
        not_run = {i.strip() for i in listed.group(2).split(",")}
        assert int(listed.group(1)) == len(not_run)
        every = {f"present{i}" for i in range(12)}
        assert every - finished <= not_run  # nothing unrecorded passes for finished
        assert f"(+{len(not_run)} not run)" in stdout
        assert "cancelled by Ctrl-C" in stderr and "run the same command again" in stderr
        shown = json.loads(run_cli(["--config", str(cfg), "eval", "list", "--json"]).stdout)
        assert shown[0]["status"] == "interrupted"
        # the rerun asks exactly what was not recorded, one call each; nothing finished again
        before = provider.stats()["requests"]
        out = run_cli(["--config", str(cfg), "eval", str(data), "--json"])
        asked = provider.stats()["requests"] - before
    assert out.exit_code == 0, out.stderr
    result = json.loads(out.stdout)
    assert asked == 12 - len(finished)
    assert result["resumed"] == len(finished) and result["status"] == "done"
    assert result["score"] == 1.0 and result["failed"] == 0 and result["not_run"] == 0


def test_a_users_metric_plugin_and_plain_progress(tmp_path: Path):
    plugin = tmp_path / "my_metrics.py"
    plugin.write_text(
        "from ponder import hookimpl\n"
        "from ponder.evaluate import BaseMetric, Score\n\n\n"
        "class ShortAnswer(BaseMetric):\n"
        "    name = 'short_answer'\n\n"
        "    def score(self, example, prediction):\n"
        "        words = len(prediction.answer.split())\n"
        "        return Score(min(1.0, 20 / max(words, 1)), feedback=f'{words} words')\n\n\n"
        "@hookimpl\n"
        "def ponder_register_metrics(register):\n"
        "    register('short_answer', ShortAnswer)\n")
    data = dataset(tmp_path, present=10, absent=0)
    with FakeProvider(mode="oracle", needles={"port": NEEDLE}) as provider:
        cfg = write_config(tmp_path / "a.toml", provider)
        out = run_cli(["--plugin", str(plugin), "--config", str(cfg), "eval", str(data),
                       "--metric", "contains", "--metric", "short_answer",
                       "--progress", "plain"])
    assert out.exit_code == 0, out.output
    assert "short_answer (95% CI)" in out.stdout and "1.000 [1.000, 1.000]" in out.stdout
    # the progress lines: examples done, the score so far, the cost so far, an ETA
    assert "eval a" in out.stderr and "contains 1.000, $0.0000" in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("eval a")]
    assert len(lines) >= 5 and all(re.search(r", ETA \d+(m\d\ds|s)$", line)
                                   for line in lines[:-1]), lines
    assert "done 10/10" in lines[-1]
