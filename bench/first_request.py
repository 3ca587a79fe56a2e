"""Where the time to the first LM request goes: ``ponder ask`` in phases, N fresh processes.

    .venv/bin/python bench/first_request.py [--size 200000] [--runs 5] [--strategy map_reduce]
    .venv/bin/python bench/first_request.py --rev HEAD --rev WORKTREE --runs 11   # A/B

Each run is a fresh ``python`` running ``ponder ask QUESTION HAYSTACK --strategy S --json``
against bench/peer.py's recording fake provider (in this process, 200 ms per request,
``openai_compatible``, window 100,000, C=16; the same haystack generator). A small wrapper in
the child marks, in milliseconds since the process started (``/proc/self/stat``): the
interpreter ready, ``ponder.cli.main`` imported, plugin discovery (``load_plugins``) done,
the sources loaded, ``import dspy`` started and finished (an import hook that times the
import where it happens), and the first connection to the provider. Medians (min–max) per
phase; the last rows split the total into ``import dspy`` and everything else, which is
ponder's own part. Writes bench/results/first_request.json.

``--rev`` (repeatable) runs the same from git revisions laid out as a package first on
``PYTHONPATH`` (bench/startup_ab.py's way; plugins the first revision lacks are disabled in
every variant), alternating the variants run by run so that load drifts hit all of them; the
table then gives per variant the median of each step, and ponder's own CPU time to the first
request (the child's ``process_time``, steadier than wall time here, minus its ``import dspy``).

The wrapper patches two functions and adds one import hook in the child only; nothing of it is
part of ponder. Wall-clock figures on a shared machine are noisy: compare phases of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import isolated_ponder_dirs, load_average, table, write_result

WRAPPER = r'''
import importlib, importlib.abc, importlib.util, json, os, socket, sys, time
with open("/proc/self/stat") as f:
    START = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
def now():
    return (time.clock_gettime(time.CLOCK_BOOTTIME) - START) * 1000
marks = {"interpreter ready": now()}
class TimeDspy(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    busy = False
    def find_spec(self, name, path=None, target=None):
        if name != "dspy" or self.busy or "dspy" in sys.modules:
            return None
        self.busy = True
        marks["import dspy started"] = now()
        cpu = time.process_time()
        try:
            importlib.import_module("dspy")
        finally:
            self.busy = False
            sys.meta_path.remove(self)
        marks["import dspy done"] = now()
        marks["import dspy cpu"] = (time.process_time() - cpu) * 1000
        return importlib.util.spec_from_loader("dspy", self)
    def create_module(self, spec):
        return sys.modules["dspy"]
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, TimeDspy())
port = int(sys.argv.pop(1))
_connect = socket.socket.connect
def connect(self, address):
    if isinstance(address, tuple) and address[1] == port and "first request" not in marks:
        marks["first request"] = now()
        marks["cpu at first request"] = time.process_time() * 1000
    return _connect(self, address)
socket.socket.connect = connect
import ponder.cli.main
marks["ponder.cli.main imported"] = now()
def wrap(module, name, label):
    module = importlib.import_module(module)
    fn = getattr(module, name)
    def inner(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            marks.setdefault(label, now())
    setattr(module, name, inner)
wrap("ponder.kernel.loader", "load_plugins", "plugins discovered")
wrap("ponder.context.sources", "load_sources", "sources loaded")
try:
    code = sys.modules["ponder.cli.main"].main(sys.argv[1:])
finally:
    print("PHASES " + json.dumps(marks), file=sys.stderr)
'''

PHASES = ["interpreter ready", "ponder.cli.main imported", "plugins discovered",
          "sources loaded", "import dspy started", "import dspy done", "first request"]


def one(args: list[str], port: int, env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", WRAPPER, str(port), *args], env=env,
                          capture_output=True, text=True, timeout=600)
    line = [x for x in proc.stderr.splitlines() if x.startswith("PHASES ")]
    if proc.returncode not in (0, 3) or not line:
        raise SystemExit(f"ponder ask failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(line[-1][len("PHASES "):])


def measure(size: int, runs: int, strategy: str, revs: list[str] | None = None) -> dict:
    import peer
    import startup_ab

    variants: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="ponder-bench-first-") as tmp, \
            isolated_ponder_dirs():
        root = Path(tmp)
        provider = peer._provider(0.2).start()
        try:
            config = peer._ponder_config(provider.base_url, 100_000, 16, root)
            haystack = peer._haystack(size, root)
            env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                   "PONDER_CONFIG": str(config)}
            env.pop("PYTHONDONTWRITEBYTECODE", None)  # .pyc files kept, as after an install
            if not revs:
                variants["this tree"] = env
            else:
                newer = startup_ab.plugins_of(revs[-1]) - startup_ab.plugins_of(revs[0])
                for rev in revs:
                    tree = startup_ab.lay_out(rev, root / "trees" / rev)
                    variants[rev] = dict(env, PYTHONPATH=str(tree),
                                         PONDER_DISABLE_PLUGINS=",".join(sorted(newer)))
            port = int(provider.base_url.rsplit(":", 1)[1].split("/")[0])
            args = ["ask", peer.QUESTION, str(haystack), "--strategy", strategy, "--json",
                    "--progress", "silent"]
            names = list(variants)
            for name in names:
                one(args, port, variants[name])  # warm-up: bytecode caches
            rows: dict[str, list[dict[str, float]]] = {name: [] for name in names}
            for i in range(runs):
                for name in names[i % len(names):] + names[:i % len(names)]:
                    rows[name].append(one(args, port, variants[name]))
        finally:
            provider.stop()
    return {"parameters": {"size_bytes": size, "runs": runs, "strategy": strategy,
                           "revisions": revs or []},
            "results": rows}


def _med(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}–{max(values):.0f})"


def render(doc: dict) -> str:
    names = list(doc["results"])
    out = []
    previous = None
    for phase in PHASES:
        row = [phase]
        for name in names:
            rows = doc["results"][name]
            steps = [r[phase] - (r[previous] if previous else 0) for r in rows
                     if phase in r and (previous is None or previous in r)]
            row.append(_med(steps) if steps else "-")
        out.append(row)
        previous = phase
    totals = {
        "= import dspy (wall)": lambda r: r["import dspy done"] - r["import dspy started"],
        "= ponder's own, wall (all but interpreter and dspy)":
            lambda r: r["first request"] - r["interpreter ready"]
            - (r["import dspy done"] - r["import dspy started"]),
        "= ponder's own, CPU (process time minus dspy's)":
            lambda r: r["cpu at first request"] - r["import dspy cpu"],
        "= first request (wall)": lambda r: r["first request"],
    }
    for label, fn in totals.items():
        row = [label]
        for name in names:
            values = [fn(r) for r in doc["results"][name]
                      if "first request" in r and "import dspy done" in r]
            row.append(_med(values) if values else "-")
        out.append(row)
    p = doc["parameters"]
    return table(["step, ms: median (min–max)", *names], out,
                 title=f"ponder ask --strategy {p['strategy']} on {p['size_bytes']:,} bytes: "
                       f"{p['runs']} runs per variant after a warm-up (each step: time since "
                       "the row above)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--strategy", default="map_reduce")
    parser.add_argument("--rev", action="append",
                        help="a git revision or WORKTREE (repeat; alternating A/B)")
    parser.add_argument("--out-dir", type=Path)
    args = parser.parse_args(argv)
    load = load_average()
    doc = measure(args.size, args.runs, args.strategy, args.rev)
    text = render(doc)
    print(text)
    path = write_result("first_request", doc["parameters"], doc["results"],
                        out_dir=args.out_dir, load_at_start=load, table=text.splitlines())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
