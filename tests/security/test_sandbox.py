"""The ``rlm`` strategy's code sandbox (pydantic-monty) against hostile model-written code.

A scripted root model writes one snippet per iteration: read a file, read the environment, open
a socket, spawn a process, write a file, loop forever, print 100 MB, exhaust memory; then checks
the sandbox still works and submits. Each attempt must be refused, or cut off by a sandbox limit
(time, memory, printed output), with the error shown to the model in its next turn and the
refusal or limit listed in the run's ``problems``; and nothing may reach the host: no file
written, no environment value in any prompt or in the answer.

The limits are set low here (2 s, 64 MiB, 64 KiB of output) so the test is quick; pytest's
timeout is the backstop should a limit not hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from ponder.context.sources import load_sources
from ponder.engine.services import Services
from ponder.plugins import predict, rlm
from ponder.plugins.scripted import ScriptedAdapter, ScriptedSettings
from ponder.testing import plugin_set, run_cli

pytestmark = pytest.mark.slow

SECRET = "sandbox-PLANTED-secret-5c1e9a77"
LIMITS = {"exec_timeout_s": 2.0, "memory_mb": 64, "max_print_bytes": 65_536}


def attacks(marker: Path) -> list[tuple[str, str, str]]:
    """(name, code, what the model must be told next turn), in the order the root writes them."""
    return [
        ("read a file", "print(open('/etc/passwd').read())", "PermissionError"),
        ("read a file with pathlib",
         "from pathlib import Path\nprint(Path('/etc/passwd').read_text())", "PermissionError"),
        ("read the environment", "import os\nprint(os.environ['PLANTED_SECRET'])",
         "'os.environ' is not supported"),
        ("getenv", "import os\nprint(os.getenv('PLANTED_SECRET'))",
         "'os.getenv' is not supported"),
        ("open a socket",
         "import socket\ns = socket.create_connection(('127.0.0.1', 80))\nprint(s)",
         "No module named 'socket'"),
        ("spawn a process",
         f"import subprocess\nsubprocess.run(['touch', {str(marker)!r}])",
         "No module named 'subprocess'"),
        ("os.system", f"import os\nos.system('touch {marker}')",
         "has no attribute 'system'"),
        ("write a file", f"from pathlib import Path\nPath({str(marker)!r}).write_text('pwned')",
         "PermissionError"),
        ("escape via builtins", "print(__import__('os').environ)",
         "name '__import__' is not defined"),
        ("loop forever", "n = 0\nwhile True:\n    n += 1", "time limit"),
        ("print 100 MB", "for _ in range(100):\n    print('x' * 1_000_000)", "output limit"),
        ("allocate without end", "hog = []\nwhile True:\n    hog.append('z' * 1_000_000)",
         "memory limit"),
    ]


STILL_WORKS = "print('context chars:', len(context))"
SUBMIT = "SUBMIT(answer='The sandbox refused every attempt.')"


def root_rules(codes: list[str]) -> list[dict[str, Any]]:
    """A scripted root model writing ``codes[i]`` at iteration i + 1."""
    return [{"pattern": rf"\[\[ ## iteration ## \]\]\s*{i}/",
             "reply": {"reasoning": f"step {i}", "code": f"```python\n{code}\n```"}}
            for i, code in enumerate(codes, 1)]


@pytest.fixture
def context(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "service.py").write_text("PORT = 48213\n\ndef serve():\n    return PORT\n")
    return load_sources([str(src)])


def test_every_escape_is_refused_or_cut_off_and_reported(tmp_path, context, monkeypatch, caplog):
    monkeypatch.setenv("PLANTED_SECRET", SECRET)
    marker = tmp_path / "pwned"
    plan = attacks(marker)
    codes = [code for _, code, _ in plan] + [STILL_WORKS, SUBMIT]
    adapter = ScriptedAdapter(ScriptedSettings(rules=root_rules(codes), context_window=32_000,
                                               max_output_tokens=1024))
    services = Services(lm=adapter.build_lm(), model_info=adapter.model_info(),
                        predictor=predict.PredictPredictor(),
                        plugin_set=plugin_set(rlm, predict), progress_mode="silent")
    strategy = rlm.RLMStrategy(rlm.RLMSettings(max_iterations=len(codes), **LIMITS))

    with caplog.at_level("WARNING", logger="ponder.strategy.rlm"):
        draft = strategy.run("Which port does the service use?", context, services)

    # the run went on to the end and submitted
    assert draft.text == "The sandbox refused every attempt."
    roots = [c["prompt"] for c in services.lm.calls if "[[ ## iteration ## ]]" in c["prompt"]]
    assert len(roots) == len(codes)
    # each attempt's error reached the model in its next turn
    for turn, (name, _code, told) in enumerate(plan, 1):
        assert told in roots[turn], f"{name}: the model was not told {told!r}"
    # after the limits restarted the sandbox, it works again, with the context bound again
    assert "the sandbox was restarted" in roots[-1]
    assert "context chars: " in roots[-1].rsplit("the sandbox was restarted", 1)[1]

    # the run reports it: refusals and limits in the draft's problems, and in the log
    problems = "\n".join(draft.problems)
    for expected in ("open(PurePosixPath('/etc/passwd')", "Path.read_text(", "os.environ",
                     "os.getenv", "import('socket')", "import('subprocess')",
                     "Path.write_text(", "time limit", "output limit", "memory limit"):
        assert expected in problems, f"{expected!r} not in problems:\n{problems}"
    assert [hit.split(":")[0] for hit in strategy.limits_hit] == [
        "time limit", "output limit", "memory limit"]
    assert "the sandbox refused" in caplog.text and "hit the sandbox's time limit" in caplog.text

    # the host was not touched: nothing written, nothing of it in a prompt or the answer
    assert not marker.exists()
    everything = "\n".join(c["prompt"] + str(c.get("reply", "")) for c in services.lm.calls)
    assert SECRET not in everything and SECRET not in draft.text
    assert "root:x:0:0" not in everything
    # no 100 MB of output was kept anywhere: every prompt stays near the window
    assert max(len(c["prompt"]) for c in services.lm.calls) < 32_000 * 4


def test_the_answer_lists_what_the_sandbox_refused(tmp_path, context, monkeypatch):
    """End to end through ``ponder ask --json``: the refusals are the answer's ``problems``."""
    monkeypatch.setenv("PLANTED_SECRET", SECRET)
    codes = ["import os\nprint(os.environ['PLANTED_SECRET'])",
             "print(open('/etc/passwd').read())",
             "for _ in range(100):\n    print('x' * 1_000_000)",
             "SUBMIT(answer='PORT is 48213 (service.py:1)')"]
    config = {
        "strategy": {"name": "rlm", "max_iterations": len(codes), **LIMITS},
        "adapter": {"name": "scripted", "context_window": 32_000, "max_output_tokens": 1024,
                    "rules": root_rules(codes)},
    }
    path = tmp_path / "ponder.toml"
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    result = run_cli(["--config", str(path), "ask", "Which port?", str(tmp_path / "src"),
                      "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["answer"] == "PORT is 48213 (service.py:1)"
    problems = "\n".join(data["problems"])
    assert "refused os.environ" in problems
    assert "refused open(PurePosixPath('/etc/passwd'), 'r')" in problems
    assert "output limit" in problems
    assert SECRET not in result.output
