"""The first-party optimizers pass the optimizer conformance suite, and behave as documented."""

from __future__ import annotations

from ponder.testing.optimizer_conformance import OptimizerConformance, SyntheticStudy


class TestRandomOptimizer(OptimizerConformance):
    name = "random"


class TestGridOptimizer(OptimizerConformance):
    name = "grid"


class TestTPEOptimizer(OptimizerConformance):
    name = "tpe"
    settings = {"n_startup_trials": 4}


def test_random_is_seeded() -> None:
    suite = TestRandomOptimizer()
    runs = []
    for _ in range(2):
        study = SyntheticStudy(suite.space(), trials=5, seed=11)
        suite.make().optimize(study)
        runs.append(study.evaluated)
    assert runs[0] == runs[1]


def test_grid_visits_the_grid_in_order() -> None:
    suite = TestGridOptimizer()
    space = suite.space()
    study = SyntheticStudy(space, trials=10_000)
    suite.make().optimize(study)
    assert study.evaluated == list(space.grid())


def test_tpe_concentrates_on_the_good_region() -> None:
    """On the synthetic landscape, after its start-up TPE samples the good region more often
    than random search does with the same seed and trials."""
    from ponder.testing.optimizer_conformance import landscape

    counts = {}
    for suite in (TestTPEOptimizer(), TestRandomOptimizer()):
        study = SyntheticStudy(suite.space(), trials=30, seed=0)
        suite.make().optimize(study)
        counts[suite.name] = sum(landscape(p) == 1.0 for p in study.evaluated)
    assert counts["tpe"] > counts["random"], counts


def test_tpe_without_optuna_names_the_extra() -> None:
    """A Python where optuna cannot be imported: building tpe says which extra to install."""
    import subprocess
    import sys

    code = ("import sys\n"
            "sys.modules['optuna'] = None\n"  # as if not installed: import and find_spec fail
            "from ponder.plugins.optimizer_tpe import TPEOptimizer\n"
            "try:\n    TPEOptimizer()\nexcept Exception as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install -e '.[optimize]'" in out.stdout + out.stderr


def test_optimizer_settings_come_from_their_optimize_section() -> None:
    import pytest

    from ponder.errors import ConfigError
    from ponder.kernel.config import Config
    from ponder.kernel.loader import load_plugins
    from ponder.optimize.run import build_optimizer

    plugins = load_plugins(strict=True)
    config = Config(sections={"optimize": {"tpe": {"n_startup_trials": 3, "pruner": "median"}}},
                    origins={"optimize.tpe.n_startup_trials": "ponder.toml"})
    tpe = build_optimizer("tpe", plugins, config)
    assert tpe.settings.n_startup_trials == 3 and tpe.min_trials == 5
    bad = Config(sections={"optimize": {"tpe": {"n_startup": 3}}},
                 origins={"optimize.tpe.n_startup": "ponder.toml"})
    with pytest.raises(ConfigError, match=r"ponder.toml: optimize.tpe.n_startup: unknown key; "
                                          r"did you mean 'n_startup_trials'"):
        build_optimizer("tpe", plugins, bad)
    with pytest.raises(ConfigError, match="--optimizer: unknown optimizer 'rnadom'; did you mean"):
        build_optimizer("rnadom", plugins, config)
