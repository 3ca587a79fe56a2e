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
spend; they are drained and their calls counted (not scored), so what the study says it spent
is what the provider served. ``[limits] max_cost`` in the base config bounds one ask.

**Pruning.** ``report(step, value)`` is called after each example with its position in the
shuffled stream; returning True stops the trial there (status ``pruned``). The calls it saved
are estimated as the examples never started times the trial's mean calls per example (those
already running finish, and are counted as spent).

**Mini-batches** (``evaluate(…, examples=subset)``, SIMBA's steps): a trial scored on a subset of
the train examples. It counts toward the trials and the budget and is recorded like any trial
(``minibatch``: the subset's digest), but is never the best and never on the Pareto front: its
score is not comparable with a score on every train example.

**An optimizer's own LM calls** (:meth:`Study.lm_call`: MIPRO's instruction proposals, SIMBA's
rules) go to the base config's adapter chain through :class:`ponder.engine.services.Services`
(retries, prices) and are metered like the trials: each call's requests, tokens and cost are
added to :attr:`Study.spent`, a call is refused once a cap is reached (so a cap is passed by at
most the one call that was running when it was reached), and its reply is recorded (namespace
``study``, ``<study>/lm/<digest>``) before it is returned, so a resumed study reads it back and
makes no request for it.
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
#: compiled prompt states, keyed by their digest (the prompt variable's value)
PROMPT_NAMESPACE = "prompt"
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
    #: requests that were retried (a time-out, a 429): they reached the provider too, so
    #: ``calls + retries`` is what the provider served
    retries: int = 0
    started: float = attrs.field(factory=time.monotonic)

    def add(self, usage: dict[str, Any]) -> None:
        """Count one example's usage (``calls``, ``tokens``, ``cost``, ``retries``)."""
        self.calls += int(usage.get("calls", 0))
        self.tokens += int(usage.get("tokens", 0))
        self.cost += float(usage.get("cost", 0.0))
        self.retries += int(usage.get("retries", 0))

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
    #: the digest of the mini-batch this trial was scored on; None: every train example
    minibatch: str | None = None

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

    done = [t for t in trials if t.status == "complete" and t.score is not None
            and t.minibatch is None]
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


def build_optimizer(name: str, plugins: Any, config: Any, space: Any = None) -> Any:
    """The optimizer plugin ``name``, its settings from ``[optimize.<name>]`` of ``config``.

    With a ``space`` whose ``prompt`` variable names another optimizer (``--optimizer tpe``
    over ``"predictor.prompt" = { prompt = "bootstrap_fewshot" }``), the result is the joint
    search: the prompt optimizer with ``search = name``, so the prompt is never ignored."""
    prompt = getattr(space, "prompt", None) if space is not None else None
    if prompt is not None and prompt.optimizer != name:
        joint = build_optimizer(prompt.optimizer, plugins, config)
        if not hasattr(getattr(joint, "settings", None), "search"):
            raise ConfigError(f"{space.source}: optimize.space.{prompt.key!r}: optimizer "
                              f"{prompt.optimizer!r} cannot run a joint search with "
                              f"--optimizer {name}")
        build_optimizer(name, plugins, config)  # a bad name or section fails here, named
        joint.settings = attrs.evolve(joint.settings, search=name)
        return joint
    from ponder.kernel.config import structure_settings
    from ponder.kernel.registry import RegistryError

    try:
        entry = plugins.get("optimizer", name)
    except RegistryError as exc:
        raise ConfigError(f"--optimizer: {exc}") from None
    section = config.section("optimize")
    options = section.get(name, {}) if isinstance(section.get(name, {}), dict) else {}
    if entry.settings is None:
        return entry.factory()
    settings = structure_settings(entry.settings, options, section=f"optimize.{name}",
                                  origins=config.origins)
    return entry.factory(settings)


@attrs.frozen
class Traced:
    """One example of a trial that collected traces: what a prompt optimizer learns from."""

    id: str
    example: Any
    answer: str
    failure: str | None = None
    #: the example's score by the study's first metric (None: failed, or an older record)
    score: float | None = None


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
        #: trial number -> [(example result, predictor calls)] of the trials run to collect
        self.collected: dict[int, list[tuple[Any, list[Any]]]] = {}
        #: which examples the trials are scored on (order-free); None: any (``optimize show``)
        self.train_digest = _examples_digest(self.train) if len(self.train) else None
        #: the Services of :meth:`lm_call`, built on its first call
        self._lm: Any = None

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
        done = [t for t in self.trials() if t.status == "complete" and t.score is not None
                and t.minibatch is None]
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
    def optimizer(self, name: str) -> Any:
        """The optimizer plugin ``name`` with its ``[optimize.<name>]`` settings (a joint search
        drives another optimizer over this study)."""
        return build_optimizer(name, self.plugins, self.space.base)

    # --- prompt states (the ``prompt`` variable) --------------------------------------------
    def save_prompts(self, state: Any) -> str:
        """Keep a compiled :class:`ponder.engine.prompts.PromptState` in the run store; its id
        (a digest) is the prompt variable's value in an assignment."""
        ident = state.digest()
        self.storage.put_record(PROMPT_NAMESPACE, ident, {"prompts": state.to_table()})
        return ident

    def prompts_of(self, assignment: Mapping[str, Any]) -> Any:
        """The prompt state an assignment's prompt variable names, or None."""
        from ponder.engine.prompts import PromptState

        variable = getattr(self.space, "prompt", None)
        ident = assignment.get(variable.key) if variable is not None else None
        if not ident:
            return None
        record = self.storage.get_record(PROMPT_NAMESPACE, str(ident))
        if record is None:
            raise ConfigError(f"{variable.key} = {ident!r}: no such prompt state in the run "
                              "store")
        return PromptState(
            {name: json.loads(text) for name, text in record["prompts"].items()})

    # --- an optimizer's own LM calls (proposals, reflections) -------------------------------
    def lm_call(self, signature: Any, *, role: str, **inputs: Any) -> dict[str, Any] | None:
        """One LM call an optimizer makes itself, metered like the trials (module docstring):
        ``signature`` (a ``dspy.Signature`` class) on ``inputs`` with the ``predict`` predictor
        on the base config's adapter chain. Returns the reply's output fields; None when a cap
        is reached (``stop_reason`` says which) or the call failed (what it spent is counted).
        A call recorded by an earlier run of this study is read back, free."""
        blob = json.dumps([role, getattr(signature, "__name__", str(signature)),
                           getattr(signature, "instructions", ""),
                           sorted(getattr(signature, "fields", {}) or {}), inputs],
                          sort_keys=True, default=str)
        key = f"{self.name}/lm/{hashlib.sha256(blob.encode()).hexdigest()[:16]}"
        recorded = self.storage.get_record(NAMESPACE, key)
        if recorded is not None and recorded.get("outputs") is not None:
            return dict(recorded["outputs"])
        reason = self.over_budget()
        if reason is not None:
            self.stop_reason = self.stop_reason or reason
            return None
        from ponder.engine import replies
        from ponder.support.secrets import clean_secrets, redact

        services = self._lm_services()
        before = attrs.evolve(services.usage)
        outputs, error = None, None
        try:
            outputs = clean_secrets(replies.fields_of(
                services.predict(signature, role=role, **inputs)))
        except Exception as exc:  # a failed proposal costs what it spent, and is skipped
            error = redact(f"{type(exc).__name__}: {exc}")
            log.warning("%s: %s call failed: %s", self.name, role, error)
        after = services.usage
        usage = {"calls": after.calls - before.calls,
                 "tokens": (after.input_tokens + after.output_tokens
                            - before.input_tokens - before.output_tokens),
                 "cost": after.cost_usd - before.cost_usd,
                 "retries": after.retries - before.retries}
        self.spent.add(usage)
        self.storage.put_record(NAMESPACE, key, {"role": role, "outputs": outputs, "error": error,
                                                 "usage": usage, "at": time.time()})
        return outputs

    def _lm_services(self) -> Any:
        """The :class:`Services` of :meth:`lm_call`, built once: no response cache (the study
        records the replies), no call records of a run (the study's record is the call's)."""
        services = self._lm
        if services is None:
            from ponder.engine.services import Services
            from ponder.engine.system import System, choose_adapter
            from ponder.support.retry import RetryPolicy

            config = self.space.base
            system = System(config, plugins=self.plugins, progress="silent")
            adapter_name, _ = choose_adapter(config)
            lm, model_info, adapter = system._build_lm(adapter_name)
            entry = self.plugins.get("predictor", "predict")
            predictor = entry.factory(entry.settings()) if entry.settings else entry.factory()
            rpm, tpm = config.adapter.rpm, config.adapter.tpm
            limiter = None
            if rpm is not None or tpm is not None:  # [adapter] rpm/tpm hold for these too
                from ponder.engine.ratelimit import RateLimiter

                limiter = RateLimiter(rpm, tpm)
            services = self._lm = Services(
                lm=lm, model_info=model_info, predictor=predictor,
                retry=RetryPolicy(max_retries=config.limits.max_retries), concurrency=1,
                progress_mode="silent", rate_limiter=limiter,
                dspy_adapter=getattr(adapter, "dspy_adapter", lambda: None)(),
                names={"adapter": (adapter_name, getattr(adapter, "settings", None))})
        return services

    def config_for(self, assignment: Mapping[str, Any], *, trial: int | None = None,
                   collect: str | None = None) -> Any:
        """The candidate's config: the space's keys, then its prompt state (if any)."""
        from ponder.engine.prompts import PromptState

        config = self.space.to_config(assignment, trial=trial)
        state = self.prompts_of(assignment)
        if state is None and collect is None:
            return config
        state = state or PromptState()
        state.collect = collect
        return state.with_config(config)

    def evaluate(self, assignment: Mapping[str, Any], *, number: int | None = None,
                 report: Callable[[int, float], bool] | None = None,
                 collect: bool = False, examples: Sequence[Any] | None = None) -> TrialResult:
        """Evaluate one candidate on the train examples and record it as trial ``number``.

        ``collect``: record every predictor call of the trial's runs (a prompt optimizer's
        traces), kept in :attr:`collected` as ``number -> [(Traced, calls)]`` and in the run
        store (namespace ``prompt``), so a resumed teacher trial still has them.
        ``examples``: a mini-batch of the train examples to score it on instead (see the
        module docstring)."""
        assignment = self.space.validate(assignment)
        key = candidate_key(assignment)
        number = self.next_number() if number is None else number
        batch = None if examples is None else _examples_digest(examples)
        examples = self.train if examples is None else list(examples)
        recorded = self.storage.get_record(NAMESPACE, self._trial_key(number))
        if recorded is not None and recorded.get("candidate") == key \
                and recorded.get("train_digest") == self.train_digest \
                and recorded.get("minibatch") == batch \
                and recorded.get("status") in ("complete", "pruned", "failed"):
            if collect:  # a resumed teacher: its traces are in the store
                for example in examples:
                    traced = self._stored_trace(key, example)
                    if traced is not None:
                        self.collected.setdefault(number, []).append(traced)
            return TrialResult.from_dict(recorded)
        result = TrialResult(number, dict(assignment), key, "running",
                             examples=len(examples), minibatch=batch)
        self.storage.put_record(NAMESPACE, self._trial_key(number), {
            **result.to_dict(), "train_digest": self.train_digest, "started_at": time.time()})
        try:
            if collect:
                from ponder.engine.prompts import collecting

                token = f"{self.name}/{key}"  # per candidate: a repeated point is read back
                with collecting(token) as collector:
                    self._run(result, self.config_for(assignment, trial=number, collect=token),
                              report, collector=collector, examples=examples)
            else:
                self._run(result, self.config_for(assignment, trial=number), report,
                          examples=examples)
        except ConfigError as exc:
            result.status, result.note = "failed", str(exc)
        self.storage.put_record(NAMESPACE, self._trial_key(number), {
            **result.to_dict(), "train_digest": self.train_digest, "finished_at": time.time()})
        if self.on_trial is not None:
            self.on_trial(result, self)
        return result

    def _run(self, result: TrialResult, config: Any, report: Any,
             collector: Any = None, examples: Any = None) -> None:
        from ponder.evaluate import Evaluator

        evaluator = Evaluator(config, metrics=self.metrics, plugins=self.plugins,
                              storage=self.storage, concurrency=self.concurrency,
                              progress="silent", label=f"{self.name} trial {result.number}")
        scores: list[float] = []
        latencies: list[float] = []
        stream = evaluator.iter(self.train if examples is None else examples)
        # after a prune or a cap, the examples already running still finish and spend: they
        # are drained and counted (not scored), so the study's numbers match the provider's
        stopping = False
        drained = 0
        try:
            for example in stream:
                if stopping:
                    drained += 1
                else:
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
                    self.spent.add(usage)
                    # an llm_judge metric's calls are spent too: the caps bind on them as well
                    self.spent.add(example.judge_usage or {})
                # a drained example's trace is stored too: its eval record is, so a resumed
                # study reads it back without a call and needs its calls from the store
                traced = None if collector is None else \
                    self._trace(result.candidate, example, collector)
                if stopping:
                    continue
                latencies.append(float(example.latency_s or 0.0))
                if traced is not None:
                    self.collected.setdefault(result.number, []).append(traced)
                if example.failure is not None:
                    result.failed += 1
                    value = 0.0  # for the pruner only; the score is over examples that ran
                else:
                    value = float(example.score or 0.0)
                    scores.append(value)
                step = self._steps.get(example.id, result.evaluated - 1)
                if report is not None and report(step, value):
                    result.status, result.pruned_at = "pruned", result.evaluated
                    stopping = True
                    evaluator.stop()
                    continue
                reason = self.over_budget()
                if reason is not None:
                    self.stop_reason = reason
                    result.status, result.note = "stopped", reason
                    stopping = True
                    evaluator.stop()
        finally:
            stream.close()  # stops handing out examples; the store is ours, left open
        # requests lost with a worker (asked again elsewhere) were still served: spent too
        self.spent.add(evaluator.lost_usage())
        # saved: the examples never started (not those drained), at the mean calls per example
        left = result.examples - result.evaluated - drained
        if left and result.evaluated:
            result.calls_saved = round(left * result.calls / (result.evaluated + drained))
        result.score = sum(scores) / len(scores) if scores else None
        latencies.sort()
        result.latency_s = latencies[len(latencies) // 2] if latencies else 0.0
        if result.status == "running":
            result.status = "complete" if scores else "failed"
            if not scores:
                result.note = f"all {result.failed} examples failed"

    # --- traces (kept, so a resumed prompt optimizer still has them) ------------------------
    def _trace_key(self, candidate: str, example_id: str) -> str:
        return f"{self.name}/trace/{candidate}/{example_id}"

    def _trace(self, candidate: str, example: Any, collector: Any) -> tuple[Any, list[Any]]:
        """This example's recorded calls, stored; an example read back from the eval records
        made no call now, so its calls are read back too."""
        calls = collector.for_question(example.example.question)
        traced = Traced(str(example.id), example.example, example.answer, example.failure,
                        None if example.failure is not None else example.score)
        if calls:
            from ponder.support.secrets import clean_secrets

            self.storage.put_record(PROMPT_NAMESPACE, self._trace_key(candidate, traced.id),
                                    clean_secrets({
                                        "answer": traced.answer, "failure": traced.failure,
                                        "score": traced.score, "calls": [[name, inputs, outputs]
                                                  for name, inputs, outputs in calls]}))
            return traced, calls
        stored = self._stored_trace(candidate, example.example)
        return stored if stored is not None else (traced, [])

    def _stored_trace(self, candidate: str, example: Any) -> tuple[Any, list[Any]] | None:
        record = self.storage.get_record(PROMPT_NAMESPACE,
                                         self._trace_key(candidate, str(example.id)))
        if record is None:
            return None
        return (Traced(str(example.id), example, record.get("answer", ""), record.get("failure"),
                       record.get("score")),
                [tuple(call) for call in record.get("calls", [])])

    # --- the study's own record -----------------------------------------------------------
    def meta(self) -> dict[str, Any] | None:
        return self.storage.get_record(NAMESPACE, self.name)

    def save_meta(self, **fields: Any) -> None:
        record = self.meta() or {"name": self.name, "created_at": time.time()}
        record.update(fields)
        self.storage.put_record(NAMESPACE, self.name, record)
