"""The ``react`` predictor: a bounded ``dspy.ReAct`` agent that calls tools over the context.

For every signature the model works in steps: it writes a thought and picks one tool (with JSON
arguments), sees the tool's result (the *observation*), and goes on until it calls ``finish`` or
``max_iters`` steps are used; a last call then writes the signature's outputs from everything the
steps gathered. The tools are the run's registered tools (``ponder_register_tools``; the
first-party ones search, read and list the loaded documents, see :mod:`ponder.plugins.tools`),
already bound to the run's context by the kernel.

What this adds to ``dspy.ReAct``:

- **bounded**: at most ``max_iters`` tool steps (validated, 1-50), then one answer call, so a run
  makes at most ``max_iters + 1`` LM calls per prediction (a reply that cannot be parsed may cost
  one more: DSPy's ChatAdapter retries it once as JSON);
- **a failing tool never ends the run**: its exception becomes the observation
  ``Execution error in NAME: Type: message`` and the agent goes on (only a run limit stops it);
  every observation is cut to ``max_observation_chars``;
- **a bad step ends the loop, not the run**: a reply naming no valid tool (or one that does not
  parse) ends the trajectory and the answer is written from what was gathered (DSPy 3.4's own loop
  lets that ``AdapterParseError`` escape);
- **recorded**: the returned prediction carries ``trajectory`` (``thought_i``, ``tool_name_i``,
  ``tool_args_i``, ``observation_i`` for each step) next to the signature's outputs, and every tool
  call is logged at debug level on the ``ponder.predictor`` logger.

Config example::

    [predictor]
    name = "react"
    tools = ["search_context", "read_lines"]   # omit: every registered tool
    max_iters = 6                              # tool steps per prediction (1-50)
    # max_observation_chars = 8000             # each tool result is cut to this
    # temperature = 0.0
    # max_tokens = 1024
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ponder import hookimpl
from ponder.errors import ConfigError, PonderError
from ponder.plugins._common import PredictorSettings

PONDER_PLUGIN_API = 1

log = logging.getLogger("ponder.predictor")

#: the most tool steps ``max_iters`` may allow
MAX_ITERS_LIMIT = 50
#: the tool name dspy.ReAct reserves for ending the loop
FINISH = "finish"


def _check_tools(instance: Any, attribute: attrs.Attribute, value: list[str] | None) -> None:
    if value is None:
        return
    if not value:
        raise ValueError(f"'{attribute.name}' must name at least one tool; omit it to offer "
                         "every registered tool", attribute)
    for name in value:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"'{attribute.name}' entries must be tool names, got {name!r}",
                             attribute)
    duplicates = sorted({name for name in value if value.count(name) > 1})
    if duplicates:
        raise ValueError(f"'{attribute.name}' names {', '.join(duplicates)} more than once",
                         attribute)


@attrs.define
class ReactSettings(PredictorSettings):
    """Settings of the ``react`` predictor."""

    #: the tools the agent may call, by registered name; None: every registered tool
    tools: list[str] | None = attrs.field(default=None, validator=_check_tools)
    #: tool steps per prediction before the answer is written from the trajectory
    max_iters: int = attrs.field(default=6, validator=[attrs.validators.ge(1),
                                                       attrs.validators.le(MAX_ITERS_LIMIT)])
    #: each observation (tool result) is cut to this many characters
    max_observation_chars: int = attrs.field(default=8000, validator=[
        attrs.validators.ge(200), attrs.validators.le(200_000)])


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- the dspy module (built on first use: importing this plugin must not import dspy) --------
_class_lock = threading.Lock()
_classes: dict[str, type] = {}


def react_module_class() -> type:
    """``BoundedReAct``: ``dspy.ReAct`` with the loop described in the module docstring."""
    with _class_lock:
        if "BoundedReAct" in _classes:
            return _classes["BoundedReAct"]
        import dspy
        from dspy.utils.exceptions import AdapterParseError, ContextWindowExceededError

        from ponder.engine.services import LimitReached

        class BoundedReAct(dspy.ReAct):
            """``dspy.ReAct`` whose failing tools and bad steps never crash the run."""

            def __init__(self, signature: Any, tools: list[Any], max_iters: int,
                         max_observation_chars: int = 8000) -> None:
                super().__init__(signature, tools=tools, max_iters=max_iters)
                self.max_observation_chars = max_observation_chars

            # -- one step -------------------------------------------------------------------
            def _steps(self, input_args: dict[str, Any]) -> int:
                requested = input_args.pop("max_iters", self.max_iters)
                return max(0, min(int(requested), self.max_iters))

            def _record(self, index: int, pred: Any, trajectory: dict[str, Any]) -> None:
                trajectory[f"thought_{index}"] = pred.next_thought
                trajectory[f"tool_name_{index}"] = pred.next_tool_name
                trajectory[f"tool_args_{index}"] = pred.next_tool_args
                log.debug("react step %d: %s(%s)", index + 1, pred.next_tool_name,
                          _short(pred.next_tool_args))

            def _observation(self, index: int, name: str, result: Any = None,
                             error: Exception | None = None) -> str:
                if error is not None:
                    if isinstance(error, LimitReached):
                        raise error
                    log.debug("react step %d: %s failed: %r", index + 1, name, error)
                    return f"Execution error in {name}: {type(error).__name__}: {error}"
                text = result if isinstance(result, str) else str(result)
                limit = self.max_observation_chars
                if len(text) > limit:
                    text = (text[:limit] + f"\n[… observation cut at {limit:,} of "
                            f"{len(text):,} characters …]")
                log.debug("react step %d: %s returned %d characters", index + 1, name,
                          len(text))
                return text

            def _stopped(self, index: int, error: Exception) -> None:
                if isinstance(error, ContextWindowExceededError):
                    log.warning("react: ending the trajectory after %d steps: the context "
                                "window is full (%s)", index, _first_line(error))
                else:
                    log.warning("react: step %d did not name a valid tool call; answering from "
                                "the %d steps so far (%s)", index + 1, index,
                                _first_line(error))

            def _finish_log(self, steps: int, finished: bool) -> None:
                if not finished:
                    log.info("react: no `finish` after %d steps (max_iters=%d); answering from "
                             "the trajectory", steps, self.max_iters)

            # -- the loop -------------------------------------------------------------------
            def forward(self, **input_args: Any) -> Any:
                trajectory: dict[str, Any] = {}
                finished, steps = False, 0
                for index in range(self._steps(input_args)):
                    try:
                        pred = self._call_with_potential_trajectory_truncation(
                            self.react, trajectory, **input_args)
                    except (ContextWindowExceededError, AdapterParseError, ValueError) as error:
                        self._stopped(index, error)
                        break
                    self._record(index, pred, trajectory)
                    steps += 1
                    name = pred.next_tool_name
                    try:
                        result = self.tools[name](**pred.next_tool_args)
                    except Exception as error:
                        observation = self._observation(index, name, error=error)
                    else:
                        observation = self._observation(index, name, result)
                    trajectory[f"observation_{index}"] = observation
                    if name == FINISH:
                        finished = True
                        break
                self._finish_log(steps, finished)
                extract = self._call_with_potential_trajectory_truncation(
                    self.extract, trajectory, **input_args)
                return dspy.Prediction(trajectory=trajectory, **extract)

            async def aforward(self, **input_args: Any) -> Any:
                trajectory: dict[str, Any] = {}
                finished, steps = False, 0
                for index in range(self._steps(input_args)):
                    try:
                        pred = await self._async_call_with_potential_trajectory_truncation(
                            self.react, trajectory, **input_args)
                    except (ContextWindowExceededError, AdapterParseError, ValueError) as error:
                        self._stopped(index, error)
                        break
                    self._record(index, pred, trajectory)
                    steps += 1
                    name = pred.next_tool_name
                    try:
                        result = await self.tools[name].acall(**pred.next_tool_args)
                    except Exception as error:
                        observation = self._observation(index, name, error=error)
                    else:
                        observation = self._observation(index, name, result)
                    trajectory[f"observation_{index}"] = observation
                    if name == FINISH:
                        finished = True
                        break
                self._finish_log(steps, finished)
                extract = await self._async_call_with_potential_trajectory_truncation(
                    self.extract, trajectory, **input_args)
                return dspy.Prediction(trajectory=trajectory, **extract)

        BoundedReAct.__module__ = __name__
        BoundedReAct.__qualname__ = "BoundedReAct"
        _classes["BoundedReAct"] = BoundedReAct
        return BoundedReAct


# --- the predictor --------------------------------------------------------------------------
class ReactPredictor:
    """Builds a :func:`react_module_class` module over the run's bound tools."""

    #: the kernel builds this predictor as ``build(signature, tools=services.tools)``
    needs_tools = True

    def __init__(self, settings: ReactSettings | None = None) -> None:
        self.settings = settings or ReactSettings()

    def select_tools(self, tools: Mapping[str, Callable[..., Any]] | None
                     ) -> dict[str, Callable[..., Any]]:
        """The bound tools the settings ask for, in the order they name them."""
        if tools is None:
            raise PonderError(
                "the react predictor needs the run's tools, but it was built without them "
                "(the kernel passes build(signature, tools=services.tools) to predictors with "
                "needs_tools = True)"
            )
        available = sorted(tools)
        names = list(self.settings.tools) if self.settings.tools is not None else list(tools)
        for name in names:
            if name not in tools:
                from ponder.kernel.registry import did_you_mean

                suggestion = did_you_mean(name, available)
                hint = f"; did you mean {suggestion!r}?" if suggestion else ""
                listing = ", ".join(available) if available else "none are registered"
                raise ConfigError(f"predictor.tools: unknown tool {name!r}{hint} (available: "
                                  f"{listing})")
        if FINISH in names:
            raise ConfigError(f"predictor.tools: a tool may not be named {FINISH!r}: the react "
                              "loop uses that name to end")
        if not names:
            log.warning("react: no tools are registered; the agent can only answer directly")
        return {name: tools[name] for name in names}

    def build(self, signature: Any,
              tools: Mapping[str, Callable[..., Any]] | None = None) -> Any:
        import dspy

        selected = self.select_tools(tools)
        offered = []
        for name, function in selected.items():
            if not callable(function):
                raise PonderError(f"tool {name!r} is not callable: {function!r}")
            try:
                offered.append(dspy.Tool(function, name=name))
            except Exception as exc:  # e.g. a signature DSPy cannot describe
                raise PonderError(f"tool {name!r} cannot be offered to the model: {exc}") from exc
        settings = self.settings
        module = react_module_class()(signature, offered, settings.max_iters,
                                      settings.max_observation_chars)
        config = settings.lm_config()
        if config:
            module.react.config.update(config)
            module.extract.predict.config.update(config)
        return module


@hookimpl
def ponder_register_predictors(register):
    register("react", ReactPredictor, settings=ReactSettings)
