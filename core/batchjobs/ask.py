"""``ponder ask --batch``: the map phase of ``map_reduce`` as one provider batch job.

The chunks are the ones ``map_reduce`` would read (its own ``plan_chunks``), each map request the
prompt its live map call would send (the shared extract signature, formatted by the adapter's
DSPy prompt format). When the job is done, every answered chunk's reply is written to the LM
response cache under the very key the live map call computes
(:func:`ponder.engine.cache.cache_key`: adapter and settings, model, predictor and settings,
prompt format, signature, inputs); then the ordinary ``System.ask`` runs: its map calls are
cache hits (no cost, counted as cached), the reduce runs live, and any chunk the batch did not
answer (error file, expired) is simply asked live by the run, with its limits, retries and
partial results. So the answer, citations, spans and run record are exactly those of a
``map_reduce`` run. The map cost is the batch job's, at the batch price, kept on the job's
record and its own run (strategy ``batch``).

Identical requests find their job again: the job is keyed by a digest of the request file, so
a ``ponder ask --batch`` killed while waiting resumes the same job when run again.
"""

from __future__ import annotations

import hashlib
import json
import types
from typing import Any

from ponder.batchjobs.jobs import NAMESPACE, BatchJobs
from ponder.errors import ConfigError
from ponder.support.batch import BatchRequest


def _check(system: Any) -> None:
    config = system.config
    strategy = config.strategy.name
    if strategy != "map_reduce":
        raise ConfigError(f"--batch submits map_reduce's map phase; the strategy is {strategy!r} "
                          f"({config.origin('strategy.name')}): drop it or use map_reduce")
    if config.predictor.name not in (None, "predict"):
        raise ConfigError("--batch sends the plain `predict` prompt; predictor "
                          f"{config.predictor.name!r} is not supported with it")
    if config.adapter.fallbacks:
        raise ConfigError("--batch goes to one provider; [adapter] fallbacks are not supported "
                          "with it")
    if not config.cache.enabled:
        raise ConfigError("--batch hands the map replies to the run through the response cache, "
                          "which is off ([cache] enabled = false or --no-cache)")


def plan_requests(system: Any, question: str, context: Any, target: Any,
                  chunk_tokens: int | None) -> tuple[list[BatchRequest], dict[str, Any]]:
    """map_reduce's chunks as batch requests, and each one's metadata (its cache key too)."""
    import dspy

    from ponder.engine.cache import cache_key
    from ponder.plugins._signatures import extract_signature

    strategy = system.build("strategy", "map_reduce")
    predictor_name = system.config.predictor.name or "predict"
    predictor = system.build("predictor", predictor_name)
    # plan_chunks reads only the window and the chunk size from the services it is handed
    planner = types.SimpleNamespace(model_info=target.model_info, chunk_tokens=chunk_tokens)
    chunks = strategy.plan_chunks(question, context, planner)
    signature = extract_signature()
    fmt = target.dspy_adapter or dspy.ChatAdapter()
    prompt_format = type(target.dspy_adapter).__name__ if target.dspy_adapter else "default"
    requests, meta = [], {}
    for chunk in chunks:
        inputs = {"question": question, "chunk": chunk.render()}
        custom_id = f"chunk-{chunk.index:05d}"
        messages = fmt.format(signature, demos=[], inputs=inputs)
        requests.append(BatchRequest(custom_id=custom_id, messages=messages, model=target.model,
                                     params={"temperature": 0.0,
                                             "max_tokens": target.model_info.max_output_tokens}))
        meta[custom_id] = {
            "question": question, "chunk": chunk.index, "citation": chunk.first_citation,
            "cache_key": cache_key(
                adapter=target.adapter, adapter_settings=target.adapter_settings,
                model=target.model_info.model, predictor=predictor_name,
                predictor_settings=getattr(predictor, "settings", None),
                prompt_format=prompt_format, signature=signature, inputs=inputs)}
    return requests, meta


def fill_cache(system: Any, record: dict[str, Any], target: Any) -> int:
    """Write each answered chunk's parsed reply to the response cache; how many were."""
    import dspy

    from ponder.engine.cache import ResponseCache
    from ponder.plugins._signatures import extract_signature

    fmt = target.dspy_adapter or dspy.ChatAdapter()
    signature = extract_signature()
    cache = ResponseCache(system.config.cache.path)
    written = 0
    try:
        for answer in record["answers"]:
            meta = record["requests"].get(answer["custom_id"])
            if meta is None or answer.get("source") not in ("batch", "live-retry"):
                continue
            try:
                fields = dict(fmt.parse(signature, answer["answer"]))
            except Exception:  # an unparsable reply: the run asks that chunk live
                continue
            written += cache.put(meta["cache_key"], {
                "fields": fields,
                "tokens": [answer.get("input_tokens", 0), answer.get("output_tokens", 0)]})
    finally:
        cache.close()
    return written


def batch_map(system: Any, jobs: BatchJobs, question: str, sources: list[str], *,
              include: Any = (), exclude: Any = (), chunk_tokens: int | None = None,
              poll_interval: float | None = None) -> dict[str, Any]:
    """Submit (or find again) the map job, wait for it, join its results and fill the cache;
    the finished job's record (``cached`` says how many map replies the run will reuse)."""
    from ponder.context.sources import load_sources

    _check(system)
    target = jobs.target_for(None)
    context = load_sources(list(sources), include=include, exclude=exclude)
    requests, meta = plan_requests(system, question, context, target, chunk_tokens)
    digest = hashlib.sha256("\n".join(json.dumps(r.to_line(), sort_keys=True)
                                      for r in requests).encode()).hexdigest()[:24]
    record = next((r for _key, r in jobs.storage.list_records(NAMESPACE)
                   if r.get("ask_digest") == digest
                   and r.get("status") not in ("failed", "cancelled")), None)
    if record is None:
        record = jobs.submit_requests(
            requests, meta, target=target, metadata={"ponder": "ask --batch"},
            extra={"kind": "ask_map", "ask_digest": digest, "question": question,
                   "sources": list(sources)})
    elif jobs.progress is not None:
        jobs.progress(f"resuming {record['id']} (the same map requests were submitted before)")
    # the run itself asks the chunks the batch did not answer: no live retry here
    record = jobs.results(record["id"], retry_failed=False, poll_interval=poll_interval)
    record["cached"] = fill_cache(system, record, target)
    return record
