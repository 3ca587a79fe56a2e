"""Start-up A/B: ``ponder --help`` from several revisions of the tree, side by side in one run.

    .venv/bin/python bench/startup_ab.py --rev 7883434 --rev 59ad5fb --rev WORKTREE [--runs 31]

Each revision's ``core/`` and ``plugins/`` are laid out as a ``ponder`` package in a temporary
folder and put first on ``PYTHONPATH``, so every variant runs with the same interpreter, the
same installed libraries and the same entry-point metadata. Plugins that the oldest revision
does not have are disabled in every variant (``PONDER_DISABLE_PLUGINS``), so the comparison is
of the same plugin set; the last revision also runs with every plugin, to show what the new
plugins cost. Runs rotate through the variants so load drifts hit all of them alike; the table
gives median wall time and median CPU time (user + sys of the child), which is steadier than
wall time on a loaded machine. Writes bench/results/startup_ab.json.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, table, write_result

ROOT = Path(__file__).resolve().parents[1]
_ENTRY = re.compile(r'^(\w+) = "ponder\.plugins', re.M)


def lay_out(rev: str, dest: Path) -> Path:
    """``rev``'s core/ and plugins/ as ``dest/ponder`` (``WORKTREE``: the files as they are)."""
    package = dest / "ponder"
    if rev == "WORKTREE":
        import shutil

        shutil.copytree(ROOT / "core", package, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "plugins", package / "plugins",
                        ignore=shutil.ignore_patterns("__pycache__"))
        return dest
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "core",
                           "plugins"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    (dest / "core").rename(package)
    (dest / "plugins").rename(package / "plugins")
    return dest


def plugins_of(rev: str) -> set[str]:
    text = ((ROOT / "pyproject.toml").read_text() if rev == "WORKTREE" else
            subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:pyproject.toml"],
                           check=True, capture_output=True, text=True).stdout)
    return set(_ENTRY.findall(text))


def one_run(env: dict[str, str], args: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ponder", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", action="append", required=True,
                        help="a git revision, or WORKTREE (repeat; the first is the baseline)")
    parser.add_argument("--runs", type=int, default=31)
    parser.add_argument("args", nargs="*", default=["--help"])
    opts = parser.parse_args()

    load_at_start = load_average()
    base = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    base.pop("PYTHONDONTWRITEBYTECODE", None)  # a real install keeps its .pyc files
    newer = plugins_of(opts.rev[-1]) - plugins_of(opts.rev[0])
    with tempfile.TemporaryDirectory() as tmp:
        variants: dict[str, dict[str, str]] = {}
        for rev in opts.rev:
            tree = lay_out(rev, Path(tmp) / rev)
            variants[f"{rev} (baseline plugins)"] = dict(
                base, PYTHONPATH=str(tree), PONDER_DISABLE_PLUGINS=",".join(sorted(newer)))
        variants[f"{opts.rev[-1]} (all plugins)"] = dict(base, PYTHONPATH=str(tree))
        for env in variants.values():  # warm-up, and .pyc files written
            one_run(env, opts.args)
        names = list(variants)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        for i in range(opts.runs):
            for name in names[i % len(names):] + names[:i % len(names)]:
                samples[name].append(one_run(variants[name], opts.args))

    def med(name: str, which: int) -> float:
        return statistics.median(sample[which] for sample in samples[name])

    rows, results = [], {}
    for name in names:
        wall, cpu = med(name, 0), med(name, 1)
        results[name] = {"wall_median_s": wall, "cpu_median_s": cpu,
                         "wall_ratio": wall / med(names[0], 0),
                         "cpu_ratio": cpu / med(names[0], 1)}
        rows.append([name, f"{wall:.3f}", f"{cpu:.3f}", f"{results[name]['wall_ratio']:.2f}x",
                     f"{results[name]['cpu_ratio']:.2f}x"])
    print(table(["variant", "wall s", "cpu s", "wall ratio", "cpu ratio"], rows))
    write_result("startup_ab", {"command": ["ponder", *opts.args], "runs": opts.runs,
                                "revisions": opts.rev,
                                "disabled_in_baseline_variants": sorted(newer)},
                 results, load_at_start=load_at_start)


if __name__ == "__main__":
    main()
