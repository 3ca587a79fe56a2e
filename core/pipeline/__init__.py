"""Pipelines: stages declared in TOML (or built in code), checked when they load, run with every
independent stage in parallel under one run's limits.

``model`` reads a pipeline (its own file, ``[pipeline]`` in ponder.toml, or code) into
:class:`Pipeline`; ``check`` resolves it against the loaded plugins (references, field types,
cycles, levels, the critical path); ``run`` executes it (``graphlib``, one concurrency budget, the
stage cache, a span per stage, the run store). It may import ``errors``, ``support``,
``signatures``, ``context``, ``kernel`` and ``engine``, never ``cli``, ``plugins`` or ``testing``:
strategies and predictors come from the plugin registry, like everywhere else.
"""

from __future__ import annotations

from ponder.pipeline.model import Pipeline, PipelineError, Stage

__all__ = ["Pipeline", "PipelineError", "Stage"]
