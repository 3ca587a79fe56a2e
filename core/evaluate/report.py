"""``ponder eval --report DIR``: one self-contained HTML file with the results and their plots.

What it holds: the comparison table (each variant's scores with 95% intervals, failures, calls,
tokens, cost, latency), the paired comparisons against the first variant, a plot of score
against cost per variant with the Pareto front marked (no other variant scores higher for less),
a plot of score per tag, and the worst examples of each variant with their answers and the
metric's feedback. The plots are drawn by matplotlib (the optional extra ``ponder[report]``),
embedded as PNG data, so the file opens anywhere without the folder around it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.evaluate.results import metric_union
from ponder.support.secrets import redact

WORST = 10


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("--report needs matplotlib: pip install -e '.[report]'") from None
    matplotlib.use("Agg")  # no display: draw to memory
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower or equal cost (x) and higher or equal
    score (y), one of them strictly."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((ox <= x and oy >= y) and (ox < x or oy > y)
                        for j, (ox, oy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def score_cost_plot(results: Sequence[Any]) -> str:
    """Score (first metric, with its interval) against cost per variant; the front marked."""
    plt = _matplotlib()
    metric = results[0].metrics[0]
    costs = [r.usage["cost"] for r in results]
    use_tokens = all(c == 0 for c in costs)
    xs = [float(r.usage["tokens"]) if use_tokens else float(c) for r, c in zip(results, costs,
                                                                               strict=True)]
    entries = [r.scores[metric] for r in results]
    ys = [e["mean"] if e["mean"] is not None else 0.0 for e in entries]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    low = [y - (e["ci_low"] if e["ci_low"] is not None else y) for y, e in zip(ys, entries,
                                                                               strict=True)]
    high = [(e["ci_high"] if e["ci_high"] is not None else y) - y for y, e in zip(ys, entries,
                                                                                  strict=True)]
    ax.errorbar(xs, ys, yerr=[low, high], fmt="o", color="#4c72b0", ecolor="#9db4d8",
                capsize=4, label="variant (95% CI)")
    front = sorted(pareto_front(list(zip(xs, ys, strict=True))), key=lambda i: xs[i])
    ax.plot([xs[i] for i in front], [ys[i] for i in front], "-", color="#dd8452",
            linewidth=2, label="Pareto front")
    ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=140, facecolors="none",
               edgecolors="#dd8452", linewidths=2)
    for i, (x, y, r) in enumerate(zip(xs, ys, results, strict=True)):
        # staggered, so the labels of variants with close scores and costs stay readable
        ax.annotate(r.label, (x, y), textcoords="offset points", xytext=(6, 6 + 11 * (i % 3)),
                    fontsize=8)
    ax.set_xlabel("tokens (every call cost $0)" if use_tokens else "cost (USD)")
    ax.set_ylabel(f"{metric} (mean)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{metric} against {'tokens' if use_tokens else 'cost'} per variant")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    data = _png(fig)
    plt.close(fig)
    return data


def tag_plot(results: Sequence[Any]) -> str | None:
    """The first metric's mean per tag, one bar per variant; None when no example has tags."""
    plt = _matplotlib()
    metric = results[0].metrics[0]
    tags = sorted({t for r in results for t in r.by_tag})
    if not tags:
        return None
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(tags) * max(1, len(results))), 4.0))
    width = 0.8 / len(results)
    for k, result in enumerate(results):
        means = [result.by_tag.get(t, {}).get(metric) for t in tags]
        positions = [i + (k - (len(results) - 1) / 2) * width for i in range(len(tags))]
        bars = ax.bar(positions, [m or 0.0 for m in means], width=width, label=result.label)
        # each bar says its value: a mean of 0 is a bar you cannot see, and a tag none of
        # whose examples ran ("n/a") must not pass for one
        ax.bar_label(bars, labels=["n/a" if m is None else f"{m:.2f}" for m in means],
                     fontsize=7, padding=2)
    ax.set_xticks(range(len(tags)))
    ax.set_xticklabels(tags, rotation=30, ha="right")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(f"{metric} (mean)")
    ax.set_title(f"{metric} per tag")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    data = _png(fig)
    plt.close(fig)
    return data


def _e(value: Any) -> str:
    return html.escape(redact(str(value)))


def _cell(entry: dict[str, Any]) -> str:
    if entry.get("mean") is None:
        return "-"
    return f"{entry['mean']:.3f} <small>[{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]</small>"


def _table(results: Sequence[Any]) -> str:
    metrics = metric_union(results)
    head = "".join(f"<th>{_e(m)} (95% CI)</th>" for m in metrics)
    rows = []
    for r in results:
        u, lat = r.usage, r.latency_s
        scores = r.scores
        cells = "".join(f"<td>{_cell(scores.get(m, {}))}</td>" for m in metrics)
        rows.append(f"<tr><td>{_e(r.label)}</td>{cells}<td>{r.examples}</td>"
                    f"<td>{r.failed}{f' (+{len(r.not_run)} not run)' if r.not_run else ''}</td>"
                    f"<td>{u['calls']}</td><td>{u['tokens']}</td><td>${u['cost']:.4f}</td>"
                    f"<td>{lat['p50'] if lat['p50'] is not None else '-'}</td>"
                    f"<td>{lat['p95'] if lat['p95'] is not None else '-'}</td></tr>")
    return (f"<table><tr><th>variant</th>{head}<th>examples</th><th>failed</th><th>calls</th>"
            f"<th>tokens</th><th>cost</th><th>p50 s</th><th>p95 s</th></tr>{''.join(rows)}"
            f"</table>")


def _comparisons(comparisons: Sequence[Any]) -> str:
    if not comparisons:
        return ""
    rows = []
    for c in comparisons:
        for metric, row in c.metrics.items():
            if row.get("diff") is None:
                continue
            p = row.get("mcnemar_p", row["p_value"])
            verdict = "<b class=real>real</b>" if row["significant"] else "noise"
            rows.append(f"<tr><td>{_e(c.other)}</td><td>{_e(metric)}</td>"
                        f"<td>{row['diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
                        f"</td><td>{p:.3g}</td><td>{row['n']}</td><td>{verdict}</td></tr>")
    return (f"<h2>Compared with {_e(comparisons[0].base)}</h2><p>Paired on example id: a "
            f"bootstrap of the mean difference, and McNemar's exact test for binary metrics. "
            f"<i>real</i>: the interval excludes 0 and p &lt; 0.05.</p><table><tr><th>variant"
            f"</th><th>metric</th><th>difference (95% CI)</th><th>p</th><th>n</th>"
            f"<th>verdict</th></tr>{''.join(rows)}</table>")


def _worst(result: Any) -> str:
    metric = result.metrics[0]

    def key(r: Any) -> tuple[int, float]:
        if not r.ok:
            return (0, 0.0)
        value = r.scores.get(metric)
        return (1, 2.0 if value is None else float(value))

    rows = []
    for r in sorted(result.per_example, key=key)[:WORST]:
        value = "failed" if not r.ok else _e(r.scores.get(metric))
        note = r.failure if not r.ok else r.feedback.get(metric, "")
        rows.append(f"<tr><td>{_e(r.id)}</td><td>{value}</td><td>{_e(r.example.question)}</td>"
                    f"<td>{_e(' | '.join(r.example.answer))}</td>"
                    f"<td class=answer>{_e(r.answer[:600])}</td><td>{_e(note or '')}</td></tr>")
    return (f"<h3>{_e(result.label)}</h3><table><tr><th>id</th><th>{_e(metric)}</th>"
            f"<th>question</th><th>gold</th><th>answer</th><th>why</th></tr>{''.join(rows)}"
            f"</table>")


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;
padding:4px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}.real{color:#2a7}
td.answer{max-width:420px;white-space:pre-wrap;font-family:monospace;font-size:12px}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}small{color:#666}"""


def render_report(results: Sequence[Any], comparisons: Sequence[Any]) -> str:
    """The report's HTML text."""
    if not results:
        raise ValueError("a report needs at least one result")
    scatter = score_cost_plot(results)
    tags = tag_plot(results)
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>ponder eval: {_e(results[0].dataset)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Eval of {_e(results[0].dataset)}</h1>",
        f"<p>{len(results)} variant(s), metrics: {_e(', '.join(results[0].metrics))}; eval ids: "
        f"{_e(', '.join(r.eval_id for r in results))}. Means are over the examples that ran; "
        f"failed examples are counted apart.</p>",
        _table(results), _comparisons(comparisons),
        "<h2>Score against cost</h2>",
        f'<img id="score-cost" alt="score against cost" src="data:image/png;base64,{scatter}">',
    ]
    if tags:
        parts += ["<h2>Score per tag</h2>",
                  f'<img id="per-tag" alt="score per tag" src="data:image/png;base64,{tags}">']
    parts.append("<h2>Worst examples</h2>")
    parts += [_worst(r) for r in results]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out_dir: str | Path, results: Sequence[Any], comparisons: Sequence[Any]) -> Path:
    """Write ``DIR/report.html``; returns its path."""
    from ponder.support.fileutils import atomic_write

    text = render_report(results, comparisons)
    path = prepare_report_dir(out_dir) / "report.html"
    try:
        atomic_write(path, text)
    except OSError as exc:
        raise ConfigError(f"--report {out_dir}: cannot write {path}: {exc}") from None
    return path


def prepare_report_dir(out_dir: str | Path) -> Path:
    """Make (or check) the report's folder; a path that cannot hold it is bad input (exit 2).
    ``ponder eval`` calls this before asking anything, so a typo in ``--report`` never costs
    an eval's results."""
    import os

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--report {out_dir}: cannot create the folder: {exc}") from None
    if not os.access(out, os.W_OK):
        raise ConfigError(f"--report {out_dir}: the folder is not writable")
    return out
