"""The ``mipro`` optimizer: MIPROv2's search over instructions × demo sets, every call metered.

What it optimizes is the space's ``prompt`` variable (``"predictor.prompt" = { prompt =
"mipro" }``): per signature the strategy calls, its **instructions** and its **demos**, saved as
a :class:`ponder.engine.prompts.PromptState`. DSPy's ``MIPROv2.compile`` is not called: it
evaluates programs with an LM of its own, outside the study's budget. Its parts are used, with
every LM call made by the study:

1. *Teacher trial* (trial 0): the base point (``{}``, or a seeded sample of the config
   variables) evaluated on the train examples collecting traces (``study.evaluate(…,
   collect=True)``), as ``bootstrap_fewshot``'s teacher.
2. *Demo sets* (no call): set 0 is no demos (zero-shot); sets 1 … ``num_demo_sets - 1`` are
   DSPy's ``BootstrapFewShot`` over those traces, each with the trainset shuffled by another
   seed (``bootstrap_fewshot``'s replay compile, reused), so each keeps a different subset of
   the examples that passed the metric.
3. *Instruction candidates*, per signature: candidate 0 is the signature's own instructions;
   candidates 1 … ``num_instruct_candidates - 1`` are proposed by the LM through DSPy's
   MIPROv2 proposal signature (``dspy.propose.grounded_proposer.generate_instruction_class``:
   the basic instruction, up to three of the signature's recorded calls as task demos, a tip
   drawn from MIPROv2's ``TIPS``), each one call through :meth:`Study.lm_call` (counted,
   priced, bound by the caps, recorded, so a resumed study asks nothing again).
4. *Search*: Optuna's TPE sampler (seeded; the study's own Optuna storage, SQLite beside the
   run store, when it has one) over, per signature, a categorical ``<Name>.instruction`` and
   ``<Name>.demos`` (candidate indices), and the space's config variables if any (the same
   suggestions as ``tpe``). Each combination is one ``study.evaluate`` trial (number 1 + the
   Optuna trial's number): budget, caching (a combination met again is read back), resume and
   records as every trial.

Calls: the teacher trial (train examples × calls per example), ``(num_instruct_candidates - 1)``
× signatures proposals, and each further trial's train eval; see docs/optimization.md.

Needs the ``optimize`` extra (``pip install -e '.[optimize]'``).

Config example::

    [optimize.mipro]
    num_instruct_candidates = 3
    num_demo_sets = 3
    max_bootstrapped_demos = 4
"""

from __future__ import annotations

import functools
import random
from typing import Any

import attrs

from ponder import hookimpl
from ponder.errors import ConfigError

PONDER_PLUGIN_API = 1

INSTALL = "the mipro optimizer needs Optuna: pip install -e '.[optimize]'"
#: recorded calls shown to the proposer as task demos (MIPROv2's num_demos_in_context)
DEMOS_IN_CONTEXT = 3
NO_DEMOS = "No task demos provided."


@attrs.define
class MiproSettings:
    #: instruction candidates per signature, its own instructions included (MIPROv2's
    #: ``num_candidates``): the LM proposes one fewer
    num_instruct_candidates: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    #: demo sets per signature, the empty set included
    num_demo_sets: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    #: demos in each bootstrapped set (DSPy's ``max_bootstrapped_demos``)
    max_bootstrapped_demos: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    #: random trials before TPE models the combinations
    n_startup_trials: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    #: give each proposal one of MIPROv2's tips ("be creative", "keep it simple", …)
    use_tip: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    #: a trace is a demo when its example scores at least this (None: the metric's own)
    pass_threshold: float | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of((int, float))))
    #: seed of the sampler, the tips, the demo sets' shuffles; None: the study's ``--seed``
    seed: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(int)))


@functools.cache
def proposal_signature(use_tip: bool) -> Any:
    """MIPROv2's instruction-proposal signature, in the form used here (no dataset summary,
    not program-aware, no instruction history), built once."""
    from dspy.propose.grounded_proposer import generate_instruction_class

    return generate_instruction_class(use_dataset_summary=False, program_aware=False,
                                      use_task_demos=True, use_instruct_history=False,
                                      use_tip=use_tip).signature


class MiproOptimizer:
    name = "mipro"

    def __init__(self, settings: MiproSettings | None = None) -> None:
        import importlib.util

        if importlib.util.find_spec("optuna") is None:  # say so before any trial is paid for
            raise ConfigError(INSTALL)
        self.settings = settings or MiproSettings()

    @property
    def min_trials(self) -> int:
        """The teacher, TPE's start-up trials, and two it has modelled."""
        return self.settings.n_startup_trials + 3

    def own_calls(self, signatures: int) -> int:
        """LM calls of its own at most (the dry-run estimate adds them): one proposal per
        instruction candidate beyond the signature's own, per signature the strategy calls."""
        return (self.settings.num_instruct_candidates - 1) * max(1, signatures)

    def optimize(self, study: Any) -> None:
        seed = self.settings.seed if self.settings.seed is not None else study.seed
        rng = random.Random(seed)
        prompt = getattr(study.space, "prompt", None)
        can_prompt = prompt is not None and hasattr(study, "collected") \
            and hasattr(study, "lm_call")
        point = study.space.sample(rng) if study.space.searchable else {}
        names: list[str] = []
        instructions: dict[str, list[str | None]] = {}
        demo_sets: list[Any] = [None]
        offset = 0
        if can_prompt:
            if study.should_stop():
                return
            teacher = study.evaluate(point, number=0, collect=True)
            offset = 1
            collected = [(r, c) for r, c in study.collected.get(teacher.number, []) if c]
            from ponder.plugins._prompting import calls_by_signature

            calls = calls_by_signature(collected)
            names = sorted(calls)
            demo_sets = self.demo_sets(study, teacher.number, seed)
            instructions = self.propose(study, calls, demo_sets, rng)
            if study.should_stop():
                return
        if not names and not study.space.searchable:
            study.stop_reason = study.stop_reason or (
                "mipro finished: the teacher trial recorded no predictor call, nothing to "
                "search")
            return
        self.search(study, seed, names, instructions, demo_sets, offset)

    # --- the candidates ---------------------------------------------------------------------
    def demo_sets(self, study: Any, number: int, seed: int) -> list[Any]:
        """[None (no demos), then each bootstrapped PromptState]; an empty bootstrap (nothing
        passed the metric) adds nothing."""
        from ponder.plugins.optimizer_bootstrap_fewshot import (
            BootstrapFewShotOptimizer,
            BootstrapFewShotSettings,
        )

        bootstrap = BootstrapFewShotOptimizer(BootstrapFewShotSettings(
            max_bootstrapped_demos=self.settings.max_bootstrapped_demos,
            pass_threshold=self.settings.pass_threshold))
        sets: list[Any] = [None]
        for i in range(1, self.settings.num_demo_sets):
            state = bootstrap.compile(study, number, seed=seed + i)
            if state is not None:
                sets.append(state)
        return sets

    def propose(self, study: Any, calls: dict[str, list[Any]], demo_sets: list[Any],
                rng: random.Random) -> dict[str, list[str | None]]:
        """Per signature: [None (its own instructions), then each proposed instruction]."""
        from dspy.propose.grounded_proposer import TIPS
        from dspy.propose.utils import strip_prefix

        from ponder.plugins._prompting import default_instructions, render_call

        signature = proposal_signature(self.settings.use_tip)
        out: dict[str, list[str | None]] = {}
        for name, recorded in calls.items():
            inputs, outputs = recorded[0]
            basic = default_instructions(name, list(inputs), list(outputs))
            out[name] = [None]
            for k in range(1, self.settings.num_instruct_candidates):
                # MIPROv2 shows the proposer the demos of set k (and the ones after it); set 0,
                # or a set without demos for this signature, shows none
                chosen = demo_sets[k % len(demo_sets)] if len(demo_sets) > 1 else None
                demos = chosen.demos_of(name)[:DEMOS_IN_CONTEXT] if chosen is not None else []
                shown = "\n\n".join(render_call({f: d[f] for f in inputs if f in d},
                                                {f: d[f] for f in outputs if f in d})
                                    for d in demos)
                request = {"task_demos": shown or NO_DEMOS, "basic_instruction": basic}
                if self.settings.use_tip:
                    request["tip"] = TIPS[rng.choice(sorted(TIPS))]
                reply = study.lm_call(signature, role="mipro propose", **request)
                if reply is None:
                    if study.should_stop():
                        return out
                    continue  # the call failed (counted): one candidate fewer
                text = strip_prefix(str(reply.get("proposed_instruction") or "")).strip()
                if text and text not in out[name] and text != basic:
                    out[name].append(text)
        return out

    @staticmethod
    def state_for(choice: dict[str, tuple[int, int]], instructions: dict[str, list[Any]],
                  demo_sets: list[Any]) -> Any:
        """The PromptState of one combination (signature -> (instruction, demo set) index; an
        index past the candidates there are wraps around); None when it changes nothing."""
        from ponder.engine.prompts import PromptState, predict_state

        states = {}
        for name, (i, d) in choice.items():
            candidates = instructions.get(name) or [None]
            text = candidates[i % len(candidates)]
            chosen = demo_sets[d % len(demo_sets)]
            demos = chosen.demos_of(name) if chosen is not None else []
            if text or demos:
                states[name] = predict_state(demos, text)
        return PromptState(states) if states else None

    # --- the search -------------------------------------------------------------------------
    def search(self, study: Any, seed: int, names: list[str],
               instructions: dict[str, list[Any]], demo_sets: list[Any], offset: int) -> None:
        from ponder.plugins.optimizer_tpe import ask_satisfying, import_optuna, requeue_running

        optuna = import_optuna()
        storage = (optuna.storages.RDBStorage(study.optuna_url) if study.optuna_url
                   else optuna.storages.InMemoryStorage())
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=self.settings.n_startup_trials, multivariate=True,
            group=True)
        ostudy = optuna.create_study(study_name=study.name, storage=storage, sampler=sampler,
                                     load_if_exists=True, directions=list(study.directions))
        state = optuna.trial.TrialState
        requeue_running(optuna, storage, ostudy)
        # fixed choices (not the candidates there are), so a resumed study's distributions match
        instruction_choices = list(range(self.settings.num_instruct_candidates))
        demo_choices = list(range(self.settings.num_demo_sets))
        prompt = getattr(study.space, "prompt", None)
        for trial, assignment in ask_satisfying(optuna, ostudy, study):
            choice = {name: (trial.suggest_categorical(f"{name}.instruction",
                                                       instruction_choices),
                             trial.suggest_categorical(f"{name}.demos", demo_choices))
                      for name in names}
            compiled = self.state_for(choice, instructions, demo_sets)
            if compiled is not None and prompt is not None:
                assignment[prompt.key] = study.save_prompts(compiled)
            result = study.evaluate(assignment, number=offset + trial.number)
            if result.status == "complete":
                ostudy.tell(trial, [result.value(name) for name in study.objectives])
            else:
                ostudy.tell(trial, state=state.FAIL)
                if result.status == "stopped":  # run again on resume, from the cache
                    ostudy.enqueue_trial(trial.params, skip_if_exists=False)


@hookimpl
def ponder_register_optimizers(register: Any) -> None:
    register("mipro", MiproOptimizer, settings=MiproSettings)
