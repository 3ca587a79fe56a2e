"""The ``rlm`` strategy: ``dspy.RLM`` exploring the context with code, in a sandbox.

A Recursive Language Model keeps the context out of the prompt: the whole context, rendered with
``path`` headers and line numbers, is bound to the variable ``context`` in a Python REPL; the
root model writes short snippets that search and slice it, calls ``llm_query(text)`` (or
``llm_query_batched(texts)``) on the slices that matter, and ends with ``SUBMIT(answer=...)``.
It suits questions a fixed chunk plan serves badly (find, then follow a reference) and contexts
far larger than the window.

**The sandbox.** The generated code runs in `Monty <https://github.com/pydantic/monty>`_
(``pip install pydantic-monty``): a Python interpreter written in Rust, run in worker
subprocesses, with no filesystem, network, environment or subprocess access; a snippet that
tries (``open('/etc/passwd')``, ``os.environ``, ``import socket``) gets an error, which the model
sees, and each refusal is logged as a warning, recorded on the run's span (``refused``) and
listed in the answer's ``problems``. Each snippet runs under a time limit, a memory limit and a
cap on what it prints (collected output past ``max_print_bytes`` fails the snippet, so a model
printing 100 MB costs neither the sandbox nor ponder that memory); a snippet that hits one gets
the error, the hit is logged and listed in ``problems`` too, and after a time or memory limit the
sandbox is restarted (Monty gives no guarantee about a heap stopped mid-operation), which the
model is told: its variables are gone, ``context`` is bound again. dspy's default sandbox
(Deno + Pyodide) downloads its runtime from the web and is never used. Running generated code
unsandboxed, in a local CPython subprocess (``dspy.LocalInterpreter``) with your user's files,
environment and network, needs ``unsafe_local_exec = true`` and logs a warning on every run.

**Metering.** ``llm_query`` sub-calls go through ``services.predict`` (``role="sub"``): retried,
limit-checked, metered and traced like every other call, and cut to fit the window. The root
model's calls are made by ``dspy.RLM`` itself (its own ``dspy.Predict``, not the configured
predictor, and without ponder's retry); their usage is added to the run's before every code
execution, where the limits are checked too, so a limit stops the run within one iteration.

**LM calls**: one root call per iteration until ``SUBMIT`` (at most ``max_iterations``, plus one
``extract`` call when that is reached without a ``SUBMIT``), plus one call per ``llm_query``
(at most ``max_llm_calls``).

Config example::

    [strategy]
    name = "rlm"
    # max_iterations = 12          # root-model turns (each writes and runs one snippet)
    # max_llm_calls = 30           # llm_query sub-calls per run
    # max_output_chars = 4000      # printed output shown back per turn (default: fits the window)
    # exec_timeout_s = 30          # per snippet
    # memory_mb = 512              # per snippet's heap
    # max_print_bytes = 1048576    # printed output collected per snippet; more fails it
    # unsafe_local_exec = false    # true: run generated code in a local CPython, NOT sandboxed
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import attrs

from ponder import hookimpl

PONDER_PLUGIN_API = 1

log = logging.getLogger("ponder.strategy.rlm")

_optional_positive = attrs.validators.optional(attrs.validators.ge(1))

#: Error text by which Monty refuses what its sandbox does not provide.
_REFUSAL_TYPES = ("PermissionError", "ModuleNotFoundError", "ImportError", "OSError",
                  "FileNotFoundError", "IsADirectoryError", "NotADirectoryError")
_REFUSAL_TEXT = "not supported in this environment"
#: ...and by leaving out what it never provides (``os.system``, ``os.popen``, ``sys.modules``)
_MISSING_OS = ("AttributeError: module 'os' has no attribute",
               "AttributeError: module 'sys' has no attribute")


@attrs.define
class RLMSettings:
    #: root-model turns; each writes and runs one snippet
    max_iterations: int = attrs.field(default=12, validator=attrs.validators.ge(1))
    #: llm_query / llm_query_batched sub-calls allowed per run
    max_llm_calls: int = attrs.field(default=30, validator=attrs.validators.ge(0))
    #: printed output shown back to the model per turn; None: what fits the window
    max_output_chars: int | None = attrs.field(default=None, validator=_optional_positive)
    #: seconds one snippet may run in the sandbox
    exec_timeout_s: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    #: heap limit for the sandbox, in MiB
    memory_mb: int = attrs.field(default=512, validator=attrs.validators.ge(16))
    #: printed output collected per snippet, in bytes; printing more fails the snippet
    max_print_bytes: int = attrs.field(default=1_048_576, validator=attrs.validators.ge(1024))
    #: run generated code in a local CPython process instead of the sandbox (NOT isolated)
    unsafe_local_exec: bool = False
    #: log each turn's reasoning and code (dspy.RLM's verbose mode)
    verbose: bool = False


class SandboxUnavailableError(Exception):
    """pydantic-monty is not installed and unsafe_local_exec is off."""


class _PinnedTools(dict):
    """A tools mapping in which some names keep ponder's implementation.

    ``dspy.RLM`` writes its own ``llm_query``/``llm_query_batched`` into an interpreter's tools
    before every run; pinning them keeps the metered versions that go through ``services``.
    """

    def __init__(self, pinned: dict[str, Callable[..., Any]]) -> None:
        super().__init__(pinned)
        self._pinned = dict(pinned)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, self._pinned.get(key, value))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


class MontyInterpreter:
    """A ``dspy`` ``CodeInterpreter`` running code in a pydantic-monty sandbox session.

    State persists across :meth:`execute` calls (one Monty session per interpreter). Host tools
    are called from this thread; ``SUBMIT(...)`` ends the snippet and returns a ``FinalOutput``.
    ``before_execute`` runs before each snippet (ponder meters usage and checks limits there),
    ``on_refused`` hears about every operation the sandbox refused, and ``on_limit`` about every
    snippet stopped by the time, memory or output limit.
    """

    execution_instructions = (
        "Code runs in Monty, a sandboxed interpreter for a subset of Python: no files, network, "
        "environment variables or subprocesses (such calls fail). Available modules include re, "
        "json, math, collections, itertools, functools, datetime and dataclasses. Variables and "
        "functions persist between snippets. Host functions (llm_query, llm_query_batched, "
        "SUBMIT) are plain global functions."
    )

    def __init__(self, *, tools: dict[str, Callable[..., Any]] | None = None,
                 exec_timeout_s: float = 30.0, memory_mb: int = 512,
                 max_print_bytes: int = 1_048_576,
                 before_execute: Callable[[], None] | None = None,
                 on_refused: Callable[[str], None] | None = None,
                 on_limit: Callable[[str], None] | None = None) -> None:
        self.tools: dict[str, Callable[..., Any]] = tools if tools is not None else {}
        self.output_fields: list[dict[str, Any]] | None = None
        self.exec_timeout_s = exec_timeout_s
        self.memory_mb = memory_mb
        self.max_print_bytes = max_print_bytes
        self.before_execute = before_execute
        self.on_refused = on_refused
        self.on_limit = on_limit
        self._pool: Any = None
        self._session: Any = None
        self._bound: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            import pydantic_monty

            pool = pydantic_monty.Monty(min_processes=1, max_processes=1,
                                        request_timeout=self.exec_timeout_s + 10)
            pool.__enter__()
            try:
                session = pool.checkout(limits={
                    "max_feed_duration_secs": self.exec_timeout_s,
                    "max_memory": self.memory_mb * 2**20,
                })
                session.__enter__()
            except BaseException:
                pool.__exit__(None, None, None)
                raise
            self._pool, self._session = pool, session

    def shutdown(self) -> None:
        with self._lock:
            session, pool = self._session, self._pool
            self._session = self._pool = None
            self._bound.clear()
        try:
            if session is not None:
                session.__exit__(None, None, None)
        finally:
            if pool is not None:
                pool.__exit__(None, None, None)

    # --- execution ---------------------------------------------------------------------------
    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        import pydantic_monty as pm
        from dspy.primitives.code_interpreter import (
            CodeExecutionError,
            CodeInterpreterError,
            FinalOutput,
        )
        from dspy.primitives.facade import HOST_TOKEN_VAR

        variables = dict(variables or {})
        if HOST_TOKEN_VAR in variables:  # dspy's sub-agent shim: host objects cannot cross
            raise CodeExecutionError("dspy sub-agents are not available in the Monty sandbox; "
                                     "use llm_query")
        if self.before_execute is not None:
            self.before_execute()
        self.start()
        # bind each value once: the context can be large and the session keeps it
        inputs = {k: v for k, v in variables.items() if self._bound.get(k) is not v}
        # collected in the host under a cap: past it, the snippet fails (not the host's memory)
        output = pm.CollectString(max_bytes=self.max_print_bytes)
        final: dict[str, Any] | None = None
        stop: BaseException | None = None
        refused_here = False  # an OS call was refused: its error needs no second report
        lookup = {name: fn for name, fn in self.tools.items() if name != "SUBMIT"}
        lookup["SUBMIT"] = _submit_marker
        try:
            snapshot = self._session.feed_start(
                code, inputs=inputs or None, external_lookup=lookup,
                print_callback=output)
            self._bound.update(inputs)
            while not isinstance(snapshot, pm.MontyComplete):
                if isinstance(snapshot, pm.FunctionSnapshot) and snapshot.is_os_function:
                    refused_here = True
                    self._refused(f"{snapshot.function_name}{_call_args(snapshot)}")
                    snapshot = snapshot.resume_not_handled()
                elif isinstance(snapshot, pm.FunctionSnapshot) and \
                        snapshot.function_name == "SUBMIT":
                    final = self._submitted(snapshot.args, snapshot.kwargs)
                    snapshot = snapshot.resume({"exception": SystemExit("SUBMIT")})
                elif isinstance(snapshot, pm.FunctionSnapshot) and snapshot.function_name in lookup:
                    try:
                        value = lookup[snapshot.function_name](*snapshot.args, **snapshot.kwargs)
                    except Exception as exc:
                        if _is_limit(exc):  # a run limit: end the snippet, then the run
                            stop = exc
                            snapshot = snapshot.resume({"exception": SystemExit("limit")})
                        else:
                            snapshot = snapshot.resume({"exc_type": "RuntimeError",
                                                        "message": f"{type(exc).__name__}: {exc}"})
                        continue
                    snapshot = snapshot.resume({"return_value": value})
                else:
                    snapshot = snapshot.resume_auto()
            result = snapshot.output
        except pm.MontySyntaxError as exc:
            raise SyntaxError(exc.display("type-msg")) from None
        except pm.MontyRuntimeError as exc:
            if stop is not None:
                raise stop from None
            if final is not None:
                return FinalOutput(final)
            message = exc.display("traceback")
            inner = exc.display("type-msg")
            limit = self._limit_hit(inner)
            if limit is not None:
                if self.on_limit is not None:
                    self.on_limit(limit)
                if not limit.startswith("output"):  # a heap stopped mid-operation: start over
                    self.shutdown()
                    limit += ("; the sandbox was restarted, so variables from earlier snippets "
                              "are gone (`context` is bound again)")
                raise CodeExecutionError(f"{inner}\n[ponder] {limit}") from None
            if not refused_here and (inner.startswith(_REFUSAL_TYPES) or _REFUSAL_TEXT in inner
                                     or inner.startswith(_MISSING_OS)):
                self._refused(inner)
            raise CodeExecutionError(message) from None
        except pm.MontyError as exc:  # a crashed worker or a broken session: terminal
            raise CodeInterpreterError(f"the Monty sandbox failed: {exc}") from None
        if stop is not None:
            raise stop
        if final is not None:
            return FinalOutput(final)
        text = output.output
        if not text and result is not None:
            text = repr(result)
        return text

    def _limit_hit(self, inner: str) -> str | None:
        """Which sandbox limit stopped a snippet, from Monty's error text; None: no limit."""
        if inner.startswith("TimeoutError") and "time limit exceeded" in inner:
            return f"time limit: the snippet ran longer than {self.exec_timeout_s:g}s"
        if inner.startswith("MemoryError") and "limit exceeded" in inner:
            if inner.rstrip().endswith(f"> {self.max_print_bytes} bytes"):
                return (f"output limit: the snippet printed more than {self.max_print_bytes} "
                        "bytes; print slices, counts or summaries instead")
            return f"memory limit: the snippet used more than {self.memory_mb} MiB"
        return None

    def _submitted(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        names = [field["name"] for field in self.output_fields or []]
        value = dict(zip(names, args, strict=False))
        value.update(kwargs)
        return value

    def _refused(self, what: str) -> None:
        if self.on_refused is not None:
            self.on_refused(what)


def _submit_marker(*_args: Any, **_kwargs: Any) -> None:  # pragma: no cover - never called
    """Stands for SUBMIT in the lookup; ``execute`` intercepts the call before it runs."""


def _call_args(snapshot: Any) -> str:
    args = [repr(a) for a in snapshot.args] + [f"{k}={v!r}" for k, v in snapshot.kwargs.items()]
    return "(" + ", ".join(args)[:200] + ")"


def _is_limit(exc: BaseException) -> bool:
    from ponder.engine.services import LimitReached

    return isinstance(exc, LimitReached)


class _RootMeter:
    """Adds the root model's usage (tracked by dspy) to the run's, and checks the limits.

    The meter owns the usage tracker the root calls are recorded in (set in the ``dspy.context``
    around ``dspy.RLM``), rather than reading whichever tracker is current: dspy's own one only
    lives while the module runs, so the last root call (and one that raised) was never counted.
    """

    def __init__(self, services: Any) -> None:
        from dspy.utils.usage_tracker import UsageTracker

        self.services = services
        self.tracker = UsageTracker()
        self.calls = self.input_tokens = self.output_tokens = 0
        #: the largest root prompt so far, in tokens the provider reported
        self.largest_prompt = 0

    def __call__(self, *, check: bool = True) -> None:
        tracker = self.tracker
        if tracker is not None:
            # an entry without tokens (an empty reply) is no request served, as in predict
            entries = [e for per_lm in tracker.usage_data.values() for e in per_lm
                       if int(e.get("prompt_tokens") or 0) or int(e.get("completion_tokens") or 0)]
            calls = len(entries)
            inp = sum(int(e.get("prompt_tokens") or 0) for e in entries)
            out = sum(int(e.get("completion_tokens") or 0) for e in entries)
            self.largest_prompt = max([self.largest_prompt,
                                       *(int(e.get("prompt_tokens") or 0) for e in entries)])
            d_calls, d_in, d_out = (calls - self.calls, inp - self.input_tokens,
                                    out - self.output_tokens)
            if d_calls or d_in or d_out:
                self.calls, self.input_tokens, self.output_tokens = calls, inp, out
                self.services.charge(calls=d_calls, input_tokens=d_in, output_tokens=d_out)
        if check:
            self.services.check_limits()


class RLMStrategy:
    name = "rlm"

    def __init__(self, settings: RLMSettings | None = None) -> None:
        self.settings = settings or RLMSettings()
        #: what the sandbox refused during the last run (also logged and on the span)
        self.refused: list[str] = []
        #: the sandbox limits (time, memory, output) snippets hit during the last run
        self.limits_hit: list[str] = []

    def run(self, question: str, context: Any, services: Any) -> Any:
        import dspy
        from dspy.primitives.code_interpreter import CodeInterpreterError

        from ponder.engine.answer import Draft
        from ponder.engine.services import LimitReached
        from ponder.errors import PonderError
        from ponder.plugins._common import render_documents
        from ponder.plugins._signatures import rlm_signature
        from ponder.support.observability import SpanType

        settings = self.settings
        self.refused = []
        self.limits_hit = []
        factory = self._interpreter_factory(services)
        meter = _RootMeter(services)
        rendered = render_documents(context.documents)
        module = dspy.RLM(rlm_signature(), max_iters=settings.max_iterations,
                          max_llm_calls=settings.max_llm_calls,
                          max_output_chars=self._output_chars(services),
                          verbose=settings.verbose, interpreter_factory=factory)
        factory.meter = meter
        _quiet_subagent_warning()
        services.check_limits()
        with services.tracker.span("rlm", SpanType.STRATEGY,
                                   sandbox="local (unsafe)" if settings.unsafe_local_exec
                                   else "monty") as span:
            try:
                try:
                    with dspy.context(lm=services.lm, track_usage=True,
                                      usage_tracker=meter.tracker):
                        prediction = module(context=rendered, question=question)
                finally:
                    meter(check=False)  # every root request, whatever ended the run
                services.check_limits()
                text = str(prediction.answer or "").strip()
                span.attributes.update(iterations=len(prediction.trajectory or []))
            except LimitReached as exc:
                text = (f"[partial: the run stopped ({exc.limit}) before the rlm strategy "
                        "submitted an answer]")
            except CodeInterpreterError as exc:
                raise PonderError(f"rlm: the code sandbox failed: {exc}") from None
            finally:
                span.attributes.update(refused=list(self.refused),
                                       limits_hit=list(self.limits_hit))
        problems = [f"the code sandbox refused {what}" for what in dict.fromkeys(self.refused)]
        problems += [f"a code snippet hit the sandbox's {what}"
                     for what in dict.fromkeys(self.limits_hit)]
        from ponder.plugins._common import document_spans, evidence_lines

        submitted = services.stopped_by is None
        return Draft(text=text, chunks_total=1, chunks_read=1 if submitted else 0,
                     strategy=self.name, problems=problems,
                     largest_prompt_tokens=max(services.largest_prompt_tokens,
                                               meter.largest_prompt),
                     # the code could read any line of `context`; the answer stands on the
                     # lines that hold what it says
                     read=document_spans(context.documents),
                     evidence=evidence_lines(text, context.documents) if submitted else [])

    # --- pieces ------------------------------------------------------------------------------
    def _output_chars(self, services: Any) -> int:
        if self.settings.max_output_chars is not None:
            return self.settings.max_output_chars
        from ponder.plugins._common import window_budget

        # the history shows every turn's output: share about half the window among them
        return max(500, window_budget(services) * 4 // (2 * self.settings.max_iterations))

    def _tools(self, services: Any) -> dict[str, Callable[..., Any]]:
        """``llm_query``/``llm_query_batched`` that go through ``services.predict``."""
        from ponder.engine.services import LimitReached
        from ponder.errors import PonderError
        from ponder.plugins._common import prompt_room, truncate_tokens
        from ponder.plugins._signatures import sub_query_signature
        from ponder.support.results import ChunkResult

        limit = self.settings.max_llm_calls
        used = 0
        lock = threading.Lock()
        signature = sub_query_signature()

        def reserve(n: int) -> None:
            nonlocal used
            with lock:
                if used + n > limit:
                    raise PonderError(f"LLM call limit exceeded: {used} + {n} > {limit}; "
                                      "aggregate in code instead of calling llm_query")
                used += n

        def ask(prompt: str) -> str:
            import dspy

            room = prompt_room(services, signature)
            # a fresh usage tracker: the root's tracker must not count this call twice
            with dspy.context(usage_tracker=None):
                prediction = services.predict(signature, role="sub",
                                              prompt=truncate_tokens(str(prompt), room))
            return str(prediction.response or "")

        def llm_query(prompt: str) -> str:
            if not prompt:
                raise ValueError("prompt cannot be empty")
            reserve(1)
            return ask(prompt)

        def llm_query_batched(prompts: list[str]) -> list[str]:
            prompts = list(prompts)
            if not prompts:
                return []
            reserve(len(prompts))
            batch = services.map(lambda i, p: ChunkResult(i, ask(p)), prompts,
                                 label="rlm sub-calls")
            if services.stopped_by is not None:
                raise LimitReached(services.stopped_by, f"the run stopped ({services.stopped_by})")
            answers = {r.index: r.relevant_info for r in batch.results}
            for failure in batch.failed:
                answers[failure.index] = f"[ERROR] {failure.error}"
            return [answers[i] for i in range(len(prompts))]

        return {"llm_query": llm_query, "llm_query_batched": llm_query_batched}

    def _interpreter_factory(self, services: Any) -> Any:
        settings = self.settings
        tools = self._tools(services)

        def refused(what: str) -> None:
            self.refused.append(what)
            log.warning("rlm: the sandbox refused %s", what)

        def limited(what: str) -> None:
            self.limits_hit.append(what)
            log.warning("rlm: a snippet hit the sandbox's %s", what)

        if settings.unsafe_local_exec:
            from dspy.primitives.local_interpreter import LocalInterpreter

            log.warning("rlm: unsafe_local_exec is on: model-written code runs in a local Python "
                        "process with your files, environment and network, NOT in a sandbox")

            def local() -> Any:
                interpreter = LocalInterpreter(execution_timeout=settings.exec_timeout_s)
                interpreter.tools = _PinnedTools(tools)
                execute = interpreter.execute

                def metered(code: str, variables: dict[str, Any] | None = None) -> Any:
                    if local.meter is not None:
                        local.meter()
                    return execute(code, variables)

                interpreter.execute = metered
                return interpreter

            local.execution_instructions = LocalInterpreter.execution_instructions
            local.meter = None
            return local

        try:
            import pydantic_monty  # noqa: F401
        except ImportError:
            from ponder.errors import PonderError

            raise PonderError(
                "the rlm strategy runs model-written code in the pydantic-monty sandbox, which is "
                "not installed: `pip install pydantic-monty` (or, knowing the code then runs "
                "unsandboxed, set unsafe_local_exec = true)"
            ) from None

        def sandboxed() -> MontyInterpreter:
            return MontyInterpreter(tools=_PinnedTools(tools),
                                    exec_timeout_s=settings.exec_timeout_s,
                                    memory_mb=settings.memory_mb,
                                    max_print_bytes=settings.max_print_bytes,
                                    before_execute=sandboxed.meter, on_refused=refused,
                                    on_limit=limited)

        sandboxed.execution_instructions = MontyInterpreter.execution_instructions
        sandboxed.meter = None
        return sandboxed


class _QuietFilter(logging.Filter):
    """Drops dspy.RLM's warning that sub-agents are unavailable: Monty refuses them on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "sub-agents are unavailable" not in record.getMessage()


def _quiet_subagent_warning() -> None:
    logger = logging.getLogger("dspy.predict.rlm")
    if not any(isinstance(f, _QuietFilter) for f in logger.filters):
        logger.addFilter(_QuietFilter())


@hookimpl
def ponder_register_strategies(register):
    register("rlm", RLMStrategy, settings=RLMSettings)
