"""``ponder.optimize``: variable spaces, studies and the ``optimizer`` kind's machinery.

A *space* (``space``, ``variables``, ``checks``, ``expr``) declares which config keys may change
and how; ``apply`` turns a point of it into a :class:`ponder.kernel.config.Config`; a *study*
(``study``, ``trials``) evaluates candidates on a dataset under a budget, caches every
(candidate, example) result in the run store and records every trial, so a killed run resumes
without repeating a finished LM call; ``program`` saves the best candidate as an artifact;
``stats`` measures adapters from the recorded LM calls. Optimizer plugins drive a study.

May import ``errors``, ``support``, ``signatures``, ``context``, ``kernel``, ``engine``,
``pipeline`` (``pipeline_space``: a space over a pipeline's stages) and ``evaluate`` (metrics,
datasets); never ``cli``, ``plugins`` or ``testing``. Optuna and DSPy are
imported inside functions only.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "Space": "ponder.optimize.space",
    "SpaceError": "ponder.optimize.space",
    "load_space": "ponder.optimize.checks",
    "build_space": "ponder.optimize.checks",
    "Variable": "ponder.optimize.variables",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ponder.optimize' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next access is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
