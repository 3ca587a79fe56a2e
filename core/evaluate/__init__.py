"""Evaluation: datasets of questions with gold answers, metric plugins, a resumable parallel
runner, statistics for comparing configurations, and an HTML report.

``ponder eval`` is the command; this package is its Python API (``ponder.evaluate(...)``,
:class:`Evaluator`, :func:`load_dataset`). It may import ``errors``, ``support``,
``signatures``, ``context``, ``kernel``, ``engine`` and ``pipeline`` (an eval that asks a
pipeline: :mod:`ponder.evaluate.pipeline_system`); plugins (metrics) and the CLI import it.
Heavy libraries (dspy through the engine, matplotlib in :mod:`report`) are imported inside
functions only.

The package module is callable: ``ponder.evaluate(system_or_config, dataset, metrics=[...])``
is :func:`ponder.evaluate.runner.evaluate`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

#: public name -> the module defining it, imported on first access, so that a metric plugin
#: importing ``ponder.evaluate.metric`` (which ``ponder --help`` loads with every plugin) does
#: not import the runner, the engine and the store with it
_LAZY: dict[str, str] = {
    "ConcurrencyBudget": "ponder.engine.budget",
    "Dataset": "ponder.evaluate.dataset",
    "DatasetError": "ponder.evaluate.dataset",
    "Example": "ponder.evaluate.dataset",
    "load_dataset": "ponder.evaluate.dataset",
    "read_dataset": "ponder.evaluate.dataset",
    "BaseMetric": "ponder.evaluate.metric",
    "MetricError": "ponder.evaluate.metric",
    "Score": "ponder.evaluate.metric",
    "as_dspy_metric": "ponder.evaluate.metric",
    "build_metric": "ponder.evaluate.metric",
    "build_metrics": "ponder.evaluate.metric",
    "Comparison": "ponder.evaluate.results",
    "EvalResult": "ponder.evaluate.results",
    "ExampleResult": "ponder.evaluate.results",
    "Prediction": "ponder.evaluate.results",
    "EvalSettings": "ponder.evaluate.runner",
    "Evaluator": "ponder.evaluate.runner",
    "config_digest": "ponder.evaluate.runner",
    "evaluate": "ponder.evaluate.runner",
    "EvalStore": "ponder.evaluate.store",
    "load_result": "ponder.evaluate.store",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ponder.evaluate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _CallableModule(types.ModuleType):
    """``ponder.evaluate(...)`` calls :func:`ponder.evaluate.runner.evaluate`, while
    ``ponder.evaluate.Evaluator`` and the other names stay attributes of the package."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from ponder.evaluate.runner import evaluate

        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
