"""`ponder ask` end to end through the CLI, on the scripted adapter, over a generated codebase
with a planted needle: every strategy must carry the needle into a cited answer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ponder.testing import run_cli

NEEDLE_FILE = "pkg_3/mod_4.py"
NEEDLE_LINE = 7
RULES = f'''
[[adapter.rules]]
pattern = '(?s)`relevant_info`.*MAGIC_PORT = 48213'
reply = {{ relevant_info = "MAGIC_PORT = 48213 at {NEEDLE_FILE}:{NEEDLE_LINE}", \
confidence = "high" }}

[[adapter.rules]]
pattern = '(?s)`updated_notes`.*48213'
reply = {{ updated_notes = "MAGIC_PORT = 48213 at {NEEDLE_FILE}:{NEEDLE_LINE}" }}

[[adapter.rules]]
pattern = '(?s)`answer`.*48213'
reply = {{ answer = "MAGIC_PORT is 48213 ({NEEDLE_FILE}:{NEEDLE_LINE})" }}

[[adapter.rules]]
pattern = '`relevant_info`'
reply = {{ relevant_info = "NOT FOUND", confidence = "none" }}

[[adapter.rules]]
pattern = '`updated_notes`'
reply = {{ updated_notes = "" }}
'''


def make_codebase(root: Path, *, packages: int = 5, modules: int = 8) -> Path:
    rng = random.Random(7)
    for p in range(packages):
        for m in range(modules):
            lines = [f'"""Module {m} of package {p}."""', "", "import os", ""]
            if (f"pkg_{p}/mod_{m}.py") == NEEDLE_FILE:
                lines += ["", "", "MAGIC_PORT = 48213", ""]
                assert len(lines) - 1 == NEEDLE_LINE
            for f in range(12):
                value = rng.randint(0, 10_000)
                lines += ["", f"def func_{p}_{m}_{f}(x):", f'    """Adds {value}."""',
                          f"    return x + {value}", ""]
            path = root / f"pkg_{p}" / f"mod_{m}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines))
    return root


@pytest.fixture
def codebase(tmp_path):
    return make_codebase(tmp_path / "src")


def config(tmp_path: Path, *, window: int = 2048, strategy: str = "map_reduce",
           extra: str = "") -> str:
    path = tmp_path / "ponder.toml"
    path.write_text(f'strategy = "{strategy}"\n[limits]\nconcurrency = 4\n{extra}\n'
                    f'[adapter]\nname = "scripted"\ncontext_window = {window}\n'
                    f'max_output_tokens = 256\ndefault = "NOT FOUND"\n{RULES}')
    return str(path)


def ask(cfg: str, *args: str):
    result = run_cli(["--config", cfg, "ask", "What is MAGIC_PORT?", *args, "--json"])
    data = json.loads(result.stdout) if result.stdout.strip() else None
    return result, data


@pytest.mark.parametrize("strategy", ["map_reduce", "iterative", "hierarchical", "auto"])
def test_needle_reaches_a_cited_answer(tmp_path, codebase, strategy):
    result, data = ask(config(tmp_path, strategy=strategy), str(codebase))
    assert result.exit_code == 0, result.output
    assert "48213" in data["answer"]
    assert {"path": NEEDLE_FILE, "line": NEEDLE_LINE} in data["citations"]
    for key in ("answer", "citations", "strategy", "model", "usage", "elapsed_s", "failures",
                "skipped_sources", "stopped_by", "run_id"):
        assert key in data
    assert data["stopped_by"] is None and data["failures"] == []
    if strategy == "auto":  # a lookup: auto reads the chunk naming MAGIC_PORT first, one call
        assert data["usage"]["calls"] >= 1 and "lookup" in (data["strategy_reason"] or "")
    else:
        assert data["usage"]["calls"] > 1
    assert data["usage"]["input_tokens"] > 0
    assert data["chunks"]["largest_prompt_tokens"] <= 2048


def test_map_reduce_calls_one_per_chunk_plus_reduce(tmp_path, codebase):
    _, data = ask(config(tmp_path), str(codebase))
    chunks = data["chunks"]["total"]
    assert chunks > 8 and data["chunks"]["read"] == chunks
    # one map call per chunk; one chunk found the needle, so one combine call
    assert data["usage"]["calls"] == chunks + 1


def test_direct_on_a_large_window(tmp_path, codebase):
    result, data = ask(config(tmp_path, strategy="direct", window=200_000), str(codebase))
    assert result.exit_code == 0, result.output
    assert data["usage"]["calls"] == 1 and "48213" in data["answer"]


def test_auto_explains_its_choice(tmp_path, codebase):
    _, small = ask(config(tmp_path, strategy="auto", window=200_000), str(codebase))
    assert small["strategy"] == "auto → direct" and small["strategy_reason"]
    _, large = ask(config(tmp_path, strategy="auto"), str(codebase))
    assert large["strategy"].startswith("auto → ") and "direct" not in large["strategy"]


def test_bad_files_are_listed_and_the_rest_answered(tmp_path, codebase):
    (codebase / "blob.bin").write_bytes(b"\x00\x01binary")
    (codebase / "latin1.py").write_bytes(b"name = 'caf\xe9'\n")
    result, data = ask(config(tmp_path), str(codebase))
    assert result.exit_code == 0, result.output
    skipped = {s["path"]: s for s in data["skipped_sources"]}
    assert skipped["blob.bin"]["reason"] == "binary file"
    assert skipped["latin1.py"]["kind"] == "repaired"
    assert "48213" in data["answer"]


def test_missing_path_is_a_clear_error(tmp_path, codebase):
    result, _ = ask(config(tmp_path), str(codebase), str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert f"no such file or directory: '{tmp_path / 'nope'}'" in result.stderr


def test_empty_input_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blob.bin").write_bytes(b"\x00\x00")
    result, _ = ask(config(tmp_path), str(empty))
    assert result.exit_code == 2
    assert "nothing readable" in result.stderr and "blob.bin" in result.stderr


def test_token_budget_stops_with_a_partial_answer(tmp_path, codebase):
    result, data = ask(config(tmp_path), str(codebase), "--max-tokens", "3000",
                       "--concurrency", "1")
    assert result.exit_code == 3, result.output  # partial
    assert data["stopped_by"] == "max_tokens"
    assert data["failures"] and all(f["kind"] == "max_tokens" for f in data["failures"])
    assert data["note"].startswith("stopped by max_tokens; answered from")
    total = data["chunks"]["total"]
    assert data["chunks"]["read"] + len(data["failures"]) == total


def test_timeout_stops_with_a_partial_answer(tmp_path, codebase):
    cfg = config(tmp_path, extra="", window=2048)
    text = Path(cfg).read_text().replace('name = "scripted"', 'name = "scripted"\nlatency_s = 0.2')
    Path(cfg).write_text(text)
    result, data = ask(cfg, str(codebase), "--timeout", "1", "--concurrency", "1")
    assert result.exit_code in (1, 3), result.output
    assert data["stopped_by"] == "timeout"
    assert data["failures"] and data["chunks"]["read"] < data["chunks"]["total"]


def test_plain_output_and_summary(tmp_path, codebase):
    result = run_cli(["--config", config(tmp_path), "ask", "What is MAGIC_PORT?", str(codebase)])
    assert result.exit_code == 0
    assert "48213" in result.stdout
    assert "strategy: map_reduce" in result.stderr and f"cited: {NEEDLE_FILE}:7" in result.stderr


@pytest.mark.slow
def test_real_local_model_answers_the_bundled_corpus():
    """The embedded default: no key, no config, the real SmolLM2 model in-process."""
    corpus = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tiny-service"
    result = run_cli(["ask", "What port does the service listen on?", str(corpus), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"].startswith("SmolLM2") and data["answer"].strip()
    assert data["usage"]["calls"] >= 1
    assert data["usage"]["input_tokens"] > 0 and data["usage"]["output_tokens"] > 0


def test_diff_from_stdin(tmp_path):
    diff = (
        "diff --git a/pkg_3/mod_4.py b/pkg_3/mod_4.py\n"
        "--- a/pkg_3/mod_4.py\n+++ b/pkg_3/mod_4.py\n"
        "@@ -5,2 +5,3 @@\n context = 1\n+MAGIC_PORT = 48213\n other = 2\n"
    )
    result = run_cli(["--config", config(tmp_path, strategy="map_reduce"), "diff",
                      "What is MAGIC_PORT?", "--json"], input=diff)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # the diff fits one call: map_reduce reads and answers it in that call (single_read)
    assert "48213" in data["answer"] and data["usage"]["calls"] == 1


def test_diff_without_input_is_a_usage_error(tmp_path):
    result = run_cli(["--config", config(tmp_path), "diff", "What changed?"], input="")
    assert result.exit_code == 2 and "no diff on stdin" in result.output
