"""The ``threads`` executor (the default): a run's parallel items on daemon threads of this
process, at most ``[limits] concurrency`` at once.

This is the pool ponder always had, behind the :class:`ponder.kernel.kinds.Executor` protocol;
the code lives in :mod:`ponder.engine.executor` because bare :class:`ponder.engine.services.
Services` (a test's, a library caller's) use it without loading plugins. One process tops out
near the LM client's CPU cost per call (see ``docs/performance.md``); for more, use ``ray``.

Config::

    [executor]
    name = "threads"
"""

from __future__ import annotations

from ponder import hookimpl

PONDER_PLUGIN_API = 1


def _threads() -> object:
    from ponder.engine.executor import ThreadExecutor

    return ThreadExecutor()


@hookimpl
def ponder_register_executors(register):
    register("threads", _threads)
