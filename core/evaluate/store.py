"""Evals in the run store: keyed JSON records in namespace ``eval`` (see
:mod:`ponder.plugins._records`), so they live beside the runs in the same SQLite file.

- ``eval/<eval_id>``: one eval: label, dataset (path, digest, the selected examples' ids and
  prompt digests), the masked config and its digest, the metrics, status
  (``running``/``done``/``interrupted``) and, once done, its summary.
- ``example/<config_digest>/<prompt_digest>``: one example's outcome under one resolved
  config: the prediction (answer, citations, usage, latency, the ask's run id), or the failure,
  and each metric's score with the digest of the gold it was scored against. It is written the
  moment the example finishes, one committed write each, so a SIGKILLed eval loses only what
  was in flight; every eval with the same config (a rerun, a larger ``--limit``, another metric)
  reads it back instead of asking again, and rescores only when the gold or the metric changed.

Records are cleaned of secrets by the store on the way in.
"""

from __future__ import annotations

import datetime
import threading
from typing import Any

from ponder.errors import ConfigError

NAMESPACE = "eval"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class EvalStore:
    """The eval records of one storage backend; thread-safe (one write at a time)."""

    def __init__(self, storage: Any) -> None:
        missing = [m for m in ("put_record", "get_record", "list_records")
                   if not callable(getattr(storage, m, None))]
        if missing:
            raise ConfigError(f"the run store {type(storage).__name__} has no keyed records "
                              f"({', '.join(missing)}): evals cannot be recorded or resumed")
        self.storage = storage
        self._lock = threading.Lock()

    # --- examples ------------------------------------------------------------------------------
    @staticmethod
    def example_key(config_digest: str, prompt_digest: str) -> str:
        return f"example/{config_digest}/{prompt_digest}"

    def get_example(self, config_digest: str, prompt_digest: str) -> dict[str, Any] | None:
        with self._lock:
            return self.storage.get_record(NAMESPACE, self.example_key(config_digest,
                                                                       prompt_digest))

    def put_example(self, config_digest: str, prompt_digest: str, record: dict[str, Any]) -> None:
        with self._lock:
            self.storage.put_record(NAMESPACE, self.example_key(config_digest, prompt_digest),
                                    {**record, "recorded_at": now()})

    # --- evals ---------------------------------------------------------------------------------
    def put_eval(self, eval_id: str, record: dict[str, Any]) -> None:
        with self._lock:
            self.storage.put_record(NAMESPACE, f"eval/{eval_id}", record)

    def get_eval(self, eval_id: str) -> dict[str, Any] | None:
        """One eval by id or unique id prefix; an ambiguous prefix is an error."""
        with self._lock:
            exact = self.storage.get_record(NAMESPACE, f"eval/{eval_id}")
            if exact is not None:
                return exact
            matches = self.storage.list_records(NAMESPACE, f"eval/{eval_id}")
        if len(matches) > 1:
            ids = ", ".join(key.split("/", 1)[1] for key, _ in matches[:5])
            raise ConfigError(f"eval id prefix {eval_id!r} is ambiguous: {ids}")
        return matches[0][1] if matches else None

    def list_evals(self) -> list[dict[str, Any]]:
        """Every eval, newest first."""
        with self._lock:
            records = [r for _, r in self.storage.list_records(NAMESPACE, "eval/")]
        return sorted(records, key=lambda r: r.get("updated_at") or r.get("started_at", ""),
                      reverse=True)

    def close(self) -> None:
        close = getattr(self.storage, "close", None)
        if callable(close):
            close()


def load_result(store: EvalStore, eval_id: str) -> Any:
    """The :class:`ponder.evaluate.results.EvalResult` of a recorded eval, rebuilt from its
    records (examples that never finished are listed as not run)."""
    from ponder.evaluate.dataset import KNOWN_FIELDS, Example
    from ponder.evaluate.results import EvalResult, ExampleResult, add_usage, empty_usage

    record = store.get_eval(eval_id)
    if record is None:
        raise ConfigError(f"no eval {eval_id!r} in the run store {store.storage.location} "
                          f"(`ponder eval list` shows them)")
    per_example, not_run = [], []
    for item in record.get("examples", []):
        example = Example(
            id=item["id"], question=item["question"], sources=item.get("sources", ()),
            answer=item.get("answer", ()), evidence=item.get("evidence", ()),
            tags=item.get("tags", ()), split=item.get("split"), line=item.get("line", 0),
            metadata={k: v for k, v in item.items() if k not in (*KNOWN_FIELDS, "line", "key")})
        stored = store.get_example(record["config_digest"], item["key"])
        if stored is None:
            not_run.append(example.id)
            continue
        scores = stored.get("scores", {})
        judge = empty_usage()
        for entry in scores.values():
            add_usage(judge, entry.get("usage"))
        prediction = stored.get("prediction") or {}
        errors = [s["error"] for s in scores.values() if s.get("error")]
        per_example.append(ExampleResult(
            id=example.id, example=example,
            scores={m: scores.get(m, {}).get("value") for m in record["metrics"]},
            feedback={m: s["feedback"] for m, s in scores.items() if s.get("feedback")},
            parts={m: s["parts"] for m, s in scores.items() if s.get("parts")},
            answer=prediction.get("answer", ""), citations=prediction.get("citations", ()),
            usage=stored.get("usage") or empty_usage(), judge_usage=judge,
            latency_s=float(stored.get("latency_s") or 0.0),
            failure=stored.get("failure") or (errors[0] if errors else None),
            partial=bool(prediction.get("partial")), run_id=stored.get("run_id"),
            resumed=True))
    return EvalResult(
        eval_id=record["id"], label=record.get("label", ""), dataset=record.get("dataset", ""),
        dataset_digest=record.get("dataset_digest", ""),
        config_digest=record["config_digest"], metrics=record["metrics"],
        per_example=per_example, binary=record.get("binary", {}), not_run=not_run,
        config=record.get("config", {}), seed=record.get("seed", 0),
        status=record.get("status") or "done")
