"""The provider's Files and Batch endpoints, through litellm, plus a streamed download.

litellm covers upload, create, retrieve and cancel for OpenAI-shaped providers; the output and
error files are fetched with :func:`ponder.support.batch.stream_download` instead of litellm's
``file_content`` (which holds the whole file in memory), from the same ``/files/{id}/content``
endpoint. Every call is retried on transient errors with ponder's one retry layer.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from ponder.batchjobs.settings import BatchTarget
from ponder.support.retry import RetryPolicy, call_with_retry

OPENAI_BASE = "https://api.openai.com/v1"


class BatchClient:
    """One provider target's Files and Batch API."""

    def __init__(self, target: BatchTarget, *, retry: RetryPolicy | None = None,
                 timeout: float = 120.0) -> None:
        self.target = target
        self.retry = retry or RetryPolicy(max_retries=3)
        self.timeout = timeout

    def _kwargs(self) -> dict[str, Any]:
        t = self.target
        kwargs: dict[str, Any] = {"custom_llm_provider": t.provider, "timeout": self.timeout}
        if t.api_base:
            kwargs["api_base"] = t.api_base
        if t.api_key:
            kwargs["api_key"] = t.api_key
        return kwargs

    def _raw(self, name: str, **kwargs: Any) -> Any:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        fn = getattr(litellm, name)
        return call_with_retry(lambda: fn(**kwargs, **self._kwargs()), policy=self.retry)

    def _call(self, name: str, **kwargs: Any) -> dict[str, Any]:
        return _as_dict(self._raw(name, **kwargs))

    def upload(self, path: Path) -> dict[str, Any]:
        """Upload a batch input file; the provider's file object."""
        data = Path(path).read_bytes()
        return self._call("create_file", file=(Path(path).name, data), purpose="batch")

    def create(self, input_file_id: str, *, endpoint: str, completion_window: str,
               metadata: dict[str, str]) -> dict[str, Any]:
        return self._call("create_batch", input_file_id=input_file_id, endpoint=endpoint,
                          completion_window=completion_window, metadata=metadata)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        return self._call("retrieve_batch", batch_id=batch_id)

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self._call("cancel_batch", batch_id=batch_id)

    def download(self, file_id: str, path: Path) -> Path:
        """Stream a file's content to ``path`` (atomically: whole or not at all).

        OpenAI-shaped ``/files/{id}/content`` endpoints are streamed with
        :func:`ponder.support.batch.stream_download`; other providers (Azure's URLs carry an
        api-version) go through litellm's ``file_content``, written with ``atomic_write``.
        """
        import httpx

        from ponder.support.batch import stream_download

        if self.target.provider != "openai":
            from ponder.support.fileutils import atomic_write

            content = self._raw("file_content", file_id=file_id)
            return atomic_write(path, getattr(content, "content", content))

        url = f"{(self.target.api_base or OPENAI_BASE).rstrip('/')}/files/{file_id}/content"
        headers = {"Authorization": f"Bearer {self.target.api_key}"} if self.target.api_key \
            else {}

        async def fetch() -> Path:
            async with httpx.AsyncClient(headers=headers, timeout=self.timeout,
                                         follow_redirects=True) as client:
                return await stream_download(url, path, client=client)

        return call_with_retry(lambda: asyncio.run(fetch()), policy=self.retry)

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """One request answered live (a request the batch did not answer)."""
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        params = {k: v for k, v in body.items() if k not in ("model", "messages")}
        result = call_with_retry(
            lambda: litellm.completion(model=self.target.litellm_model,
                                       messages=body["messages"], num_retries=0,
                                       **params, **self._kwargs()),
            policy=self.retry)
        return _as_dict(result)


def _as_dict(value: Any) -> dict[str, Any]:
    for method in ("model_dump", "dict", "to_dict"):
        fn = getattr(value, method, None)
        if callable(fn):
            return dict(fn())
    return dict(value)
