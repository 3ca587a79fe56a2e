"""The ``simba`` optimizer: SIMBA's stochastic introspective mini-batch ascent, every call metered.

What it optimizes is the space's ``prompt`` variable (``"predictor.prompt" = { prompt =
"simba" }``): per signature, instructions (rules appended to them) and demos, as a
:class:`ponder.engine.prompts.PromptState`. DSPy's ``SIMBA.compile`` is not called (it runs the
program and its reflections on an LM of its own, outside the study's budget); its algorithm is
followed with its parts, every evaluation a ``study.evaluate`` trial and every reflection a
:meth:`Study.lm_call`:

0. *Baseline* (trial 0): the base point on every train example, collecting traces. The pool of
   programs starts with it; each program keeps its per-example scores and traces.
1. *Mini-batch*: the next ``bsize`` train examples of a seeded shuffle (reshuffled when used
   up, as DSPy does).
2. *Trajectories*: the pool's best ``num_candidates`` programs (the baseline always among
   them, DSPy's ``top_k_plus_baseline``) on the mini-batch, each a mini-batch trial
   (``study.evaluate(…, examples=batch, collect=True)``; a program that has run every example
   of the batch needs no trial, and an example it ran before is read back, free).
3. *Buckets*: per example, the programs' outcomes, best first; buckets sorted by (max − min
   score, whether every program failed it, max score, max − mean): DSPy's order, with an
   example every program failed before one every program passed; the batch's 10th percentile.
4. *New candidates*, from the top buckets, up to ``num_candidates`` (none the pool has): a source
   program drawn by a softmax over the pool's mean scores (``temperature``), then one of
   ``strategies`` at random, the other one when the drawn one has nothing to add: ``demo``
   (DSPy's ``append_a_demo``: the bucket's best trace becomes one demo per signature, when it
   scores above the batch's 10th percentile; over ``max_demos`` the oldest is dropped) or
   ``rule`` (DSPy's ``append_a_rule``: its ``OfferFeedback`` signature, asked through
   ``study.lm_call``, contrasts the bucket's best and worst trajectories, or, where every
   program failed, reads the source program's own failing one, and returns advice per module,
   appended to that signature's instructions; nothing when every program passed).
5. *Evaluate* each new candidate on the same mini-batch (a mini-batch trial each) and add it to
   the pool; the best of them is the step's winner when it beats its source there ("keep the
   candidate if its score improves").
6. After ``max_steps`` steps (or when only the trials this step needs are left): the winners — the
   last and, evenly spaced, earlier ones, ``num_candidates + 1`` at most — are evaluated on
   every train example (full trials). The study's best trial is the program.

The space's config variables, if it has any, stay at the baseline's point (a seeded sample)
throughout: simba searches the prompt only.

**What differs from DSPy's SIMBA** (docs/optimization.md says the same): DSPy draws its
trajectories from ``num_candidates`` copies of the LM at temperature 1 (fresh rollouts) to find
examples whose outcome varies; here an outcome is the program's recorded eval of that example
(the cache makes a repeat free, and a fresh rollout would need another config), so the
variability is *between the pool's programs*. And where every program failed an example, DSPy
skips it (its best score is not above the 10th percentile); here it asks for a rule from the
source program's own failing trajectory alone (DSPy's own single-trajectory form, the other
side "N/A"), with the gold answer as the oracle metadata, because a deterministic system never
varies on its own.
DSPy also keeps a candidate whose strategy added nothing, and drops a Poisson-drawn number of
demos before each strategy; here such a candidate is not made, and demos are dropped only past
``max_demos``. Trials: every evaluation is one (mini-batch ones too), so ``--trials`` bounds
the run with the budget caps; the dry-run estimate prices each as a full trial (an upper bound).

Config example::

    [optimize.simba]
    bsize = 4
    num_candidates = 2
    max_steps = 4
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import attrs

from ponder import hookimpl

PONDER_PLUGIN_API = 1

STRATEGIES = ("demo", "rule")


def _strategies(instance: Any, attribute: Any, value: Any) -> None:
    if not value or any(s not in STRATEGIES for s in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of {STRATEGIES}: "
                         f"{value!r}")


@attrs.define
class SimbaSettings:
    #: examples per mini-batch (DSPy's ``bsize``; at most the train examples)
    bsize: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    #: programs whose trajectories are compared, and new candidates, per step
    num_candidates: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    #: mini-batch steps at most
    max_steps: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    #: demos a signature holds at most
    max_demos: int = attrs.field(default=4, validator=attrs.validators.ge(0))
    #: which of DSPy's strategies to draw from (``demo`` needs ``max_demos`` > 0)
    strategies: list[str] = attrs.field(factory=lambda: list(STRATEGIES),
                                        validator=_strategies)
    #: the softmax temperature of the source program's draw (DSPy's
    #: ``temperature_for_candidates``)
    temperature: float = attrs.field(default=0.2, validator=attrs.validators.gt(0.0))
    #: an example passes at this score (None: the metric's own)
    pass_threshold: float | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of((int, float))))
    #: seed of the mini-batches and the draws; None: the study's ``--seed``
    seed: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(int)))


@attrs.define(eq=False)  # programs are compared by identity (the pool's members)
class Program:
    """One program of the pool: its point, its prompt state and what it did per example."""

    assignment: dict[str, Any]
    state: Any = None
    #: example id -> (score, Traced, recorded calls)
    outcomes: dict[str, tuple[float, Any, list[Any]]] = attrs.field(factory=dict)
    source: int | None = None

    def mean(self) -> float:
        scores = [s for s, _, _ in self.outcomes.values()]
        return sum(scores) / len(scores) if scores else 0.0


class SimbaOptimizer:
    name = "simba"

    @property
    def min_trials(self) -> int:
        """The baseline, one step (its trajectory and candidate trials, ``num_candidates``
        each at most) and the winner's full trial: fewer and no step runs."""
        return 2 * self.settings.num_candidates + 2

    def own_calls(self, signatures: int) -> int:
        """LM calls of its own at most (the dry-run estimate adds them): a rule for each new
        candidate of each step, when every draw is ``rule``."""
        rules = "rule" in self.settings.strategies
        return self.settings.max_steps * self.settings.num_candidates if rules else 0

    def __init__(self, settings: SimbaSettings | None = None) -> None:
        self.settings = settings or SimbaSettings()
        #: set per study: the prompt variable's key, and the score an example passes at
        self.prompt_key = "predictor.prompt"
        self.threshold = 1.0
        #: the next trial's number: the same sequence on a resumed study, so each evaluation
        #: finds its own record (a finished one is read back as it is)
        self.number = 0

    def optimize(self, study: Any) -> None:
        seed = self.settings.seed if self.settings.seed is not None else study.seed
        rng = random.Random(seed)
        prompt = getattr(study.space, "prompt", None)
        point = study.space.sample(rng) if study.space.searchable else {}
        if prompt is None or not hasattr(study, "collected") or not hasattr(study, "lm_call"):
            # nothing to reflect on (a space without a prompt, the conformance suite's
            # synthetic study): seeded config points, as bootstrap_fewshot does
            number = 0
            while not study.should_stop():
                study.evaluate(study.space.sample(rng) if study.space.searchable else {},
                               number=number)
                number += 1
            return
        self.prompt_key = prompt.key
        self.threshold = self._threshold(study)
        self.number = 0
        if study.should_stop():
            return
        baseline = Program(dict(point))
        self._evaluate(study, baseline, None)
        pool = [baseline]
        winners: list[Program] = []
        order = [str(e.id) for e in study.train]
        examples = {str(e.id): e for e in study.train}
        rng.shuffle(order)
        position = steps = 0
        bsize = min(self.settings.bsize, len(order))
        final = self.settings.num_candidates + 1
        while steps < self.settings.max_steps and not study.should_stop():
            left = study.n_trials - len(study.finished())
            if left < 2 * self.settings.num_candidates + min(final, len(winners) + 1):
                break  # keep the trials the full evaluations of the winners need
            if position + bsize > len(order):
                rng.shuffle(order)
                position = 0
            batch = [examples[i] for i in order[position:position + bsize]]
            position += bsize
            steps += 1
            winner = self.step(study, pool, batch, rng)
            if winner is not None:
                winners.append(winner)
        self.finish(study, winners)
        if study.stop_reason is None:
            study.stop_reason = (f"simba finished ({steps} steps, {len(winners)} improving "
                                 "candidates)")

    # --- one step ---------------------------------------------------------------------------
    def step(self, study: Any, pool: list[Program], batch: list[Any],
             rng: random.Random) -> Program | None:
        ids = [str(e.id) for e in batch]
        top = self._top(pool)
        for program in top:
            if study.should_stop():
                return None
            if any(i not in program.outcomes for i in ids):
                self._evaluate(study, program, batch)
        buckets = []
        for i in ids:
            bucket = sorted(((p.outcomes[i], p) for p in top if i in p.outcomes),
                            key=lambda op: -op[0][0])
            if not bucket:
                continue
            scores = [o[0] for o, _ in bucket]
            top_score = max(scores)
            # DSPy's order (max - min, max, max - mean), with an example every program failed
            # before one every program passed: a rule can be learned from a failure
            stats = (top_score - min(scores), top_score < self.threshold, top_score,
                     top_score - sum(scores) / len(scores))
            buckets.append((stats, i, bucket))
        buckets.sort(key=lambda b: b[0], reverse=True)
        from ponder.support.measured import percentile

        batch_scores = [o[0] for _, _, bucket in buckets for o, _ in bucket]
        p10 = percentile(batch_scores, 10) or 0.0
        candidates: list[Program] = []
        strategies = [s for s in self.settings.strategies
                      if s != "demo" or self.settings.max_demos > 0] or ["rule"]
        for _, example_id, bucket in buckets:
            if len(candidates) >= self.settings.num_candidates or study.should_stop():
                break
            source = self._draw(top, rng)
            first = rng.choice(strategies)
            state = None
            # the drawn strategy first; when it has nothing to add here, the other one
            for strategy in [first, *(s for s in strategies if s != first)]:
                if strategy == "demo":
                    state = self._with_demo(source, bucket, p10)
                else:
                    state = self._with_rule(study, source, bucket, example_id)
                if state is not None or study.should_stop():
                    break
            # a program the pool has (or this step made) already is not made again
            seen = {_digest(c.state) for c in [*pool, *candidates]}
            if state is not None and state.digest() not in seen:
                candidates.append(Program(dict(source.assignment), state,
                                          source=pool.index(source)))
        best = None
        for candidate in candidates:
            if study.should_stop():
                break
            self._evaluate(study, candidate, batch)
            pool.append(candidate)
            score = _mean(candidate, ids)
            source = pool[candidate.source]
            if score > _mean(source, ids) and (best is None or score > _mean(best, ids)):
                best = candidate
        return best

    def finish(self, study: Any, winners: list[Program]) -> None:
        """The winners on every train example: the last, and evenly spaced earlier ones."""
        if not winners:
            return
        n = min(len(winners), self.settings.num_candidates + 1)
        picks = sorted({round(i * (len(winners) - 1) / max(1, n - 1)) for i in range(n)},
                       reverse=True)
        for index in picks:
            if study.should_stop():
                return
            self._evaluate(study, winners[index], None)

    # --- strategies -------------------------------------------------------------------------
    def _with_demo(self, source: Program, bucket: list[Any], p10: float) -> Any:
        """DSPy's append_a_demo: the best trajectory's last call per signature as a demo."""
        from ponder.engine.prompts import PromptState, predict_state
        from ponder.support.secrets import clean_secrets

        (score, _, calls), _ = bucket[0]
        if score <= p10 or not calls:
            return None
        states = {name: dict(state) for name, state in
                  (source.state.states if source.state is not None else {}).items()}
        last = {name: {**inputs, **outputs} for name, inputs, outputs in calls}
        for name, demo in last.items():
            state = states.get(name) or predict_state([])
            demos = [d for d in state.get("demos") or [] if d.get("question")
                     != demo.get("question")]
            demos.append(clean_secrets({"augmented": True, **demo}))
            state["demos"] = demos[-self.settings.max_demos:]
            states[name] = state
        return PromptState(states)

    def _with_rule(self, study: Any, source: Program, bucket: list[Any],
                   example_id: str) -> Any:
        """DSPy's append_a_rule: advice per module, from contrasting trajectories (or the
        failing one alone), appended to each module's instructions."""
        from dspy.teleprompt.simba_utils import OfferFeedback

        from ponder.engine.prompts import PromptState, predict_state
        from ponder.plugins._prompting import default_instructions, render_call

        (good_score, good, good_calls), _ = bucket[0]
        (bad_score, bad, bad_calls), _ = bucket[-1]
        if good_score <= bad_score:
            if bad_score >= self.threshold:
                return None  # every program got it right: nothing to learn
            good, good_calls, good_score = None, [], "N/A"  # the failing trajectory alone
            if example_id in source.outcomes:  # the source's own: the rule extends its prompt
                bad_score, bad, bad_calls = source.outcomes[example_id]
        names = sorted({name for name, _, _ in [*good_calls, *bad_calls]})
        if not names:
            return None
        fields = {name: (list(i), list(o)) for name, i, o in [*good_calls, *bad_calls]}

        def instructions(name: str) -> str:
            state = source.state
            own = state.instructions_of(name) if state is not None else None
            return own or default_instructions(name, *fields[name])

        def trajectory(calls: list[Any]) -> list[dict[str, Any]]:
            return [{"module_name": name, "step": render_call(inputs, outputs)}
                    for name, inputs, outputs in calls]

        example = bad.example
        modules = "\n".join(f"Module {name}\n\tInput Fields: {', '.join(fields[name][0])}\n"
                            f"\tOutput Fields: {', '.join(fields[name][1])}\n"
                            f"\tOriginal Instructions: {instructions(name)}"
                            for name in names)
        request = {
            "program_code": f"ponder strategy {study.space.base.strategy.name or 'auto'}: "
                            f"calls {', '.join(names)}",
            "modules_defn": modules,
            "program_inputs": json.dumps({"question": example.question}),
            "oracle_metadata": json.dumps({"answer": example.answer}),
            "worse_program_trajectory": json.dumps(trajectory(bad_calls), indent=2),
            "worse_program_outputs": json.dumps({"answer": bad.answer}),
            "worse_reward_value": bad_score, "worse_reward_info": "",
            "better_program_trajectory": json.dumps(trajectory(good_calls), indent=2),
            "better_program_outputs": json.dumps({"answer": good.answer} if good is not None
                                                 else {"N/A": "Prediction not available"}),
            "better_reward_value": good_score if good is not None else 0.0,
            "better_reward_info": "" if good is not None else "N/A",
            "module_names": names,
        }
        reply = study.lm_call(OfferFeedback, role="simba rule", **request)
        advice = (reply or {}).get("module_advice")
        if isinstance(advice, str):
            try:
                advice = json.loads(advice)
            except ValueError:
                advice = None
        if not isinstance(advice, dict):
            return None
        states = {name: dict(state) for name, state in
                  (source.state.states if source.state is not None else {}).items()}
        changed = False
        for name in names:
            rule = str(advice.get(name) or "").strip()
            if not rule or rule in instructions(name):
                continue
            state = states.get(name) or predict_state([])
            state["signature"] = {**(state.get("signature") or {}),
                                  "instructions": instructions(name) + "\n\n" + rule}
            states[name] = state
            changed = True
        return PromptState(states) if changed else None

    # --- helpers ----------------------------------------------------------------------------
    def _evaluate(self, study: Any, program: Program, batch: list[Any] | None) -> None:
        """A (mini-batch) trial of ``program``, its outcomes kept."""
        assignment = dict(program.assignment)
        if program.state is not None:
            assignment[self.prompt_key] = study.save_prompts(program.state)
        result = study.evaluate(assignment, number=self.number, collect=True, examples=batch)
        self.number += 1
        for traced, calls in study.collected.get(result.number, []):
            score = 0.0 if traced.failure is not None or traced.score is None \
                else float(traced.score)
            program.outcomes[str(traced.id)] = (score, traced, calls)

    def _top(self, pool: list[Program]) -> list[Program]:
        ranked = sorted(pool, key=lambda p: -p.mean())[:self.settings.num_candidates]
        if pool[0] not in ranked:
            ranked[-1] = pool[0]
        return ranked

    def _draw(self, top: list[Program], rng: random.Random) -> Program:
        """DSPy's softmax_sample over the top programs' mean scores."""
        weights = [math.exp(p.mean() / self.settings.temperature) for p in top]
        return rng.choices(top, weights=weights, k=1)[0]

    def _threshold(self, study: Any) -> float:
        if self.settings.pass_threshold is not None:
            return float(self.settings.pass_threshold)
        from ponder.evaluate.metric import build_metric

        metric = build_metric(study.metrics[0], study.plugins)
        return float(getattr(metric, "pass_threshold", 1.0))


def _mean(program: Program, ids: list[str]) -> float:
    scores = [program.outcomes[i][0] for i in ids if i in program.outcomes]
    return sum(scores) / len(scores) if scores else 0.0


def _digest(state: Any) -> str | None:
    return state.digest() if state is not None else None


@hookimpl
def ponder_register_optimizers(register: Any) -> None:
    register("simba", SimbaOptimizer, settings=SimbaSettings)
