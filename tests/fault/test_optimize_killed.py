"""A study SIGKILLed mid-run resumes without repeating a finished LM call.

Proof by counting at the fake provider: the killed run's requests plus the resumed run's equal
the requests of the same study run once without interruption (a fresh store and response
cache). Finished examples come back from the eval records, finished calls of the example that
was in flight from the LM response cache, so nothing that had finished is asked again. The
``random`` optimizer is used because its candidates depend only on the seed, so both runs meet
the same candidates; TPE's resume is covered in test_optimize.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.testing import isolated_user_dir, run_cli
from ponder.testing.landscape import LandscapeProvider, write_landscape_corpus

pytestmark = pytest.mark.fault

SPACE = """
[optimize.space]
"adapter.temperature"   = { float = [0.0, 1.0], step = 0.1 }
"strategy.chunk_tokens" = { int = [200, 2000], step = 200 }
"""


def _config(work: Path, provider: LandscapeProvider, tag: str) -> Path:
    path = work / f"{tag}.toml"
    path.write_text(f"""
[adapter]
name = "openai_compatible"
base_url = "{provider.base_url}"
model = "fake"
temperature = 0.7
input_cost_per_token = 0.000001

[strategy]
name = "map_reduce"
chunk_tokens = 400

[cache]
enabled = true
path = "{work / (tag + '-responses.sqlite')}"

[storage]
name = "sqlite"
path = "{work / tag / 'runs.sqlite'}"
""")
    (work / tag).mkdir(exist_ok=True)
    return path


def test_killed_study_resumes_without_repeating_calls(tmp_path: Path) -> None:
    with isolated_user_dir(tmp_path) as root, LandscapeProvider(latency=(0.03, 0, 0)) as fake:
        work = root / "work"
        write_landscape_corpus(work / "corpus")
        lines = [json.dumps({"id": str(i), "question": f"Which port, take {i}?",
                             "sources": ["corpus/service.txt"], "answer": "48213"})
                 for i in range(5)]
        (work / "qa.jsonl").write_text("\n".join(lines) + "\n")
        (work / "space.toml").write_text(SPACE)
        args = ["optimize", "qa.jsonl", "--space", "space.toml", "--optimizer", "random",
                "--trials", "8", "--seed", "5", "--name", "k", "--concurrency", "2"]

        # the reference: the whole study, uninterrupted, in a store and cache of its own
        reference = run_cli(["--config", str(_config(work, fake, "ref")), *args, "--json"])
        assert reference.exit_code == 0, reference.output
        expected = fake.stats()["requests"]
        fake.reset()

        config = _config(work, fake, "run")
        child = subprocess.Popen([sys.executable, "-m", "ponder", "--config", str(config),
                                  *args], cwd=work, stderr=subprocess.PIPE, text=True,
                                 stdout=subprocess.DEVNULL, env={**os.environ})
        try:
            seen = 0
            for line in child.stderr:
                if line.startswith("trial "):
                    seen += 1
                    if seen == 3:
                        break
            assert seen == 3, f"the child ended early ({child.poll()})"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stderr.close()
        killed = fake.stats()["requests"]
        assert 0 < killed < expected
        fake.reset()

        resumed = run_cli(["--config", str(config), "optimize", "--resume", "k", "--json"])
        assert resumed.exit_code == 0, resumed.output
        again = fake.stats()["requests"]
        assert killed + again == expected, (killed, again, expected)
        out = json.loads(resumed.stdout)
        ref = json.loads(reference.stdout)
        assert out["best"]["assignment"] == ref["best"]["assignment"]
        assert out["best_val"]["score"] == ref["best_val"]["score"]
