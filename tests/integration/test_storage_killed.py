"""A process killed mid-run leaves a readable sqlite store with the run marked incomplete."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.plugins.sqlite_store import SQLiteSettings, SQLiteStorage

# Opens the store, begins a run, then THREADS threads record calls in a loop, printing
# "<thread> <index>" after each record_call has returned (= been committed). It never finishes
# the run; after a generous cap it blocks on stdin, still alive, until it is killed.
CHILD = r"""
import sys, threading
from ponder.plugins.sqlite_store import SQLiteSettings, SQLiteStorage

path, threads = sys.argv[1], int(sys.argv[2])
store = SQLiteStorage(SQLiteSettings(path=path))
store.begin_run({"id": "killed000001", "question": "will it survive?", "strategy": "map_reduce"})
print("begun", flush=True)
out = threading.Lock()

def work(thread):
    for index in range(5000):
        store.record_call("killed000001", {"role": f"thread-{thread}", "input_tokens": index,
                                           "prompt_chars": 10 * index})
        with out:
            print(thread, index, flush=True)

workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
sys.stdin.read()
"""


@pytest.mark.parametrize("threads", [1, 4])
def test_killed_process_leaves_a_readable_store(tmp_path: Path, threads: int) -> None:
    path = tmp_path / "runs.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(threads)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    printed: dict[int, list[int]] = {t: [] for t in range(threads)}
    try:
        assert child.stdout.readline().strip() == "begun"
        for _ in range(4 * threads + 4):  # a few committed calls, read while it keeps going
            line = child.stdout.readline()
            assert line, f"the child exited early with {child.poll()}"
            thread, index = map(int, line.split())
            printed[thread].append(index)
    finally:
        child.kill()  # SIGKILL on POSIX: no handler, no atexit, no close()
        child.wait()
        child.stdout.close()
        child.stdin.close()
    assert child.returncode != 0

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()

    with SQLiteStorage(SQLiteSettings(path=str(path))) as store:
        listed = store.list_runs()
        run = store.get_run("killed")
    assert [(r["id"], r["status"]) for r in listed] == [("killed000001", "incomplete")]
    assert run["status"] == "incomplete" and run["pid"] == child.pid
    assert run["question"] == "will it survive?" and run["answer"] is None
    for thread, indices in printed.items():
        stored = [c["input_tokens"] for c in run["calls"] if c["role"] == f"thread-{thread}"]
        # every call the child reported as committed is there, and nothing is half-written:
        # each thread's calls are exactly 0..n-1 in order, n at least what it printed
        assert stored == list(range(len(stored)))
        assert len(stored) > (max(indices) if indices else -1)
    assert all(c["prompt_chars"] == 10 * c["input_tokens"] for c in run["calls"])
