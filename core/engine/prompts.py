"""Prompt state: the demos and instructions a prompt optimizer compiled, per signature name.

Why a state applied when a module is built, and not a compiled DSPy program: ponder's
strategies do not hold DSPy modules; :class:`ponder.engine.services.Services` builds one module
per signature per run (``Services.module_for``) from whichever predictor plugin is configured.
So what an optimizer learns is kept per *signature name* (``Answer``, ``Extract``, ``Combine``,
…) and laid onto every ``dspy.Predict`` part of the module as it is built: ``demos`` and, when
set, the signature's instructions. The same state therefore works with ``predict`` and
``chain_of_thought`` (whose inner ``Predict`` gets the demos), and a strategy that never calls a
signature simply never uses its entry.

**Where it lives.** In the config, under the raw subsystem section ``[optimize.prompts]``: one
key per signature name whose value is the DSPy JSON state of that predictor (the
``dspy.Predict.dump_state()`` form, of which ``demos`` and ``signature.instructions`` are read),
as a JSON string, so a program file carries it as text and never as pickle. Because it is in
the config, the eval's config digest differs for every state (no eval record of one prompt is
reused for another), and :meth:`PromptState.cache_tag` puts its digest in the LM response
cache key (a cached reply to a prompt without demos is never served to one with demos).

**Trace collection.** ``[optimize] collect = "<token>"`` names a :class:`TraceCollector`
registered in this process (:func:`collecting`); every ``Predict`` part then gets it as a DSPy
callback, which records ``(signature name, inputs, outputs)`` of each call. That is how a
prompt optimizer sees the traces of a run that went through the study (counted, priced, under
its budget) without the engine knowing about optimizers. The token is part of the cache tag, so
a collecting run asks the provider rather than reading replies it would have no trace of.

May import ``errors`` and ``kernel`` only; dspy is imported inside functions.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from ponder.errors import ConfigError

SECTION = "optimize"
PROMPTS_KEY = "prompts"
COLLECT_KEY = "collect"

_collectors: dict[str, TraceCollector] = {}
_collectors_lock = threading.Lock()


def signature_name(signature: Any) -> str:
    return getattr(signature, "__name__", None) or type(signature).__name__


class TraceCollector:
    """Records every ``Predict`` call of the runs that name it: a DSPy callback."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[str, tuple[str, dict[str, Any], tuple[int, int]]] = {}
        #: (predict, thread) -> the outermost call in flight: should a nested ``__call__`` of
        #: the same Predict report too, one call is still recorded once
        self._active: dict[tuple[int, int], str] = {}
        #: (signature name, inputs, outputs), in the order the calls finished
        self.calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    # DSPy's callback protocol (dspy.utils.callback.BaseCallback), the parts a Predict fires
    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        kwargs = inputs.get("kwargs", inputs) if isinstance(inputs, dict) else {}
        name = signature_name(getattr(instance, "_ponder_signature", None)
                              or getattr(instance, "signature", None))
        key = (id(instance), threading.get_ident())
        with self._lock:
            if key in self._active:  # the nested report of a call already being recorded
                return
            self._active[key] = call_id
            self._started[call_id] = (name, {k: v for k, v in dict(kwargs).items()
                                             if not k.startswith("_") and k != "config"}, key)

    def on_module_end(self, call_id: str, outputs: Any, exception: Exception | None) -> None:
        with self._lock:
            started = self._started.pop(call_id, None)
            if started is None:
                return
            self._active.pop(started[2], None)
            if exception is not None or outputs is None:
                return
            fields = dict(outputs.items()) if hasattr(outputs, "items") else {}
            self.calls.append((started[0], started[1], fields))

    def __getattr__(self, name: str) -> Any:  # the other callback hooks: nothing to do
        if name.startswith("on_"):
            return lambda **_: None
        raise AttributeError(name)

    def for_question(self, question: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """The calls made for ``question`` (every first-party signature has that input)."""
        with self._lock:
            return [c for c in self.calls if str(c[1].get("question", "")) == question]


@contextlib.contextmanager
def collecting(token: str) -> Iterator[TraceCollector]:
    """Register a collector under ``token`` for the duration of the block."""
    collector = TraceCollector()
    with _collectors_lock:
        _collectors[token] = collector
    try:
        yield collector
    finally:
        with _collectors_lock:
            _collectors.pop(token, None)


class PromptState:
    """Per signature name, the DSPy JSON state of its predictor; see the module docstring."""

    def __init__(self, states: Mapping[str, Mapping[str, Any]] | None = None,
                 collect: str | None = None) -> None:
        self.states = {name: dict(state) for name, state in (states or {}).items()}
        self.collect = collect

    def __bool__(self) -> bool:
        return bool(self.states) or self.collect is not None

    # --- reading and writing ------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Any) -> PromptState | None:
        """The state ``[optimize.prompts]`` (and ``collect``) hold, or None."""
        sections = getattr(config, "sections", None) or {}
        table = sections.get(SECTION) or {}
        raw = table.get(PROMPTS_KEY) or {}
        collect = table.get(COLLECT_KEY)
        if not raw and collect is None:
            return None
        origins = getattr(config, "origins", {}) or {}
        if not isinstance(raw, Mapping):
            where = origins.get(f"{SECTION}.{PROMPTS_KEY}", "config")
            raise ConfigError(f"{where}: {SECTION}.{PROMPTS_KEY}: expected a table of "
                              "signature name = DSPy JSON state")
        states = {}
        for name, value in raw.items():
            try:
                state = json.loads(value) if isinstance(value, str) else dict(value)
            except (TypeError, ValueError) as exc:
                where = origins.get(f"{SECTION}.{PROMPTS_KEY}.{name}",
                                    origins.get(f"{SECTION}.{PROMPTS_KEY}", "config"))
                raise ConfigError(f"{where}: {SECTION}.{PROMPTS_KEY}.{name}: not DSPy JSON "
                                  f"state: {exc}") from None
            if not isinstance(state.get("demos", []), list):
                raise ConfigError(f"{SECTION}.{PROMPTS_KEY}.{name}: 'demos' must be a list")
            states[str(name)] = state
        return cls(states, str(collect) if collect is not None else None)

    def to_table(self) -> dict[str, str]:
        """``[optimize.prompts]`` as written to a config or a program: name -> JSON text."""
        return {name: json.dumps(state, sort_keys=True, default=str)
                for name, state in sorted(self.states.items())}

    def digest(self) -> str:
        text = json.dumps(self.to_table(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_config(self, config: Any) -> Any:
        """A copy of ``config`` carrying this state (and the collector token, if any)."""
        out = copy.deepcopy(config)
        table = dict(out.sections.get(SECTION, {}))
        table.pop(PROMPTS_KEY, None)
        table.pop(COLLECT_KEY, None)
        if self.states:
            table[PROMPTS_KEY] = self.to_table()
        if self.collect is not None:
            table[COLLECT_KEY] = self.collect
        out.sections[SECTION] = table
        return out

    # --- applying -----------------------------------------------------------------------
    def demos_of(self, name: str) -> list[dict[str, Any]]:
        return list(self.states.get(name, {}).get("demos") or [])

    def instructions_of(self, name: str) -> str | None:
        state = self.states.get(name, {})
        signature = state.get("signature") or {}
        return state.get("instructions") or signature.get("instructions") or None

    def cache_tag(self, signature: Any) -> str:
        """What the LM response cache key adds for ``signature`` ('' when nothing applies)."""
        name = signature_name(signature)
        state = self.states.get(name)
        if state is None and self.collect is None:
            return ""
        blob = json.dumps([state, self.collect], sort_keys=True, default=str)
        return "+prompts:" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    def apply(self, module: Any, signature: Any) -> Any:
        """Lay the state for ``signature`` onto every ``Predict`` part of ``module``."""
        import dspy

        name = signature_name(signature)
        demos = self.demos_of(name)
        instructions = self.instructions_of(name)
        collector = None
        if self.collect is not None:
            with _collectors_lock:
                collector = _collectors.get(self.collect)
        named = getattr(module, "named_predictors", None)
        for _, predict in (named() if callable(named) else []):
            if demos:
                predict.demos = [dspy.Example(**demo) for demo in demos]
            if instructions:
                predict.signature = predict.signature.with_instructions(instructions)
            if collector is not None:
                predict._ponder_signature = signature
                predict.callbacks = [*getattr(predict, "callbacks", []), collector]
        return module


def predict_state(demos: list[dict[str, Any]], instructions: str | None = None) -> dict[str, Any]:
    """A predictor's state in DSPy's JSON form (the keys ``dspy.Predict.dump_state`` writes)."""
    state: dict[str, Any] = {"demos": demos, "traces": [], "train": []}
    if instructions:
        state["signature"] = {"instructions": instructions}
    return state
