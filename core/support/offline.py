"""litellm offline: its bundled model and price map, never a download of it.

``import litellm`` fetches the model/price map from the web unless
``LITELLM_LOCAL_MODEL_COST_MAP`` is set (a 5 s time-out offline); dspy's model-metadata snapshot
reads the same variable. Every place that may import litellm, directly or through dspy, calls
:func:`use_bundled_model_map` first (or :func:`import_litellm`), so the rule lives here once.
A user's own value of the variable is kept.
"""

from __future__ import annotations

import os
from typing import Any

VARIABLE = "LITELLM_LOCAL_MODEL_COST_MAP"


def use_bundled_model_map() -> None:
    """Make litellm (and dspy's metadata) read the bundled map instead of fetching one."""
    os.environ.setdefault(VARIABLE, "True")


def import_litellm() -> Any:
    """``litellm``, imported with the bundled model map."""
    use_bundled_model_map()
    import litellm

    return litellm
