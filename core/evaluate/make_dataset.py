"""Synthetic needle datasets: a generated codebase with planted facts, and the questions
about them as an eval dataset (``ponder eval make-dataset``).

The six families of ``bench/coverage.py`` (:mod:`ponder.evaluate.needles` plants them at depths
0/25/50/75/100 % of the corpus):

- ``literal``: a constant's value (``What is the value of MAGIC_PORT?`` -> ``48213``);
- ``semantic``: a function described in words, answered by its name;
- ``confusable``: one of six constants with the same template; the other five values are in
  ``must_not_include`` (the ``contains`` metric fails an answer naming one);
- ``two_hop``: what a function returns, where it only calls another function in a file half the
  corpus away that holds the value;
- ``aggregation``: how many functions carry a decorator (``5``, one at each depth);
- ``pairs``: the two modules that import each other (one in ``answer``, the other in
  ``must_include``).

Each example's ``evidence`` is where its lines were planted (``path:line``), so ``citations``
can score it; its metadata has the family, the depths and ``required`` (the exact lines the
oracle fake provider routes). ``provider.json`` beside the dataset holds the oracle needles, so
``python -m ponder.testing.fake_provider --mode oracle --needle ID=TEXT …`` answers it offline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.support.fileutils import atomic_write

#: user-facing family names -> the generator's
FAMILIES = {"literal": "literal", "semantic": "function", "function": "function",
            "confusable": "confusable", "two_hop": "two_hop", "two-hop": "two_hop",
            "aggregation": "aggregation", "pairs": "pairs"}
_PUBLIC = {"function": "semantic"}


def _value(line: str) -> str:
    return line.rsplit(" ", 1)[-1]


def _gold(question: Any) -> tuple[list[str], dict[str, Any]]:
    """The gold answers and extra metadata a real model's answer is judged by."""
    family = question.family
    if family in ("literal", "confusable", "two_hop"):
        extra = {}
        if family == "confusable":
            extra["must_not_include"] = [_value(line) for line in question.forbidden]
        return [_value(question.required[0])], extra
    if family == "function":
        return [question.key], {}
    if family == "aggregation":
        return [str(len(question.required))], {}
    # pairs: "x_path imports y_mod" and "y_path imports x_mod"
    y_mod = question.required[0].split(" imports ", 1)[1]
    x_mod = question.required[1].split(" imports ", 1)[1]
    return [x_mod], {"must_include": [y_mod]}


def make_needle_dataset(out_dir: str | os.PathLike[str], *, size: int = 200_000, seed: int = 0,
                        families: Sequence[str] | None = None) -> dict[str, Any]:
    """Write ``corpus/``, ``needles.jsonl`` and ``provider.json`` under ``out_dir``; returns
    what was written (paths, counts)."""
    from ponder.evaluate import needles

    if size < 20_000:
        raise ConfigError(f"--size: at least 20000 bytes (room for every family), got {size}")
    wanted = None
    if families:
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise ConfigError(f"--family {unknown[0]}: unknown (families: literal, semantic, "
                              f"confusable, two_hop, aggregation, pairs)")
        wanted = {FAMILIES[f] for f in families}
    out = Path(out_dir)
    corpus_dir = out / "corpus"
    if corpus_dir.exists() and any(corpus_dir.iterdir()):
        raise ConfigError(f"{corpus_dir}: exists and is not empty; choose a new folder")
    corpus = needles.generate(size, seed)
    questions = needles.plant_coverage(corpus)
    needles.locate_planted(corpus, questions)
    corpus.write(corpus_dir)
    lines, oracle = [], {}
    for question in questions:
        if wanted is not None and question.family not in wanted:
            continue
        family = _PUBLIC.get(question.family, question.family)
        example_id = f"{family}-{question.key}"
        answer, extra = _gold(question)
        lines.append({
            "id": example_id, "question": question.question, "sources": ["corpus/"],
            "answer": answer,
            "evidence": [f"{p['path']}:{p['line']}" for p in question.planted],
            "tags": [family], "family": family, "depths": question.depths,
            "required": question.required, **extra,
        })
        if question.provider.get("mode") == "oracle":
            for i, needle in enumerate(question.provider["needle"]):
                oracle[f"{example_id}.{i}"] = needle.split("=", 1)[1]
    dataset = out / "needles.jsonl"
    atomic_write(dataset, "".join(json.dumps(line) + "\n" for line in lines))
    provider = out / "provider.json"
    atomic_write(provider, json.dumps({"mode": "oracle", "needles": oracle}, indent=1) + "\n")
    return {"dataset": str(dataset), "corpus": str(corpus_dir), "provider": str(provider),
            "examples": len(lines), "files": len(corpus.files), "bytes": corpus.chars,
            "families": sorted({line["family"] for line in lines})}
