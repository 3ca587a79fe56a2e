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

``--first-request SIZE`` measures ``ponder ask … --strategy map_reduce`` on a generated haystack
of SIZE bytes instead, against bench/peer.py's recording fake provider (in this process, 200 ms
per request, ``openai_compatible``): the table adds the median time from spawn to the first
request's arrival at the provider, what issue 14's "first request <= 0.5 s" target is about.

    .venv/bin/python bench/startup_ab.py --rev HEAD --rev WORKTREE --runs 15 \
        --first-request 200000 --name startup_ab_first_request
"""

from __future__ import annotations

import argparse
import contextlib
import math
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
from typing import Any

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


def one_run(env: dict[str, str], args: list[str],
            provider: Any = None) -> tuple[float, float, float]:
    """(wall, cpu, first request) of one child; first request is NaN without a provider."""
    if provider is not None:
        provider.reset()
        with provider.log_lock:
            provider.log.clear()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "ponder", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    first = math.nan
    if provider is not None:
        with provider.log_lock:
            first = min((t for t, _ in provider.log), default=math.nan) - started
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", action="append", required=True,
                        help="a git revision, or WORKTREE (repeat; the first is the baseline)")
    parser.add_argument("--runs", type=int, default=31)
    parser.add_argument("--first-request", type=int, metavar="SIZE",
                        help="time `ask --strategy map_reduce` on a SIZE-byte haystack to its "
                             "first request (against a recording fake provider)")
    parser.add_argument("--name", default="startup_ab", help="bench/results/NAME.json")
    parser.add_argument("args", nargs="*", default=["--help"])
    opts = parser.parse_args()

    load_at_start = load_average()
    base = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    base.pop("PYTHONDONTWRITEBYTECODE", None)  # a real install keeps its .pyc files
    newer = plugins_of(opts.rev[-1]) - plugins_of(opts.rev[0])
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        provider = None
        if opts.first_request:
            import peer
            from _common import isolated_ponder_dirs

            stack.enter_context(isolated_ponder_dirs())
            base = dict(base, **{k: v for k, v in os.environ.items() if k.startswith("PONDER_")})
            provider = peer._provider(0.2).start()
            stack.callback(provider.stop)
            config = peer._ponder_config(provider.base_url, 100_000, 16, Path(tmp))
            haystack = peer._haystack(opts.first_request, Path(tmp))
            base["PONDER_CONFIG"] = str(config)
            opts.args = ["ask", peer.QUESTION, str(haystack), "--strategy", "map_reduce",
                         "--json", "--progress", "silent"]
        variants: dict[str, dict[str, str]] = {}
        for rev in opts.rev:
            tree = lay_out(rev, Path(tmp) / rev)
            variants[f"{rev} (baseline plugins)"] = dict(
                base, PYTHONPATH=str(tree), PONDER_DISABLE_PLUGINS=",".join(sorted(newer)))
        variants[f"{opts.rev[-1]} (all plugins)"] = dict(base, PYTHONPATH=str(tree))
        for env in variants.values():  # warm-up, and .pyc files written
            one_run(env, opts.args, provider)
        names = list(variants)
        samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
        for i in range(opts.runs):
            for name in names[i % len(names):] + names[:i % len(names)]:
                samples[name].append(one_run(variants[name], opts.args, provider))

    def med(name: str, which: int) -> float:
        return statistics.median(sample[which] for sample in samples[name])

    rows, results = [], {}
    for name in names:
        wall, cpu, first = med(name, 0), med(name, 1), med(name, 2)
        results[name] = {"wall_median_s": wall, "cpu_median_s": cpu,
                         "wall_ratio": wall / med(names[0], 0),
                         "cpu_ratio": cpu / med(names[0], 1)}
        row = [name, f"{wall:.3f}", f"{cpu:.3f}", f"{results[name]['wall_ratio']:.2f}x",
               f"{results[name]['cpu_ratio']:.2f}x"]
        if provider is not None:
            results[name].update(first_request_median_s=first,
                                 first_request_min_s=min(s[2] for s in samples[name]),
                                 first_request_ratio=first / med(names[0], 2))
            row += [f"{first:.3f}", f"{results[name]['first_request_ratio']:.2f}x"]
        rows.append(row)
    headers = ["variant", "wall s", "cpu s", "wall ratio", "cpu ratio"]
    if provider is not None:
        headers += ["1st request s", "1st request ratio"]
    print(table(headers, rows))
    write_result(opts.name, {"command": ["ponder", *opts.args], "runs": opts.runs,
                             "revisions": opts.rev, "first_request_haystack": opts.first_request,
                             "disabled_in_baseline_variants": sorted(newer)},
                 results, load_at_start=load_at_start)


if __name__ == "__main__":
    main()
