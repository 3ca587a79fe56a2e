"""``ponder runs stats``: measured performance per adapter and model, from the recorded calls.

Calls, success rate, latency p50/p95 of the successful calls, tokens, cost and cost per 1k
tokens, over the newest ``--window`` runs (and only those started within ``--since``). The same
numbers order a fallback chain with ``[adapter] order = "measured"`` (the rule is in
:mod:`ponder.support.measured`).
"""

from __future__ import annotations

import re
import time

import click

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str | None) -> float | None:
    """``90m``, ``24h``, ``7d`` → the epoch second that long ago; a bad value is exit 2."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if match is None:
        raise click.BadParameter(f"expected a duration such as 90m, 24h or 7d, got {text!r}",
                                 param_hint="--since")
    return time.time() - float(match.group(1)) * _UNITS[match.group(2)]


@click.command("stats")
@click.option("--window", type=click.IntRange(min=1), default=200, show_default=True,
              help="The newest runs to read.")
@click.option("--since", metavar="DURATION", help="Only runs started this long ago (24h, 7d).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def stats_command(ctx: click.Context, window: int, since: str | None, as_json: bool) -> None:
    """Per adapter and model: calls, success rate, latency p50/p95, cost per 1k tokens."""
    from ponder.cli.app import AppState, echo_json, run_store
    from ponder.support.measured import adapter_stats, collect, measured_order

    cutoff = parse_since(since)
    storage = run_store(ctx.find_object(AppState) or ctx.ensure_object(AppState))
    rows = adapter_stats(collect(storage, window=window, since=cutoff))
    order = measured_order(sorted({r["adapter"] for r in rows}), rows)
    if as_json:
        echo_json({"window": window, "since": since, "adapters": rows,
                   "measured_order": order})
        return
    if not rows:
        click.echo("no recorded LM calls in this window")
        return
    click.echo(f"{'adapter':<18} {'model':<28} {'calls':>6} {'ok':>6} {'p50 s':>7} {'p95 s':>7} "
               f"{'$/1k tok':>10}")
    for r in rows:
        p50 = "-" if r["latency_p50"] is None else f"{r['latency_p50']:.3f}"
        p95 = "-" if r["latency_p95"] is None else f"{r['latency_p95']:.3f}"
        per_1k = "-" if r["cost_per_1k_tokens"] is None else f"${r['cost_per_1k_tokens']:.6f}"
        click.echo(f"{r['adapter']:<18} {r['model'][:28]:<28} {r['calls']:>6} "
                   f"{r['success_rate']:>6.1%} {p50:>7} {p95:>7} {per_1k:>10}")
    click.echo("measured order: " + " -> ".join(order))
