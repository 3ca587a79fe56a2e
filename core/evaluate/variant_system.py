"""The System one eval variant asks every example through, with its run store opened once.

A plain :class:`ponder.engine.system.System` opens the configured run store for every ask and
closes it at the end (right for ``ponder ask``: one ask, one connection). An eval asks hundreds
of times from C threads at once, and a connection per ask costs an open, a schema check and, on
SQLite, C connections contending for the one write lock through SQLite's sleeping busy handler.
So a variant's System opens the store once and hands every ask the same one behind
:class:`SharedStorage`, whose ``close`` does nothing: the Evaluator closes the store once, when
it is done. Run stores are thread-safe already (an ask's parallel map records its calls from
several threads), so sharing one between asks needs no lock of its own.

Every write still commits on its own as it happens (the run begun, each call, the run finished,
then the example's eval record), so what a SIGKILL can lose is unchanged: only what was in
flight.
"""

from __future__ import annotations

import threading
from typing import Any

from ponder.engine.system import System


class SharedStorage:
    """A run store shared by the asks of one variant: everything is forwarded except
    ``close``, which the owner does once."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def close(self) -> None:
        """Nothing: the store outlives this ask (see the module docstring)."""

    def __repr__(self) -> str:
        return f"SharedStorage({self._storage!r})"


class VariantSystem(System):
    """A System whose run store is opened on first use and then shared by every ask."""

    def __init__(self, config: Any, *, plugins: Any, budget: Any) -> None:
        from ponder.evaluate.pipeline_system import PipelineAsker, evaluates_pipeline

        super().__init__(config, plugins=plugins, progress="silent", budget=budget)
        self._storage_lock = threading.Lock()
        self._storage: Any = None
        self._storage_opened = False
        #: ``[optimize] evaluate = "pipeline"``: every ask runs the config's ``[pipeline]``
        #: (see :mod:`ponder.evaluate.pipeline_system`)
        self._pipeline = PipelineAsker() if evaluates_pipeline(config) else None

    def ask(self, question: str, sources: Any, **kwargs: Any) -> Any:
        """``System.ask``, or the config's pipeline on ``question`` when it evaluates one."""
        if self._pipeline is not None:
            return self._pipeline.ask(self, question, sources)
        return super().ask(question, sources, **kwargs)

    def open_storage(self) -> Any:
        """The one store of this variant (None without one), opened on the first call."""
        with self._storage_lock:
            if not self._storage_opened:
                self._storage = super().open_storage()
                self._storage_opened = True
        return None if self._storage is None else SharedStorage(self._storage)

    def shared_storage(self) -> Any:
        """The store itself (not the proxy), or None; for the Evaluator's own records."""
        self.open_storage()
        return self._storage

    def close(self) -> None:
        """Close the shared store (idempotent)."""
        with self._storage_lock:
            storage, self._storage = self._storage, None
            self._storage_opened = False
        close = getattr(storage, "close", None)
        if callable(close):
            close()
