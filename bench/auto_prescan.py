"""``auto``'s exact round with and without the raw-text scan, and the peer, in one run.

    .venv/bin/python bench/auto_prescan.py                          # 1 MB and 20 MB, 3 rounds
    .venv/bin/python bench/auto_prescan.py --sizes 1000000 --repeats 5 --no-peer

The question names an identifier (``What is the value of MAGIC_PORT?``), so ``auto``'s exact
round answers it in one call. **after** is ponder as it is: the documents' raw text is scanned
for ``MAGIC_PORT`` and only the documents naming it are chunked. **before** is the same code
with ``AutoStrategy.prescan = False`` set in the child before the CLI starts: the exact round
chunks the whole context first, as it did before the scan (the same chunking work as the
earlier code, which cut every retrieval chunk to count them in its choice). **peer** is
rlm-dspy's ``map_reduce`` as in ``bench/peer.py``.

Everything else is ``bench/peer.py``'s: the same haystacks (seed 5, the needle at 50 %), the
fake provider in this process (oracle mode, 200 ms per request), each run a child process,
one discarded warm-up run first, then ``repeats`` rounds in which the variants run one after
another, the order rotating each round so that a load spike hits all of them. Figures are
medians (min–max); ratios are of the medians.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer
from _common import fmt_range, isolated_ponder_dirs, load_average, peak_rss_mb, table, write_result

MB = 1_000_000
#: the "before" child: the exact round without the scan and the context's size measured at
#: each choice (plan, then run), then ponder's CLI as ``-m ponder``
BEFORE = ("import runpy, ponder.plugins.auto as a; "
          "a.AutoStrategy.prescan = False; "
          "runpy.run_module('ponder', run_name='__main__', alter_sys=True)")


def _variant_command(variant: str):
    def command(tool: str, strategy: str, haystack: Path, **kwargs: Any):
        cmd, env = peer._command(tool, strategy, haystack, **kwargs)
        if tool == "ponder" and variant == "before":
            assert cmd[1:3] == ["-m", "ponder"], cmd
            cmd = [cmd[0], "-c", BEFORE, *cmd[3:]]
        return cmd, env
    return command


def run_variant(variant: str, haystack: Path, provider: Any, **kwargs: Any) -> dict[str, Any]:
    row = peer.run_one("peer" if variant == "peer" else "ponder",
                       "map_reduce" if variant == "peer" else "auto", haystack, provider,
                       command=_variant_command(variant), **kwargs)
    row["variant"] = variant
    return row


def measure(*, sizes: list[int], repeats: int, latency: float, window: int, concurrency: int,
            with_peer: bool) -> dict[str, Any]:
    variants = ["before", "after", *(["peer"] if with_peer else [])]
    if with_peer:
        peer.peer_cli()
    results = []
    with tempfile.TemporaryDirectory(prefix="ponder-bench-prescan-") as tmp, \
            isolated_ponder_dirs():
        root = Path(tmp)
        provider = peer._provider(latency).start()
        try:
            config = peer._ponder_config(provider.base_url, window, concurrency, root)
            kwargs = {"config": config, "concurrency": concurrency, "latency": latency,
                      "workdir": root}
            warm = peer._haystack(50_000, root)
            for variant in variants:
                run_variant(variant, warm, provider, **kwargs)
            for size in sizes:
                haystack = peer._haystack(size, root)
                runs = peer.alternate(variants, repeats, lambda variant, h=haystack: run_variant(
                    variant, h, provider, **kwargs), size=size, label="auto")
                results.append({"size_bytes": size, "runs": runs,
                                "summary": {v: peer._aggregate(r) for v, r in runs.items()}})
                shutil.rmtree(haystack)
        finally:
            provider.stop()
    return {"parameters": {"sizes_bytes": sizes, "repeats": repeats, "latency_s": latency,
                           "window": window, "concurrency": concurrency,
                           "question": peer.QUESTION, "variants": variants},
            "results": results, "parent_rss_mb": peak_rss_mb()}


def render(doc: dict[str, Any]) -> str:
    keys = ("wall_s", "first_request_s", "requests", "prompt_chars", "cpu_ms_per_request",
            "peak_rss_mb")
    digits = (2, 2, 0, 0, 1, 0)
    rows = []
    for item in doc["results"]:
        size = f"{item['size_bytes'] / MB:g} MB"
        s = item["summary"]
        for variant, agg in s.items():
            rows.append([size, variant, *(fmt_range(agg[k], digits=d) for k, d in
                                          zip(keys, digits, strict=True)),
                         f"{agg['correct']}/{agg['runs']}"])
        for name, other in (("after / before", "before"), ("after / peer", "peer")):
            if other in s:
                rows.append([size, name, *(peer._ratio(s["after"], s[other], k) for k in keys),
                             ""])
    p = doc["parameters"]
    return table(["size", "variant", "wall s", "1st req s", "requests", "prompt chars",
                  "CPU ms/req", "RSS MB", "correct"], rows, title=(
        f"auto's exact round, scan before chunking (after) or not (before): "
        f"L={p['latency_s'] * 1000:.0f} ms, window {p['window']:,}, C={p['concurrency']}, "
        f"{p['repeats']} rotating rounds; median (min–max)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[MB, 20 * MB],
                        help="haystack sizes in bytes")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per size")
    parser.add_argument("--no-peer", action="store_true", help="ponder's two variants only")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--window", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out-dir", type=Path)
    parser.add_argument("--name", default="auto_prescan",
                        help="results file: bench/results/NAME.json")
    args = parser.parse_args(argv)
    load = load_average()
    doc = measure(sizes=args.sizes, repeats=args.repeats, latency=args.latency,
                  window=args.window, concurrency=args.concurrency, with_peer=not args.no_peer)
    text = render(doc)
    print(text)
    path = write_result(args.name, doc["parameters"], doc["results"], out_dir=args.out_dir,
                        load_at_start=load, parent_rss_mb=doc["parent_rss_mb"],
                        median_note="ratios are of the medians", table=text.splitlines())
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
