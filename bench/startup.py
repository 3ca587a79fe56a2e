"""Start-up benchmark: whole-process wall time of light commands (median of N runs).

    .venv/bin/python bench/startup.py [--runs 7]

Prints a table and writes bench/results/startup.json. The first run of each command is a
discarded warm-up (file-system caches). Nothing heavy (dspy, litellm) may be imported by these
commands; the table also reports how many modules each imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

COMMANDS = {
    "ponder --help": ["--help"],
    "ponder --version": ["--version"],
    "ponder plugins": ["plugins"],
    "ponder plugins --json": ["plugins", "--json"],
    "ponder config show": ["config", "show"],
}
HEAVY = ("dspy", "litellm", "llama_cpp", "torch")


def run_once(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ponder", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def heavy_imports(args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ponder", *args], env=env,
                          capture_output=True, text=True)
    names = [line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:") and "|" in line][1:]
    return len(names), sorted({n.split(".")[0] for n in names} & set(HEAVY))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "startup.json"))
    args = parser.parse_args()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}

    rows = []
    for label, argv in COMMANDS.items():
        run_once(argv, env)  # warm-up, discarded
        times = [run_once(argv, env) for _ in range(args.runs)]
        modules, heavy = heavy_imports(argv, env)
        rows.append({"command": label, "runs": args.runs,
                     "median_s": statistics.median(times), "min_s": min(times),
                     "max_s": max(times), "modules_imported": modules, "heavy_imported": heavy})

    # a bare interpreter, for scale: what python itself costs on this machine
    bare = []
    for _ in range(args.runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - started)

    print(f"{'command':<24}{'median s':>10}{'min s':>8}{'max s':>8}{'modules':>9}  heavy")
    for row in rows:
        heavy = ",".join(row["heavy_imported"]) or "-"
        print(f"{row['command']:<24}{row['median_s']:>10.3f}{row['min_s']:>8.3f}"
              f"{row['max_s']:>8.3f}{row['modules_imported']:>9}  {heavy}")
    print(f"{'python -c pass':<24}{statistics.median(bare):>10.3f}{min(bare):>8.3f}"
          f"{max(bare):>8.3f}")

    result = {
        "benchmark": "startup",
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "versions": {name: metadata.version(name) for name in ("ponder", "click", "pluggy",
                                                                "rich", "cattrs")},
        "parameters": {"runs": args.runs},
        "results": rows,
        "python_bare_median_s": statistics.median(bare),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
