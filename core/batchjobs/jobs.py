"""Submit, poll, finish and cancel batch jobs, with the run store as the one source of truth.

Every step writes the job's record (namespace ``batch``, keyed by the provider's batch id) before
it returns, so any process can carry on from it: ``status`` asks the provider and stores what it
said, a poller killed mid-wait leaves the last state it saw and ``results`` simply polls again,
and a finished job keeps its answers, so asking for them twice never pays twice.

Pricing: answers the batch returned cost the batch price (the list price less
``[batch] discount``); requests retried live cost the list price. Both are kept apart in the
record's ``usage`` and recorded as one run (strategy ``batch``) in the store, each answer a call
with role ``batch`` or ``live-retry``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ponder.batchjobs.anthropic_client import AnthropicBatchClient
from ponder.batchjobs.client import BatchClient
from ponder.batchjobs.questions import build_request, load_questions, parse_reply
from ponder.batchjobs.settings import BatchSettings, BatchTarget
from ponder.errors import ConfigError
from ponder.support.batch import TERMINAL_STATUSES, BatchPoller, create_jsonl, parse_jsonl
from ponder.support.fileutils import atomic_write, get_cache_dir
from ponder.support.observability import SpanType, track
from ponder.support.secrets import redact

log = logging.getLogger("ponder.batch")

NAMESPACE = "batch"
ENDPOINT = "/v1/chat/completions"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _usage() -> dict[str, Any]:
    return {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}


def client_for(target: BatchTarget) -> BatchClient:
    """The client for ``target``'s provider: the one place that choice is made.

    OpenAI-shaped providers go through litellm (:class:`BatchClient`); Anthropic's Message
    Batches, which litellm can retrieve but not create or cancel, through ponder's own thin
    client (:class:`ponder.batchjobs.anthropic_client.AnthropicBatchClient`).
    """
    if target.provider == "anthropic":
        return AnthropicBatchClient(target)
    return BatchClient(target)


class BatchJobs:
    """Batch jobs over one run store. ``target_for(adapter_name)`` resolves a provider target
    (None: the configured adapter); ``progress(text)`` is told about every poll."""

    def __init__(self, storage: Any, target_for: Callable[[str | None], BatchTarget],
                 settings: BatchSettings | None = None, *,
                 progress: Callable[[str], Any] | None = None,
                 client_factory: Callable[[BatchTarget], BatchClient] = client_for,
                 limits: Any = None) -> None:
        self.storage = storage
        #: ``[limits]`` (max_cost, max_tokens, concurrency) for the live retries
        self.limits = limits
        self.target_for = target_for
        self.settings = settings or BatchSettings()
        self.progress = progress
        self.client_factory = client_factory

    # --- the store --------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any]:
        """The job whose id is ``job_id`` or starts with it; a clear error otherwise."""
        record = self.storage.get_record(NAMESPACE, job_id)
        if record is not None:
            return record
        matches = self.storage.list_records(NAMESPACE, job_id)
        if len(matches) == 1:
            return matches[0][1]
        if not matches:
            raise ConfigError(f"no batch job {job_id!r} in the run store "
                              f"({self.storage.location}); `ponder batch list` shows them")
        names = ", ".join(key for key, _ in matches[:5])
        raise ConfigError(f"batch job id {job_id!r} is ambiguous: {names}")

    def list(self) -> list[dict[str, Any]]:
        jobs = [record for _key, record in self.storage.list_records(NAMESPACE)]
        return sorted(jobs, key=lambda r: r.get("created_at", ""), reverse=True)

    def _save(self, record: dict[str, Any]) -> dict[str, Any]:
        record["updated_at"] = _now()
        self.storage.put_record(NAMESPACE, record["id"], record)
        return record

    def _client(self, record: dict[str, Any] | None = None) -> BatchClient:
        return self.client_factory(self.target_for(record["adapter"] if record else None))

    # --- submit -----------------------------------------------------------------------------------
    @track("batch.submit", SpanType.BATCH)
    def submit(self, questions_path: str | Path) -> dict[str, Any]:
        """Build, upload and create the job; its record (status as the provider gave it)."""
        questions = load_questions(questions_path)
        target = self.target_for(None)
        requests, skipped, meta = [], [], {}
        for question in questions:
            request, why, tokens = build_request(question, target.model, target.model_info)
            entry = {"question": question.question, "sources": question.sources,
                     "line": question.line, **question.extra}
            if request is None:
                skipped.append({"custom_id": question.custom_id, "reason": why, **entry})
                continue
            requests.append(request)
            meta[question.custom_id] = {**entry, "prompt_tokens_estimate": tokens}
        if not requests:
            reasons = "; ".join(f"{s['custom_id']}: {s['reason']}" for s in skipped[:3])
            raise ConfigError(f"{questions_path}: no question could be sent ({reasons})")
        return self.submit_requests(
            requests, meta, target=target, skipped=skipped,
            metadata={"ponder": "batch", "questions": Path(questions_path).name},
            extra={"kind": "questions",
                   "questions_file": str(Path(questions_path).resolve())})

    def submit_requests(self, requests: list[Any], meta: dict[str, dict[str, Any]], *,
                        target: BatchTarget, skipped: list[dict[str, Any]] | None = None,
                        metadata: dict[str, str] | None = None,
                        extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write, upload and create a job of ready ``requests`` (``meta`` by custom_id: at least
        ``question``); its stored record."""
        folder = get_cache_dir("batches")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        input_path = create_jsonl(requests, folder / f"input-{stamp}-{len(requests)}.jsonl")
        client = self.client_factory(target)
        uploaded = client.upload(input_path)
        batch = client.create(uploaded["id"], endpoint=ENDPOINT,
                              completion_window=self.settings.completion_window,
                              metadata=metadata or {"ponder": "batch"})
        record = {
            "id": batch["id"], "created_at": _now(), "adapter": target.adapter,
            "provider": target.provider, "model": target.model, "api_base": target.api_base,
            "questions_file": None, **(extra or {}), "input_path": str(input_path),
            "input_file_id": uploaded["id"], "requests": meta, "skipped": skipped or [],
            "pricing": target.describe_pricing(), "finished": False,
        }
        self._apply(record, batch)
        return self._save(record)

    def _apply(self, record: dict[str, Any], batch: dict[str, Any]) -> None:
        counts = batch.get("request_counts") or {}
        if not isinstance(counts, dict):
            counts = dict(counts)
        record.update(status=str(batch.get("status")), request_counts={
            k: int(counts.get(k) or 0) for k in ("total", "completed", "failed")},
            output_file_id=batch.get("output_file_id"), error_file_id=batch.get("error_file_id"),
            errors=_errors_of(batch))

    # --- status and waiting -----------------------------------------------------------------------
    def refresh(self, job_id: str) -> dict[str, Any]:
        """Ask the provider for the job's state and store it (a finished job is not asked)."""
        record = self.get(job_id)
        if record.get("finished"):
            return record
        self._apply(record, self._client(record).retrieve(record["id"]))
        return self._save(record)

    @track("batch.wait", SpanType.BATCH)
    def wait(self, job_id: str, *, poll_interval: float | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Poll until the job is terminal, storing every state seen; TimeoutError past
        ``timeout`` (the job keeps running at the provider)."""
        record = self.get(job_id)
        if record.get("status") in TERMINAL_STATUSES:
            return record
        client = self._client(record)

        async def get_status() -> dict[str, Any]:
            batch = await asyncio.to_thread(client.retrieve, record["id"])
            self._apply(record, batch)
            self._save(record)
            return batch

        said: list[str] = []

        def on_progress(_batch: dict[str, Any]) -> None:
            # a line when the state or the counts change, not one per poll: a day-long job
            # polled every 30 s would print thousands of identical lines
            line = describe(record)
            if self.progress is not None and (not said or said[-1] != line):
                said.append(line)
                self.progress(line)

        poller = BatchPoller(poll_interval=poll_interval or self.settings.poll_interval,
                             on_progress=on_progress,
                             timeout=timeout if timeout is not None else self.settings.wait_timeout)
        asyncio.run(poller.poll_until_complete(get_status))
        return record

    def cancel(self, job_id: str) -> dict[str, Any]:
        record = self.get(job_id)
        if record.get("status") in TERMINAL_STATUSES:
            return record
        self._apply(record, self._client(record).cancel(record["id"]))
        return self._save(record)

    # --- results ----------------------------------------------------------------------------------
    @track("batch.results", SpanType.BATCH)
    def results(self, job_id: str, *, wait: bool = True, retry_failed: bool | None = None,
                poll_interval: float | None = None) -> dict[str, Any]:
        """The job's answers, joined on ``custom_id``; waits for the job unless ``wait`` is
        False (then a running job is returned as it is, without answers)."""
        record = self.get(job_id)
        if record.get("finished"):
            return record
        if record.get("status") not in TERMINAL_STATUSES:
            record = self.wait(record["id"], poll_interval=poll_interval) if wait \
                else self.refresh(record["id"])
            if record.get("status") not in TERMINAL_STATUSES:
                return record
        retry = self.settings.retry_failed if retry_failed is None else retry_failed
        return self._finish(record, retry)

    def _finish(self, record: dict[str, Any], retry: bool) -> dict[str, Any]:
        started = time.perf_counter()
        # a map-phase job keeps the raw replies: `ponder ask --batch` parses them itself
        raw = record.get("kind") == "ask_map"
        client = self._client(record)
        target = client.target
        folder = get_cache_dir("batches", record["id"])
        outputs: dict[str, dict[str, Any]] = {}
        errors: dict[str, dict[str, Any]] = {}
        for key, into in (("output_file_id", outputs), ("error_file_id", errors)):
            if record.get(key):
                path = client.download(record[key], folder / f"{key.split('_')[0]}.jsonl")
                for line in parse_jsonl(path):
                    into[str(line.get("custom_id"))] = line
        bodies = self._bodies(record, client, folder)
        answers: list[dict[str, Any]] = []
        usage = {"batch": _usage(), "live": _usage()}
        calls: list[dict[str, Any]] = []
        retries: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for custom_id, meta in record["requests"].items():
            entry: dict[str, Any] = {"custom_id": custom_id, "question": meta["question"]}
            if "id" in meta:
                entry["id"] = meta["id"]
            line = outputs.get(custom_id)
            response = (line or {}).get("response") or {}
            if line is not None and response.get("status_code") == 200:
                self._answered(entry, response.get("body") or {}, "batch", usage, calls,
                               target.batch_cost, target, raw)
            else:
                reason = _failure_reason(errors.get(custom_id), line, record)
                entry["batch_error"] = reason
                if retry and custom_id in bodies:
                    retries.append((entry, bodies[custom_id]))
                else:
                    entry.update(source="failed", error=reason if not retry else
                                 f"{reason}; its request body is not available to retry")
            answers.append(entry)
        self._retry_live(retries, client, usage, calls, raw)
        for skipped in record.get("skipped", []):
            answers.append({"custom_id": skipped["custom_id"], "question": skipped["question"],
                            "source": "skipped", "error": skipped["reason"]})
        usage["cost_usd"] = usage["batch"]["cost_usd"] + usage["live"]["cost_usd"]
        results_path = atomic_write(folder / "results.jsonl",
                                    "".join(json.dumps(a, ensure_ascii=False) + "\n"
                                            for a in answers))
        failed = [a for a in answers if a["source"] in ("failed", "skipped")]
        record.update(finished=True, finished_at=_now(), answers=answers, usage=usage,
                      results_path=str(results_path), answered=len(answers) - len(failed),
                      failed=len(failed), outcome="ok" if not failed else "partial")
        self._record_run(record, calls, time.perf_counter() - started)
        return self._save(record)

    def _retry_live(self, retries: list[tuple[dict[str, Any], dict[str, Any]]],
                    client: BatchClient, usage: dict[str, Any],
                    calls: list[dict[str, Any]], raw: bool) -> None:
        """Answer the batch's failures live, ``[limits] concurrency`` at a time, stopping (and
        listing the rest) once ``max_cost`` or ``max_tokens`` is reached, counting the batch's
        own answers too."""
        from concurrent.futures import ThreadPoolExecutor

        limits = self.limits
        width = max(1, getattr(limits, "concurrency", 4))
        target = client.target
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="batch-retry") as pool:
            for start in range(0, len(retries), width):
                stop = self._limit_reached(usage)
                if stop is not None:
                    for entry, _body in retries[start:]:
                        entry.update(source="failed", error=f"{entry['batch_error']}; not "
                                     f"retried live: {stop}")
                    return
                round_ = retries[start:start + width]
                futures = [pool.submit(client.complete, body) for _entry, body in round_]
                for (entry, _body), future in zip(round_, futures, strict=True):
                    try:
                        self._answered(entry, future.result(), "live-retry", usage, calls,
                                       target.model_info.cost, target, raw)
                    except Exception as exc:
                        entry.update(source="failed",
                                     error=redact(f"live retry failed: {type(exc).__name__}: "
                                                  f"{exc}"))
                        calls.append(_call("live-retry", target, 0, 0, 0.0, entry["error"]))

    def _limit_reached(self, usage: dict[str, Any]) -> str | None:
        both = usage["batch"], usage["live"]
        cost = sum(u["cost_usd"] for u in both)
        tokens = sum(u["input_tokens"] + u["output_tokens"] for u in both)
        max_cost = getattr(self.limits, "max_cost", None)
        max_tokens = getattr(self.limits, "max_tokens", None)
        if max_cost is not None and cost >= max_cost:
            return f"the max_cost limit (${max_cost:g}) was reached (${cost:.6f} spent)"
        if max_tokens is not None and tokens >= max_tokens:
            return f"the max_tokens limit ({max_tokens:,}) was reached ({tokens:,} used)"
        return None

    def _answered(self, entry: dict[str, Any], body: dict[str, Any], source: str,
                  usage: dict[str, Any], calls: list[dict[str, Any]],
                  price: Callable[[int, int], float], target: BatchTarget,
                  raw: bool = False) -> None:
        choices = body.get("choices") or [{}]
        content = str(((choices[0] or {}).get("message") or {}).get("content") or "")
        tokens = body.get("usage") or {}
        inp, out = int(tokens.get("prompt_tokens") or 0), int(tokens.get("completion_tokens") or 0)
        cost = price(inp, out)
        bucket = usage["batch" if source == "batch" else "live"]
        bucket["calls"] += 1
        bucket["input_tokens"] += inp
        bucket["output_tokens"] += out
        bucket["cost_usd"] += cost
        text = content.strip() if raw else parse_reply(content)
        entry.update(source=source, answer=text, input_tokens=inp,
                     output_tokens=out, cost_usd=cost)
        calls.append(_call(source, target, inp, out, cost, None, len(content)))

    def _bodies(self, record: dict[str, Any], client: BatchClient,
                folder: Path) -> dict[str, dict[str, Any]]:
        """The request bodies by custom_id, from the local input file or the provider's copy."""
        path = Path(record.get("input_path") or "")
        if not path.is_file():
            try:
                path = client.download(record["input_file_id"], folder / "input.jsonl")
            except Exception as exc:
                log.warning("the input file of batch %s is not available: %s", record["id"],
                            redact(str(exc)))
                return {}
        return {str(line["custom_id"]): line["body"] for line in parse_jsonl(path)}

    def _record_run(self, record: dict[str, Any], calls: list[dict[str, Any]],
                    elapsed: float) -> None:
        """The finished job as a run (strategy ``batch``), so ``ponder runs`` lists its cost."""
        run_id = "b" + record["id"][-11:]
        usage = record["usage"]
        try:
            self.storage.begin_run({
                "id": run_id, "started_at": record["created_at"],
                "question": record.get("question") or
                f"batch job {record['id']}: {len(record['requests'])} questions",
                "source_digest": "", "documents": 0,
                "sources": record.get("sources") or [record.get("questions_file") or ""],
                "config": {"batch": record["pricing"]}, "model": record["model"],
                "adapter": record["adapter"], "strategy": "batch"})
            for call in calls:
                self.storage.record_call(run_id, call)
            both = usage["batch"], usage["live"]
            self.storage.finish_run(run_id, {
                "status": record["outcome"], "answer": f"{record['answered']} answered, "
                f"{record['failed']} failed (results: {record['results_path']})",
                "usage": {"calls": sum(u["calls"] for u in both),
                          "input_tokens": sum(u["input_tokens"] for u in both),
                          "output_tokens": sum(u["output_tokens"] for u in both),
                          "cost_usd": usage["cost_usd"]},
                "cost_usd": usage["cost_usd"], "elapsed_s": round(elapsed, 3),
                "failures": [{"error": a["error"], "kind": "batch"} for a in record["answers"]
                             if a.get("error")],
                "stopped_by": None, "chunks": {}, "strategy": "batch", "spans": []})
            record["run_id"] = run_id
        except Exception as exc:  # the job's own record still holds everything
            log.warning("could not record batch %s as a run: %s", record["id"], redact(str(exc)))


def _call(role: str, target: BatchTarget, inp: int, out: int, cost: float, error: str | None,
          reply_chars: int = 0) -> dict[str, Any]:
    return {"role": role, "adapter": target.adapter, "model": target.model, "prompt_chars": 0,
            "reply_chars": reply_chars, "input_tokens": inp, "output_tokens": out,
            "latency_s": 0.0, "cost_usd": cost, "retries": 0, "cached": False, "error": error}


def _errors_of(batch: dict[str, Any]) -> list[str]:
    errors = batch.get("errors") or {}
    data = errors.get("data") if isinstance(errors, dict) else getattr(errors, "data", None)
    out = []
    for item in data or []:
        item = item if isinstance(item, dict) else dict(item)
        out.append(redact(f"{item.get('code')}: {item.get('message')}"))
    return out


def _failure_reason(error_line: dict[str, Any] | None, output_line: dict[str, Any] | None,
                    record: dict[str, Any]) -> str:
    """Why the batch did not answer a request, from the error file or the job's state."""
    for line in (error_line, output_line):
        if line is None:
            continue
        if line.get("error"):
            err = line["error"]
            return redact(f"{err.get('code')}: {err.get('message')}")
        response = line.get("response") or {}
        message = ((response.get("body") or {}).get("error") or {}).get("message")
        return redact(f"HTTP {response.get('status_code')}: {message}")
    if record.get("status") == "failed":
        return "the batch failed: " + ("; ".join(record.get("errors") or []) or "no reason given")
    return f"not in the batch's output (job {record.get('status')})"


def describe(record: dict[str, Any]) -> str:
    """One line: ``batch_x: in_progress, 3/6 done, 0 failed``."""
    counts = record.get("request_counts") or {}
    return (f"{record['id']}: {record.get('status')}, {counts.get('completed', 0)}/"
            f"{counts.get('total', 0)} done, {counts.get('failed', 0)} failed")
