"""The synthetic codebase and its planted needles, now :mod:`ponder.evaluate.needles`.

The generator moved into the package so that ``ponder eval make-dataset`` can use it; the
benchmarks keep importing it as ``corpus`` (the same code, the same bytes for a size and seed).
"""

from __future__ import annotations

from ponder.evaluate.needles import *  # noqa: F403
from ponder.evaluate.needles import (  # noqa: F401 - the benchmarks reach these too
    _dotted,
    _insert,
    _locate,
    _offsets,
    _top_import,
)
