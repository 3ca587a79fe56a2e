"""The ``bootstrap_fewshot`` optimizer: DSPy's ``BootstrapFewShot`` over a strategy's predictors.

What it optimizes is the space's ``prompt`` variable (``"predictor.prompt" = { prompt =
"bootstrap_fewshot" }``): the demos of every signature the strategy calls (``Answer`` for
``direct``, ``Extract`` and ``Combine`` for ``map_reduce``, …), saved as a
:class:`ponder.engine.prompts.PromptState` that the engine lays onto each module it builds.

**One round** (two train evals, both through the study, so every call is counted, priced and
under the budget):

1. *Teacher trial*: the candidate's config (the config points of the space; the first one is a
   seeded sample, or ``{}`` when the prompt is the only variable) is evaluated on the train
   examples with trace collection on (``study.evaluate(…, collect=True)``): every predictor call
   of every example is recorded as ``(signature, inputs, outputs)``.
2. *Compile*: ``dspy.BootstrapFewShot(metric=…, max_bootstrapped_demos=…,
   max_labeled_demos=0).compile(student, teacher=replay, trainset=…)``, where ``student`` has
   one ``dspy.Predict`` per signature name seen and ``replay`` is a ``dspy.Module`` whose
   ``forward`` replays an example's recorded calls into DSPy's trace (no LM call) and returns
   its answer. The metric is the study's first eval metric as a DSPy metric
   (``metric(example, prediction, trace)`` → ``score >= pass_threshold`` when tracing), so DSPy
   keeps the traces of the examples the system got right, as ``augmented`` demos, exactly as it
   does for its own programs. Labeled demos are off: a ponder example has no value for a
   signature's inner inputs (a chunk, partial answers).
3. *Student trial*: the same config plus the compiled state (the prompt variable's value is
   the state's digest; the state itself is in the run store, namespace ``prompt``).

3. *Student trial*: the same config plus the compiled state (the prompt variable's value is
   the state's digest; the state itself is in the run store, namespace ``prompt``), also
   collecting traces.

Further rounds (``max_rounds``, while trials remain): with the prompt as the only variable, the
last student is the next round's teacher (as DSPy's own ``max_rounds``: a program with demos
gets more examples right, and their traces become the next demos), one train eval a round;
with config variables, each round takes the next seeded config point (two train evals), and
the trials left after the rounds are seeded config points without a prompt (for a real search
over the config, use ``search``). A study without trace collection (the conformance suite's
synthetic study) gets config points only.

**Joint search** (``search = "tpe"``, or ``random``/``grid``): that optimizer searches the
config variables for ``--trials`` minus ``top_k`` trials, every trial collecting its traces
(no extra call: the traces are taken from the trials themselves); then the ``top_k`` best
candidates (by train score, then cost) are compiled from their own traces and evaluated with
their prompt, one train eval each. See docs/optimization.md for what that costs.

Config example (``ponder optimize … --optimizer bootstrap_fewshot``)::

    [optimize.bootstrap_fewshot]
    max_bootstrapped_demos = 4
    max_rounds = 1
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
from typing import Any

import attrs

from ponder import hookimpl

PONDER_PLUGIN_API = 1

log = logging.getLogger("ponder.optimize")
#: the joint search numbers its prompt trials from here
PROMPT_TRIALS = 10_000


@attrs.define
class BootstrapFewShotSettings:
    #: demos kept per signature (DSPy's ``max_bootstrapped_demos``)
    max_bootstrapped_demos: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    #: teacher + compile + student rounds at most (each: two train evals)
    max_rounds: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    #: a trace is a demo when its example scores at least this (None: the metric's own)
    pass_threshold: float | None = None
    #: seed of the config points and the trainset order; None: the study's ``--seed``
    seed: int | None = None
    #: joint search: this optimizer (``tpe``, ``random``, ``grid``) searches the config
    #: variables first, every trial collecting traces; then the ``top_k`` best are compiled
    search: str | None = None
    #: how many of the searched candidates get a compiled prompt (a student trial each)
    top_k: int = attrs.field(default=1, validator=attrs.validators.ge(1))


class BootstrapFewShotOptimizer:
    name = "bootstrap_fewshot"
    #: a teacher trial and a compiled one
    min_trials = 2

    def __init__(self, settings: BootstrapFewShotSettings | None = None) -> None:
        self.settings = settings or BootstrapFewShotSettings()

    def optimize(self, study: Any) -> None:
        seed = self.settings.seed if self.settings.seed is not None else study.seed
        rng = random.Random(seed)
        prompt = getattr(study.space, "prompt", None)
        can_collect = prompt is not None and hasattr(study, "collected")
        if self.settings.search is not None:
            self.joint(study, seed=seed, compile_prompts=can_collect)
            return
        number = 0
        rounds = compiled = 0
        point = self._point(study, rng)
        source = None  # the trial whose traces the next compile learns from
        while not study.should_stop():
            if not can_collect or rounds >= self.settings.max_rounds:
                if not study.space.searchable:  # a prompt-only space, its rounds done
                    if study.stop_reason is None:
                        study.stop_reason = (f"bootstrap_fewshot finished ({rounds} rounds"
                                             + ("" if compiled else "; no train example "
                                                "passed the metric, nothing to bootstrap")
                                             + ")")
                    return
                study.evaluate(self._point(study, rng), number=number)
                number += 1
                continue
            if source is None:  # the teacher: the config point as it is, collecting traces
                source = study.evaluate(point, number=number, collect=True)
                number += 1
            rounds += 1
            state = self.compile(study, source.number, seed=seed + rounds - 1)
            if state is None or study.should_stop():
                if study.space.searchable:
                    point, source = self._point(study, rng), None
                else:
                    rounds = self.settings.max_rounds  # nothing new will pass: stop
                continue
            compiled += 1
            student = study.evaluate({**point, prompt.key: study.save_prompts(state)},
                                     number=number, collect=True)
            number += 1
            if study.space.searchable:
                point, source = self._point(study, rng), None
            else:  # the compiled candidate is the next round's teacher (DSPy's max_rounds)
                source = student

    def joint(self, study: Any, *, seed: int, compile_prompts: bool) -> None:
        """``search`` over the config variables (``n_trials - top_k`` trials, each collecting
        its traces), then a compiled prompt for each of the ``top_k`` best (one trial each)."""
        if self.settings.search == self.name:
            from ponder.errors import ConfigError

            raise ConfigError("optimize.bootstrap_fewshot.search: name a config optimizer "
                              "(tpe, random, grid), not bootstrap_fewshot itself")
        reserve = self.settings.top_k if compile_prompts else 0
        searcher = study.optimizer(self.settings.search)
        searcher.optimize(_SearchPhase(study, max(1, study.n_trials - reserve),
                                       collect=compile_prompts))
        if not compile_prompts:
            return
        prompt = study.space.prompt
        done = [t for t in study.trials() if t.number in study.collected
                and t.score is not None and t.status in ("complete", "pruned")]
        done.sort(key=lambda t: (-(t.score or 0.0), t.cost, t.number))
        seen: set[str] = set()
        for trial in done:
            if len(seen) >= self.settings.top_k or study.should_stop():
                return
            if trial.candidate in seen:
                continue
            seen.add(trial.candidate)
            state = self.compile(study, trial.number, seed=seed)
            if state is not None:
                # numbered apart from the config search's trials, which a resumed search
                # (Optuna's own numbering) continues
                taken = [t.number for t in study.trials(every=True) if t.number >= PROMPT_TRIALS]
                study.evaluate({**trial.assignment, prompt.key: study.save_prompts(state)},
                               number=max(taken, default=PROMPT_TRIALS - 1) + 1)

    @staticmethod
    def _point(study: Any, rng: random.Random) -> dict[str, Any]:
        return study.space.sample(rng) if study.space.searchable else {}

    def compile(self, study: Any, number: int, *, seed: int = 0) -> Any:
        """Run DSPy's BootstrapFewShot over the calls trial ``number`` recorded; the compiled
        :class:`PromptState`, or None when no example passed (nothing to learn from)."""
        import dspy

        from ponder.engine.prompts import PromptState, predict_state
        from ponder.evaluate.metric import as_dspy_metric, build_metric
        from ponder.support.secrets import clean_secrets

        collected = [(result, calls) for result, calls in study.collected.get(number, [])
                     if result.failure is None and calls]
        if not collected:
            return None
        # in train order, not the order the examples finished: the same traces, the same demos
        order = {str(example.id): i for i, example in enumerate(study.train)}
        collected.sort(key=lambda rc: (order.get(str(rc[0].id), len(order)), str(rc[0].id)))
        metric = build_metric(study.metrics[0], study.plugins)
        dspy_metric = as_dspy_metric(metric, self.settings.pass_threshold)
        by_id = {str(result.id): (result, calls) for result, calls in collected}
        names = sorted({name for _, calls in collected for name, _, _ in calls})

        class Program(dspy.Module):
            """One Predict per signature name; forward replays an example's recorded calls."""

            def __init__(self) -> None:
                super().__init__()
                for name in names:
                    _, inputs, outputs = next(c for _, calls in collected for c in calls
                                              if c[0] == name)
                    setattr(self, name, dspy.Predict(", ".join(inputs) + " -> "
                                                     + ", ".join(outputs)))

            def forward(self, id: str) -> Any:  # DSPy passes the inputs by name
                result, calls = by_id[id]
                trace = dspy.settings.trace
                for name, inputs, outputs in calls:
                    if trace is not None:
                        trace.append((getattr(self, name), dict(inputs),
                                      dspy.Prediction(**outputs)))
                return dspy.Prediction(answer=result.answer)

        examples = {str(result.id): result.example for result, _ in collected}

        def ponder_metric(example: Any, prediction: Any, trace: Any = None) -> Any:
            return dspy_metric(examples[example.id], prediction, trace)

        trainset = [dspy.Example(id=str(result.id), question=result.example.question)
                    .with_inputs("id") for result, _ in collected]
        random.Random(seed).shuffle(trainset)
        optimizer = dspy.BootstrapFewShot(
            metric=ponder_metric, max_bootstrapped_demos=self.settings.max_bootstrapped_demos,
            max_labeled_demos=0, max_rounds=1)
        # DSPy prints its summary and a progress bar: keep stdout for --json, log it instead
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            compiled = optimizer.compile(Program(), teacher=Program(), trainset=trainset)
        log.info("bootstrap_fewshot: %s", captured.getvalue().strip().splitlines()[-1:])
        states = {}
        for name, predict in compiled.named_predictors():
            demos = [clean_secrets({k: v for k, v in demo.toDict().items()})
                     for demo in predict.demos]
            if demos:
                states[name] = predict_state(demos)
        return PromptState(states) if states else None


class _SearchPhase:
    """The study as the config search of a joint run sees it: fewer trials, and every
    evaluation collecting traces for the prompt optimizer."""

    def __init__(self, study: Any, trials: int, *, collect: bool) -> None:
        self._study = study
        self._trials = trials
        self._collect = collect
        self._count = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    @property
    def n_trials(self) -> int:
        return self._trials

    def should_stop(self) -> bool:
        return self._study.should_stop() or self._count >= self._trials

    def evaluate(self, assignment: Any, **options: Any) -> Any:
        self._count += 1
        if self._collect:
            options["collect"] = True
        return self._study.evaluate(assignment, **options)


@hookimpl
def ponder_register_optimizers(register: Any) -> None:
    register("bootstrap_fewshot", BootstrapFewShotOptimizer, settings=BootstrapFewShotSettings)
