"""The ``citations`` metric: precision and recall of the answer's ``path:line`` citations
against the example's ``evidence``.

A citation is a ``path:line`` (or ``path:start-end``, counted at its first line) in the answer
text, or one of the prediction's ``citations`` (the engine's, validated against what was read).
It is *correct* when the cited line exists, in a file of the example's sources, and falls inside
one of the evidence items (``path:line`` or ``path:start-end``, widened by ``line_tolerance`` on
each side). Paths match when one ends with the other on a ``/`` boundary,
so ``service/config.py`` (as the model cites it, relative to the source folder) matches the
evidence ``tiny-service/service/config.py``. A cited line that does not exist (past the end of
the file, or a file the sources do not have) is never correct.

- precision = correct citations / citations (0 when the answer cites nothing);
- recall = evidence items hit by a correct citation / evidence items;
- the value is their F1 (``value = "recall"`` or ``"precision"`` picks one instead).

An example without ``evidence`` is not scored by this metric (value ``None``: left out of its
mean, never a silent 0).

Config example::

    [eval.metric.citations]
    # line_tolerance = 0
    # value = "f1"
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Any

import attrs

from ponder import hookimpl
from ponder.evaluate.metric import BaseMetric, Score, answer_text, evidence_of

PONDER_PLUGIN_API = 1

_CITATION = re.compile(r"(?P<path>[\w./\\-]+\.\w+):(?P<start>\d+)(?:-(?P<end>\d+))?")


@attrs.define
class CitationsSettings:
    line_tolerance: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    value: str = attrs.field(default="f1",
                             validator=attrs.validators.in_(("f1", "precision", "recall")))


def parse_ref(text: str) -> tuple[str, int, int]:
    path, _, lines = text.rpartition(":")
    start, _, end = lines.partition("-")
    return path.replace("\\", "/"), int(start), int(end or start)


def cited(text: str) -> list[tuple[str, int]]:
    """``(path, line)`` of every citation in ``text``, in order, without repeats."""
    found: list[tuple[str, int]] = []
    for match in _CITATION.finditer(text):
        ref = (match.group("path").replace("\\", "/"), int(match.group("start")))
        if ref not in found:
            found.append(ref)
    return found


def same_path(a: str, b: str) -> bool:
    a, b = os.path.normpath(a).replace("\\", "/"), os.path.normpath(b).replace("\\", "/")
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


@lru_cache(maxsize=1024)
def _line_count(path: str, mtime: float) -> int:
    with open(path, "rb") as handle:
        data = handle.read()
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


def line_exists(path: str, line: int, sources: Any) -> bool:
    """Whether ``path:line`` is a line of a file in ``sources`` (folders, files or globs)."""
    import glob

    if line < 1:
        return False
    for source in sources or ():
        candidates: list[str] = []
        if os.path.isdir(source):
            direct = os.path.join(source, path)
            # a shortened path (``config.py`` for ``service/config.py``): files ending with it
            candidates.extend([direct] if os.path.isfile(direct) else glob.glob(
                os.path.join(glob.escape(source), "**", glob.escape(os.path.basename(path))),
                recursive=True))
        elif os.path.isfile(source):
            candidates.append(source)
        else:
            candidates.extend(glob.glob(source, recursive=True))
        for candidate in candidates:
            if os.path.isfile(candidate) and same_path(candidate, path):
                try:
                    if line <= _line_count(candidate, os.path.getmtime(candidate)):
                        return True
                except OSError:
                    continue
    return False


class Citations(BaseMetric):
    name = "citations"
    pass_threshold = 0.5

    def __init__(self, settings: CitationsSettings | None = None) -> None:
        self.settings = settings or CitationsSettings()

    def score(self, example: Any, prediction: Any) -> Score:
        evidence = [parse_ref(item) for item in evidence_of(example)]
        if not evidence:
            return Score(None, feedback="the example has no evidence to check citations against")
        sources = getattr(example, "sources", None) or ()
        refs = cited(answer_text(prediction))
        # the engine's validated citations too (it cites where the findings came from when the
        # model cited nothing): ``Citation`` objects or ``path:line`` strings
        for citation in getattr(prediction, "citations", None) or ():
            if hasattr(citation, "path"):
                ref = (str(citation.path).replace("\\", "/"), int(citation.line))
            else:
                path, start, _ = parse_ref(str(citation))
                ref = (path, start)
            if ref not in refs:
                refs.append(ref)
        tol = self.settings.line_tolerance
        hit: set[int] = set()
        correct = 0
        wrong: list[str] = []
        for path, line in refs:
            matched = [i for i, (epath, start, end) in enumerate(evidence)
                       if same_path(path, epath) and start - tol <= line <= end + tol]
            if matched and line_exists(path, line, sources):
                correct += 1
                hit.update(matched)
            else:
                wrong.append(f"{path}:{line}")
        precision = correct / len(refs) if refs else 0.0
        recall = len(hit) / len(evidence)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        value = {"f1": f1, "precision": precision, "recall": recall}[self.settings.value]
        feedback = None
        if not refs:
            feedback = "the answer cites no path:line"
        elif wrong or recall < 1:
            missed = [f"{p}:{s}" + (f"-{e}" if e != s else "")
                      for i, (p, s, e) in enumerate(evidence) if i not in hit]
            feedback = "; ".join(filter(None, [
                f"not evidence or no such line: {', '.join(wrong)}" if wrong else "",
                f"evidence not cited: {', '.join(missed)}" if missed else ""]))
        return Score(value, feedback=feedback, parts={"precision": precision, "recall": recall})


@hookimpl
def ponder_register_metrics(register):
    register("citations", Citations, settings=CitationsSettings)
