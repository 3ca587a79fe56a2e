"""``ponder optimize --report DIR``: the optimization history and the Pareto front as plots.

matplotlib (the ``report`` extra) draws two PNGs, ``history.png`` (each trial's score and the
best so far) and ``pareto.png`` (score against cost, the front marked), and ``index.html``
holds them with the trials table, self-contained beside them. Without matplotlib the command
says which extra to install.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.support.fileutils import atomic_write


def write_report(study: Any, directory: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--report needs matplotlib: pip install -e '.[report]'") from None
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    trials = [t for t in study.trials() if t.score is not None]
    front = {t.number for t in study.pareto()}

    fig, ax = plt.subplots(figsize=(6, 3.5))
    best, running = [], None
    for t in trials:
        running = t.score if running is None else max(running, t.score)
        best.append(running)
    ax.scatter([t.number for t in trials], [t.score for t in trials], s=18, label="trial")
    ax.step([t.number for t in trials], best, where="post", color="C1", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(study.metrics[0])
    ax.set_title(f"{study.name}: history")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "history.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter([t.cost for t in trials], [t.score for t in trials], s=18, color="C0",
               label="trial")
    on_front = sorted((t for t in trials if t.number in front), key=lambda t: t.cost)
    ax.plot([t.cost for t in on_front], [t.score for t in on_front], "o-", color="C3",
            label="Pareto front")
    ax.set_xlabel("cost per trial (USD)")
    ax.set_ylabel(study.metrics[0])
    ax.set_title(f"{study.name}: score vs cost")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=110)
    plt.close(fig)

    rows = "\n".join(
        f"<tr><td>{t.number}</td><td>{t.status}</td><td>{t.score if t.score is not None else '-'}"
        f"</td><td>{t.cost:.6f}</td><td>{t.calls}</td><td>{'yes' if t.number in front else ''}"
        f"</td><td><code>{html.escape(json.dumps(t.assignment))}</code></td></tr>"
        for t in study.trials())
    atomic_write(
        out / "index.html",
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(study.name)}</title>"
        f"<h1>Study {html.escape(study.name)}</h1><img src='history.png'><img src='pareto.png'>"
        "<table border=1 cellpadding=3><tr><th>#</th><th>status</th><th>score</th><th>cost</th>"
        f"<th>calls</th><th>front</th><th>assignment</th></tr>{rows}</table>")
    return str(out / "index.html")
