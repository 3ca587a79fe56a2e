"""What an eval returns: one :class:`ExampleResult` per example, summed up in an
:class:`EvalResult`, and :class:`Comparison` of two results on the same examples.

A failed example (its sources missing, the provider failing past the retries, no answer at all,
a metric raising) is listed with its reason and counted in ``failed``; it is never scored as 0.
Every mean is over the examples that ran (and that the metric applies to), and the summary says
how many did not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ponder.evaluate.dataset import Example
from ponder.evaluate.stats import bootstrap_ci, compare_scores
from ponder.support.measured import percentile


def empty_usage() -> dict[str, float]:
    return {"calls": 0, "input_tokens": 0, "output_tokens": 0, "tokens": 0, "cost": 0.0,
            "retries": 0, "failed_requests": 0}


def add_usage(total: dict[str, float], part: Mapping[str, Any] | None) -> dict[str, float]:
    if part:
        for key in ("calls", "input_tokens", "output_tokens", "cost", "retries",
                    "failed_requests"):
            total[key] = total.get(key, 0) + (part.get(key, 0) or 0)
        total["tokens"] = total["input_tokens"] + total["output_tokens"]
    return total


def usage_of(usage: Any) -> dict[str, float]:
    """An ask's usage in the eval's keys: the engine's :class:`ponder.engine.answer.Usage`, or
    its dict as a failed run's error carries it (``ponder_run``, ``cost_usd``)."""
    def get(key: str) -> Any:
        value = usage.get(key) if isinstance(usage, Mapping) else getattr(usage, key, 0)
        return value or 0

    return add_usage(empty_usage(), {
        "calls": get("calls"), "input_tokens": get("input_tokens"),
        "output_tokens": get("output_tokens"), "cost": get("cost_usd"),
        "retries": get("retries"), "failed_requests": get("failed_requests")})


@attrs.frozen
class Prediction:
    """What the system answered, as metrics see it (live or read back from the store)."""

    answer: str
    #: ``path:line`` citations the engine validated against the loaded sources
    citations: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    partial: bool = False
    note: str | None = None


@attrs.frozen
class ExampleResult:
    id: str
    example: Example
    scores: dict[str, float | None] = attrs.field(factory=dict)
    feedback: dict[str, str] = attrs.field(factory=dict)
    parts: dict[str, dict[str, float]] = attrs.field(factory=dict)
    answer: str = ""
    citations: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    usage: dict[str, float] = attrs.field(factory=empty_usage)
    judge_usage: dict[str, float] = attrs.field(factory=empty_usage)
    latency_s: float = 0.0
    failure: str | None = None
    partial: bool = False
    run_id: str | None = None
    resumed: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def score(self) -> float | None:
        return next(iter(self.scores.values()), None) if self.scores else None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.example.question, "tags": list(self.example.tags),
                "scores": dict(self.scores), "feedback": dict(self.feedback),
                "parts": dict(self.parts), "answer": self.answer,
                "citations": list(self.citations), "usage": dict(self.usage),
                "judge_usage": dict(self.judge_usage), "latency_s": round(self.latency_s, 3),
                "failure": self.failure, "partial": self.partial, "run_id": self.run_id,
                "resumed": self.resumed}


def metric_union(results: Sequence[EvalResult]) -> list[str]:
    """Every metric of ``results``, first seen first: evals recorded with different metrics
    (``ponder eval compare``) share one table, a metric a result lacks shown as ``-``."""
    names: list[str] = []
    for result in results:
        names.extend(m for m in result.metrics if m not in names)
    return names


def _interval(values: Sequence[float], seed: int) -> dict[str, Any]:
    mean, low, high = bootstrap_ci(values, seed=seed)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": len(values)}


@attrs.frozen
class EvalResult:
    eval_id: str
    label: str
    dataset: str
    dataset_digest: str
    config_digest: str
    metrics: tuple[str, ...] = attrs.field(converter=tuple)
    per_example: tuple[ExampleResult, ...] = attrs.field(converter=tuple)
    #: metric -> whether its values are 0/1 (McNemar applies)
    binary: dict[str, bool] = attrs.field(factory=dict)
    #: examples selected but not run (the eval was stopped: Ctrl-C, a consumer that stopped)
    not_run: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    config: dict[str, Any] = attrs.field(factory=dict)
    seed: int = 0
    #: ``done`` (every selected example ran or failed), ``interrupted`` (Ctrl-C: ``not_run``
    #: lists what was left), ``stopped`` (a consumer stopped it), or ``running`` (read back
    #: from the store while another process still runs it)
    status: str = "done"
    #: why the eval stopped by itself before every example ran (the provider could not be
    #: used: every further example would have failed the same way), or None
    stop_reason: str | None = None
    #: requests of asks lost with their worker (a killed Ray actor), taken from its request
    #: ledger: no example's, since the example was asked again, but served and priced
    lost_usage: dict[str, float] = attrs.field(factory=empty_usage)

    # --- summary ---------------------------------------------------------------------------------
    @property
    def examples(self) -> int:
        return len(self.per_example) + len(self.not_run)

    @property
    def failures(self) -> list[ExampleResult]:
        return [r for r in self.per_example if not r.ok]

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def resumed(self) -> int:
        return sum(1 for r in self.per_example if r.resumed)

    def values(self, metric: str) -> dict[str, float]:
        """example id -> value, for the examples that ran and that ``metric`` applies to."""
        return {r.id: float(r.scores[metric]) for r in self.per_example
                if r.ok and r.scores.get(metric) is not None}

    @property
    def scores(self) -> dict[str, dict[str, Any]]:
        return {m: _interval(list(self.values(m).values()), self.seed) for m in self.metrics}

    @property
    def score(self) -> float | None:
        return self.scores[self.metrics[0]]["mean"] if self.metrics else None

    @property
    def usage(self) -> dict[str, Any]:
        total = empty_usage()
        judge = empty_usage()
        for r in self.per_example:
            add_usage(total, r.usage)
            add_usage(judge, r.judge_usage)
        add_usage(total, self.lost_usage)
        total["cost"] = round(total["cost"], 6)
        judge["cost"] = round(judge["cost"], 6)
        lost = {**self.lost_usage, "cost": round(self.lost_usage.get("cost", 0.0), 6)}
        return {**total, "judge": judge, **({"lost": lost} if lost.get("calls") else {})}

    @property
    def latency_s(self) -> dict[str, float | None]:
        ran = [r.latency_s for r in self.per_example if r.ok]
        p50, p95 = percentile(ran, 50), percentile(ran, 95)
        return {"p50": None if p50 is None else round(p50, 3),
                "p95": None if p95 is None else round(p95, 3)}

    @property
    def by_tag(self) -> dict[str, dict[str, float | None]]:
        tags = sorted({t for r in self.per_example for t in r.example.tags})
        out: dict[str, dict[str, float | None]] = {}
        for tag in tags:
            rows = [r for r in self.per_example if tag in r.example.tags and r.ok]
            out[tag] = {}
            for metric in self.metrics:
                vals = [float(r.scores[metric]) for r in rows if r.scores.get(metric) is not None]
                out[tag][metric] = sum(vals) / len(vals) if vals else None
        return out

    def compare(self, other: EvalResult, *, metric: str | None = None) -> Comparison:
        """``other`` against this one (the base), paired on example id."""
        return Comparison.of(self, other, metrics=[metric] if metric else None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "eval_id": self.eval_id, "label": self.label, "status": self.status,
            "dataset": self.dataset,
            "dataset_digest": self.dataset_digest, "config_digest": self.config_digest,
            "metrics": list(self.metrics), "examples": self.examples,
            "ran": len(self.per_example) - self.failed, "failed": self.failed,
            "not_run": len(self.not_run), "resumed": self.resumed, "scores": self.scores,
            "score": self.score, "usage": self.usage, "latency_s": self.latency_s,
            "by_tag": self.by_tag,
            "failures": [{"id": r.id, "failure": r.failure} for r in self.failures],
            "not_run_ids": list(self.not_run), "stop_reason": self.stop_reason,
            "per_example": [r.to_dict() for r in self.per_example],
        }


@attrs.frozen
class Comparison:
    base: str
    other: str
    base_eval_id: str
    other_eval_id: str
    #: metric -> diff, ci_low, ci_high, p_value, n, (mcnemar_p, discordant), significant
    metrics: dict[str, dict[str, Any]]
    #: example ids one side ran and the other did not (failed or absent): left out
    unpaired: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    @classmethod
    def of(cls, base: EvalResult, other: EvalResult,
           metrics: Sequence[str] | None = None) -> Comparison:
        names = [m for m in (metrics or base.metrics) if m in other.metrics]
        rows: dict[str, dict[str, Any]] = {}
        unpaired: set[str] = set()
        for name in names:
            a, b = base.values(name), other.values(name)
            common = [i for i in a if i in b]
            unpaired.update(set(a) ^ set(b))
            binary = base.binary.get(name, False) and other.binary.get(name, False)
            rows[name] = compare_scores([a[i] for i in common], [b[i] for i in common],
                                        binary=binary, seed=base.seed)
        return cls(base.label, other.label, base.eval_id, other.eval_id, rows,
                   tuple(sorted(unpaired)))

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "other": self.other, "base_eval_id": self.base_eval_id,
                "other_eval_id": self.other_eval_id, "metrics": self.metrics,
                "unpaired": list(self.unpaired)}
