"""The fake provider's Anthropic endpoints: Message Batches and the Messages API.

:class:`ponder.testing.fake_batches.FakeBatches` hands every ``/v1/messages…`` request here (its
``anthropic`` attribute), after the provider's auth check (which accepts Anthropic's
``x-api-key`` header on these routes), so ponder's Anthropic batch client runs end to end
offline:

* ``POST /v1/messages/batches`` (``{"requests": [{"custom_id", "params"}]}``; a bad request is a
  400 at creation, as Anthropic's is: no ``requests``, a ``custom_id`` outside
  ``[A-Za-z0-9_-]{1,64}`` or repeated, ``params`` without ``model``, ``max_tokens`` or
  ``messages``), ``GET /v1/messages/batches/{id}``, ``POST /v1/messages/batches/{id}/cancel``,
  ``GET /v1/messages/batches/{id}/results`` (JSONL, only once the batch has ended);
* ``POST /v1/messages``: one live Messages API reply (what litellm's ``anthropic/…`` completion
  sends), by the provider's reply rules.

The state machine follows the same knobs as the OpenAI-shaped fake (``provider.batches
.configure(...)``): ``processing_status`` is ``in_progress`` for ``validating_s +
in_progress_s`` (``request_counts.succeeded`` grows with the elapsed fraction), then ``ended``;
``outcome="expired"`` answers the first ``expire_fraction`` and marks the rest ``expired``;
``outcome="failed"`` (Anthropic has no failed batch: its requests fail) makes every result
``errored`` (``invalid_request_error``); ``error_rate`` of the requests (seeded) are ``errored``
with an ``api_error``; ``cancel`` goes through ``canceling`` (``finalizing_s``) to ``ended``
with the requests not done by then ``canceled``. Results come in a shuffled order, never the
input order. Answers are the provider's own (mode, needles, DSPy formatting), so a batch
answer equals the live answer to the same prompt.
"""

from __future__ import annotations

import datetime
import json
import random
import re
import threading
import time
import uuid
from typing import Any

import attrs

from ponder.support.dspy_format import format_for_dspy, message_text

_VALID_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat().replace(
        "+00:00", "Z")


@attrs.define
class _MessageBatch:
    id: str
    requests: list[dict[str, Any]]
    created_at: float
    number: int
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    status: str = "in_progress"
    results: list[dict[str, Any]] | None = None
    succeeded: int = 0


class FakeAnthropicBatches:
    """Anthropic's Message Batches and Messages endpoints of one fake provider."""

    def __init__(self, owner: Any) -> None:
        #: the :class:`FakeBatches` whose ``config`` (the state-machine knobs) this follows
        self.owner = owner
        self._lock = threading.Lock()
        self._batches: dict[str, _MessageBatch] = {}
        self.answered = 0
        self.live = 0

    @staticmethod
    def handles(route: str) -> bool:
        return route == "/messages" or route.startswith("/messages/")

    def stats(self) -> dict[str, Any]:
        with self._lock:
            statuses: dict[str, int] = {}
            for batch in self._batches.values():
                statuses[batch.status] = statuses.get(batch.status, 0) + 1
            return {"batches": len(self._batches), "by_status": statuses,
                    "answered": self.answered, "live": self.live}

    # ---------------------------------------------------------------- HTTP
    def handle(self, h: Any, method: str, route: str, raw: bytes) -> None:
        parts = route.strip("/").split("/")[1:]  # after "messages"
        send = self.owner.provider._send
        try:
            if method == "POST" and not parts:
                send(h, 200, self._message(self._body(raw)))
            elif method == "POST" and parts == ["batches"]:
                send(h, 200, self._create(self._body(raw)))
            elif method == "GET" and len(parts) == 2 and parts[0] == "batches":
                send(h, 200, self._view(parts[1]))
            elif method == "POST" and len(parts) == 3 and parts[2] == "cancel":
                send(h, 200, self._cancel(parts[1]))
            elif method == "GET" and len(parts) == 3 and parts[2] == "results":
                send(h, 200, self._results(parts[1]))
            else:
                raise KeyError(f"{method} /v1/messages/{'/'.join(parts)}")
        except ValueError as exc:
            self._error(h, 400, "invalid_request_error", str(exc))
        except KeyError as exc:
            self._error(h, 404, "not_found_error", f"no such object: {exc.args[0]}")

    def _error(self, h: Any, status: int, kind: str, message: str) -> None:
        self.owner.provider._fail("not_found" if status == 404 else "bad_request")
        self.owner.provider._send(h, status, {"type": "error",
                                              "error": {"type": kind, "message": message}})

    @staticmethod
    def _body(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError:
            raise ValueError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        return body

    # ---------------------------------------------------------------- model
    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise ValueError("requests: a non-empty list is required")
        seen: set[str] = set()
        for number, request in enumerate(requests):
            custom_id = (request or {}).get("custom_id") if isinstance(request, dict) else None
            if not isinstance(custom_id, str) or not _VALID_ID.match(custom_id):
                raise ValueError(f"requests.{number}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
            if custom_id in seen:
                raise ValueError(f"requests.{number}.custom_id: {custom_id!r} is repeated")
            seen.add(custom_id)
            params = request.get("params")
            missing = [k for k in ("model", "max_tokens", "messages")
                       if not isinstance(params, dict) or not params.get(k)]
            if missing:
                raise ValueError(f"requests.{number}.params.{missing[0]}: Field required")
        with self._lock:
            batch = _MessageBatch(id=f"msgbatch_fake_{uuid.uuid4().hex[:16]}",
                                  requests=list(requests), created_at=time.time(),
                                  number=len(self._batches))
            self._batches[batch.id] = batch
        return self._view(batch.id)

    def _cancel(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batches[batch_id]
        self._advance(batch, self.owner.config)  # a batch whose time is up has ended already
        with self._lock:
            if batch.cancel_initiated_at is None and batch.ended_at is None:
                batch.cancel_initiated_at = time.time()
        return self._view(batch_id)

    def _results(self, batch_id: str) -> bytes:
        view = self._view(batch_id)
        if view["processing_status"] != "ended":
            raise ValueError(f"batch {batch_id} has not ended; its results are not ready")
        with self._lock:
            rows = list(self._batches[batch_id].results or [])
        return "".join(json.dumps(row) + "\n" for row in rows).encode()

    def _view(self, batch_id: str) -> dict[str, Any]:
        """The batch as Anthropic's Message Batch object, after moving it along its timeline."""
        with self._lock:
            batch = self._batches[batch_id]
        self._advance(batch, self.owner.config)
        total = len(batch.requests)
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch.results is None:
            counts["succeeded"] = batch.succeeded
            counts["processing"] = total - batch.succeeded
        else:
            for row in batch.results:
                counts[row["result"]["type"]] += 1
        base = self.owner.provider.base_url.rstrip("/").removesuffix("/v1")
        return {
            "id": batch.id, "type": "message_batch", "processing_status": batch.status,
            "request_counts": counts, "ended_at": _iso(batch.ended_at),
            "created_at": _iso(batch.created_at), "expires_at": _iso(batch.created_at + 86400),
            "archived_at": None, "cancel_initiated_at": _iso(batch.cancel_initiated_at),
            "results_url": (f"{base}/v1/messages/batches/{batch.id}/results"
                            if batch.status == "ended" else None),
        }

    def _advance(self, batch: _MessageBatch, cfg: Any) -> None:
        with self._lock:
            if batch.ended_at is not None:
                return
            now = time.time()
            total = len(batch.requests)
            running_s = cfg.validating_s + cfg.in_progress_s  # Anthropic validates at creation
            if batch.cancel_initiated_at is not None:
                ran = min(batch.cancel_initiated_at - batch.created_at, running_s)
                done = total if running_s == 0 else int(total * ran / running_s)
                if now - batch.cancel_initiated_at < cfg.finalizing_s:
                    batch.status, batch.succeeded = "canceling", done
                    return
                self._end(batch, cfg, done, "canceled")
                return
            elapsed = now - batch.created_at
            if elapsed < running_s:
                batch.succeeded = int(total * elapsed / running_s)
                return
            if cfg.outcome == "expired":
                self._end(batch, cfg, int(total * cfg.expire_fraction), "expired")
            else:
                self._end(batch, cfg, total, None)

    def _end(self, batch: _MessageBatch, cfg: Any, answered: int, unfinished: str | None) -> None:
        """Write the results (called with the lock held)."""
        rng = random.Random(f"anthropic:{cfg.seed}:{batch.number}")
        rows: list[dict[str, Any]] = []
        for number, request in enumerate(batch.requests):
            custom_id = request["custom_id"]
            if number >= answered:
                result: dict[str, Any] = {"type": unfinished}
            elif cfg.outcome == "failed":
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error",
                    "message": "the fake provider was told to fail this batch's requests"}}}
            elif rng.random() < cfg.error_rate:
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "api_error", "message": "Internal server error (fake)"}}}
            else:
                result = {"type": "succeeded", "message": self._reply(request["params"])}
                self.answered += 1
            rows.append({"custom_id": custom_id, "result": result})
        if cfg.shuffle and len(rows) > 1:
            order = list(rows)
            rng.shuffle(rows)
            if rows == order:  # never the input order: a client must join on custom_id
                rows.append(rows.pop(0))
        batch.results, batch.status, batch.ended_at = rows, "ended", time.time()

    def _message(self, params: dict[str, Any]) -> dict[str, Any]:
        """One live Messages API reply."""
        if not params.get("messages") or not params.get("max_tokens"):
            raise ValueError("messages and max_tokens are required")
        with self._lock:
            self.live += 1
        reply = self._reply(params)
        provider = self.owner.provider
        with provider._lock:  # the provider's own counters: a live request it answered
            provider._completed += 1
            provider._prompt_tokens += reply["usage"]["input_tokens"]
            provider._completion_tokens += reply["usage"]["output_tokens"]
        return reply

    def _reply(self, params: dict[str, Any]) -> dict[str, Any]:
        """A Messages API ``message`` for ``params``, by the provider's reply rules."""
        provider = self.owner.provider
        cfg = provider.config
        messages = [m for m in params.get("messages") or [] if isinstance(m, dict)]
        system = params.get("system")
        if isinstance(system, list):  # content blocks
            system = "\n".join(message_text(block) for block in system)
        if system:
            messages = [{"role": "system", "content": str(system)}, *messages]
        texts = [message_text(m.get("content")) for m in messages]
        values = provider._reply_text({"mode": cfg.mode, "reply": None}, messages, texts)
        if cfg.dspy_format or not isinstance(values, str):
            content = format_for_dspy(messages, values, json_mode=False)
        else:
            content = values
        count = self.owner._count_tokens
        return {"id": f"msg_fake_{uuid.uuid4().hex[:16]}", "type": "message",
                "role": "assistant", "model": params.get("model") or cfg.model,
                "content": [{"type": "text", "text": content}], "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": count(sum(len(t) for t in texts)),
                          "output_tokens": count(len(content))}}
