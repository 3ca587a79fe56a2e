"""A fake provider with a known quality landscape over config variables, for optimizer tests.

The optimizer tests need a system whose score depends on its configuration in a way known
exactly in advance, through real HTTP and the real strategies rather than a function standing
in for the eval. :class:`LandscapeProvider` is the loopback :class:`FakeProvider` with one reply
rule, and :func:`write_landscape_corpus` writes a corpus it is meant for:

* the corpus is one file whose **first line** holds a key (``KEY_LINE``) and whose line about
  ``gap_tokens`` later holds the value (``VALUE_LINE``); the answer is ``answer``;
* a prompt is answered with the finding ``LANDSCAPE_KEY is port <answer>`` when the request's
  ``temperature`` is at most ``max_temperature`` **and** the prompt holds that finding already
  (a combine call) or holds *both* lines (a chunk that saw the whole fact); a prompt that knows
  the fact at a higher temperature gets a wrong value (``wrong_answer``); anything else is
  ``NOT FOUND``.

So with ``map_reduce`` the answer is right exactly when ``adapter.temperature <= 0.3`` and
``strategy.chunk_tokens`` is large enough for the first chunk to hold both lines (the file's
first chunk starts at line 1), and the optimizer has to find both. Every request is still
counted at ``/stats``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ponder.testing.fake_provider import FakeProvider

KEY_LINE = "The service port is defined by the LANDSCAPE_KEY setting below."
VALUE_LINE = "LANDSCAPE_KEY resolves to port {answer}."
FILLER = "filler line {i}: nothing about ports here, only words to read and skip past."


def write_landscape_corpus(directory: str | Path, *, answer: str = "48213",
                           gap_tokens: int = 1200, tail_tokens: int = 600) -> Path:
    """``directory/service.txt``: the key line, ``gap_tokens`` of filler, the value line, more
    filler. Returns the file's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    line_tokens = len(FILLER.format(i=100)) // 4 + 1
    lines = [KEY_LINE]
    lines += [FILLER.format(i=i) for i in range(gap_tokens // line_tokens)]
    lines.append(VALUE_LINE.format(answer=answer))
    lines += [FILLER.format(i=1000 + i) for i in range(tail_tokens // line_tokens)]
    path = directory / "service.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


class LandscapeProvider(FakeProvider):
    """``LandscapeProvider(answer=…, max_temperature=0.3, **FakeProvider settings)``."""

    def __init__(self, *, answer: str = "48213", max_temperature: float = 0.3,
                 wrong_answer: str = "port 8080", **overrides: Any) -> None:
        super().__init__(**overrides)
        self.answer = answer
        self.max_temperature = max_temperature
        self.wrong_answer = wrong_answer
        self.value_line = VALUE_LINE.format(answer=answer)

    def _serve_admitted(self, h: Any, kind: str, body: dict, request: dict) -> None:
        request["temperature"] = body.get("temperature")
        super()._serve_admitted(h, kind, body, request)

    def _reply_text(self, request: dict, messages: list[dict], texts: list[str]) -> Any:
        if request.get("reply") is not None:
            return request["reply"]
        prompt = "\n".join(texts)
        temperature = request.get("temperature")
        temperature = 1.0 if temperature is None else float(temperature)
        finding = f"LANDSCAPE_KEY is port {self.answer}"
        knows = finding in prompt or (KEY_LINE in prompt and self.value_line in prompt)
        if not knows:
            return "NOT FOUND"
        if temperature > self.max_temperature:
            return self.wrong_answer
        return finding
