"""ponder: LLM programs over contexts far larger than a model's window.

The package is a small kernel (this folder) plus plugins (``ponder.plugins`` and any installed
distribution with entry points in the ``ponder`` group). Public names are imported lazily so
``import ponder`` and ``ponder --help`` stay fast: nothing here imports dspy or litellm.
"""

from __future__ import annotations

import importlib
from typing import Any

from ponder.kernel.hookspecs import PLUGIN_API_VERSION, hookimpl, hookspec

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    # registry and plugins
    "Registry": "ponder.kernel.registry",
    "load_plugins": "ponder.kernel.loader",
    "PluginSet": "ponder.kernel.loader",
    # config
    "Config": "ponder.kernel.config",
    "load_config": "ponder.kernel.config",
    # retry
    "RetryPolicy": "ponder.support.retry",
    "retry_with_backoff": "ponder.support.retry",
    "retry_sync": "ponder.support.retry",
    "is_retryable": "ponder.support.retry",
    # typed partial results
    "FailedChunk": "ponder.support.results",
    "ChunkResult": "ponder.support.results",
    "BatchResult": "ponder.support.results",
    # progress
    "ProgressContext": "ponder.support.progress",
    # secrets
    "Secret": "ponder.support.secrets",
    "clean_secrets": "ponder.support.secrets",
    "mask_value": "ponder.support.secrets",
    "get_api_key": "ponder.support.secrets",
    # observability
    "Tracker": "ponder.support.observability",
    "track": "ponder.support.observability",
    "SpanType": "ponder.support.observability",
    "enable_tracking": "ponder.support.observability",
    # batch
    "BatchRequest": "ponder.support.batch",
    "create_jsonl": "ponder.support.batch",
    "parse_jsonl": "ponder.support.batch",
    "BatchPoller": "ponder.support.batch",
    "stream_download": "ponder.support.batch",
    # file utilities
    "atomic_write": "ponder.support.fileutils",
    "get_cache_dir": "ponder.support.fileutils",
    "smart_link": "ponder.support.fileutils",
    "smart_rmtree": "ponder.support.fileutils",
    "sync_directory": "ponder.support.fileutils",
    "path_to_module": "ponder.support.fileutils",
    # kinds
    "ModelInfo": "ponder.kernel.kinds",
    # running
    "System": "ponder.engine.system",
    "Answer": "ponder.engine.answer",
    # the Python API: builder, one-liner, pipelines, sessions
    "build": "ponder.builder",
    "Builder": "ponder.builder",
    "ask": "ponder.builder",
    "Pipeline": "ponder.pipeline.model",
    "Session": "ponder.sessions.session",
    # evaluation: the subpackage itself, which is callable (ponder.evaluate(system, dataset))
    "evaluate": "ponder.evaluate",
}

__all__ = ["PLUGIN_API_VERSION", "__version__", "hookimpl", "hookspec", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ponder' has no attribute {name!r}")
    value = importlib.import_module(module)
    if module != f"{__name__}.{name}":  # a subpackage's name is the (callable) module itself
        value = getattr(value, name)
    globals()[name] = value  # cache: the next access is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

