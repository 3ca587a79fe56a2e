"""The ``tpe`` optimizer: Optuna's TPE sampler over the space, one objective or several.

**Search.** Each trial asks Optuna for a point: the variables are suggested in dependency order
and only while active (``suggest_float``/``suggest_int`` with the variable's step and log scale,
``suggest_categorical`` for choices, modules and composite presets), so a conditional variable
is only learned where it exists; ``multivariate`` and ``group`` TPE model the variables jointly.
A point that breaks a constraint is told to Optuna as failed without running anything.

**Objectives.** ``--objectives score`` is one objective (maximized); several (``score,cost``)
make a multi-objective study whose result is the Pareto front (the study computes it; Optuna's
``best_trials`` agrees).

**Pruning** (one objective only: Optuna's pruners do not support several). The train examples
are a shuffled stream in the same order for every trial; after each example the trial reports
that example's score at its position. ``wilcoxon`` (the default) stops a trial once a Wilcoxon
signed-rank test over the paired examples says it is worse than the best trial (``p_threshold``);
``median`` stops it when its running mean falls below the median of earlier trials at the same
step. The study records the calls each pruned trial saved.

**Resume.** The Optuna study lives in an RDB storage (SQLite beside the run store, the study's
``optuna_url``), loaded by name. A trial left running by a killed process is marked failed and
its point enqueued again, so the resumed run evaluates it first, and the evaluation cache makes
that free for every example it had finished.

Needs the ``optimize`` extra (``pip install -e '.[optimize]'``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from ponder import hookimpl
from ponder.errors import ConfigError

PONDER_PLUGIN_API = 1

INSTALL = "the tpe optimizer needs Optuna: pip install -e '.[optimize]'"
#: points in a row that break a constraint before the search gives up
MAX_REJECTED = 200


@attrs.define
class TPESettings:
    #: random trials before TPE models the space
    n_startup_trials: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    #: wilcoxon, median or none (one objective only)
    pruner: str = attrs.field(default="wilcoxon",
                              validator=attrs.validators.in_(("wilcoxon", "median", "none")))
    #: wilcoxon: the p-value below which a trial is stopped
    p_threshold: float = attrs.field(default=0.1, validator=[attrs.validators.gt(0.0),
                                                             attrs.validators.lt(1.0)])
    #: model the variables jointly (and conditional groups apart)
    multivariate: bool = True


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(INSTALL) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    # multivariate/group TPE and the Wilcoxon pruner are marked experimental by Optuna
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def suggest(trial: Any, space: Any) -> dict[str, Any]:
    """An assignment drawn through an Optuna trial, conditions honoured."""
    assignment: dict[str, Any] = {}
    for variable in space.searchable:
        if not variable.active(assignment):
            continue
        key = variable.key
        if variable.type in ("choice", "module"):
            assignment[key] = trial.suggest_categorical(key, list(variable.choices))
        elif variable.type == "composite":
            assignment[key] = trial.suggest_categorical(key, list(variable.presets))
        elif variable.type == "int":
            step = int(variable.step or 1)
            assignment[key] = trial.suggest_int(key, int(variable.low), int(variable.high),
                                                step=step, log=variable.log and step == 1)
        else:
            log = variable.log and not variable.step
            assignment[key] = trial.suggest_float(key, variable.low, variable.high,
                                                  step=None if log else variable.step, log=log)
            if variable.step:
                assignment[key] = variable.snap(assignment[key])
    return assignment


class TPEOptimizer:
    name = "tpe"
    #: fewer trials than this and TPE has not left its random start-up phase
    @property
    def min_trials(self) -> int:
        return self.settings.n_startup_trials + 2

    def __init__(self, settings: TPESettings | None = None) -> None:
        import importlib.util

        if importlib.util.find_spec("optuna") is None:  # say so before any trial is paid for
            raise ConfigError(INSTALL)
        self.settings = settings or TPESettings()

    def _pruner(self, optuna: Any, single: bool) -> Any:
        if not single or self.settings.pruner == "none":
            return optuna.pruners.NopPruner()
        if self.settings.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=self.settings.n_startup_trials,
                                               n_warmup_steps=2)
        return optuna.pruners.WilcoxonPruner(p_threshold=self.settings.p_threshold,
                                             n_startup_steps=2)

    def open(self, study: Any) -> tuple[Any, Any]:
        """The Optuna storage and study behind ``study`` (created, or loaded to resume)."""
        optuna = import_optuna()
        single = len(study.objectives) == 1
        sampler = optuna.samplers.TPESampler(
            seed=study.seed, n_startup_trials=self.settings.n_startup_trials,
            multivariate=self.settings.multivariate, group=self.settings.multivariate,
            constant_liar=False)
        storage = (optuna.storages.RDBStorage(study.optuna_url) if study.optuna_url
                   else optuna.storages.InMemoryStorage())
        return storage, optuna.create_study(
            study_name=study.name, storage=storage, sampler=sampler,
            pruner=self._pruner(optuna, single), load_if_exists=True,
            directions=list(study.directions))

    def optimize(self, study: Any) -> None:
        optuna = import_optuna()
        storage, ostudy = self.open(study)
        single = len(study.objectives) == 1
        state = optuna.trial.TrialState
        requeue_running(optuna, storage, ostudy)
        for trial, assignment in ask_satisfying(optuna, ostudy, study):

            def report(step: int, value: float, trial: Any = trial) -> bool:
                trial.report(value, step)
                return trial.should_prune()

            result = study.evaluate(assignment, number=trial.number,
                                    report=report if single else None)
            if result.status == "complete":
                ostudy.tell(trial, [result.value(name) for name in study.objectives])
            elif result.status == "pruned":
                ostudy.tell(trial, state=state.PRUNED)
            else:
                trial.set_user_attr("ponder_status", result.status)
                ostudy.tell(trial, state=state.FAIL)
                if result.status == "stopped":  # run again on resume, from the cache
                    ostudy.enqueue_trial(trial.params, skip_if_exists=False)


def requeue_running(optuna: Any, storage: Any, ostudy: Any) -> None:
    """Trials a killed process left running: failed, and their points asked again first (the
    study's cache answers what they had finished)."""
    state = optuna.trial.TrialState
    for old in ostudy.get_trials(deepcopy=False, states=(state.RUNNING,)):
        storage.set_trial_state_values(old._trial_id, state=state.FAIL)
        ostudy.enqueue_trial(old.params, skip_if_exists=False)


def ask_satisfying(optuna: Any, ostudy: Any, study: Any) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Optuna's next trials and their points, while the study goes on, skipping (as failed)
    points the space's constraints reject; :data:`MAX_REJECTED` in a row is a ConfigError."""
    state = optuna.trial.TrialState
    rejected = 0
    while not study.should_stop():
        trial = ostudy.ask()
        assignment = suggest(trial, study.space)
        if not study.space.satisfies(assignment):
            ostudy.tell(trial, state=state.FAIL)
            rejected += 1
            if rejected >= MAX_REJECTED:
                raise ConfigError(f"{study.space.source}: the constraints rejected "
                                  f"{MAX_REJECTED} points in a row")
            continue
        rejected = 0
        yield trial, assignment


@hookimpl
def ponder_register_optimizers(register: Any) -> None:
    register("tpe", TPEOptimizer, settings=TPESettings)
