"""Provider batch jobs: build the JSONL request file, poll a job, download its results.

httpx is imported only inside :func:`stream_download`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ponder.errors import PonderError
from ponder.support.fileutils import atomic_output, atomic_write, get_cache_dir
from ponder.support.retry import RetryPolicy, retry_with_backoff

TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "expired", "cancelled"})

_RESERVED_PARAMS = frozenset({"model", "messages"})


def _check_params(_inst: Any, _attr: attrs.Attribute, value: dict[str, Any]) -> None:
    clash = sorted(_RESERVED_PARAMS & set(value))
    if clash:
        raise ValueError(f"params must not set {', '.join(clash)}; use the fields of BatchRequest")


def _check_custom_id(_inst: Any, _attr: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"custom_id must be a non-empty string, got {value!r}")


@attrs.frozen
class BatchRequest:
    """One request of a batch, in OpenAI's batch format."""

    custom_id: str = attrs.field(validator=_check_custom_id)
    messages: list[dict[str, Any]]
    model: str | None = None
    params: dict[str, Any] = attrs.field(factory=dict, validator=_check_params)
    url: str = "/v1/chat/completions"

    def to_line(self) -> dict[str, Any]:
        """``{"custom_id", "method": "POST", "url", "body": {"model", "messages", **params}}``;
        ``model`` is left out of the body when None."""
        body: dict[str, Any] = {}
        if self.model is not None:
            body["model"] = self.model
        body["messages"] = self.messages
        body.update(self.params)
        return {"custom_id": self.custom_id, "method": "POST", "url": self.url, "body": body}


def create_jsonl(
    requests: Iterable[BatchRequest | Mapping[str, Any]], path: str | os.PathLike[str] | None = None
) -> Path:
    """Write ``requests`` as a batch JSONL file (atomically) and return its path.

    Items may be :class:`BatchRequest` or ready-made line dicts. ``path`` defaults to a new file
    under ``get_cache_dir("batches")``. A repeated ``custom_id`` or an empty batch is a
    ``ValueError`` (providers reject both, after the upload).
    """
    lines: list[str] = []
    seen: dict[str, int] = {}
    for number, request in enumerate(requests):
        line = request.to_line() if isinstance(request, BatchRequest) else dict(request)
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise ValueError(f"request {number} has no custom_id")
        if custom_id in seen:
            raise ValueError(
                f"duplicate custom_id {custom_id!r} (requests {seen[custom_id]} and {number})"
            )
        seen[custom_id] = number
        lines.append(json.dumps(line, ensure_ascii=False))
    if not lines:
        raise ValueError("a batch needs at least one request")
    if path is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = get_cache_dir("batches") / f"batch-{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
    return atomic_write(path, "\n".join(lines) + "\n")


def parse_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL file into a list of objects; blank lines are skipped.

    A line that is not a JSON object raises ``ValueError`` naming ``file:line``.
    """
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
                ) from None
            if not isinstance(record, dict):
                raise ValueError(
                    f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}"
                )
            records.append(record)
    return records


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@attrs.define
class BatchPoller:
    """Polls a batch job until it reaches a terminal status.

    ``timeout`` (seconds, measured with ``clock``) bounds the whole wait. With ``retry``, a
    transient error from ``get_status`` is retried instead of ending a day-long wait.
    """

    poll_interval: float = 30.0
    on_progress: Callable[[dict[str, Any]], Any] | None = None
    timeout: float | None = None
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    retry: RetryPolicy | None = None

    async def poll_until_complete(
        self, get_status: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """Call ``get_status()`` every ``poll_interval`` seconds until its ``"status"`` is one of
        completed, failed, expired or cancelled; return that final dict.

        ``on_progress(status_dict)`` (sync or async) sees every poll. Raises ``TimeoutError``
        when ``timeout`` passes first.
        """
        start = self.clock()
        while True:
            if self.retry is not None:
                status = await retry_with_backoff(get_status, policy=self.retry, sleep=self.sleep)
            else:
                status = await get_status()
            if not isinstance(status, Mapping) or "status" not in status:
                raise ValueError(
                    f"get_status must return a dict with a 'status' key, got {status!r}"
                )
            if self.on_progress is not None:
                await _maybe_await(self.on_progress(status))
            state = str(status["status"]).lower()
            if state in TERMINAL_STATUSES:
                return dict(status)
            wait = self.poll_interval
            if self.timeout is not None:
                remaining = self.timeout - (self.clock() - start)
                if remaining <= 0:
                    raise TimeoutError(
                        f"batch still {state!r} after {self.timeout:g}s (poll timeout)"
                    )
                wait = min(wait, remaining)
            await _maybe_await(self.sleep(wait))


class DownloadError(PonderError):
    """A download answered with a non-2xx status; ``status_code`` lets retry logic decide."""

    def __init__(self, message: str, *, status_code: int, url: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.url = url


def safe_url(url: str) -> str:
    """``url`` without query string, fragment or user info (any of which may hold a key)."""
    try:
        parts = urllib.parse.urlsplit(str(url))
    except ValueError:
        return "<unparsable url>"
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


async def stream_download(
    url: str,
    output_path: str | os.PathLike[str],
    chunk_size: int = 8192,
    *,
    client: Any = None,
    timeout: float = 60,
) -> Path:
    """Stream ``url`` to ``output_path`` without holding it in memory; return the path.

    Bytes go to a temp file in the same directory, renamed over ``output_path`` only when the
    whole body arrived, so an error never leaves a partial file. A non-2xx answer raises
    :class:`DownloadError` whose message names the URL without its query string. ``client`` is
    an ``httpx.AsyncClient`` to reuse (its own timeout applies); otherwise one is made.
    """
    import httpx

    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    own_client = client is None
    if own_client:
        client = httpx.AsyncClient(timeout=timeout, follow_redirects=True)
    try:
        async with client.stream("GET", url) as response:
            if not 200 <= response.status_code < 300:
                where = safe_url(url)
                status = f"HTTP {response.status_code} {response.reason_phrase or ''}".rstrip()
                raise DownloadError(
                    f"download of {where} failed: {status}",
                    status_code=response.status_code,
                    url=safe_url(url),
                )
            # a temp file beside ``out``, renamed over it once the whole body is written
            with atomic_output(out, suffix=".part", keep_mode=False) as fh:
                async for chunk in response.aiter_bytes(chunk_size):
                    fh.write(chunk)
    finally:
        if own_client:
            await client.aclose()
    return out
