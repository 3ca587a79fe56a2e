"""Anthropic's Message Batches, behind the same interface as the OpenAI-shaped client.

Why ponder's own client: litellm (1.110) covers only part of Anthropic's batch API.
``retrieve_batch`` and ``file_content`` (the results) work for ``custom_llm_provider =
"anthropic"``, but ``create_batch`` refuses it ("Batch creation not yet implemented for
Anthropic") and ``cancel_batch`` has no Anthropic branch; its ``retrieve_batch`` also maps every
``ended`` batch to ``completed`` and drops the ``canceled``/``expired`` counts. A job needs all
four steps from one place, so this module speaks the Message Batches API itself (``httpx``, the
``x-api-key`` and ``anthropic-version`` headers): ``POST /v1/messages/batches`` with the
requests inline (``{"custom_id", "params"}``; Anthropic has no batch input file),
``GET /v1/messages/batches/{id}``, ``POST …/{id}/cancel``, and the ``results_url`` JSONL,
streamed with :func:`ponder.support.batch.stream_download`. Live retries of the requests the
batch did not answer do go through litellm's ``completion`` (``anthropic/<model>``), which
covers the Messages API.

Everything is translated to the OpenAI shapes :class:`ponder.batchjobs.jobs.BatchJobs` reads,
so the store, polling, joining on ``custom_id``, retries and pricing are the same code for both:

- ``processing_status`` ``in_progress`` -> ``in_progress``, ``canceling`` -> ``cancelling``,
  ``ended`` -> ``cancelled`` (a cancel was asked), ``expired`` (some requests expired) or
  ``completed``; ``request_counts`` -> ``total``, ``completed`` (succeeded), ``failed``
  (errored + canceled + expired), the provider's own counts kept as ``anthropic_counts``;
- each result line -> an output line: ``succeeded`` as a 200 ``chat.completion`` body (text,
  ``prompt_tokens``/``completion_tokens``), ``errored`` with the provider's error type and
  message, ``canceled``/``expired`` as ``batch_cancelled``/``batch_expired``.

Anthropic's ``custom_id`` allows ``[A-Za-z0-9_-]{1,64}``; ponder's ids may hold ``.`` and ``:``,
so they are escaped reversibly (``_`` -> ``__``, ``.`` -> ``_d``, ``:`` -> ``_c``).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

from ponder.batchjobs.client import BatchClient
from ponder.errors import ConfigError
from ponder.support.retry import call_with_retry

ANTHROPIC_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
#: the "file" id of a batch's results (Anthropic has no Files API for batches)
RESULTS_PREFIX = "anthropic_results:"
#: the "file" id of the local input file (requests go inline, nothing is uploaded)
LOCAL_PREFIX = "local:"

_VALID_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ESCAPES = {"_": "__", ".": "_d", ":": "_c"}
_UNESCAPES = {"_": "_", "d": ".", "c": ":"}


def to_anthropic_id(custom_id: str) -> str:
    """``custom_id`` in Anthropic's alphabet (reversible); a ConfigError if it cannot be."""
    escaped = "".join(_ESCAPES.get(ch, ch) for ch in custom_id)
    if not _VALID_ID.match(escaped):
        raise ConfigError(f"request id {custom_id!r} cannot be an Anthropic custom_id (letters, "
                          "digits, '-' and '_', at most 64 once escaped); shorten its 'id'")
    return escaped


def from_anthropic_id(escaped: str) -> str:
    out, i = [], 0
    while i < len(escaped):
        ch = escaped[i]
        if ch == "_" and i + 1 < len(escaped) and escaped[i + 1] in _UNESCAPES:
            out.append(_UNESCAPES[escaped[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def to_params(body: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """An OpenAI chat body as Messages API ``params``: system messages become ``system``."""
    system = [str(m.get("content") or "") for m in body.get("messages") or []
              if m.get("role") == "system"]
    messages = [{"role": m.get("role"), "content": m.get("content")}
                for m in body.get("messages") or [] if m.get("role") != "system"]
    params: dict[str, Any] = {"model": body.get("model"), "messages": messages,
                              "max_tokens": int(body.get("max_tokens") or max_tokens)}
    if system:
        params["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p", "stop_sequences", "metadata"):
        if body.get(key) is not None:
            params[key] = body[key]
    return params


def to_openai_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """A Message Batch as the OpenAI Batch object :class:`BatchJobs` stores."""
    counts = {k: int((batch.get("request_counts") or {}).get(k) or 0)
              for k in ("processing", "succeeded", "errored", "canceled", "expired")}
    state = batch.get("processing_status")
    if state == "ended":
        status = ("cancelled" if batch.get("cancel_initiated_at")
                  else "expired" if counts["expired"] else "completed")
    else:
        status = {"canceling": "cancelling"}.get(str(state), "in_progress")
    ended = state == "ended"
    return {
        "id": batch.get("id"), "object": "batch", "status": status,
        "provider_status": state, "anthropic_counts": counts,
        "request_counts": {"total": sum(counts.values()), "completed": counts["succeeded"],
                           "failed": counts["errored"] + counts["canceled"] + counts["expired"]},
        "output_file_id": f"{RESULTS_PREFIX}{batch.get('id')}" if ended else None,
        "error_file_id": None, "errors": None, "results_url": batch.get("results_url"),
    }


def to_openai_line(line: dict[str, Any]) -> dict[str, Any]:
    """One results line as an OpenAI batch output line (joined on the original custom_id)."""
    custom_id = from_anthropic_id(str(line.get("custom_id")))
    result = line.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message") or {}
        text = "".join(str(part.get("text") or "") for part in message.get("content") or []
                       if isinstance(part, dict) and part.get("type") == "text")
        usage = message.get("usage") or {}
        body = {"id": message.get("id"), "object": "chat.completion",
                "model": message.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": message.get("stop_reason")}],
                "usage": {"prompt_tokens": int(usage.get("input_tokens") or 0),
                          "completion_tokens": int(usage.get("output_tokens") or 0)}}
        return {"custom_id": custom_id, "response": {"status_code": 200, "body": body},
                "error": None}
    if kind == "errored":
        error = (result.get("error") or {}).get("error") or result.get("error") or {}
        return {"custom_id": custom_id, "response": None,
                "error": {"code": error.get("type") or "errored",
                          "message": error.get("message") or "the request errored"}}
    code = {"canceled": "batch_cancelled", "expired": "batch_expired"}.get(str(kind), str(kind))
    return {"custom_id": custom_id, "response": None,
            "error": {"code": code, "message": f"this request was not run: {kind}"}}


class AnthropicBatchClient(BatchClient):
    """One Anthropic target's Message Batches (see the module docstring)."""

    def _base(self) -> str:
        base = (self.target.api_base or ANTHROPIC_BASE).rstrip("/")
        return base.removesuffix("/v1")

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION, "content-type": "application/json"}
        if self.target.api_key:
            headers["x-api-key"] = self.target.api_key
        return headers

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        import httpx

        url = f"{self._base()}/v1/messages/batches{path}"

        def send() -> dict[str, Any]:
            response = httpx.request(method, url, headers=self._headers(), json=body,
                                     timeout=self.timeout)
            if response.status_code >= 400:
                raise _http_error(response)
            return response.json()

        return call_with_retry(send, policy=self.retry)

    def upload(self, path: Path) -> dict[str, Any]:
        """Nothing to upload: the requests go inline with :meth:`create`."""
        return {"id": f"{LOCAL_PREFIX}{Path(path).resolve()}"}

    def create(self, input_file_id: str, *, endpoint: str, completion_window: str,
               metadata: dict[str, str]) -> dict[str, Any]:
        from ponder.support.batch import parse_jsonl

        path = Path(input_file_id.removeprefix(LOCAL_PREFIX))
        max_tokens = int(self.target.model_info.max_output_tokens or 1024)
        requests = [{"custom_id": to_anthropic_id(str(line["custom_id"])),
                     "params": to_params(line.get("body") or {}, max_tokens)}
                    for line in parse_jsonl(path)]
        return to_openai_batch(self._request("POST", "", {"requests": requests}))

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        return to_openai_batch(self._request("GET", f"/{batch_id}"))

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return to_openai_batch(self._request("POST", f"/{batch_id}/cancel"))

    def download(self, file_id: str, path: Path) -> Path:
        """The results as OpenAI output lines at ``path`` (the provider's own JSONL beside it,
        ``*.anthropic.jsonl``); the local input file copied for ``local:`` ids."""
        import httpx

        from ponder.support.batch import parse_jsonl, stream_download
        from ponder.support.fileutils import atomic_write

        path = Path(path)
        if file_id.startswith(LOCAL_PREFIX):
            source = Path(file_id.removeprefix(LOCAL_PREFIX))
            if not source.is_file():
                raise FileNotFoundError(f"the batch's input file {source} is gone")
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, path)
            return path
        batch_id = file_id.removeprefix(RESULTS_PREFIX)
        url = self._request("GET", f"/{batch_id}").get("results_url") or \
            f"{self._base()}/v1/messages/batches/{batch_id}/results"
        raw = path.with_suffix(".anthropic.jsonl")

        async def fetch() -> Path:
            async with httpx.AsyncClient(headers=self._headers(), timeout=self.timeout,
                                         follow_redirects=True) as client:
                return await stream_download(url, raw, client=client)

        call_with_retry(lambda: asyncio.run(fetch()), policy=self.retry)
        lines = [to_openai_line(line) for line in parse_jsonl(raw)]
        return atomic_write(path, "".join(json.dumps(line, ensure_ascii=False) + "\n"
                                          for line in lines))

    def _kwargs(self) -> dict[str, Any]:
        kwargs = super()._kwargs()
        if self.target.api_base:  # litellm appends /v1/messages itself
            kwargs["api_base"] = self._base()
        return kwargs


def _http_error(response: Any) -> Exception:
    """The provider's error as an exception ponder's retry layer understands (429/5xx retry)."""
    import httpx

    from ponder.support.secrets import redact

    try:
        message = (response.json().get("error") or {}).get("message") or response.text
    except (ValueError, AttributeError):
        message = response.text
    return httpx.HTTPStatusError(
        redact(f"Anthropic Message Batches: HTTP {response.status_code}: {message}"),
        request=response.request, response=response)

