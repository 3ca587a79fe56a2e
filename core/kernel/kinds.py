"""What a component of each kind provides. Plugins implement these protocols.

The kernel never imports dspy here: the types that mention it are strings, so importing this
module stays cheap (``ponder --help`` and ``ponder plugins`` import it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    """Indexes chunks and returns the most relevant ones for a query, best first.

    A retriever whose index is worth keeping (embeddings) also provides ``dump() -> bytes`` and
    ``load(data: bytes, chunks)``; the kernel then saves the index in storage, keyed by the
    retriever, its settings and the chunks' digest, so a second run over the same sources does
    not index again (see :meth:`ponder.engine.services.Services.index`).
    """

    def index(self, chunks: Sequence[Any]) -> None: ...

    def search(self, query: str, k: int) -> list[tuple[Any, float]]: ...


@runtime_checkable
class Strategy(Protocol):
    """Answers a question over a context using the services it is handed."""

    def run(self, question: str, context: Any, services: Any) -> Any: ...


@runtime_checkable
class Storage(Protocol):
    """Records runs, their LM calls and spans; serves them back for ``ponder runs``.

    Records are plain dicts (JSON-able values) so a backend needs no ponder types:

    - ``begin_run(run)``: ``run["id"]`` plus ``started_at``, ``question``, ``source_digest``,
      ``sources``, ``config`` (secrets already masked), ``model``, ``adapter``, ``strategy``;
      the run is stored with ``status = "running"`` and committed at once, so a process killed
      mid-run leaves it visible (shown as incomplete).
    - ``record_call(run_id, call)``: one LM call, committed on its own (``role``, ``adapter``,
      ``model``, ``prompt_chars``, ``reply_chars``, ``input_tokens``, ``output_tokens``,
      ``latency_s``, ``cost_usd``, ``retries``, ``cached``, ``error``, optional ``prompt`` and
      ``reply`` text that a backend keeps only when configured to).
    - ``finish_run(run_id, result)``: ``status`` (ok/partial/failed/interrupted), ``answer``,
      ``usage``, ``cost_usd``, ``elapsed_s``, ``failures``, ``stopped_by``, ``chunks``,
      ``spans``.
    - ``list_runs(limit)``: newest first; ``get_run(run_id)``: one run with ``calls`` and
      ``spans`` (a unique id prefix is enough), or None.
    - ``put_artifact(kind, key, data)`` / ``get_artifact(kind, key)``: opaque bytes such as a
      retriever's index.
    - ``put_record(namespace, key, record)``, ``get_record(namespace, key)``,
      ``list_records(namespace, prefix="") -> [(key, record)]`` (by key) and
      ``delete_record(namespace, key) -> bool``: keyed JSON records that the subsystems keep
      (``eval``, ``session``, ``batch``, ``study``…), each write committed on its own and cleaned
      of secrets.
    """

    #: where the records live (a file path, or ":memory:"), for ``ponder runs path``
    location: str

    def begin_run(self, run: dict[str, Any]) -> str: ...

    def record_call(self, run_id: str, call: dict[str, Any]) -> None: ...

    def finish_run(self, run_id: str, result: dict[str, Any]) -> None: ...

    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]: ...

    def get_run(self, run_id: str) -> dict[str, Any] | None: ...

    def put_artifact(self, kind: str, key: str, data: bytes) -> None: ...

    def get_artifact(self, kind: str, key: str) -> bytes | None: ...

    def put_record(self, namespace: str, key: str, record: dict[str, Any]) -> None: ...

    def get_record(self, namespace: str, key: str) -> dict[str, Any] | None: ...

    def list_records(self, namespace: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        ...

    def delete_record(self, namespace: str, key: str) -> bool: ...

    def close(self) -> None: ...


@runtime_checkable
class Tool(Protocol):
    """A tool an agent predictor (``react``) may call, bound to the run's context.

    ``make(context)`` returns a plain Python function with type hints and a docstring (DSPy
    turns those into the tool's schema); it returns text the model reads.
    """

    def make(self, context: Any) -> Callable[..., Any]: ...


@runtime_checkable
class Metric(Protocol):
    """Scores one prediction against one example: a float in [0, 1].

    ``score(example, prediction) -> Score`` where ``example`` is a
    :class:`ponder.evaluate.dataset.Example` (question, gold ``answer``, ``evidence``,
    ``sources``, ``metadata``) or a ``dspy.Example``, and ``prediction`` a
    :class:`ponder.evaluate.results.Prediction` (``answer``, ``citations``) or a
    ``dspy.Prediction``. A :class:`ponder.evaluate.metric.Score` has ``value`` (None: the metric
    does not apply, left out of the mean), optional ``feedback`` text, optional ``parts``
    (sub-scores) and optional ``usage`` (LM calls the metric itself made, counted apart). A
    float return is accepted too. Subclassing :class:`ponder.evaluate.metric.BaseMetric` makes a
    metric a DSPy metric as well (``metric(example, prediction, trace=None)``); an optional
    ``bind(plugin_set)`` is called before scoring (a judge building its own adapter).
    """

    def score(self, example: Any, prediction: Any) -> Any: ...


@runtime_checkable
class Optimizer(Protocol):
    """Searches a variable space for the configuration that scores best.

    ``optimize(study)`` drives trials through the :class:`ponder.optimize.study.Study` it is
    handed and returns when ``study.should_stop()`` is true. It proposes points of
    ``study.space`` (``sample(rng)``, ``grid()``, the variables in dependency order with
    ``active(assignment)``) and hands each to ``study.evaluate(assignment, number=N,
    report=fn)``, which evaluates the candidate on the train examples, charges the budget,
    records trial ``N`` and returns a ``TrialResult`` (``status``, ``score``, ``cost``, …,
    ``value(objective)``); ``report(step, value)`` is called after each example and returning
    True stops the trial (pruning). ``study.seed``, ``study.objectives`` / ``directions`` and
    ``study.optuna_url`` (where a resumable sampler keeps its state) are read-only. Optional:
    ``min_trials`` (fewer and it cannot learn anything; the estimate warns). A prompt
    optimizer may also pass ``collect=True`` (record the trial's predictor calls) and
    ``examples=`` (a mini-batch trial), and makes its own LM calls only through
    ``study.lm_call(signature, role=…, **inputs)``, so they are counted, priced, under the caps
    and recorded (``ponder.optimize.study``).
    """

    def optimize(self, study: Any) -> Any: ...


@runtime_checkable
class Executor(Protocol):
    """Runs a batch of independent work items: the map calls of a strategy, the examples of
    an eval, the trials of an optimizer, the ``for_each`` items of a pipeline.

    ``map(task, items, *, services, concurrency)`` calls ``task(index, item)`` with at most
    ``concurrency`` in flight and yields an ``Outcome(index, value | error)`` per started item as
    it finishes (completion order); it starts nothing once ``services.stopped_by`` is set, waits
    no longer than ``services.remaining_s()``, then yields the items still in flight as
    ``cancelled`` and cancels what is queued. An executor whose workers are other processes
    ships each item's usage and call records back and adds them to ``services`` (see
    ``ponder.engine.remote``), so calls are counted, priced and recorded in the driver.
    ``rate_limiter(rpm, tpm, window_s=60)`` is the run's one limiter every worker reaches;
    ``close()`` frees the workers. The full contract: ``ponder.engine.executor``.
    """

    def map(self, task: Callable[[int, Any], Any], items: Sequence[Any], *, services: Any,
            concurrency: int) -> Any: ...

    def rate_limiter(self, rpm: float | None, tpm: int | None, *,
                     window_s: float = 60.0) -> Any: ...

    def close(self) -> None: ...


@runtime_checkable
class Exporter(Protocol):
    """Sends a finished run's spans to a tracing backend (OpenTelemetry, a JSONL file…).

    ``export(spans, resource)`` is called once per run, when its root span closes, with the
    run's spans as OpenTelemetry-shaped dicts, parents first: ``name``, ``kind`` (``INTERNAL`` /
    ``CLIENT``), ``trace_id`` (32 hex), ``span_id`` and ``parent_span_id`` (16 hex or None),
    ``start_time_unix_nano``, ``end_time_unix_nano``, ``status`` (``{"code": "OK"|"ERROR",
    "description"}``) and ``attributes`` (GenAI semantic conventions plus ``ponder.*``; see
    :mod:`ponder.engine.telemetry`), already cleaned of secrets; ``resource`` holds
    ``service.name``, ``service.version``, ``ponder.run_id``. ``shutdown()`` flushes what is
    buffered and is called after every export; it must be safe to call twice. An exporter
    that raises is logged, never fatal to the run. Settings come from ``[telemetry.<name>]``.
    """

    def export(self, spans: Sequence[dict[str, Any]], resource: dict[str, Any]) -> None: ...

    def shutdown(self) -> None: ...


KIND_PROTOCOLS: dict[str, type] = {
    "adapter": Adapter,
    "strategy": Strategy,
    "retriever": Retriever,
    "predictor": Predictor,
    "storage": Storage,
    "tool": Tool,
    "metric": Metric,
    "optimizer": Optimizer,
    "executor": Executor,
    "exporter": Exporter,
}
