"""Start-up benchmark: whole-process wall time of light commands (median of N runs), and of a
whole ``ponder ask`` on a tiny input with the in-process ``scripted`` adapter.

    .venv/bin/python bench/startup.py [--runs 7]      (or: bench/run.py --only startup)

Prints a table and writes bench/results/startup.json. The first run of each command is a
discarded warm-up (file-system caches). Nothing heavy (dspy, litellm) may be imported by the
light commands; the table also reports how many modules each imported. ``ponder ask`` does
import dspy (it answers with a DSPy program): its row shows what a real, smallest question costs
end to end, run in a temporary ponder home (no user config; cache off; the run store on, as by
default).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, isolated_ponder_dirs, load_average, table, write_result

COMMANDS = {
    "ponder --help": ["--help"],
    "ponder --version": ["--version"],
    "ponder plugins": ["plugins"],
    "ponder plugins --json": ["plugins", "--json"],
    "ponder config show": ["config", "show"],
}
HEAVY = ("dspy", "litellm", "llama_cpp", "torch")
TARGETS = {"ponder --help": 0.25}

ASK_CONFIG = """\
[cache]
enabled = false

[adapter]
name = "scripted"
default = "NOT FOUND"
rules = [{ pattern = "MAGIC_PORT = 48213", reply = "MAGIC_PORT is 48213 (tiny.py:2)" }]
"""
ASK_INPUT = '"""A tiny module."""\nMAGIC_PORT = 48213\n'


def run_once(args: list[str], env: dict[str, str], cwd: str | None = None) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ponder", *args], env=env, check=True, cwd=cwd,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def heavy_imports(args: list[str], env: dict[str, str],
                  cwd: str | None = None) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ponder", *args], env=env,
                          capture_output=True, text=True, cwd=cwd)
    names = [line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:") and "|" in line][1:]
    return len(names), sorted({n.split(".")[0] for n in names} & set(HEAVY))


def _row(label: str, argv: list[str], runs: int, env: dict[str, str],
         cwd: str | None = None) -> dict:
    run_once(argv, env, cwd)  # warm-up, discarded
    times = [run_once(argv, env, cwd) for _ in range(runs)]
    modules, heavy = heavy_imports(argv, env, cwd)
    row = {"command": label, "runs": runs, "median_s": statistics.median(times),
           "min_s": min(times), "max_s": max(times), "modules_imported": modules,
           "heavy_imported": heavy}
    if label in TARGETS:
        row["target_s"] = TARGETS[label]
        row["target_met"] = row["median_s"] <= TARGETS[label]
    return row


def measure(runs: int = 7) -> dict:
    """Every command's timings; returns the result document (also what main() writes)."""
    rows = []
    with isolated_ponder_dirs():
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        # measure what a user sees: the warm-up run writes the bytecode cache (.pyc), as any
        # first run after an install does; a shell with PYTHONDONTWRITEBYTECODE=1 (this
        # workplace sets it) would otherwise recompile every module on every start (~110 ms)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for label, argv in COMMANDS.items():
            rows.append(_row(label, argv, runs, env))
        with tempfile.TemporaryDirectory(prefix="ponder-bench-ask-") as work:
            Path(work, "ponder.toml").write_text(ASK_CONFIG)
            Path(work, "tiny.py").write_text(ASK_INPUT)
            argv = ["ask", "What is MAGIC_PORT?", "tiny.py", "--json"]
            row = _row("ponder ask (scripted, tiny)", argv, runs, env, cwd=work)
            row["note"] = ("scripted adapter, one 2-line file, strategy auto -> direct (1 call); "
                           "imports dspy by design")
            rows.append(row)

    # a bare interpreter, for scale: what python itself costs on this machine
    bare = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - started)
    return {"parameters": {"runs": runs}, "results": rows,
            "python_bare": {"median_s": statistics.median(bare), "min_s": min(bare),
                            "max_s": max(bare)}}


def render(doc: dict) -> str:
    rows = [[r["command"], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}", f"{r['max_s']:.3f}",
             r["modules_imported"], ",".join(r["heavy_imported"]) or "-",
             ("met" if r["target_met"] else "MISSED") + f" (<= {r['target_s']} s)"
             if "target_s" in r else ""]
            for r in doc["results"]]
    bare = doc["python_bare"]
    rows.append(["python -c pass", f"{bare['median_s']:.3f}", f"{bare['min_s']:.3f}",
                 f"{bare['max_s']:.3f}", "", "", ""])
    return table(["command", "median s", "min s", "max s", "modules", "heavy", "target"], rows,
                 title=f"start-up: whole-process wall time, {doc['parameters']['runs']} runs "
                       "after a warm-up")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    load = load_average()
    doc = measure(args.runs)
    print(render(doc))
    path = write_result("startup", doc["parameters"], doc["results"], load_at_start=load,
                        out_dir=Path(args.out_dir), python_bare=doc["python_bare"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
