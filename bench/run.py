"""Run ponder's benchmarks: print a table for each and write bench/results/<name>.json.

    .venv/bin/python bench/run.py                   # the default suite (~10 min on 2 cores)
    .venv/bin/python bench/run.py --quick           # smoke run: tiny sizes, seconds per bench
    .venv/bin/python bench/run.py --full            # adds the larger sizes (50 MB, N=1000, ...)
    .venv/bin/python bench/run.py --only ingest coverage

Benchmarks (see docs/performance.md and each module's docstring):

- ``startup``: whole-process wall time of light commands and of ``ponder ask`` (scripted);
- ``overhead``: µs per LM call of Services.predict and map_reduce vs a bare dspy.Predict loop,
  in process (scripted LM) and over loopback HTTP (litellm -> fake provider);
- ``concurrency``: Services.map at C in {1, 4, 16, 64} against a 200 ms fake provider:
  efficiency, max in flight, CPU, retries, and a 20 % fault row;
- ``ingest``: load + chunk of 1/10/50 MB generated codebases, fresh process each, peak RSS;
- ``coverage``: six needle families x six strategies x 100 KB/1 MB/10 MB, oracle provider;
- ``eval``: ``ponder eval`` throughput (examples/s at C in {1, 4, 16} vs the ideal, one budget).
- ``executors``: LM calls/s and CPU per call, ``threads`` vs ``ray`` (a local 2-CPU cluster).

Everything is offline: the fake provider binds 127.0.0.1 in its own process and exits on its
own; ponder's user directories point at a temporary directory for the whole run. These machines
are shared and noisy: compare figures measured in the same run, as ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _common import RESULTS_DIR, isolated_ponder_dirs, write_result

BENCHMARKS = ("startup", "overhead", "concurrency", "ingest", "coverage", "eval", "executors")


def run_startup(args: argparse.Namespace) -> tuple[dict, str]:
    import startup

    doc = startup.measure(runs=3 if args.quick else 7 if args.full else 5)
    return doc, startup.render(doc)


def run_module(name: str, args: argparse.Namespace) -> tuple[dict, str]:
    module = __import__(name)
    doc = module.measure(quick=args.quick, full=args.full)
    return doc, module.render(doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 repeat")
    size.add_argument("--full", action="store_true", help="add the larger sizes")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)})")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR),
                        help="where the JSON goes (default bench/results)")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    mode = "quick" if args.quick else "full" if args.full else "default"
    failed = []
    with isolated_ponder_dirs():
        for name in args.only or BENCHMARKS:
            print(f"\n=== {name} ({mode}) ===", flush=True)
            load = _common.load_average()
            started = time.perf_counter()
            try:
                doc, text = run_startup(args) if name == "startup" else run_module(name, args)
            except Exception as exc:  # one broken benchmark must not hide the others
                import traceback

                traceback.print_exc()
                print(f"{name}: FAILED ({type(exc).__name__}: {exc})", flush=True)
                failed.append(name)
                continue
            elapsed = time.perf_counter() - started
            parameters = {**doc.pop("parameters"), "mode": mode}
            results = doc.pop("results")
            path = write_result(name, parameters, results, out_dir=out_dir, load_at_start=load,
                                elapsed_s=round(elapsed, 1), **doc)
            print(text)
            print(f"({elapsed:.1f} s) wrote {path}", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
