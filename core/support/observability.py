"""Spans: what ran, inside what, for how long, and whether it failed.

A :class:`Tracker` records spans; nesting follows :mod:`contextvars`, so async tasks inherit
their parent span, and a worker thread does too when its callable is wrapped with
:func:`in_current_context` (plain threads start with an empty context). Error text and span
attributes pass through :mod:`ponder.support.secrets` before they are kept, so traces hold no
secrets.
"""

from __future__ import annotations

import contextvars
import enum
import functools
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, overload

import attrs

from ponder.support.secrets import clean_secrets, redact

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class SpanType(enum.StrEnum):
    """What kind of work a span covers (used to group the summary, and by the telemetry export
    to pick each span's OpenTelemetry name and attributes: ``ponder.engine.telemetry``).

    ``CHUNK`` is one map item. The subsystems' own kinds (an eval example, an optimizer trial, a
    pipeline stage, a batch job step) are here too; a new kind is added here and given its
    export convention with ``ponder.engine.telemetry.register_convention``.
    """

    RUN = "run"
    STRATEGY = "strategy"
    CHUNK = "chunk"
    LLM = "llm"
    REDUCE = "reduce"
    RETRIEVE = "retrieve"
    TOOL = "tool"
    IO = "io"
    EVAL_EXAMPLE = "eval_example"
    TRIAL = "trial"
    STAGE = "stage"
    BATCH = "batch"
    OTHER = "other"


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


@attrs.define
class Span:
    """One timed piece of work. ``start``/``end`` are wall-clock (``time.time``);
    ``duration_s`` comes from ``time.perf_counter`` so clock changes do not skew it."""

    name: str
    type: SpanType = SpanType.OTHER
    id: str = attrs.field(factory=_new_id)
    parent_id: str | None = None
    start: float = attrs.field(factory=time.time)
    end: float | None = None
    duration_s: float | None = None
    status: str = "ok"
    error: str | None = None
    attributes: dict[str, Any] = attrs.field(factory=dict)
    thread: str = attrs.field(factory=lambda: threading.current_thread().name)
    _t0: float = attrs.field(init=False, factory=time.perf_counter, repr=False, eq=False)

    @property
    def finished(self) -> bool:
        return self.end is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for storage and JSON."""
        return {
            "id": self.id,
            "parent_id": self.parent_id,
            "name": self.name,
            "type": self.type.value,
            "start": self.start,
            "end": self.end,
            "duration_s": self.duration_s,
            "status": self.status,
            "error": self.error,
            "attributes": self.attributes,
            "thread": self.thread,
        }


_UNSET: Any = object()


class Tracker:
    """Records finished spans (thread-safe) and tells listeners about each one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self._listeners: list[Callable[[Span], Any]] = []
        # one variable per tracker: two trackers never see each other's current span
        self._current: contextvars.ContextVar[Span | None] = contextvars.ContextVar(
            f"ponder_span_{id(self):x}", default=None
        )

    @contextmanager
    def span(
        self,
        name: str,
        type: SpanType | str = SpanType.OTHER,
        *,
        parent_id: str | None = _UNSET,
        **attributes: Any,
    ) -> Iterator[Span]:
        """Time the ``with`` block as a span; the yielded :class:`Span` may get more attributes.

        The parent is the span current in this context unless ``parent_id`` is given. An
        exception marks the span ``"error"`` (message redacted) and propagates unchanged.
        """
        parent = self._current.get()
        if parent_id is _UNSET:
            parent_id = parent.id if parent is not None else None
        span = Span(name=name, type=_span_type(type), parent_id=parent_id, attributes=attributes)
        token = self._current.set(span)
        # while a span is open, @track records into this tracker, under this span
        previous_active = _active_tracker.get()
        active = _active_tracker.set(self)
        try:
            yield span
        except BaseException as exc:
            span.status = "error"
            text = str(exc).strip()
            span.error = redact(f"{type_name(exc)}: {text}" if text else type_name(exc))
            raise
        finally:
            try:
                self._current.reset(token)
                _active_tracker.reset(active)
            except ValueError:  # exited in another context (async generators): restore by hand
                self._current.set(parent)
                _active_tracker.set(previous_active)
            self._finish(span)

    def current_span(self) -> Span | None:
        """The innermost open span in this context, if any."""
        return self._current.get()

    def _finish(self, span: Span) -> None:
        span.duration_s = time.perf_counter() - span._t0
        span.end = span.start + span.duration_s
        self.adopt(span)

    def adopt(self, span: Span) -> None:
        """Record a span that finished elsewhere (an executor's worker process) with its own
        times, as if it had finished here: listeners (the run store, exporters) see it too."""
        span.attributes = clean_secrets(span.attributes)
        with self._lock:
            self._spans.append(span)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(span)
            except Exception:  # a broken listener (e.g. storage) must not break the traced code
                log.warning("span listener %r failed", listener, exc_info=True)

    @property
    def spans(self) -> list[Span]:
        """A copy of the finished spans, in the order they finished."""
        with self._lock:
            return list(self._spans)

    def add_listener(self, fn: Callable[[Span], Any]) -> None:
        """Call ``fn(span)`` for every span that finishes from now on."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Span], Any]) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def reset(self) -> None:
        """Forget recorded spans (listeners stay)."""
        with self._lock:
            self._spans.clear()

    def get_summary(self) -> dict[str, Any]:
        """``{"total_spans", "errors", "by_type": {type: {count, errors, total_s, mean_s}}}``.

        ``total_s`` adds up span durations, so nested spans of one type are counted twice.
        """
        spans = self.spans
        by_type: dict[str, dict[str, Any]] = {}
        for span in spans:
            entry = by_type.setdefault(
                span.type.value, {"count": 0, "errors": 0, "total_s": 0.0, "mean_s": 0.0}
            )
            entry["count"] += 1
            entry["errors"] += span.status == "error"
            entry["total_s"] += span.duration_s or 0.0
        for entry in by_type.values():
            entry["mean_s"] = entry["total_s"] / entry["count"]
        return {
            "total_spans": len(spans),
            "errors": sum(e["errors"] for e in by_type.values()),
            "by_type": by_type,
        }


def type_name(exc: BaseException) -> str:
    return type(exc).__name__


def _span_type(value: SpanType | str) -> SpanType:
    if isinstance(value, SpanType):
        return value
    try:
        return SpanType(str(value).lower())
    except ValueError:
        known = ", ".join(t.value for t in SpanType)
        raise ValueError(f"unknown span type {value!r} (known: {known})") from None


def in_current_context(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap ``fn`` to run in (a copy of) the caller's context, so spans it opens in a worker
    thread get the caller's current span as parent: ``pool.submit(in_current_context(work))``.
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        # a Context cannot be entered by two threads at once, so each call gets its own copy
        return ctx.copy().run(fn, *args, **kwargs)

    return run


# -- module-level default tracker -------------------------------------------------------------

_default_tracker = Tracker()
_enabled = False
#: the tracker whose span is open in this context (a run's), which @track records into
_active_tracker: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar(
    "ponder_active_tracker", default=None)


def _tracker_for_track() -> Tracker | None:
    """Where a @track call records: the open run's tracker (so its spans join the run's tree),
    else the default tracker when tracking is enabled, else nowhere."""
    active = _active_tracker.get()
    if active is not None:
        return active
    return _default_tracker if _enabled else None


def get_tracker() -> Tracker:
    """The process-wide tracker that :func:`track` records into."""
    return _default_tracker


def enable_tracking(enabled: bool = True) -> None:
    """Turn recording by :func:`track` on or off (off by default)."""
    global _enabled
    _enabled = bool(enabled)


def is_tracking_enabled() -> bool:
    return _enabled


@overload
def track(name: F) -> F: ...


@overload
def track(
    name: str | None = None, span_type: SpanType | str = SpanType.OTHER
) -> Callable[[F], F]: ...


def track(name: Any = None, span_type: SpanType | str = SpanType.OTHER) -> Any:
    """Decorator: record each call of a sync or async function as a span.

    Inside an open span of some :class:`Tracker` (a run's), the call is recorded there, as a
    child of that span, so decorated helpers appear in the run's tree and its export. Outside
    any, it is recorded in the default tracker when :func:`enable_tracking` is on, and otherwise
    the function is called directly (one context-variable lookup). The span name defaults to
    the function's qualified name. Use as ``@track`` or ``@track("name", type)``.
    """
    if callable(name):  # bare @track
        return track()(name)
    kind = _span_type(span_type)

    def decorate(fn: F) -> F:
        span_name = name or fn.__qualname__

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                tracker = _tracker_for_track()
                if tracker is None:
                    return await fn(*args, **kwargs)
                with tracker.span(span_name, kind):
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            tracker = _tracker_for_track()
            if tracker is None:
                return fn(*args, **kwargs)
            with tracker.span(span_name, kind):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
