"""The ``scripted`` adapter: a deterministic fake model for tests, demos and benchmarks.

It never talks to a network. Each call is answered by the first matching **rule**, else the next
unused entry of **replies**, else **default**; every reply is shaped for whichever DSPy adapter
wrote the prompt (ChatAdapter's ``[[ ## field ## ]]`` sections, JSONAdapter's JSON object, or
XMLAdapter's tags) by :func:`ponder.support.dspy_format.format_for_dspy`, so DSPy parses it.

Config example::

    [adapter]
    name = "scripted"
    rules = [
      # first match over the whole prompt text wins; `.` matches newlines too
      { pattern = "capital of France", reply = "Paris" },
      # a table fills several output fields by name (missing fields get placeholders)
      { pattern = "(?i)summari[sz]e", reply = { summary = "short", confidence = "high" } },
    ]
    replies = ["first unmatched call", "second unmatched call"]   # used in order
    default = "I don't know"          # when no rule matches and the replies are used up
    # cycle = true                    # start the replies over instead of using `default`
    # file = "tests/data/script.toml" # more rules/replies/default, TOML or JSON, same keys
    # latency_s = 0.05                # simulated per-call latency (time.sleep)
    # context_window = 8192
    # model = "scripted"

**Rules** search the whole prompt: every message's text joined by blank lines, DSPy's system
message included. That message names the signature's fields and the output format ("Your input
fields are:", "JSON", ``[[ ## answer ## ]]``…), so match words from your inputs, not those.

**Replies**: a string fills the primary output field (the first one not named ``reasoning``,
so ``dspy.ChainOfThought`` gets a placeholder reasoning); a string that already holds
``[[ ## completed ## ]]`` is sent as written. A table maps output-field names to values.

**When the script runs out** (no rule matched, every entry of ``replies`` used, no ``default``
and ``cycle`` false) the call raises :class:`ScriptExhaustedError`, so a test that makes more
calls than it scripted fails loudly instead of passing on a made-up answer.

**Usage**: prompt and completion tokens are reported as ``ceil(characters / 4)``; cost is 0.

In Python (tests, plugin authors)::

    from ponder.plugins.scripted import ScriptedLM

    lm = ScriptedLM(rules=[("capital of France", "Paris")], replies=["one", {"answer": "two"}])
    with dspy.context(lm=lm):
        dspy.Predict("question -> answer")(question="What is the capital of France?")
    lm.calls[0]["prompt"], lm.calls[0]["reply"], lm.calls[0]["source"]  # "rule"

``ScriptedLM`` is a ``dspy.LM`` driven by :class:`ScriptEngine`, DSPy 3.4's engine contract
(``complete(Request) -> Response``), which replaces the deprecated ``BaseLM.forward()``
subclass interface; it is thread-safe (map-reduce calls it from a thread pool) and async-capable.
Importing this module does not import dspy: ``ScriptedLM`` is built on first access.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ponder import hookimpl
from ponder.errors import ConfigError, PonderError
from ponder.kernel.kinds import ModelInfo

if TYPE_CHECKING:  # pragma: no cover
    import dspy

PONDER_PLUGIN_API = 1

Reply = str | dict[str, Any]


class ScriptExhaustedError(PonderError):
    """A scripted model was called more often than its script allows."""


@attrs.frozen
class Rule:
    """One scripted rule: the first rule whose regex matches the prompt text answers the call."""

    pattern: re.Pattern[str]
    reply: Reply

    @classmethod
    def parse(cls, raw: Any, where: str = "rules") -> Rule:
        if isinstance(raw, Rule):
            return raw
        if isinstance(raw, Mapping):
            unknown = sorted(set(raw) - {"pattern", "reply"})
            if unknown or "pattern" not in raw or "reply" not in raw:
                raise ValueError(
                    f"{where}: a rule is a table with exactly `pattern` and `reply`, "
                    f"got {dict(raw)!r}"
                )
            pattern, reply = raw["pattern"], raw["reply"]
        elif isinstance(raw, Sequence) and not isinstance(raw, str) and len(raw) == 2:
            pattern, reply = raw
        else:
            raise ValueError(f"{where}: a rule is {{pattern = ..., reply = ...}}, got {raw!r}")
        if isinstance(pattern, re.Pattern):
            compiled = pattern
        elif isinstance(pattern, str):
            try:
                compiled = re.compile(pattern, re.DOTALL)
            except re.error as exc:
                raise ValueError(f"{where}: invalid regex {pattern!r}: {exc}") from None
        else:
            raise ValueError(f"{where}: a rule's pattern must be a string, got {pattern!r}")
        return cls(compiled, _check_reply(reply, where))


def _check_reply(reply: Any, where: str) -> Reply:
    if isinstance(reply, str):
        return reply
    if isinstance(reply, Mapping) and all(isinstance(k, str) for k in reply):
        return dict(reply)
    raise ValueError(f"{where}: a reply is a string or a table of field = value, got {reply!r}")


def _validate_rules(instance: Any, attribute: attrs.Attribute, value: list[Any]) -> None:
    for i, raw in enumerate(value):
        Rule.parse(raw, f"'{attribute.name}' [{i}]")


def _validate_replies(instance: Any, attribute: attrs.Attribute, value: list[Any]) -> None:
    for i, reply in enumerate(value):
        _check_reply(reply, f"'{attribute.name}' [{i}]")


def load_script_file(path: str | Path) -> dict[str, Any]:
    """Read ``rules`` / ``replies`` / ``default`` / ``cycle`` from a TOML or JSON file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"scripted adapter: cannot read script file {str(path)!r}: {exc}"
        ) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"scripted adapter: {str(path)!r} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"scripted adapter: {str(path)!r} must hold a table/object")
    unknown = sorted(set(data) - {"rules", "replies", "default", "cycle"})
    if unknown:
        raise ConfigError(
            f"scripted adapter: {str(path)!r} has unknown keys {unknown}; "
            "expected rules, replies, default, cycle"
        )
    try:
        rules = [Rule.parse(r, f"{path}: rules[{i}]") for i, r in enumerate(data.get("rules", []))]
        replies = [
            _check_reply(r, f"{path}: replies[{i}]") for i, r in enumerate(data.get("replies", []))
        ]
    except ValueError as exc:
        raise ConfigError(f"scripted adapter: {exc}") from None
    out: dict[str, Any] = {"rules": rules, "replies": replies}
    if "default" in data:
        out["default"] = _check_reply(data["default"], f"{path}: default")
    if "cycle" in data:
        out["cycle"] = bool(data["cycle"])
    return out


def count_tokens(text: str) -> int:
    """The scripted model's token estimate: ``ceil(len(text) / 4)``."""
    return math.ceil(len(text) / 4)


class ScriptEngine:
    """The script behind :class:`ScriptedLM`: picks, shapes and records replies (thread-safe).

    Implements DSPy's engine contract (``complete(Request) -> Response``, ``stream``, ``close``).
    """

    def __init__(
        self,
        rules: Sequence[Any] = (),
        replies: Sequence[Reply] = (),
        default: Reply | None = None,
        *,
        cycle: bool = False,
        latency_s: float = 0.0,
        model: str = "scripted",
    ):
        self.rules = [Rule.parse(r, f"rules[{i}]") for i, r in enumerate(rules)]
        self.replies = [_check_reply(r, f"replies[{i}]") for i, r in enumerate(replies)]
        self.default = None if default is None else _check_reply(default, "default")
        self.cycle = cycle
        self.latency_s = float(latency_s)
        self.model = model
        self.calls: list[dict[str, Any]] = []
        self._next_reply = 0
        self._lock = threading.Lock()

    # -- choosing ---------------------------------------------------------------------------
    def _choose(self, prompt: str) -> tuple[Reply, str, int | None]:
        """(reply, source, which) for one call; call with the lock held."""
        for i, rule in enumerate(self.rules):
            if rule.pattern.search(prompt):
                return rule.reply, "rule", i
        if self._next_reply < len(self.replies) or (self.cycle and self.replies):
            i = self._next_reply % len(self.replies)
            self._next_reply += 1
            return self.replies[i], "reply", i
        if self.default is not None:
            return self.default, "default", None
        raise ScriptExhaustedError(
            f"scripted model {self.model!r}: no reply for call #{len(self.calls) + 1}: no rule "
            f"matched and all {len(self.replies)} replies are used; add a rule, more replies, "
            "a `default`, or set cycle = true"
        )

    def reply_for(
        self, messages: list[dict[str, str]], *, json_mode: bool = False
    ) -> dict[str, Any]:
        """Pick, format and record the reply to one call given as OpenAI-style messages.

        Returns the call's record (the dict appended to :attr:`calls`).
        """
        from ponder.support.dspy_format import format_for_dspy

        prompt = "\n\n".join(m["content"] for m in messages)
        with self._lock:
            reply, source, which = self._choose(prompt)
            text = format_for_dspy(messages, reply, json_mode=json_mode)
            record = {
                "index": len(self.calls),
                "prompt": prompt,
                "messages": messages,
                "reply": text,
                "source": source,
                "which": which,
                "prompt_tokens": count_tokens(prompt),
                "completion_tokens": count_tokens(text),
            }
            self.calls.append(record)
        if self.latency_s > 0:
            # outside the lock: concurrent calls overlap, as real ones do
            time.sleep(self.latency_s)
        return record

    def reset(self) -> None:
        """Forget recorded calls and start the replies from the first one again."""
        with self._lock:
            self.calls.clear()
            self._next_reply = 0

    # -- DSPy engine contract -----------------------------------------------------------------
    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        messages = request_messages(request)
        json_mode = getattr(request.config, "response_format", None) is not None
        record = self.reply_for(messages, json_mode=json_mode)
        return Response(
            id=None,
            model=self.model,
            message=Message.assistant([TextPart(record["reply"])]),
            finish_reason="stop",
            usage=Usage(
                input_tokens=record["prompt_tokens"], output_tokens=record["completion_tokens"]
            ),
        )

    def stream(self, request: Any) -> Iterator[Any]:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


class AsyncEngine:
    """The async face of a synchronous engine (each call runs in a worker thread)."""

    def __init__(self, sync: Any):
        self.sync = sync

    async def complete(self, request: Any) -> Any:
        import asyncio  # here, not at import: asyncio costs ~40 ms of `ponder --help`

        return await asyncio.to_thread(self.sync.complete, request)

    async def stream(self, request: Any):
        import asyncio

        for event in await asyncio.to_thread(lambda: list(self.sync.stream(request))):
            yield event

    async def aclose(self) -> None:
        pass


def request_messages(request: Any) -> list[dict[str, str]]:
    """A DSPy ``lm15.Request`` as OpenAI-style ``[{"role", "content"}]`` text messages."""
    messages: list[dict[str, str]] = []
    system = request.system
    if system is not None:
        text = system if isinstance(system, str) else "".join(p.text or "" for p in system)
        messages.append({"role": "system", "content": text})
    messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
    return messages


# -- the dspy.LM subclass, built on first access so importing this module stays light --------
_class_lock = threading.Lock()
_classes: dict[str, type] = {}


def _scripted_lm_class() -> type:
    with _class_lock:
        if "ScriptedLM" in _classes:
            return _classes["ScriptedLM"]
        import dspy

        class ScriptedLM(dspy.LM):
            """A ``dspy.LM`` answering from a script; see :mod:`ponder.plugins.scripted`."""

            def __init__(
                self,
                rules: Sequence[Any] = (),
                replies: Sequence[Reply] = (),
                default: Reply | None = None,
                *,
                cycle: bool = False,
                latency_s: float = 0.0,
                model: str = "scripted",
            ):
                engine = ScriptEngine(
                    rules, replies, default, cycle=cycle, latency_s=latency_s, model=model
                )
                super().__init__(
                    model,
                    engine=engine,
                    async_engine=AsyncEngine(engine),
                    cache=False,
                    num_retries=0,
                )

            @property
            def script(self) -> ScriptEngine:
                return self._engine_spec

            @property
            def calls(self) -> list[dict[str, Any]]:
                """Every call so far: index, prompt, messages, reply, source, which, tokens."""
                return self._engine_spec.calls

            def reset(self) -> None:
                self._engine_spec.reset()

        ScriptedLM.__module__ = __name__
        ScriptedLM.__qualname__ = "ScriptedLM"
        _classes["ScriptedLM"] = ScriptedLM
        return ScriptedLM


def __getattr__(name: str) -> Any:
    if name == "ScriptedLM":
        cls = _scripted_lm_class()
        globals()["ScriptedLM"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- the plugin ---------------------------------------------------------------------------------
@attrs.define
class ScriptedSettings:
    """Settings of the ``scripted`` adapter (see the module docstring for an example)."""

    #: ``{pattern = regex, reply = "text" or {field = value}}``; the first match wins.
    rules: list[dict[str, Any]] = attrs.field(factory=list, validator=_validate_rules)
    #: Used in order by calls no rule matched.
    replies: list[Any] = attrs.field(factory=list, validator=_validate_replies)
    #: The reply once the replies are used up (unless ``cycle``); None: such a call fails.
    default: Any = attrs.field(default=None)
    #: Start the replies over when they are used up.
    cycle: bool = False
    #: A TOML or JSON file with more ``rules``/``replies`` (after the inline ones) and ``default``.
    file: str | None = None
    latency_s: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    context_window: int = attrs.field(default=8192, validator=attrs.validators.gt(0))
    max_output_tokens: int = attrs.field(default=1024, validator=attrs.validators.gt(0))
    model: str = "scripted"

    @default.validator
    def _check_default(self, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None:
            _check_reply(value, f"'{attribute.name}' value")


class ScriptedAdapter:
    """Builds a :class:`ScriptedLM` from :class:`ScriptedSettings`."""

    #: replies may depend on the call index, not only the prompt: never serve them from a cache
    cache_responses = False

    def __init__(self, settings: ScriptedSettings | None = None):
        self.settings = settings or ScriptedSettings()

    def model_info(self) -> ModelInfo:
        s = self.settings
        return ModelInfo(
            model=s.model, context_window=s.context_window, max_output_tokens=s.max_output_tokens
        )

    def build_lm(self) -> dspy.LM:
        s = self.settings
        rules: list[Any] = list(s.rules)
        replies: list[Any] = list(s.replies)
        default, cycle = s.default, s.cycle
        if s.file:
            loaded = load_script_file(s.file)
            rules += loaded["rules"]
            replies += loaded["replies"]
            default = default if default is not None else loaded.get("default")
            cycle = cycle or loaded.get("cycle", False)
        lm_class = _scripted_lm_class()
        return lm_class(rules, replies, default, cycle=cycle, latency_s=s.latency_s, model=s.model)


@hookimpl
def ponder_register_adapters(register):
    register("scripted", ScriptedAdapter, settings=ScriptedSettings)
