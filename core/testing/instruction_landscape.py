"""A fake provider whose answer depends on the prompt's *instructions* too, for mipro and simba.

:class:`ponder.testing.prompt_landscape.DemoLandscapeProvider` answers a hard question right
when the request holds a demo; the instruction optimizers need a landscape where what the
instructions say matters, and a model that answers their own proposal and reflection calls.
:class:`InstructionLandscapeProvider` is that landscape over the same corpus
(:func:`ponder.testing.prompt_landscape.write_code_corpus`) and questions:

* a request is **instructed** when its system message (where DSPy's chat format writes the
  signature's instructions) holds :data:`MARK`. A question marked ``Answer plainly.`` is always
  answered right; any other one is answered right by the rule ``needs``: ``"instruction"``
  (instructed), ``"demo"`` (a demo in the request, as the demo landscape), ``"either"`` or
  ``"both"`` (a demo **and** the instruction: what neither bootstrap_fewshot's demos nor an
  instruction alone reaches). Otherwise the reply is ``NOT FOUND``.
* a request for DSPy's MIPROv2 instruction proposal (an output field ``proposed_instruction``)
  is answered with the next of :data:`PROPOSALS`, in turn (per provider): one of them holds the
  mark, the others do not, so which candidate wins is something a search has to find (the
  first ``failing_proposals`` proposal requests get a server error instead, 500 or 503);
* a request for DSPy's SIMBA reflection (an output field ``module_advice``) is answered with
  advice holding the mark for every module named in its ``module_names`` input.

Every chat request is kept in :attr:`InstructionLandscapeProvider.requests` (its kind, system
message, whether it held a demo and whether it was instructed), so a test can show that the
compiled instructions are what the provider was sent. Every request is counted at ``/stats``.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from ponder.testing.fake_provider import message_text
from ponder.testing.prompt_landscape import EASY_MARK, DemoLandscapeProvider

MARK = "Quote the line that states the code before answering."
#: what the proposal requests are answered with, in turn (the second one is the good one)
PROPOSALS = (
    "Answer the question from the source text, briefly.",
    f"Read the source text line by line. {MARK}",
    "Answer in one short sentence.",
)
NEEDS = ("instruction", "demo", "either", "both")


class InstructionLandscapeProvider(DemoLandscapeProvider):
    """``InstructionLandscapeProvider(needs="both", **FakeProvider settings)``; see the module
    docstring."""

    def __init__(self, *, needs: str = "both", failing_proposals: int = 0,
                 **overrides: Any) -> None:
        if needs not in NEEDS:
            raise ValueError(f"needs must be one of {NEEDS}, got {needs!r}")
        super().__init__(**overrides)
        self.needs = needs
        #: the first this many proposal requests get a server error (500 or 503), which the
        #: client retries: every request must still be counted
        self.failing_proposals = failing_proposals
        #: one dict per chat request: kind (answer, proposal, advice), system, demo, instructed
        self.requests: list[dict[str, Any]] = []
        self._proposals = 0
        self._requests_lock = threading.Lock()

    def answers(self) -> list[dict[str, Any]]:
        """The requests that asked a question (not the optimizer's own calls)."""
        with self._requests_lock:
            return [r for r in self.requests if r["kind"] == "answer"]

    def _serve_admitted(self, h: Any, kind: str, body: dict, request: dict) -> None:
        if kind == "chat" and self.failing_proposals > 0 and any(
                "`proposed_instruction`" in message_text(m.get("content"))
                for m in body.get("messages") or [] if isinstance(m, dict)):
            with self._requests_lock:
                if self.failing_proposals > 0:
                    self.failing_proposals -= 1
                    request["fault"] = "server_error"  # as the X-Fake-Fault header forces it
        super()._serve_admitted(h, kind, body, request)

    def _reply_text(self, request: dict, messages: list[dict], texts: list[str]) -> Any:
        if request.get("reply") is not None:
            return request["reply"]
        system = "\n".join(message_text(m.get("content")) for m in messages
                           if m.get("role") == "system")
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        last = message_text(messages[users[-1]].get("content")) if users else ""
        has_demo = bool(users) and any(m.get("role") == "assistant"
                                       for m in messages[:users[-1]])
        instructed = MARK in system
        kind = ("proposal" if "`proposed_instruction`" in system
                else "advice" if "`module_advice`" in system else "answer")
        with self._requests_lock:
            self.requests.append({"kind": kind, "system": system, "demo": has_demo,
                                  "instructed": instructed, "last_user": last})
            if kind == "proposal":
                proposal = PROPOSALS[self._proposals % len(PROPOSALS)]
                self._proposals += 1
        if kind == "proposal":
            return {"proposed_instruction": proposal}
        if kind == "advice":
            found = re.search(r"\[\[ ## module_names ## \]\]\s*(\[.*?\])", last, re.DOTALL)
            try:
                names = json.loads(found.group(1)) if found else []
            except ValueError:
                names = []
            return {"discussion": "The worse run did not quote the code line.",
                    "module_advice": {str(name): f"When asked for a code: {MARK}"
                                      for name in names}}
        with self._lock:
            if has_demo:
                self.with_demos += 1
            else:
                self.without_demos += 1
        temperature = request.get("temperature")
        if self.max_temperature is not None and temperature is not None \
                and float(temperature) > self.max_temperature:
            return "NOT FOUND"
        asked = re.search(r"What is the code of (\w+)\?", last)
        value = asked and re.search(rf"The code of {asked.group(1)} is (\w+)\.", last)
        if not value:
            return "NOT FOUND"
        right = {"instruction": instructed, "demo": has_demo,
                 "either": instructed or has_demo, "both": instructed and has_demo}[self.needs]
        if EASY_MARK in last or right:
            return f"The code of {asked.group(1)} is {value.group(1)}."
        return "NOT FOUND"
