"""The cyclic garbage collector, paused while the CLI starts.

Starting ``ponder ask`` imports dspy and its dependencies: tens of thousands of objects (modules,
classes, functions) that live as long as the process. Each generation-0 collection during those
imports walks the young ones again, about a tenth of the import time (measured: ``import dspy``
0.95 → 0.85 s median on this machine). So the console entry point pauses the collector, and the
run resumes it once the LM and the services that call it exist
(:class:`ponder.engine.services.Services` with an LM), with
``gc.freeze()`` first: the start-up objects go to the permanent generation, so the collections of
the run itself never walk them again. Reference counting frees everything else as usual meanwhile;
only cycles wait, and only until the first request is about to leave (or
:data:`LONGEST_PAUSE_S`, for a command that builds no LM in this process). Pausing is for the
console process only (``ponder.cli.main``), never at import, so a program or a test suite that
imports ponder keeps its collector; and :func:`end` (the entry point's last step) unfreezes, so
``main()`` called in a long-lived process leaves nothing in the permanent generation. The console
script itself ends with :func:`exiting` instead: the interpreter's last collection at exit walks
every object not frozen, 0.15–0.2 s after a run (measured after the last reply: 0.27 s with the
objects unfrozen, 0.06 s frozen), for memory the process is about to give back anyway.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_paused = False
_frozen = False


#: the longest the collector stays paused: a command that never builds an LM in this process
#: (``ponder eval`` under ray asks on the workers, ``ponder batch wait`` polls for hours) must
#: not run without it
LONGEST_PAUSE_S = 5.0


def pause() -> None:
    """Disable the collector until :func:`resume`, or :data:`LONGEST_PAUSE_S` at the most (a
    no-op when it is already disabled: a caller that disabled it keeps it so)."""
    global _paused
    with _lock:
        if gc.isenabled():
            gc.disable()
            _paused = True
            timer = threading.Timer(LONGEST_PAUSE_S, resume)
            timer.daemon = True
            timer.start()


def resume() -> None:
    """Freeze what exists and re-enable the collector, if :func:`pause` disabled it."""
    global _paused, _frozen
    with _lock:
        if _paused:
            _paused = False
            gc.freeze()
            _frozen = True
            gc.enable()


def end() -> None:
    """Resume if still paused, and move the frozen objects back into the collected generations."""
    global _frozen
    resume()
    with _lock:
        if _frozen:
            _frozen = False
            gc.unfreeze()


def exiting() -> None:
    """Resume if still paused and freeze everything: the process ends next, and the collection
    the interpreter makes at exit then has nothing to walk."""
    resume()
    gc.freeze()
