"""Optimizer overhead per trial, above the eval itself.

    .venv/bin/python bench/optimize.py [--trials 40]

Two parts:

1. **Deciding** (no eval at all): each optimizer drives a
   :class:`ponder.testing.optimizer_conformance.SyntheticStudy` (the study interface over a
   known function) for N trials: what proposing a point costs — ``random``/``grid`` sampling,
   TPE with Optuna's in-memory storage, TPE with the RDB storage in a real SQLite file (what
   ``ponder optimize`` uses, so a study survives a kill).
2. **Bookkeeping** (a real :class:`ponder.optimize.study.Study` over the loopback
   :class:`ponder.testing.landscape.LandscapeProvider`, 3 train examples, map_reduce): a trial
   that asks the provider (latency 0 and 50 ms per request), and the same trial again, fully
   answered from the study's records — no LM call, so its wall time is the study's own cost per
   trial: the assignment applied to the config, the evaluator and System built and checked, one
   store read per example, the trial recorded.

The overhead above the eval is part 1 (TPE/SQLite) plus the cached trial of part 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, quiet_logs, summary, table, write_result


def deciding(trials: int) -> list[dict[str, Any]]:
    import warnings

    from ponder.kernel.loader import load_plugins
    from ponder.testing.optimizer_conformance import OptimizerConformance, SyntheticStudy

    warnings.simplefilter("ignore")
    plugins = load_plugins(strict=True)
    suite = OptimizerConformance()
    suite.load = lambda: plugins  # type: ignore[method-assign]
    space = suite.space()
    rows = []
    for name, storage in (("random", None), ("grid", None), ("tpe", None), ("tpe", "sqlite")):
        entry = plugins.get("optimizer", name)
        optimizer = entry.factory(entry.settings())
        study = SyntheticStudy(space, trials=trials, name=f"bench-{name}-{storage}")
        with tempfile.TemporaryDirectory() as tmp:
            if storage:
                study.optuna_url = f"sqlite:///{tmp}/optuna.sqlite"
            started = time.perf_counter()
            optimizer.optimize(study)
            wall = time.perf_counter() - started
        n = len(study.evaluated)
        rows.append({"optimizer": name, "storage": storage or "memory", "trials": n,
                     "ms_per_trial": round(wall / n * 1000, 2)})
    return rows


def bookkeeping(repeats: int) -> list[dict[str, Any]]:
    from ponder.engine.system import System
    from ponder.evaluate.dataset import load_dataset
    from ponder.kernel.config import load_config
    from ponder.kernel.loader import load_plugins
    from ponder.optimize.checks import load_space
    from ponder.optimize.study import Study
    from ponder.testing import isolated_user_dir
    from ponder.testing.landscape import LandscapeProvider, write_landscape_corpus

    rows = []
    for latency in (0.0, 0.05):
        with tempfile.TemporaryDirectory() as tmp, isolated_user_dir(tmp) as root, \
                LandscapeProvider(latency=(latency, 0, 0)) as provider:
            work = root / "work"
            write_landscape_corpus(work / "corpus")
            (work / "qa.jsonl").write_text("\n".join(
                json.dumps({"id": str(i), "question": f"Which port? ({i})",
                            "sources": ["corpus/service.txt"], "answer": "48213"})
                for i in range(3)) + "\n")
            (work / "space.toml").write_text(
                '[optimize.space]\n"adapter.temperature" = { float = [0.0, 1.0], step = 0.1 }\n'
                '"strategy.chunk_tokens" = { int = [200, 2000], step = 200 }\n')
            (work / "ponder.toml").write_text(
                f'[adapter]\nname = "openai_compatible"\nbase_url = "{provider.base_url}"\n'
                'model = "fake"\n[strategy]\nname = "map_reduce"\n[cache]\nenabled = false\n'
                f'[storage]\nname = "sqlite"\npath = "{work / "runs.sqlite"}"\n')
            config = load_config(work / "ponder.toml", user_file=False)
            plugins = load_plugins(strict=True)
            space = load_space(work / "space.toml", plugins=plugins, base=config)
            storage = System(config, plugins=plugins).open_storage()
            train = load_dataset(work / "qa.jsonl")
            real, cached, calls = [], [], 0
            for r in range(repeats):
                point = {"adapter.temperature": 0.1, "strategy.chunk_tokens": 400 + 200 * r}
                study = Study(f"bench-{r}", space, train, metrics=["contains"],
                              plugins=plugins, storage=storage, trials=2)
                started = time.perf_counter()
                result = study.evaluate(point, number=0)
                real.append(time.perf_counter() - started)
                calls += result.calls
                started = time.perf_counter()
                again = study.evaluate(point, number=1)  # a new trial, every example recorded
                cached.append(time.perf_counter() - started)
                assert again.resumed == again.evaluated == 3 and study.spent.calls == result.calls
            storage.close()
            rows.append({"latency_ms": latency * 1000, "calls_per_trial": calls / repeats,
                         "real_trial_ms": summary([x * 1000 for x in real]),
                         "cached_trial_ms": summary([x * 1000 for x in cached])})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    quiet_logs()
    load = load_average()
    decide = deciding(args.trials)
    print(table(["optimizer", "storage", "trials", "ms/trial"],
                [[r["optimizer"], r["storage"], r["trials"], r["ms_per_trial"]] for r in decide],
                title="deciding: proposing a point (no eval)"))
    book = bookkeeping(args.repeats)
    print()
    print(table(["provider latency", "calls/trial", "real trial ms", "cached trial ms"],
                [[f"{r['latency_ms']:.0f} ms", f"{r['calls_per_trial']:.1f}",
                  f"{r['real_trial_ms']['median']:.0f}",
                  f"{r['cached_trial_ms']['median']:.1f}"] for r in book],
                title="bookkeeping: a trial of 3 examples, asked vs read back (median)"))
    path = write_result("optimize", vars(args), {"deciding": decide, "bookkeeping": book},
                        load_at_start=load)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
