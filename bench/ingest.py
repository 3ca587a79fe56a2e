"""Ingest: walk + read (``ponder.context.sources.load_sources``) and chunking
(``ponder.context.chunking.chunk_context``) of a generated codebase, timed separately, with peak
RSS.

    .venv/bin/python bench/run.py --only ingest [--quick | --full]

The corpus (:mod:`corpus`: seeded modules with classes, functions, docstrings, a README per
package) is written to a temporary directory first; then every (size, chunk setting, repeat)
runs in a fresh subprocess that imports ponder, notes its peak RSS so far (the baseline), loads,
chunks, and reports its peak RSS (``VmHWM``; see :func:`_peak_rss_mb` for why not
``ru_maxrss``, which is recorded too). The file-system cache is warm (the files
were just written), as for a second ``ponder ask`` over the same tree.

Chunk settings: 32,000 tokens (the default chunk for a 128K-window model), 3,284 (the default for
an 8K window) and, with ``--full``, 2,000 with 200 overlap. Target (the issue): 50 MB read +
chunk <= 3 s, peak RSS <= 4 x corpus + 300 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt_range, summary, table

MB = 1_000_000
TARGET_S = 3.0


def _peak_rss_mb() -> float:
    """This process's peak RSS: ``VmHWM`` from /proc (Linux), else ``ru_maxrss``.

    ``ru_maxrss`` is not used on Linux: the kernel carries the pre-``exec`` high-water mark
    into it, so a child of a big parent reports at least the parent's RSS at fork time (seen
    here: the same import-only baseline read 27 MB or 36 MB depending on the parent's size).
    ``VmHWM`` belongs to the new address space, so it counts only this process.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(root: str, chunk_tokens: int, overlap: int) -> dict[str, Any]:
    """Runs in the subprocess: load + chunk once, report times and memory."""
    import resource

    from ponder.context.chunking import chunk_context
    from ponder.context.sources import load_sources

    baseline = _peak_rss_mb()
    started = time.perf_counter()
    context = load_sources([root])
    loaded = time.perf_counter()
    chunks = chunk_context(context, chunk_tokens=chunk_tokens, overlap_tokens=overlap)
    done = time.perf_counter()
    return {"load_s": loaded - started, "chunk_s": done - loaded, "total_s": done - started,
            "documents": len(context.documents), "chars": context.total_chars,
            "chunks": len(chunks), "baseline_rss_mb": baseline, "peak_rss_mb": _peak_rss_mb(),
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _spawn(root: Path, chunk_tokens: int, overlap: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--worker", str(root), str(chunk_tokens),
                           str(overlap)], capture_output=True, text=True, check=True,
                          timeout=600, env={**os.environ, "PYTHONHASHSEED": "0"})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(*, quick: bool = False, full: bool = False) -> dict[str, Any]:
    import corpus

    sizes = [1, 10, 50] if not quick else [1, 5]
    if full:
        sizes = [1, 10, 50, 100]
    settings = [(32_000, 0), (3_284, 0)]
    if full:
        settings.append((2_000, 200))
    repeats = 1 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="ponder-bench-ingest-") as tmp:
        for size in sizes:
            started = time.perf_counter()
            generated = corpus.generate(size * MB, seed=size)
            root = generated.write(Path(tmp) / f"corpus_{size}mb")
            generate_s = time.perf_counter() - started
            disk_bytes = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
            for chunk_tokens, overlap in settings:
                runs = [_spawn(root, chunk_tokens, overlap) for _ in range(repeats)]
                corpus_mb = disk_bytes / 2**20
                peak = max(r["peak_rss_mb"] for r in runs)
                rows.append({
                    "size_mb": size, "bytes": disk_bytes, "files": runs[0]["documents"],
                    "chunk_tokens": chunk_tokens, "overlap_tokens": overlap,
                    "chunks": runs[0]["chunks"], "repeats": repeats,
                    "generate_s": generate_s,
                    "load_s": summary([r["load_s"] for r in runs]),
                    "chunk_s": summary([r["chunk_s"] for r in runs]),
                    "total_s": summary([r["total_s"] for r in runs]),
                    "mb_per_s": summary([disk_bytes / MB / r["total_s"] for r in runs]),
                    "baseline_rss_mb": summary([r["baseline_rss_mb"] for r in runs]),
                    "peak_rss_mb": summary([r["peak_rss_mb"] for r in runs]),
                    "rss_over_corpus": peak / corpus_mb,
                    "rss_budget_mb": 4 * corpus_mb + 300,
                    "rss_target_met": peak <= 4 * corpus_mb + 300,
                    "time_target_met": (summary([r["total_s"] for r in runs])["median"]
                                        <= TARGET_S) if size == 50 else None,
                })
            del generated
    targets = {}
    for row in rows:
        if row["size_mb"] == 50:
            label = f"50 MB, chunk {row['chunk_tokens']}/{row['overlap_tokens']}"
            targets[f"{label}: read+chunk <= {TARGET_S} s"] = row["time_target_met"]
            targets[f"{label}: peak RSS <= 4x corpus + 300 MB"] = row["rss_target_met"]
    return {"parameters": {"sizes_mb": sizes, "chunk_settings": settings, "repeats": repeats,
                           "fresh_process_per_run": True, "fs_cache": "warm"},
            "results": rows, "targets": targets}


def render(doc: dict[str, Any]) -> str:
    rows = [[f"{r['size_mb']} MB ({r['files']} files)",
             f"{r['chunk_tokens']}/{r['overlap_tokens']}",
             r["chunks"], fmt_range(r["load_s"], digits=2), fmt_range(r["chunk_s"], digits=2),
             fmt_range(r["total_s"], digits=2), f"{r['mb_per_s']['median']:.0f}",
             f"{r['baseline_rss_mb']['median']:.0f}", f"{r['peak_rss_mb']['max']:.0f}",
             f"{r['rss_budget_mb']:.0f}", f"{r['generate_s']:.1f}"] for r in doc["results"]]
    out = table(["corpus", "chunk/overlap", "chunks", "load s", "chunk s", "total s", "MB/s",
                 "base RSS MB", "peak RSS MB", "RSS budget", "gen s"], rows,
                title=f"ingest: fresh process per run, median (min-max) of "
                      f"{doc['parameters']['repeats']}")
    out += "\n" + "\n".join(f"target {k}: {'met' if v else 'MISSED'}"
                            for k, v in doc["targets"].items())
    return out


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--worker":
    print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
