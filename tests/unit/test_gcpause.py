"""The collector is paused while the console starts and resumed once the run's services exist
(ponder.support.gcpause)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

from ponder.cli.main import main
from ponder.support import gcpause


def test_pause_then_resume_freezes_and_end_unfreezes() -> None:
    assert gc.isenabled()
    gcpause.pause()
    try:
        assert not gc.isenabled()
        gcpause.resume()
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gcpause.end()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_pause_nobody_resumes_ends_by_itself(monkeypatch) -> None:
    """A command that builds no LM here (eval on ray workers, batch wait) gets its collector
    back after LONGEST_PAUSE_S."""
    import time

    monkeypatch.setattr(gcpause, "LONGEST_PAUSE_S", 0.05)
    gcpause.pause()
    try:
        for _ in range(200):  # bounded: the timer fires after 0.05 s
            if gc.isenabled():
                break
            time.sleep(0.01)
        assert gc.isenabled()
    finally:
        gcpause.end()


def test_a_collector_the_caller_disabled_stays_disabled() -> None:
    gc.disable()
    try:
        gcpause.pause()
        gcpause.end()
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_main_leaves_the_collector_as_it_found_it(capsys) -> None:
    assert main(["--version"]) == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert main(["config", "show", "--key", "no.such.key", "--json"]) != 0  # an error path
    capsys.readouterr()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_exiting_resumes_and_freezes_everything() -> None:
    gcpause.pause()
    try:
        gcpause.exiting()
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_building_services_resumes_a_paused_collector() -> None:
    from ponder.engine.services import Services
    from ponder.plugins.scripted import ScriptedAdapter, ScriptedSettings

    adapter = ScriptedAdapter(ScriptedSettings(replies=["x"]))
    gcpause.pause()
    try:
        assert not gc.isenabled()
        Services(lm=adapter.build_lm(), model_info=adapter.model_info(), predictor=None)
        assert gc.isenabled()
    finally:
        gcpause.end()


def test_the_collector_runs_when_the_first_request_leaves(tmp_path) -> None:
    """In a real console process: paused while dspy is imported, on again at the first call."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import gc, json, sys\n"
        "from ponder.plugins import scripted\n"
        "seen = []\n"
        "real = scripted.ScriptEngine.complete\n"
        "def complete(self, *a, **k):\n"
        "    seen.append(gc.isenabled())\n"
        "    return real(self, *a, **k)\n"
        "scripted.ScriptEngine.complete = complete\n"
        "at_dspy = []\n"
        "class Finder:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'dspy' and not at_dspy:\n"
        "            at_dspy.append(gc.isenabled())\n"
        "        return None\n"
        "sys.meta_path.insert(0, Finder())\n"
        "from ponder.cli.main import main\n"
        "rc = main(sys.argv[1:])\n"
        "print(json.dumps({'rc': rc, 'seen': seen, 'at_dspy': at_dspy}), file=sys.stderr)\n")
    (tmp_path / "doc.txt").write_text("MAGIC_PORT = 48213\n")
    (tmp_path / "ponder.toml").write_text(
        '[adapter]\nname = "scripted"\ndefault = "48213"\n')
    done = subprocess.run(
        [sys.executable, str(probe), "--config", str(tmp_path / "ponder.toml"), "ask",
         "What is MAGIC_PORT?", str(tmp_path / "doc.txt"), "--json", "--no-cache"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["rc"] == 0, done.stderr
    assert report["at_dspy"] == [False], report
    assert report["seen"] and all(report["seen"]), report
