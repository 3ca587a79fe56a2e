"""The eval's progress status: the score and cost so far, what was read back, and an ETA
reckoned from the examples actually asked (not from those read back from the store)."""

from __future__ import annotations

from ponder.evaluate import Example, ExampleResult
from ponder.evaluate.progress import EvalStatus, eta_text


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def result(i: int, value: float | None, *, resumed: bool = False, cost: float = 0.0,
           failure: str | None = None) -> ExampleResult:
    example = Example(id=str(i), question="q?", answer=("a",))
    return ExampleResult(id=str(i), example=example, scores={"contains": value},
                         usage={"calls": 1, "input_tokens": 0, "output_tokens": 0, "tokens": 0,
                                "cost": cost}, resumed=resumed, failure=failure)


def test_eta_text_units():
    assert eta_text(0.4) == "ETA 0s"
    assert eta_text(42) == "ETA 42s"
    assert eta_text(185) == "ETA 3m05s"
    assert eta_text(3725) == "ETA 1h02m"


def test_eta_counts_only_the_examples_asked():
    clock = Clock()
    status = EvalStatus(10, "contains", clock=clock)
    for i in range(4):  # read back in no time: no rate to go by yet
        status.add(result(i, 1.0, resumed=True))
    assert status.eta_s() is None
    assert status.text() == "contains 1.000, $0.0000, 4 read back"
    clock.now += 6.0  # two examples asked in 6 s: 4 left at 3 s each
    status.add(result(4, 0.0, cost=0.5))
    status.add(result(5, None, failure="boom", cost=0.25))
    assert status.eta_s() == 12.0
    assert status.text() == "contains 0.800, $0.7500, 4 read back, ETA 12s"
    for i in range(6, 10):
        status.add(result(i, 1.0))
    assert status.done == 10 and "ETA" not in status.text()


def test_no_eta_in_the_text_for_a_bar_that_shows_its_own():
    clock = Clock()
    status = EvalStatus(4, "contains", eta=False, clock=clock)
    clock.now += 1.0
    status.add(result(0, 1.0))
    assert status.eta_s() == 3.0 and status.text() == "contains 1.000, $0.0000"
