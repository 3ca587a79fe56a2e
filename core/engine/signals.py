"""SIGTERM handled like Ctrl-C while a run is in progress.

A supervisor (systemd, Kubernetes, ``timeout``, a closed terminal) stops a process with SIGTERM,
whose default action kills it at once: no answer, no valid ``--json``, the run left "running" in
the store. :func:`sigterm_as_interrupt` turns SIGTERM into the ``KeyboardInterrupt`` that SIGINT
raises, for the span of one run, so both take the same path (``Services.interrupt``, a partial
answer, status ``interrupted``, the same exit code). Outside a run the previous handler is back.

Signal handlers can only be set from the main thread; elsewhere (an ask inside a worker thread,
an eval's examples) this does nothing and SIGTERM keeps its default action.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs in the main thread, SIGTERM raises ``KeyboardInterrupt``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except (ValueError, OSError):  # no signals here (an embedded interpreter)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
