"""The scripted ``dspy.RLM`` root of the fake provider: recognise a root prompt and write its code.

With ``rlm_root=True`` the fake provider answers a prompt that ``dspy.RLM`` wrote for its root
model with a fixed search policy in Python (:func:`rlm_root_code`) instead of the mode's reply,
so the ``rlm`` strategy runs end to end offline, REPL and ``llm_query`` sub-calls included. It
is its own module because the policy is a program of its own (the code it sends is text run in
the RLM sandbox, not here) and the ``rlm`` benchmarks call it directly; the policy itself is
described in the :mod:`ponder.testing.fake_provider` docstring.
"""

from __future__ import annotations

import re

__all__ = ["rlm_root_code", "rlm_root_turn"]

_RLM_ITERATION = re.compile(r"\[\[ ## iteration ## \]\]\s*(\d+)\s*/\s*\d+")
_RLM_ITERATION_JSON = re.compile(r"\"iteration\"\s*:\s*\"(\d+)\s*/\s*\d+\"")
_OUTPUT_FIELDS = re.compile(r"Your output fields are:(.*?)(?:\n\n|$)", re.DOTALL)


def rlm_root_turn(prompt: str) -> int | None:
    """The iteration (1-based) when ``prompt`` is a ``dspy.RLM`` root (action) prompt, else None.

    A root prompt has the input ``repl_history`` and the output fields ``reasoning`` and ``code``;
    the extract fallback and the ``llm_query`` sub-calls do not have ``code`` among their outputs.
    """
    if "repl_history" not in prompt:
        return None
    block = _OUTPUT_FIELDS.search(prompt)
    if block is None or "`code`" not in block.group(1):
        return None
    found = _RLM_ITERATION.findall(prompt) or _RLM_ITERATION_JSON.findall(prompt)
    return int(found[-1]) if found else 1


_RLM_STOP_WORDS = (
    "what which where when does that this with from into have were will there their about "
    "value values function functions module modules return returns each other code file files "
    "text line lines many much name"
)

_RLM_SEARCH = r"""import re
PATTERN = __PATTERN__
MAX_HITS = __MAX_HITS__
STOP = set(__STOP__.split())
lines = context.split("\n")


def _terms():
    if PATTERN:
        return [], 1
    ids = []
    for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", question):
        if "_" in w.strip("_") and w not in ids:
            ids.append(w)
    if ids:
        return ids, 1
    words = []
    for w in re.findall(r"[a-z]{4,}", question.lower()):
        if w not in STOP and w not in words:
            words.append(w)
    return words, 2


terms, need = _terms()
rx = re.compile(PATTERN) if PATTERN else None
scored = []
for i, line in enumerate(lines):
    if line.startswith("=== "):
        continue
    if rx is not None:
        n = 1 if rx.search(line) else 0
    else:
        text = line if need == 1 else line.lower()
        n = 0
        for t in terms:
            if t in text:
                n += 1
    if n >= need:
        scored.append((n, i))
best = max([n for n, i in scored]) if scored else 0
hits = [i for n, i in scored if n == best][:MAX_HITS]

# one hop: where the functions called on the hit lines are defined
called = []
for i in hits:
    own = re.findall(r"def\s+([A-Za-z_][A-Za-z0-9_]*)", lines[i])
    for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\(", lines[i]):
        if name not in own and name not in called:
            called.append(name)
if called:
    for i, line in enumerate(lines):
        if "def " in line and i not in hits:
            for name in called:
                if "def " + name + "(" in line:
                    hits.append(i)
                    break
hits = hits[:2 * MAX_HITS]


def _snippet(i):
    h = i
    while h > 0 and not lines[h].startswith("=== "):
        h -= 1
    lo = max(h + 1, i - 3)
    return lines[h] + "\n" + "\n".join(lines[lo:i + 4])


snippets = []
for i in hits:
    s = _snippet(i)
    if s not in snippets:
        snippets.append(s)
"""

_RLM_LOOK = r"""
shown = PATTERN if PATTERN else ", ".join(terms)
print("searched for " + shown + ": " + str(len(scored)) + " matching lines, "
      + str(len(snippets)) + " snippets")
for s in snippets[:3]:
    print(s)
"""

_RLM_READ = r"""
if snippets:
    prompt = ("Question: " + question + "\n\nExcerpts of the context that match the question "
              + "(found by searching it):\n\n" + "\n\n".join(snippets))
    answer = llm_query(prompt)
else:
    answer = "The context has no lines matching the question, so it does not say."
SUBMIT(answer=answer)
"""


def rlm_root_code(turn: int, pattern: str | None = None, max_hits: int = 12) -> str:
    """The code the scripted RLM root writes at iteration ``turn`` (see the module docstring)."""
    code = (
        _RLM_SEARCH.replace("__PATTERN__", repr(pattern))
        .replace("__MAX_HITS__", repr(int(max_hits)))
        .replace("__STOP__", repr(_RLM_STOP_WORDS))
    )
    return code + (_RLM_LOOK if turn <= 1 else _RLM_READ)
