"""ponder: LLM programs over contexts far larger than a model's window.

The package is a small kernel (this folder) plus plugins (``ponder.plugins`` and any installed
distribution with entry points in the ``ponder`` group). Public names are imported lazily so
``import ponder`` and ``ponder --help`` stay fast: nothing here imports dspy or litellm.
"""

from __future__ import annotations

import importlib
from typing import Any

from ponder.hookspecs import PLUGIN_API_VERSION, hookimpl, hookspec

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    # registry and plugins
    "Registry": "ponder.registry",
    "load_plugins": "ponder.loader",
    "PluginSet": "ponder.loader",
    # config
    "Config": "ponder.config",
    "load_config": "ponder.config",
    # retry
    "RetryPolicy": "ponder.retry",
    "retry_with_backoff": "ponder.retry",
    "retry_sync": "ponder.retry",
    "is_retryable": "ponder.retry",
    # typed partial results
    "FailedChunk": "ponder.results",
    "ChunkResult": "ponder.results",
    "BatchResult": "ponder.results",
    # progress
    "ProgressContext": "ponder.progress",
    # secrets
    "Secret": "ponder.secrets",
    "clean_secrets": "ponder.secrets",
    "mask_value": "ponder.secrets",
    "get_api_key": "ponder.secrets",
    # observability
    "Tracker": "ponder.observability",
    "track": "ponder.observability",
    "SpanType": "ponder.observability",
    "enable_tracking": "ponder.observability",
    # batch
    "BatchRequest": "ponder.batch",
    "create_jsonl": "ponder.batch",
    "parse_jsonl": "ponder.batch",
    "BatchPoller": "ponder.batch",
    "stream_download": "ponder.batch",
    # file utilities
    "atomic_write": "ponder.fileutils",
    "get_cache_dir": "ponder.fileutils",
    "smart_link": "ponder.fileutils",
    "smart_rmtree": "ponder.fileutils",
    "sync_directory": "ponder.fileutils",
    "path_to_module": "ponder.fileutils",
    # kinds
    "ModelInfo": "ponder.kinds",
    # running
    "System": "ponder.system",
    "Answer": "ponder.answer",
}

__all__ = ["PLUGIN_API_VERSION", "__version__", "hookimpl", "hookspec", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ponder' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next access is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

