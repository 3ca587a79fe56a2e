"""Progress display for long runs: a rich bar on a terminal, plain lines in logs, or nothing.

``rich`` is imported only when a rich display actually starts, so importing this module is cheap.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any, Literal

Mode = Literal["auto", "rich", "plain", "silent"]
MODES: tuple[str, ...] = ("auto", "rich", "plain", "silent")

# statuses that end a run; any other status on a clean exit is replaced by "done"
_FINAL_WORDS = ("done", "complete", "finish", "fail", "error", "cancel")


def status_style(status: str | None) -> str:
    """The colour for a status: green done, yellow processing, red failed, cyan retrying."""
    text = (status or "").lower()
    if "retry" in text or "waiting" in text:
        return "cyan"
    if "fail" in text or "error" in text or "cancel" in text:
        return "red"
    if "done" in text or "complete" in text or "finish" in text:
        return "green"
    return "yellow"


class ProgressContext:
    """Counts processed and failed items and shows progress while a ``with`` block runs.

    ``mode``: ``"rich"`` (a live bar on the stream), ``"plain"`` (a line about every 10% and a
    final line), ``"silent"`` (counts only), or ``"auto"`` (rich when the stream is a terminal,
    silent otherwise). The stream is ``file``, else ``sys.stderr`` at the time of entering.
    All methods are thread-safe: map-reduce workers call :meth:`update` from their threads.
    """

    def __init__(
        self,
        total: int,
        model: str = "",
        *,
        description: str = "ponder",
        mode: Mode = "auto",
        file: IO[str] | None = None,
        console: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}; got {mode!r}")
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        self.total = total
        self.model = model
        self.description = description
        self.mode: Mode = mode
        self.file = file
        self.console = console  # a rich Console to draw on (tests, or sharing the CLI's)
        self.status: str | None = None
        self._clock = clock
        self._lock = threading.RLock()
        self._processed = 0
        self._failed = 0
        self._start = clock()
        self._end: float | None = None
        self._last_decile = 0
        self._active_mode: Mode = "silent"
        self._progress: Any = None
        self._task: Any = None

    # -- counters ---------------------------------------------------------------------------

    @property
    def processed(self) -> int:
        return self._processed

    @property
    def failed(self) -> int:
        return self._failed

    @property
    def elapsed(self) -> float:
        """Seconds since the context was entered (frozen once it exits)."""
        end = self._end if self._end is not None else self._clock()
        return max(0.0, end - self._start)

    def rate(self) -> float:
        """Items processed per second so far (0.0 before any time has passed)."""
        elapsed = self.elapsed
        return self._processed / elapsed if elapsed > 0 else 0.0

    def rate_text(self) -> str:
        """The speed as people read it: ``12.3 items/s``, or ``45.2 s/item`` under one item a
        second (a slow local model otherwise shows "0.0 items/s" for minutes), or ``- s/item``
        before the first item is done."""
        rate = self.rate()
        if rate >= 1.0:
            return f"{rate:.1f} items/s"
        if self._processed == 0:
            return f"- s/item ({self.elapsed:.0f}s so far)"
        return f"{self.elapsed / self._processed:.1f} s/item"

    def update(
        self,
        processed: int | None = None,
        status: str | None = None,
        advance: int = 0,
        failed: int = 0,
    ) -> None:
        """Set ``processed`` (absolute) and/or ``advance`` it, add ``failed`` failures and set the
        status text shown next to the bar."""
        with self._lock:
            if processed is not None:
                self._processed = processed
            self._processed += advance
            self._failed += failed
            if status is not None:
                self.status = status
            self._render()

    def fail(self, n: int = 1) -> None:
        """Record ``n`` items that finished unsuccessfully (they count as processed too)."""
        self.update(advance=n, failed=n)

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> ProgressContext:
        with self._lock:
            self._start = self._clock()
            self._end = None
            stream = self._stream()
            mode = self.mode
            if mode == "auto":
                mode = "rich" if self.console is not None or _isatty(stream) else "silent"
            self._active_mode = mode
            if mode == "rich":
                self._start_rich(stream)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            if exc_type is not None:
                self.status = "failed"
            elif self.status is None or not any(w in self.status.lower() for w in _FINAL_WORDS):
                self.status = "done"
            self._end = self._clock()
            if self._active_mode == "rich" and self._progress is not None:
                self._render()
                self._progress.stop()
                self._progress = None
            elif self._active_mode == "plain":
                self._write(self._final_line())
            self._active_mode = "silent"

    # -- rendering --------------------------------------------------------------------------

    def _stream(self) -> IO[str]:
        return self.file if self.file is not None else sys.stderr

    def _label(self) -> str:
        return f"{self.description} ({self.model})" if self.model else self.description

    def _render(self) -> None:
        # called with the lock held
        if self._active_mode == "rich" and self._progress is not None:
            self._progress.update(self._task, completed=self._processed, total=self.total or None)
        elif self._active_mode == "plain" and self.total > 0:
            decile = min(10, self._processed * 10 // self.total)
            # 100% is left to the final line written on exit
            if self._last_decile < decile < 10:
                self._last_decile = decile
                self._write(self._progress_line())

    def _progress_line(self) -> str:
        pct = 100 * self._processed // self.total if self.total else 100
        line = f"{self._label()}: {self._processed}/{self.total} ({pct}%) {self.rate_text()}"
        if self.status:
            line += f", {self.status}"
        if self._failed:
            line += f", {self._failed} failed"
        return line

    def _final_line(self) -> str:
        line = (
            f"{self._label()}: {self.status} {self._processed}/{self.total} "
            f"in {self.elapsed:.1f}s ({self.rate_text()})"
        )
        if self._failed:
            line += f", {self._failed} failed"
        return line

    def _write(self, line: str) -> None:
        stream = self._stream()
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed pipe must never break the run itself
            pass

    def _start_rich(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        ctx = self

        class RateColumn(ProgressColumn):
            def render(self, task: Any) -> Text:
                return Text(ctx.rate_text(), style="progress.data.speed")

        class StatusColumn(ProgressColumn):
            def render(self, task: Any) -> Text:
                status = ctx.status or "processing"
                text = Text(status, style=status_style(status))
                if ctx.failed:
                    text.append(f" ({ctx.failed} failed)", style="red")
                return text

        console = self.console
        if console is None:
            console = Console(file=stream) if self.file is not None else Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeRemainingColumn(),
            StatusColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(
            _escape(self._label()), total=self.total or None, completed=self._processed
        )
        self._progress.start()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
