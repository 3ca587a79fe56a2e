"""ponder.support.progress: counting in every mode, output in plain and rich modes."""

from __future__ import annotations

import io
import threading

import pytest
from rich.console import Console

from ponder.support.progress import ProgressContext, status_style


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TtyStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_seed_usage_silent_counts() -> None:
    stream = io.StringIO()
    with ProgressContext(total=100, model="gemini", mode="silent", file=stream) as progress:
        for i in range(100):
            progress.update(processed=i + 1, status="processing")
    assert progress.processed == 100
    assert progress.failed == 0
    assert progress.status == "done"
    assert stream.getvalue() == ""


def test_auto_is_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with ProgressContext(total=3, file=stream) as progress:
        progress.update(advance=3)
    assert stream.getvalue() == ""
    assert progress.processed == 3


def test_update_semantics_and_fail() -> None:
    with ProgressContext(total=10, mode="silent") as progress:
        progress.update(processed=4)
        progress.update(advance=2)
        progress.fail()
        progress.fail(2)
        progress.update(failed=1)
    assert progress.processed == 9
    assert progress.failed == 4


def test_rate_uses_the_clock() -> None:
    clock = FakeClock()
    progress = ProgressContext(total=10, mode="silent", clock=clock)
    with progress:
        assert progress.rate() == 0.0
        clock.now += 2.0
        progress.update(processed=5)
        assert progress.rate() == 2.5
    clock.now += 100.0  # frozen after exit
    assert progress.rate() == 2.5
    assert progress.elapsed == 2.0


def test_slow_runs_show_seconds_per_item() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    progress = ProgressContext(total=3, mode="plain", file=stream, clock=clock)
    with progress:
        assert progress.rate_text().startswith("- s/item")
        clock.now += 45.0
        progress.update(advance=1)
        assert progress.rate_text() == "45.0 s/item"
        clock.now += 45.0
        progress.update(advance=2)
    assert "0.0 items/s" not in stream.getvalue()
    assert "30.0 s/item" in stream.getvalue()
    fast = ProgressContext(total=10, mode="silent", clock=clock)
    with fast:
        clock.now += 1.0
        fast.update(advance=10)
        assert fast.rate_text() == "10.0 items/s"


def test_plain_mode_prints_about_every_ten_percent_and_a_final_line() -> None:
    stream = io.StringIO()
    clock = FakeClock()
    with ProgressContext(
        total=20, model="m", description="map", mode="plain", file=stream, clock=clock
    ) as progress:
        for _ in range(20):
            clock.now += 0.5
            progress.update(advance=1, status="processing")
        progress.fail(0)
    lines = stream.getvalue().splitlines()
    # 10%..90% once each, then the final line (100% is only the final line)
    assert len(lines) == 10
    assert lines[0] == "map (m): 2/20 (10%) 2.0 items/s, processing"
    assert lines[8].startswith("map (m): 18/20 (90%)")
    assert lines[-1] == "map (m): done 20/20 in 10.0s (2.0 items/s)"


def test_plain_mode_reports_failures_and_exceptions() -> None:
    stream = io.StringIO()
    clock = FakeClock()
    progress = ProgressContext(total=4, mode="plain", file=stream, clock=clock)
    with pytest.raises(RuntimeError), progress:
        clock.now += 1.0
        progress.update(advance=1)
        progress.fail()
        raise RuntimeError("boom")
    assert progress.status == "failed"
    last = stream.getvalue().splitlines()[-1]
    assert last == "ponder: failed 2/4 in 1.0s (2.0 items/s), 1 failed"


def test_thread_safe_counting() -> None:
    with ProgressContext(total=8000, mode="silent") as progress:

        def work() -> None:
            for _ in range(1000):
                progress.update(advance=1)
            for _ in range(10):
                progress.fail()

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert progress.processed == 8080
    assert progress.failed == 80


def test_rich_mode_on_a_console() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system="truecolor")
    with ProgressContext(total=5, model="gemini", mode="rich", console=console) as progress:
        for i in range(5):
            progress.update(processed=i + 1, status="processing")
        progress.update(failed=1)
    out = buffer.getvalue()
    assert "5/5" in out
    assert "ponder (gemini)" in out
    assert "done" in out
    assert "(1 failed)" in out
    assert "items/s" in out
    assert "\x1b[" in out  # styled for a terminal


def test_auto_picks_rich_on_a_terminal_stream() -> None:
    stream = TtyStringIO()
    with ProgressContext(total=2, mode="auto", file=stream) as progress:
        progress.update(processed=2)
    assert "2/2" in stream.getvalue()


def test_status_colours() -> None:
    assert status_style("done") == "green"
    assert status_style("completed") == "green"
    assert status_style("processing") == "yellow"
    assert status_style(None) == "yellow"
    assert status_style("failed") == "red"
    assert status_style("retrying (429)") == "cyan"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="progress mode"):
        ProgressContext(total=1, mode="fancy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="total"):
        ProgressContext(total=-1)
