"""The fake provider's Files and Batch APIs (``/v1/files``, ``/v1/batches``), OpenAI-shaped.

A :class:`ponder.testing.fake_provider.FakeProvider` owns one :class:`FakeBatches` (its
``batches`` attribute) and hands it every ``/files`` and ``/batches`` request after the auth
check, so a provider batch job runs end to end offline through litellm's ``create_file`` /
``create_batch`` / ``retrieve_batch`` / ``cancel_batch`` and a plain ``GET`` of the output file.

Endpoints:

* ``POST /v1/files`` (multipart ``file`` + ``purpose``), ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content`` (the raw bytes).
* ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window``, ``metadata``),
  ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``, ``GET /v1/batches``.

A job's state is a function of the time since it was created (:class:`FakeBatchConfig`):
``validating`` for ``validating_s``, ``in_progress`` for ``in_progress_s`` (``request_counts``
grow with the elapsed fraction), ``finalizing`` for ``finalizing_s``, then ``outcome``:
``completed``, ``failed`` (validation failed: ``errors`` set, no files) or ``expired`` (the first
``expire_fraction`` of the requests answered, the rest in the error file as ``batch_expired``).
An input line that is not JSON or lacks a ``custom_id`` fails the job at validation, as
OpenAI's does. ``error_rate`` of the requests (a seeded draw per request) land in the error file
with a 500 instead of an answer; the output file lists the answers in a shuffled order
(``shuffle``; never the input order), since real providers do not keep it. The draws are
seeded by ``seed`` and the job's number, so a test's n-th job always fails the same requests.
``cancel`` moves the job to ``cancelling`` then ``cancelled``; requests that were not done by
then are in the error file as ``batch_cancelled``. Answers are computed with the provider's
own reply rules (mode, needles, DSPy formatting), so a batch answer equals the live answer to
the same prompt.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from email import policy
from email.parser import BytesParser
from typing import Any

import attrs
from attrs import validators as v

from ponder.support.dspy_format import format_for_dspy, message_text
from ponder.testing.fake_anthropic_batches import FakeAnthropicBatches

OUTCOMES = ("completed", "failed", "expired")


@attrs.frozen(kw_only=True)
class FakeBatchConfig:
    """How fake batch jobs behave; change it with :meth:`FakeBatches.configure`."""

    validating_s: float = attrs.field(default=0.0, converter=float, validator=v.ge(0.0))
    in_progress_s: float = attrs.field(default=0.0, converter=float, validator=v.ge(0.0))
    finalizing_s: float = attrs.field(default=0.0, converter=float, validator=v.ge(0.0))
    outcome: str = attrs.field(default="completed", validator=v.in_(OUTCOMES))
    error_rate: float = attrs.field(default=0.0, converter=float,
                                    validator=[v.ge(0.0), v.le(1.0)])
    expire_fraction: float = attrs.field(default=0.5, converter=float,
                                         validator=[v.ge(0.0), v.le(1.0)])
    shuffle: bool = True
    seed: int = 0


@attrs.define
class _Job:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any]
    created_at: float
    lines: list[dict[str, Any]]
    invalid: str | None
    number: int
    cancelled_at: float | None = None
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    done: int = 0
    failed: int = 0
    ended_at: float | None = None


class FakeBatches:
    """The Files and Batches endpoints of one fake provider (see the module docstring)."""

    def __init__(self, provider: Any, count_tokens: Callable[[int], int],
                 error_body: Callable[..., dict]) -> None:
        # the provider hands in its tokenizer and error shape (importing its module here would
        # make an import cycle)
        self.provider = provider
        self._count_tokens = count_tokens
        self._error_body = error_body
        self.config = FakeBatchConfig()
        self._lock = threading.Lock()
        self._files: dict[str, dict[str, Any]] = {}
        self._content: dict[str, bytes] = {}
        self._jobs: dict[str, _Job] = {}
        self._answered = 0
        #: Anthropic's Message Batches and Messages API, on the same knobs (``configure``)
        self.anthropic = FakeAnthropicBatches(self)

    def configure(self, **changes: Any) -> FakeBatchConfig:
        """Change the behaviour of jobs created (and polled) from now on."""
        with self._lock:
            self.config = attrs.evolve(self.config, **changes)
            return self.config

    def stats(self) -> dict[str, Any]:
        """Jobs by status and the requests the fake answered inside batch jobs."""
        with self._lock:
            statuses: dict[str, int] = {}
            for job in self._jobs.values():
                statuses[job.status] = statuses.get(job.status, 0) + 1
            return {"jobs": len(self._jobs), "by_status": statuses, "files": len(self._files),
                    "answered": self._answered}

    @staticmethod
    def handles(method: str, route: str) -> bool:
        return route == "/files" or route.startswith(("/files/", "/batches")) or \
            FakeAnthropicBatches.handles(route)

    # ---------------------------------------------------------------- HTTP
    def handle(self, h: Any, method: str, route: str, raw: bytes) -> None:
        parts = route.strip("/").split("/")
        if parts[0] == "messages":
            self.anthropic.handle(h, method, route, raw)
            return
        try:
            if parts[0] == "files":
                self._files_api(h, method, parts[1:], raw)
            else:
                self._batches_api(h, method, parts[1:], raw)
        except ValueError as exc:
            self._error(h, 400, str(exc), "invalid_request")
        except KeyError as exc:
            self._error(h, 404, f"no such object: {exc.args[0]}", "not_found")

    def _error(self, h: Any, status: int, message: str, code: str) -> None:
        self.provider._fail("not_found" if status == 404 else "bad_request")
        self.provider._send(h, status, self._error_body(message, "invalid_request_error", code))

    def _files_api(self, h: Any, method: str, rest: list[str], raw: bytes) -> None:
        send = self.provider._send
        if method == "POST" and not rest:
            fields = _multipart(h.headers.get("Content-Type") or "", raw)
            if "file" not in fields:
                raise ValueError("the upload has no 'file' part")
            filename, data = fields["file"]
            purpose = fields.get("purpose", (None, b"batch"))[1].decode()
            send(h, 200, self._add_file(data, filename or "upload.jsonl", purpose))
            return
        if method == "GET" and len(rest) == 1:
            with self._lock:
                send(h, 200, self._files[rest[0]])
            return
        if method == "GET" and len(rest) == 2 and rest[1] == "content":
            with self._lock:
                data = self._content[rest[0]]
            send(h, 200, data)
            return
        raise ValueError(f"no route {method} /v1/files/{'/'.join(rest)}")

    def _batches_api(self, h: Any, method: str, rest: list[str], raw: bytes) -> None:
        send = self.provider._send
        if method == "POST" and not rest:
            body = json.loads(raw or b"null")
            if not isinstance(body, dict) or not body.get("input_file_id"):
                raise ValueError("'input_file_id' is required")
            send(h, 200, self._create(body))
            return
        if method == "GET" and not rest:
            with self._lock:
                ids = list(self._jobs)
            send(h, 200, {"object": "list", "data": [self._view(i) for i in ids]})
            return
        if method == "GET" and len(rest) == 1:
            send(h, 200, self._view(rest[0]))
            return
        if method == "POST" and len(rest) == 2 and rest[1] == "cancel":
            send(h, 200, self._cancel(rest[0]))
            return
        raise ValueError(f"no route {method} /v1/batches/{'/'.join(rest)}")

    # ---------------------------------------------------------------- model
    def _add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        with self._lock:
            return self._store_file(data, filename, purpose)

    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        """Keep an uploaded or generated file (called with the lock held)."""
        file_id = f"file-fake-{uuid.uuid4().hex[:16]}"
        obj = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "status": "processed"}
        self._files[file_id] = obj
        self._content[file_id] = data
        return obj

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        file_id = str(body["input_file_id"])
        with self._lock:
            data = self._content[file_id]
        endpoint = str(body.get("endpoint") or "/v1/chat/completions")
        lines, invalid = _parse_input(data, endpoint)
        job = _Job(id=f"batch_fake_{uuid.uuid4().hex[:16]}", input_file_id=file_id,
                   endpoint=endpoint, completion_window=str(body.get("completion_window", "24h")),
                   metadata=dict(body.get("metadata") or {}), created_at=time.time(),
                   lines=lines, invalid=invalid, number=len(self._jobs))
        with self._lock:
            self._jobs[job.id] = job
        return self._view(job.id)

    def _cancel(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs[job_id]
            if job.cancelled_at is None and job.ended_at is None:
                job.cancelled_at = time.time()
        return self._view(job_id)

    def _view(self, job_id: str) -> dict[str, Any]:
        """The job as OpenAI's Batch object, after moving it along its timeline."""
        with self._lock:
            job = self._jobs[job_id]
            cfg = self.config
        self._advance(job, cfg)
        total = len(job.lines)
        return {
            "id": job.id, "object": "batch", "endpoint": job.endpoint,
            "input_file_id": job.input_file_id, "completion_window": job.completion_window,
            "status": job.status, "output_file_id": job.output_file_id,
            "error_file_id": job.error_file_id, "created_at": int(job.created_at),
            "in_progress_at": None, "expires_at": int(job.created_at) + 86400,
            "completed_at": int(job.ended_at) if job.status == "completed" else None,
            "failed_at": int(job.ended_at) if job.status == "failed" else None,
            "expired_at": int(job.ended_at) if job.status == "expired" else None,
            "cancelled_at": int(job.ended_at) if job.status == "cancelled" else None,
            "errors": ({"object": "list", "data": [{"code": "invalid_input", "message":
                                                    job.invalid, "line": None, "param": None}]}
                       if job.status == "failed" else None),
            "request_counts": {"total": total, "completed": job.done, "failed": job.failed},
            "metadata": job.metadata,
        }

    def _advance(self, job: _Job, cfg: FakeBatchConfig) -> None:
        with self._lock:
            if job.ended_at is not None:
                return
            now = time.time()
            elapsed = now - job.created_at
            total = len(job.lines)
            t_valid = cfg.validating_s
            t_run = t_valid + cfg.in_progress_s
            t_final = t_run + cfg.finalizing_s
            if job.cancelled_at is not None:
                # requests finished before the cancel stay answered; the rest are cancelled
                ran = min(max(job.cancelled_at - job.created_at - t_valid, 0.0), cfg.in_progress_s)
                fraction = 1.0 if cfg.in_progress_s == 0 else ran / cfg.in_progress_s
                if job.cancelled_at - job.created_at < t_valid:
                    fraction = 0.0
                if now - job.cancelled_at < max(cfg.finalizing_s, 0.0):
                    job.status = "cancelling"
                    return
                self._finish(job, cfg, "cancelled", int(total * fraction), "batch_cancelled")
                return
            if elapsed < t_valid:
                job.status = "validating"
                return
            if job.invalid is not None or cfg.outcome == "failed":
                job.invalid = job.invalid or "the fake provider was told to fail this batch"
                job.status, job.ended_at = "failed", now
                return
            if elapsed < t_run:
                job.status = "in_progress"
                job.done = int(total * (elapsed - t_valid) / cfg.in_progress_s)
                return
            if elapsed < t_final:
                job.status = "finalizing"
                job.done = total
                return
            if cfg.outcome == "expired":
                self._finish(job, cfg, "expired", int(total * cfg.expire_fraction),
                             "batch_expired")
            else:
                self._finish(job, cfg, "completed", total, None)

    def _finish(self, job: _Job, cfg: FakeBatchConfig, status: str, answered: int,
                unfinished_code: str | None) -> None:
        """Write the output and error files (called with the lock held)."""
        rng = random.Random(f"{cfg.seed}:{job.number}")
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for number, line in enumerate(job.lines):
            custom_id = line["custom_id"]
            if number >= answered:
                errors.append({"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": custom_id,
                               "response": None,
                               "error": {"code": unfinished_code,
                                         "message": f"this request was not run: {status}"}})
            elif rng.random() < cfg.error_rate:
                errors.append({"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": custom_id,
                               "response": {"status_code": 500,
                                            "request_id": uuid.uuid4().hex[:12],
                                            "body": {"error": {
                                                "message": "The server had an error (fake)",
                                                "type": "server_error", "code": "server_error"}}},
                               "error": None})
            else:
                output.append({"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": custom_id,
                               "response": {"status_code": 200,
                                            "request_id": uuid.uuid4().hex[:12],
                                            "body": self._complete(line.get("body") or {})},
                               "error": None})
        if cfg.shuffle and len(output) > 1:
            order = list(output)
            rng.shuffle(output)
            if output == order:  # never the input order: a client must join on custom_id
                output.append(output.pop(0))
        self._answered += len(output)
        job.done, job.failed = len(output), len(errors)
        if output:
            job.output_file_id = self._store_file(_jsonl(output), f"{job.id}_output.jsonl",
                                                  "batch_output")["id"]
        if errors:
            job.error_file_id = self._store_file(_jsonl(errors), f"{job.id}_error.jsonl",
                                                 "batch_output")["id"]
        job.status, job.ended_at = status, time.time()

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A ``chat.completion`` for one request line, by the provider's reply rules."""
        count_tokens = self._count_tokens
        provider = self.provider
        cfg = provider.config
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        texts = [message_text(m.get("content")) for m in messages]
        values = provider._reply_text({"mode": cfg.mode, "reply": None}, messages, texts)
        rf = body.get("response_format")
        json_mode = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
        if cfg.dspy_format or not isinstance(values, str):
            content = format_for_dspy(messages, values, json_mode=json_mode)
        else:
            content = values
        prompt_tokens = count_tokens(sum(len(t) for t in texts))
        completion_tokens = count_tokens(len(content))
        return {
            "id": f"chatcmpl-fake-batch-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model") or cfg.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def _parse_input(data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], str | None]:
    """The input file's request lines, and why it is invalid (or None)."""
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            return lines, f"line {number} is not valid JSON"
        if not isinstance(line, dict) or not line.get("custom_id"):
            return lines, f"line {number} has no custom_id"
        if line["custom_id"] in seen:
            return lines, f"line {number} repeats custom_id {line['custom_id']!r}"
        if line.get("url") not in (endpoint, endpoint.removeprefix("/v1")):
            return lines, f"line {number} targets {line.get('url')!r}, the batch is {endpoint!r}"
        seen.add(line["custom_id"])
        lines.append(line)
    if not lines:
        return lines, "the input file is empty"
    return lines, None


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``name -> (filename, bytes)`` of a multipart/form-data body."""
    if "multipart/form-data" not in content_type:
        raise ValueError(f"a file upload must be multipart/form-data, got {content_type!r}")
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields
