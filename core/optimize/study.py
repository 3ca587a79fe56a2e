"""A study: the candidates an optimizer proposes, evaluated on a dataset under one budget.

An optimizer plugin never runs an eval itself: it hands an assignment to
:meth:`Study.evaluate`, which turns it into a config (``Space.to_config``), runs the train
examples through :class:`ponder.evaluate.Evaluator` in a fixed shuffled order, scores them,
charges the budget and records the trial. Why this split: every optimizer then gets the same
budget enforcement, caching, resume and records for free, and a new one is a loop.

**A new or larger dataset** (``--resume STUDY DATASET``): trials are recorded with the digest
of their train examples, and only those scored on the current ones count (toward the trials,
the best, the front); the earlier trials stay in the Optuna study as its warm start, and a
candidate evaluated again asks only the examples that are new.

**Caching and resume.** The evaluator keeps every (resolved config, example) result in the run
store (namespace ``eval``, ``example/<config digest>/<example digest>``), and the study records
each trial as it finishes (namespace ``study``, ``<study>/trial/<n>``). A candidate evaluated
again (a resumed study, a sampler proposing a point twice) reads its finished examples back and
makes no LM call for them; a trial already recorded for the same candidate is returned as is.

**Budget.** ``max_cost`` (USD), ``max_calls`` (LM calls) and ``timeout`` (seconds) count what
this process spent (results read back cost nothing now). They are checked as each example
finishes: the trial stops handing out examples, its finished examples count, and the study
stops. In-flight examples (at most the concurrency) finish, so a cap may be passed by what they
spend; ``[limits] max_cost`` in the base config bounds one ask.

**Pruning.** ``report(step, value)`` is called after each example with its position in the
shuffled stream; returning True stops the trial there (status ``pruned``). The calls it saved
are estimated as the examples left times the trial's mean calls per example so far.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ponder.errors import ConfigError

log = logging.getLogger("ponder.optimize")

NAMESPACE = "study"
#: objective -> (direction, how a trial's value is read)
OBJECTIVES: dict[str, str] = {
    "score": "maximize", "cost": "minimize", "calls": "minimize", "latency": "minimize",
    "tokens": "minimize",
}


def check_objectives(names: Sequence[str], where: str = "--objectives") -> tuple[str, ...]:
    from ponder.kernel.registry import did_you_mean

    out = []
    for name in names:
        if name not in OBJECTIVES:
            hint = did_you_mean(name, list(OBJECTIVES))
            raise ConfigError(f"{where}: unknown objective {name!r}"
                              + (f"; did you mean {hint!r}?" if hint else "")
                              + f" (objectives: {', '.join(OBJECTIVES)})")
        if name in out:
            raise ConfigError(f"{where}: {name!r} is listed twice")
        out.append(name)
    if not out:
        raise ConfigError(f"{where}: name at least one objective (score)")
    return tuple(out)


@attrs.define
class Budget:
    max_cost: float | None = None
    max_calls: int | None = None
    timeout: float | None = None


@attrs.define
class Spent:
    """What this process spent on LM calls (results read back from the store cost nothing)."""

    cost: float = 0.0
    calls: int = 0
    tokens: int = 0
    started: float = attrs.field(factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


@attrs.define
class TrialResult:
    number: int
    assignment: dict[str, Any]
    candidate: str
    status: str  # complete, pruned, stopped (a budget cap), failed
    score: float | None = None
    cost: float = 0.0
    calls: int = 0
    tokens: int = 0
    latency_s: float = 0.0
    examples: int = 0
    evaluated: int = 0
    failed: int = 0
    resumed: int = 0
    calls_saved: int = 0
    pruned_at: int | None = None
    note: str | None = None

    def value(self, objective: str) -> float | None:
        return {"score": self.score, "cost": self.cost, "calls": float(self.calls),
                "latency": self.latency_s, "tokens": float(self.tokens)}[objective]

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialResult:
        names = {a.name for a in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def pareto_front(trials: Sequence[TrialResult], objectives: Sequence[str]) -> list[TrialResult]:
    """The trials no other trial beats on every objective (complete trials with a score)."""
    def vector(t: TrialResult) -> list[float]:
        out = []
        for name in objectives:
            value = t.value(name)
            value = float("-inf") if value is None else value
            out.append(value if OBJECTIVES[name] == "maximize" else -value)
        return out

    done = [t for t in trials if t.status == "complete" and t.score is not None]
    front = []
    for t in done:
        vt = vector(t)
        dominated = any(
            all(a >= b for a, b in zip(vector(o), vt, strict=True))
            and any(a > b for a, b in zip(vector(o), vt, strict=True))
            for o in done if o is not t)
        if not dominated:
            front.append(t)
    return sorted(front, key=lambda t: t.number)


def _examples_digest(examples: Any) -> str:
    digests = sorted(str(getattr(e, "digest", e)) for e in examples)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]


def candidate_key(assignment: Mapping[str, Any]) -> str:
    text = json.dumps(dict(sorted(assignment.items())), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Study:
    """Evaluates candidates for an optimizer and records them; see the module docstring."""

    def __init__(self, name: str, space: Any, train: Any, *, metrics: Sequence[str],
                 plugins: Any, storage: Any, trials: int, objectives: Sequence[str] = ("score",),
                 budget: Budget | None = None, seed: int = 0, concurrency: int | None = None,
                 on_trial: Callable[[TrialResult, Study], None] | None = None,
                 optuna_url: str | None = None) -> None:
        self.name = name
        self.space = space
        self.train = train.shuffled(seed) if hasattr(train, "shuffled") else train
        self.metrics = tuple(metrics)
        self.plugins = plugins
        self.storage = storage
        self.n_trials = trials
        self.objectives = tuple(objectives)
        self.budget = budget or Budget()
        self.seed = seed
        self.concurrency = concurrency
        self.on_trial = on_trial
        self.optuna_url = optuna_url
        self.spent = Spent()
        self.stop_reason: str | None = None
        self._steps = {example.id: i for i, example in enumerate(self.train)}
        #: which examples the trials are scored on (order-free); None: any (``optimize show``)
        self.train_digest = _examples_digest(self.train) if len(self.train) else None

    @property
    def directions(self) -> tuple[str, ...]:
        """``maximize``/``minimize`` for each objective, in order (what Optuna takes)."""
        return tuple(OBJECTIVES[name] for name in self.objectives)

    # --- records -------------------------------------------------------------------------
    def _trial_key(self, number: int) -> str:
        return f"{self.name}/trial/{number:05d}"

    def trials(self, *, every: bool = False) -> list[TrialResult]:
        """The recorded trials scored on this study's train examples (``every``: on any, e.g.
        a smaller dataset the study was resumed from)."""
        return [TrialResult.from_dict(r) for _, r in
                self.storage.list_records(NAMESPACE, f"{self.name}/trial/")
                if every or self.train_digest is None
                or r.get("train_digest") in (None, self.train_digest)]

    def finished(self) -> list[TrialResult]:
        return [t for t in self.trials() if t.status in ("complete", "pruned", "failed")]

    def next_number(self) -> int:
        trials = self.trials(every=True)
        return max((t.number for t in trials), default=-1) + 1

    def best(self) -> TrialResult | None:
        done = [t for t in self.trials() if t.status == "complete" and t.score is not None]
        if not done:
            return None
        # best score, then the cheapest of those (fewer calls), then the earliest
        return min(done, key=lambda t: (-(t.score or 0.0), t.cost, t.calls, t.number))

    def pareto(self) -> list[TrialResult]:
        return pareto_front(self.trials(), self.objectives)

    # --- budget --------------------------------------------------------------------------
    def over_budget(self) -> str | None:
        b, s = self.budget, self.spent
        if b.max_cost is not None and s.cost >= b.max_cost:
            return f"max_cost ${b.max_cost:g} reached (spent ${s.cost:.6f})"
        if b.max_calls is not None and s.calls >= b.max_calls:
            return f"max_calls {b.max_calls} reached ({s.calls} calls)"
        if b.timeout is not None and s.elapsed >= b.timeout:
            return f"timeout {b.timeout:g}s reached"
        return None

    def should_stop(self) -> bool:
        """True once the planned trials are done or a cap is reached (``stop_reason`` says)."""
        if self.stop_reason is None:
            self.stop_reason = self.over_budget()
        if self.stop_reason is None and len(self.finished()) >= self.n_trials:
            self.stop_reason = f"{self.n_trials} trials done"
        return self.stop_reason is not None

    # --- evaluating ----------------------------------------------------------------------
    def evaluate(self, assignment: Mapping[str, Any], *, number: int | None = None,
                 report: Callable[[int, float], bool] | None = None) -> TrialResult:
        """Evaluate one candidate on the train examples and record it as trial ``number``."""
        assignment = self.space.validate(assignment)
        key = candidate_key(assignment)
        number = self.next_number() if number is None else number
        recorded = self.storage.get_record(NAMESPACE, self._trial_key(number))
        if recorded is not None and recorded.get("candidate") == key \
                and recorded.get("train_digest") == self.train_digest \
                and recorded.get("status") in ("complete", "pruned", "failed"):
            return TrialResult.from_dict(recorded)
        result = TrialResult(number, dict(assignment), key, "running",
                             examples=len(self.train))
        self.storage.put_record(NAMESPACE, self._trial_key(number), {
            **result.to_dict(), "train_digest": self.train_digest, "started_at": time.time()})
        try:
            self._run(result, self.space.to_config(assignment, trial=number), report)
        except ConfigError as exc:
            result.status, result.note = "failed", str(exc)
        self.storage.put_record(NAMESPACE, self._trial_key(number), {
            **result.to_dict(), "train_digest": self.train_digest, "finished_at": time.time()})
        if self.on_trial is not None:
            self.on_trial(result, self)
        return result

    def _run(self, result: TrialResult, config: Any, report: Any) -> None:
        from ponder.evaluate import Evaluator

        evaluator = Evaluator(config, metrics=self.metrics, plugins=self.plugins,
                              storage=self.storage, concurrency=self.concurrency,
                              progress="silent", label=f"{self.name} trial {result.number}")
        scores: list[float] = []
        latencies: list[float] = []
        stream = evaluator.iter(self.train)
        try:
            for example in stream:
                result.evaluated += 1
                usage = example.usage or {}
                calls = int(usage.get("calls", 0))
                tokens = int(usage.get("tokens", 0))
                cost = float(usage.get("cost", 0.0))
                result.calls += calls
                result.tokens += tokens
                result.cost += cost
                if example.resumed:
                    result.resumed += 1
                else:
                    self.spent.calls += calls
                    self.spent.tokens += tokens
                    self.spent.cost += cost
                latencies.append(float(example.latency_s or 0.0))
                if example.failure is not None:
                    result.failed += 1
                    value = 0.0  # for the pruner only; the score is over examples that ran
                else:
                    value = float(example.score or 0.0)
                    scores.append(value)
                step = self._steps.get(example.id, result.evaluated - 1)
                if report is not None and report(step, value):
                    result.status, result.pruned_at = "pruned", result.evaluated
                    break
                reason = self.over_budget()
                if reason is not None:
                    self.stop_reason = reason
                    result.status, result.note = "stopped", reason
                    break
        finally:
            stream.close()  # stops handing out examples; the store is ours, left open
        left = result.examples - result.evaluated
        if left and result.evaluated:
            result.calls_saved = round(left * result.calls / result.evaluated)
        result.score = sum(scores) / len(scores) if scores else None
        latencies.sort()
        result.latency_s = latencies[len(latencies) // 2] if latencies else 0.0
        if result.status == "running":
            result.status = "complete" if scores else "failed"
            if not scores:
                result.note = f"all {result.failed} examples failed"

    # --- the study's own record -----------------------------------------------------------
    def meta(self) -> dict[str, Any] | None:
        return self.storage.get_record(NAMESPACE, self.name)

    def save_meta(self, **fields: Any) -> None:
        record = self.meta() or {"name": self.name, "created_at": time.time()}
        record.update(fields)
        self.storage.put_record(NAMESPACE, self.name, record)
