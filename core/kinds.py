"""What a component of each kind provides. Plugins implement these protocols.

The kernel never imports dspy here: the types that mention it are strings, so importing this
module stays cheap (``ponder --help`` and ``ponder plugins`` import it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:  # pragma: no cover
    import dspy


@attrs.frozen
class ModelInfo:
    """What the kernel needs to know about a model to plan and budget a run."""

    model: str
    context_window: int = attrs.field(validator=attrs.validators.gt(0))
    max_output_tokens: int = 1024
    input_cost_per_token: float = 0.0
    output_cost_per_token: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return input_tokens * self.input_cost_per_token + output_tokens * self.output_cost_per_token


@runtime_checkable
class Adapter(Protocol):
    """Makes a DSPy language model from settings (model, keys, base URL, limits)."""

    def model_info(self) -> ModelInfo: ...

    def build_lm(self) -> dspy.BaseLM: ...


@runtime_checkable
class Predictor(Protocol):
    """Builds the DSPy module that answers one signature (predict, chain of thought, ReAct…)."""

    def build(self, signature: Any) -> dspy.Module: ...


@runtime_checkable
class Retriever(Protocol):
    """Indexes chunks and returns the most relevant ones for a query, best first."""

    def index(self, chunks: Sequence[Any]) -> None: ...

    def search(self, query: str, k: int) -> list[tuple[Any, float]]: ...


@runtime_checkable
class Strategy(Protocol):
    """Answers a question over a context using the services it is handed."""

    def run(self, question: str, context: Any, services: Any) -> Any: ...


@runtime_checkable
class Storage(Protocol):
    """Records runs, LM calls and spans; serves them back for ``ponder runs``."""

    def record_run(self, run: dict[str, Any]) -> str: ...

    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]: ...


KIND_PROTOCOLS: dict[str, type] = {
    "adapter": Adapter,
    "strategy": Strategy,
    "retriever": Retriever,
    "predictor": Predictor,
    "storage": Storage,
}
