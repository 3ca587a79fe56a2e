"""``_ray_ledger.wait_gone``: the driver outlives the worker processes it killed."""

from __future__ import annotations

import subprocess
import sys

from ponder.plugins._ray_ledger import _running, wait_gone


def test_wait_gone_returns_once_killed_processes_are_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _running(child.pid)
        assert wait_gone([child.pid], timeout=0.1) == [child.pid]  # still running: returned
        child.kill()
        # killed and not yet reaped (a zombie) counts as gone
        assert wait_gone([child.pid], timeout=5.0) == []
    finally:
        child.kill()
        child.wait()
    assert not _running(child.pid)
    assert wait_gone([], timeout=5.0) == []
