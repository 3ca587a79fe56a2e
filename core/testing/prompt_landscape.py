"""A fake provider whose answer is right only when a demo is in the prompt, for prompt optimizers.

The prompt-optimizer tests need a system a few-shot demo measurably fixes, through real HTTP,
the real ``direct`` strategy and DSPy's real chat format. :class:`DemoLandscapeProvider` is the
loopback :class:`FakeProvider` with one reply rule, and :func:`write_code_corpus` writes the
corpus it is meant for:

* each source file ``codes/<name>.txt`` holds the line ``The code of <name> is <value>.``
  among filler lines; the question is ``What is the code of <name>?``;
* the request's **last user message** (the question being asked: DSPy puts few-shot demos
  before it as earlier user/assistant turns) decides the reply. A question marked ``plainly``
  (``… Answer plainly.``) is always answered with the right value: the easy examples a
  bootstrap learns from. Any other question is answered right **only when the request holds a
  demo** (an ``assistant`` message before the last user message); without one the reply is
  ``NOT FOUND``. With ``max_temperature`` set, a request above it is never answered right.

So the baseline scores 1 on the easy examples and 0 on the others, the teacher's traces of the
easy ones pass the metric and become demos, and with them every question is answered. Every
request is counted at ``/stats``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ponder.testing.fake_provider import FakeProvider, message_text

FILLER = "filler line {i}: nothing about codes here."
EASY_MARK = "Answer plainly."


def question_for(name: str, *, easy: bool = False) -> str:
    return f"What is the code of {name}?" + (f" {EASY_MARK}" if easy else "")


def write_code_corpus(directory: str | Path, codes: dict[str, str]) -> dict[str, Path]:
    """``directory/codes/<name>.txt`` for each ``name -> value``; returns the paths."""
    folder = Path(directory) / "codes"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, value in codes.items():
        lines = [FILLER.format(i=i) for i in range(8)]
        lines.insert(4, f"The code of {name} is {value}.")
        path = folder / f"{name}.txt"
        path.write_text("\n".join(lines) + "\n")
        paths[name] = path
    return paths


class DemoLandscapeProvider(FakeProvider):
    """``DemoLandscapeProvider(**FakeProvider settings)``; see the module docstring."""

    def __init__(self, *, max_temperature: float | None = None, **overrides: Any) -> None:
        super().__init__(**overrides)
        #: set: a request above this temperature is never answered right (a config variable
        #: for the joint search to find); None: the temperature does not matter
        self.max_temperature = max_temperature
        #: requests that held a demo, and those that did not (what the tests look at)
        self.with_demos = 0
        self.without_demos = 0

    def _serve_admitted(self, h: Any, kind: str, body: dict, request: dict) -> None:
        request["temperature"] = body.get("temperature")
        super()._serve_admitted(h, kind, body, request)

    def _reply_text(self, request: dict, messages: list[dict], texts: list[str]) -> Any:
        if request.get("reply") is not None:
            return request["reply"]
        temperature = request.get("temperature")
        if self.max_temperature is not None and temperature is not None \
                and float(temperature) > self.max_temperature:
            return "NOT FOUND"
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if not users:
            return "NOT FOUND"
        last = message_text(messages[users[-1]].get("content"))
        has_demo = any(m.get("role") == "assistant" for m in messages[:users[-1]])
        with self._lock:
            if has_demo:
                self.with_demos += 1
            else:
                self.without_demos += 1
        asked = re.search(r"What is the code of (\w+)\?", last)
        if asked is None:
            return "NOT FOUND"
        value = re.search(rf"The code of {asked.group(1)} is (\w+)\.", last)
        if value is None:
            return "NOT FOUND"
        if EASY_MARK in last or has_demo:
            return f"The code of {asked.group(1)} is {value.group(1)}."
        return "NOT FOUND"
