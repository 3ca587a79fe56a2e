"""What the progress line of an eval says besides the count: the first metric's mean so far, the
cost so far, how many were read back from the store, and an ETA.

The ETA is reckoned from the examples actually asked, not from those read back: a resumed eval
reads hundreds of finished examples back in a second, and a rate that counted them would
promise the rest in no time. So it is ``left x elapsed / asked`` (the elapsed time already
reflects how many run at once), shown once one example has been asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ponder.evaluate.results import ExampleResult


def eta_text(seconds: float) -> str:
    """``ETA 42s``, ``ETA 3m05s``, ``ETA 1h02m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"ETA {seconds}s"
    if seconds < 3600:
        return f"ETA {seconds // 60}m{seconds % 60:02d}s"
    return f"ETA {seconds // 3600}h{seconds % 3600 // 60:02d}m"


class EvalStatus:
    """Folds in each finished example; :meth:`text` is the status shown next to the bar."""

    def __init__(self, total: int, metric: str, *, eta: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.metric = metric
        #: put the ETA in the text (plain lines; a rich bar shows its own time remaining)
        self.eta = eta
        self._clock = clock
        self._started = clock()
        self.done = 0
        self.asked = 0
        self.resumed = 0
        self._scored = 0
        self._sum = 0.0
        self.cost = 0.0

    def add(self, result: ExampleResult) -> None:
        self.done += 1
        if result.resumed:
            self.resumed += 1
        else:
            self.asked += 1
        self.cost += (result.usage.get("cost", 0) or 0) + (result.judge_usage.get("cost", 0)
                                                            or 0)
        value = result.scores.get(self.metric)
        if result.ok and value is not None:
            self._scored += 1
            self._sum += float(value)

    @property
    def mean(self) -> float | None:
        return self._sum / self._scored if self._scored else None

    def eta_s(self) -> float | None:
        """Seconds until every example is done, from the rate of those asked; None before
        the first one was asked."""
        if not self.asked:
            return None
        left = self.total - self.done
        return left * (self._clock() - self._started) / self.asked

    def text(self) -> str:
        mean = "-" if self.mean is None else f"{self.mean:.3f}"
        parts = [f"{self.metric} {mean}", f"${self.cost:.4f}"]
        if self.resumed:
            parts.append(f"{self.resumed} read back")
        eta = self.eta_s() if self.eta else None
        if eta is not None and self.done < self.total:
            parts.append(eta_text(eta))
        return ", ".join(parts)
