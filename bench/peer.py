"""ponder and a peer project side by side: the same haystacks, the same fake provider, one run.

    .venv/bin/python bench/peer.py --quick          # 200 KB and 1 MB, map_reduce + auto, 1 pair
    .venv/bin/python bench/peer.py                  # adds 5 MB, more strategies, 3 pairs
    .venv/bin/python bench/peer.py --full           # adds 20 MB
    .venv/bin/python bench/peer.py --sizes 1000000 --strategies map_reduce --repeats 5

**The peer** is the early ``rlm-dspy`` kept in ``../shared/peers/rlm-dspy-4b8ed35`` (MIT). It is
never imported here: it is installed into a venv of its own (``bench/.peer-venv``, ignored by
git; made on first use, as ``../shared/peers/README.md`` says) and run through its CLI,
``rlm-dspy ask QUESTION DIR --strategy S``, pointed at the fake provider by its ``RLM_*``
environment variables (``RLM_PARALLEL_CHUNKS=16``, ``RLM_USE_ASYNC=true``). ponder runs as
``python -m ponder ask QUESTION DIR --strategy S --json`` with the ``openai_compatible``
adapter (``context_window = 100000``, concurrency 16, cache off).

**Alternating runs.** One discarded warm-up run of each tool first (bytecode caches are on for
the children, as after any install). Then for each (size, strategy) the two tools run one after
the other,
``repeats`` times, alternating which goes first, so that a load spike on this shared machine
hits both; the figures are medians (min–max) and the ratios are ponder / peer of the medians.

**The provider** is :class:`ponder.testing.fake_provider.FakeProvider` running in this process
(threads), in ``oracle`` mode with one needle (``MAGIC_PORT = 48213`` planted at depth 50 %) and
a fixed latency (200 ms). Each tool runs in a child process, so the figures below are the
child's own: it records, per run, every request's arrival time (``time.monotonic``, which is
one clock for every process on Linux) and the characters of its messages.

Per run: wall (spawn to exit); **first request** (spawn to the first chat request's arrival at
the provider: start-up, imports, reading and chunking); requests; prompt characters (sum of the
message texts of every request); the most requests in flight; CPU per request (the child's user
+ sys from ``wait4``, over requests); peak RSS (the child's ``ru_maxrss``; a child's figure can
carry up to this parent's RSS from before ``exec``, recorded as ``parent_rss_mb``); correctness
(the needle's value ``48213`` in the answer printed).

CPU figures are noisy here: about seven sessions share two cores. Compare ratios from the same
run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_DIR,
    fmt_range,
    isolated_ponder_dirs,
    load_average,
    peak_rss_mb,
    summary,
    table,
    write_result,
)

MB = 1_000_000
PEER_NAME = "rlm-dspy-4b8ed35"
PEER_SOURCE = BENCH_DIR.parent.parent / "shared" / "peers" / PEER_NAME
PEER_VENV = BENCH_DIR / ".peer-venv"
NEEDLE_NAME, NEEDLE_VALUE = "MAGIC_PORT", "48213"
QUESTION = f"What is the value of {NEEDLE_NAME}?"
STRATEGIES = ("map_reduce", "auto", "iterative", "hierarchical")
PONDER_ONLY = ("rlm", "retrieve_then_read")
RUN_TIMEOUT_S = 900.0
#: words of the peer's DecomposeTask signature (its planning call)
DECOMPOSER = "Decompose a complex task into simpler subtasks"


# --- the peer's venv --------------------------------------------------------------------------
def peer_cli(install: bool = True) -> Path:
    """``bench/.peer-venv/bin/rlm-dspy``, installing the peer there first if it is missing."""
    cli = PEER_VENV / "bin" / "rlm-dspy"
    if cli.exists() or not install:
        return cli
    if not PEER_SOURCE.is_dir():
        raise SystemExit(f"the peer's source is not at {PEER_SOURCE}")
    with tempfile.TemporaryDirectory(prefix="ponder-peer-src-") as tmp:
        src = Path(tmp) / "src"  # shared/ is read-only: build from a copy
        shutil.copytree(PEER_SOURCE, src)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q",
                        "litellm!=1.82.7,!=1.82.8,!=1.107.*", str(src)], check=True)
    return cli


# --- the provider, in this process, recording each request ------------------------------------
def _provider(latency: float) -> Any:
    from ponder.testing.fake_provider import FakeProvider

    class Recording(FakeProvider):
        """The fake provider, also keeping (arrival time, prompt characters) per chat request."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.log: list[tuple[float, int]] = []
            self.log_lock = threading.Lock()

        def _reply_text(self, request: dict, messages: list[dict], texts: list[str]) -> Any:
            with self.log_lock:
                self.log.append((request.get("_arrived", time.monotonic()),
                                 sum(len(t) for t in texts)))
            if any(DECOMPOSER in text for text in texts):
                # the peer's first call asks for a plan; a model would name a strategy, and a
                # chunk size of 0 makes the peer use its default (100,000 chars, 500 overlap)
                return {"reasoning": "Split the context and read every part.",
                        "strategy": "map_reduce", "chunk_size": 0, "subtasks": []}
            return super()._reply_text(request, messages, texts)

        def _parse_request(self, h: Any, kind: str, body: dict) -> dict[str, Any]:
            arrived = time.monotonic()
            out = super()._parse_request(h, kind, body)
            out["_arrived"] = arrived
            return out

    return Recording(mode="oracle", needles={"n": f"{NEEDLE_NAME} = {NEEDLE_VALUE}"}, rlm_root=True,
                     latency=(latency, 0.0, 0.0), max_lifetime=7200.0, idle_timeout=600.0)


# --- one run of one tool ----------------------------------------------------------------------
def _ponder_config(base_url: str, window: int, concurrency: int, root: Path) -> Path:
    path = root / "ponder-bench.toml"
    path.write_text(
        "[adapter]\n"
        'name = "openai_compatible"\n'
        f'base_url = "{base_url}"\n'
        'model = "fake-model"\n'
        f"context_window = {window}\n"
        "max_output_tokens = 1024\n"
        "timeout_s = 300\n\n"
        f"[limits]\nconcurrency = {concurrency}\n\n"
        "[cache]\nenabled = false\n"
    )
    return path


def _command(tool: str, strategy: str, haystack: Path, *, config: Path, base_url: str,
             concurrency: int) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    # bytecode caches on, as after any install (this workplace's shells turn them off, which
    # recompiles every module of an editable install at each start); a warm-up run writes them
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # a fresh dspy disk cache per run: a reply cached by an earlier run must not answer this one
    env["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="dspy-cache-", dir=config.parent)
    if tool == "ponder":
        env["PONDER_CONFIG"] = str(config)
        # retrieve_then_read needs a retriever named; auto picks bm25 by itself
        extra = ["--set", "retriever.name=bm25"] if strategy == "retrieve_then_read" else []
        return ([sys.executable, "-m", "ponder", "ask", QUESTION, str(haystack),
                 "--strategy", strategy, "--json", "--progress", "silent", *extra], env)
    env.update(RLM_MODEL="openai/fake-model", RLM_API_BASE=base_url, RLM_API_KEY="sk-test",
               RLM_PARALLEL_CHUNKS=str(concurrency), RLM_USE_ASYNC="true",
               RLM_DISABLE_THINKING="true", RLM_ENABLE_CACHE="false")
    return ([str(peer_cli()), "ask", QUESTION, str(haystack), "--strategy", strategy], env)


def _max_in_flight(log: list[tuple[float, int]], latency: float) -> int:
    """Requests whose [arrival, arrival + latency) overlap at most (the provider's hold time)."""
    events = sorted([(t, 1) for t, _ in log] + [(t + latency, -1) for t, _ in log])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def run_one(tool: str, strategy: str, haystack: Path, provider: Any, *, config: Path,
            concurrency: int, latency: float, workdir: Path,
            command: Any = None) -> dict[str, Any]:
    """One run of ``tool``; ``command`` (default :func:`_command`) builds its command line."""
    cmd, env = (command or _command)(tool, strategy, haystack, config=config,
                                     base_url=provider.base_url, concurrency=concurrency)
    provider.reset()
    with provider.log_lock:
        provider.log.clear()
    out_path, err_path = workdir / f"{tool}.out", workdir / f"{tool}.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=str(workdir))
        timer = threading.Timer(RUN_TIMEOUT_S, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    with provider.log_lock:
        log = list(provider.log)
    stats = provider.stats()
    answer = stdout
    if tool == "ponder":
        with contextlib.suppress(ValueError):
            answer = str(json.loads(stdout).get("answer", ""))
    requests = len(log)
    cpu = usage.ru_utime + usage.ru_stime
    row = {
        "tool": tool, "strategy": strategy, "exit_code": proc.returncode,
        "wall_s": wall,
        "first_request_s": (min(t for t, _ in log) - started) if log else None,
        # from the last reply leaving the provider (arrival + its fixed latency) to the exit
        "after_last_reply_s": (started + wall - max(t for t, _ in log) - latency) if log else None,
        "requests": requests, "provider_requests": stats["requests"],
        "failures": {k: v for k, v in stats["failures"].items() if v},
        "prompt_chars": sum(chars for _, chars in log),
        "largest_prompt_chars": max((chars for _, chars in log), default=0),
        "max_in_flight": stats["max_in_flight"],
        "max_in_flight_est": _max_in_flight(log, latency),
        "cpu_s": cpu, "cpu_ms_per_request": cpu / requests * 1000 if requests else None,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "correct": NEEDLE_VALUE in answer,
        "answer_excerpt": answer.strip()[:300],
    }
    if tool == "ponder" and stdout.strip().startswith("{"):
        try:
            doc = json.loads(stdout)
            row["strategy_used"] = doc.get("strategy")
            row["reason"] = doc.get("strategy_reason")
        except ValueError:
            pass
    if proc.returncode not in (0, 3):
        row["stderr_tail"] = stderr[-1500:]
    return row


# --- the benchmark ----------------------------------------------------------------------------
def _haystack(size: int, root: Path) -> Path:
    import corpus

    generated = corpus.generate(size, seed=5)
    corpus._insert(generated, 0.5, [f"{NEEDLE_NAME} = {NEEDLE_VALUE}"])
    return generated.write(root / f"haystack_{size}")


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("wall_s", "first_request_s", "after_last_reply_s", "requests", "prompt_chars",
            "max_in_flight", "cpu_ms_per_request", "peak_rss_mb")
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = summary(values)
    out["correct"] = sum(1 for r in rows if r["correct"])
    out["runs"] = len(rows)
    return out


def alternate(names: list[str], repeats: int, run: Any, *, size: int,
              label: str) -> dict[str, list[dict[str, Any]]]:
    """``repeats`` rounds of ``run(name)`` for every name, the order rotating each round so a
    load spike hits all of them; the rows by name, each marked with its size and round."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            row = run(name)
            row.update(size_bytes=size, repeat=repeat)
            runs[name].append(row)
            print(f"  {size // 1000:>6} KB {label:<18} {name:<7} wall {row['wall_s']:.2f}s "
                  f"1st {row['first_request_s'] or 0:.2f}s req {row['requests']} "
                  f"chars {row['prompt_chars']:,} ok {row['correct']}",
                  file=sys.stderr, flush=True)
    return runs


def measure(*, sizes: list[int], strategies: list[str], repeats: int, latency: float,
            window: int, concurrency: int, ponder_only: list[str]) -> dict[str, Any]:
    peer_cli()  # install first, outside any timing
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ponder-bench-peer-") as tmp, \
            isolated_ponder_dirs():
        root = Path(tmp)
        provider = _provider(latency).start()
        try:
            config = _ponder_config(provider.base_url, window, concurrency, root)
            warm = _haystack(50_000, root)  # one discarded run of each tool: caches, pyc files
            for tool in ("ponder", "peer"):
                run_one(tool, "map_reduce", warm, provider, config=config,
                        concurrency=concurrency, latency=latency, workdir=root)
            for size in sizes:
                haystack = _haystack(size, root)
                for strategy in [*strategies, *ponder_only]:
                    tools = ["ponder"] if strategy in ponder_only else ["ponder", "peer"]
                    runs = alternate(tools, repeats, lambda tool, s=strategy, h=haystack: run_one(
                        tool, s, h, provider, config=config,
                        concurrency=concurrency, latency=latency, workdir=root),
                        size=size, label=strategy)
                    results.append({"size_bytes": size, "strategy": strategy,
                                    "runs": runs,
                                    "summary": {t: _aggregate(r) for t, r in runs.items()}})
                shutil.rmtree(haystack)
        finally:
            provider.stop()
    return {"parameters": {"sizes_bytes": sizes, "strategies": strategies,
                           "ponder_only": ponder_only, "repeats": repeats,
                           "latency_s": latency, "window": window, "concurrency": concurrency,
                           "question": QUESTION, "peer": PEER_NAME},
            "results": results, "parent_rss_mb": peak_rss_mb()}


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> str:
    x, y = a[key].get("median"), b[key].get("median")
    if not x or not y or x != x or y != y:
        return "-"
    return f"{x / y:.2f}x"


def render(doc: dict[str, Any]) -> str:
    rows = []
    for item in doc["results"]:
        s = item["summary"]
        size = f"{item['size_bytes'] / MB:g} MB" if item["size_bytes"] >= MB else \
            f"{item['size_bytes'] // 1000} KB"
        for tool, agg in s.items():
            rows.append([size, item["strategy"], tool, fmt_range(agg["wall_s"], digits=2),
                         fmt_range(agg["first_request_s"], digits=2),
                         fmt_range(agg["after_last_reply_s"], digits=2),
                         fmt_range(agg["requests"], digits=0),
                         fmt_range(agg["prompt_chars"], digits=0),
                         fmt_range(agg["max_in_flight"], digits=0),
                         fmt_range(agg["cpu_ms_per_request"], digits=1),
                         fmt_range(agg["peak_rss_mb"], digits=0),
                         f"{agg['correct']}/{agg['runs']}"])
        if "peer" in s:
            p, q = s["ponder"], s["peer"]
            rows.append([size, item["strategy"], "ratio", _ratio(p, q, "wall_s"),
                         _ratio(p, q, "first_request_s"), _ratio(p, q, "after_last_reply_s"),
                         _ratio(p, q, "requests"),
                         _ratio(p, q, "prompt_chars"), "", _ratio(p, q, "cpu_ms_per_request"),
                         _ratio(p, q, "peak_rss_mb"), ""])
    headers = ["size", "strategy", "tool", "wall s", "1st req s", "after last reply s",
               "requests", "prompt chars",
               "in flight", "CPU ms/req", "RSS MB", "correct"]
    p = doc["parameters"]
    return table(headers, rows, title=(
        f"ponder vs {p['peer']}: L={p['latency_s'] * 1000:.0f} ms, window {p['window']:,}, "
        f"C={p['concurrency']}, {p['repeats']} alternating pairs; median (min–max)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 KB and 1 MB, 1 pair")
    parser.add_argument("--full", action="store_true", help="adds 20 MB")
    parser.add_argument("--sizes", type=int, nargs="+", help="haystack sizes in bytes")
    parser.add_argument("--strategies", nargs="+", help="strategies both tools run")
    parser.add_argument("--ponder-only", nargs="*", help="strategies only ponder has")
    parser.add_argument("--repeats", type=int, help="alternating pairs per cell")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--window", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out-dir", type=Path)
    parser.add_argument("--name", default="peer", help="results file: bench/results/NAME.json")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([200_000, MB] if args.quick else [200_000, MB, 5 * MB])
    if args.full and not args.sizes:
        sizes.append(20 * MB)
    strategies = args.strategies or (["map_reduce", "auto"] if args.quick else list(STRATEGIES))
    ponder_only = args.ponder_only if args.ponder_only is not None else (
        [] if args.quick else list(PONDER_ONLY))
    repeats = args.repeats or (1 if args.quick else 3)
    load = load_average()
    doc = measure(sizes=sizes, strategies=strategies, repeats=repeats, latency=args.latency,
                  window=args.window, concurrency=args.concurrency, ponder_only=ponder_only)
    text = render(doc)
    print(text)
    path = write_result(args.name, doc["parameters"], doc["results"], out_dir=args.out_dir,
                        load_at_start=load, parent_rss_mb=doc["parent_rss_mb"],
                        median_note="ratios are ponder / peer of the medians",
                        table=text.splitlines())
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

