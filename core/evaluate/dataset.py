"""Eval datasets: JSONL or CSV files of questions with gold answers, read strictly.

One example a line (JSONL) or a row (CSV, same column names; list columns hold JSON lists or
``;``-separated text)::

    {"id": "port", "question": "Which port?", "sources": ["../tiny-service/"],
     "answer": ["48213"], "evidence": ["service/config.py:6"], "tags": ["config"],
     "split": "test", "difficulty": "easy"}

``sources`` are paths or globs relative to the dataset file (one string or a list); ``answer`` is
one string or a list of acceptable ones; any field ponder does not know is kept in
``metadata`` for metrics. A bad file is one error naming the file, the line and the field
(``qa.jsonl:7: missing "question"``), raised before anything runs; sources that do not exist are
not checked here: that example alone fails when it runs, with the reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from ponder.errors import ConfigError

SPLITS = ("train", "val", "test")
KNOWN_FIELDS = ("id", "question", "sources", "answer", "evidence", "tags", "split")
_LIST_FIELDS = ("sources", "answer", "evidence", "tags")


class DatasetError(ConfigError):
    """A dataset file that cannot be read; the message names the file, line and field."""


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@attrs.frozen
class Example:
    """One question with its gold answer(s); sources already resolved against the file."""

    id: str
    question: str
    sources: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    answer: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    evidence: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    tags: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    split: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict, hash=False)
    #: the line of the file it came from (0 when built in code)
    line: int = attrs.field(default=0, eq=False)

    @property
    def digest(self) -> str:
        """Everything that defines the example (the line number does not)."""
        return _digest(self.id, self.question, self.sources, self.answer, self.evidence,
                       self.tags, self.split, self.metadata)

    @property
    def prompt_digest(self) -> str:
        """What the system is asked: the question over its sources. A gold answer corrected
        later keeps this, so the stored prediction is rescored instead of asked again."""
        return _digest(self.question, self.sources)

    @property
    def gold_digest(self) -> str:
        """What a metric compares against: answer, evidence and metadata."""
        return _digest(self.answer, self.evidence, self.metadata)

    def get(self, key: str, default: Any = None) -> Any:
        """dspy.Example-style access to a field or a metadata key."""
        if key in KNOWN_FIELDS:
            return getattr(self, key)
        return self.metadata.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "sources": list(self.sources),
                "answer": list(self.answer), "evidence": list(self.evidence),
                "tags": list(self.tags), "split": self.split, **self.metadata}


@attrs.frozen
class Dataset:
    """The selected examples of a dataset file, in file order (or sampled order)."""

    path: str
    examples: tuple[Example, ...] = attrs.field(converter=tuple)

    @classmethod
    def from_examples(cls, examples: Iterable[Example], path: str = "<memory>") -> Dataset:
        return cls(path, tuple(examples))

    @property
    def digest(self) -> str:
        return _digest([e.digest for e in self.examples])

    @property
    def name(self) -> str:
        return Path(self.path).name if self.path else "<memory>"

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    def filter(self, *, tags: Sequence[str] = (), split: str | None = None) -> Dataset:
        """Examples in ``split`` carrying any of ``tags`` (both optional)."""
        chosen = [e for e in self.examples
                  if (split is None or e.split == split)
                  and (not tags or any(t in e.tags for t in tags))]
        return attrs.evolve(self, examples=tuple(chosen))

    def split(self, name: str) -> Dataset:
        return self.filter(split=name)

    def sample(self, n: int, seed: int = 0) -> Dataset:
        """``n`` examples drawn without replacement by ``random.Random(seed)``, in file order."""
        if n >= len(self.examples):
            return self
        picked = sorted(random.Random(seed).sample(range(len(self.examples)), n))
        return attrs.evolve(self, examples=tuple(self.examples[i] for i in picked))

    def head(self, n: int) -> Dataset:
        return attrs.evolve(self, examples=self.examples[:n])

    def shuffled(self, seed: int = 0) -> Dataset:
        """All examples in a seeded random order (a pruner's stream)."""
        order = list(self.examples)
        random.Random(seed).shuffle(order)
        return attrs.evolve(self, examples=tuple(order))


# --- reading ----------------------------------------------------------------------------------
def _rows(path: Path, display: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, raw row) pairs of a JSONL or CSV file; blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{display}: no such dataset file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{display}: cannot read the dataset: {exc}") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise DatasetError(f"{display}: the CSV file has no header row")
        for row in reader:
            if None in row:  # more cells than header columns
                raise DatasetError(f"{display}:{reader.line_num}: more cells than the header "
                                   f"has columns")
            yield reader.line_num, {k: v for k, v in row.items() if v not in ("", None)}
        return
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            row = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{display}:{number}: not valid JSON: {exc.msg} "
                               f"(column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{display}:{number}: expected a JSON object, got "
                               f"{type(row).__name__}")
        yield number, row


def _string_list(value: Any, where: str, field: str, *, csv_cell: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        text = value.strip()
        if csv_cell and text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise DatasetError(f'{where}: "{field}" is not a valid JSON list') from None
        elif csv_cell and field != "answer":
            return tuple(part.strip() for part in text.split(";") if part.strip())
        else:
            return (value,)
    if isinstance(value, int | float) and not isinstance(value, bool) and field == "answer":
        return (str(value),)
    if not isinstance(value, list) or not all(
            isinstance(v, str) or (field == "answer" and isinstance(v, int | float)
                                   and not isinstance(v, bool)) for v in value):
        raise DatasetError(f'{where}: "{field}" must be a string or a list of strings, got '
                           f"{json.dumps(value, default=str)[:60]}")
    return tuple(str(v) for v in value)


def _example(row: dict[str, Any], where: str, line: int, base: Path, *,
             csv_cell: bool) -> Example:
    question = row.get("question")
    if question is None:
        raise DatasetError(f'{where}: missing "question"')
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f'{where}: "question" must be a non-empty string')
    if "answer" not in row:
        raise DatasetError(f'{where}: missing "answer"')
    lists = {f: _string_list(row[f], where, f, csv_cell=csv_cell)
             for f in _LIST_FIELDS if f in row and row[f] is not None}
    if not lists.get("answer") or not all(a.strip() for a in lists["answer"]):
        raise DatasetError(f'{where}: "answer" is empty')
    for item in lists.get("evidence", ()):
        _check_evidence(item, where)
    split = row.get("split")
    if split is not None and split not in SPLITS:
        raise DatasetError(f'{where}: "split" must be one of {", ".join(SPLITS)}, got '
                           f"{split!r}")
    raw_id = row.get("id", line)
    if not isinstance(raw_id, str | int) or isinstance(raw_id, bool) or str(raw_id) == "":
        raise DatasetError(f'{where}: "id" must be a string or an integer')
    sources = tuple(_resolve(s, base) for s in lists.get("sources", ()))
    metadata = {k: v for k, v in row.items() if k not in KNOWN_FIELDS}
    return Example(id=str(raw_id), question=question.strip(), sources=sources,
                   answer=lists["answer"], evidence=lists.get("evidence", ()),
                   tags=lists.get("tags", ()), split=split, metadata=metadata, line=line)


def _check_evidence(item: str, where: str) -> None:
    path, sep, lines = item.rpartition(":")
    start, dash, end = lines.partition("-")
    ok = bool(sep and path and start.isdigit() and (not dash or end.isdigit()))
    if ok and dash:
        ok = int(start) <= int(end)
    if not ok:
        raise DatasetError(f'{where}: "evidence" item {item!r} is not "path:line" or '
                           f'"path:start-end"')


def _resolve(source: str, base: Path) -> str:
    if source == "-":
        raise DatasetError(f"{base}: a dataset's sources cannot be standard input ('-')")
    expanded = os.path.expanduser(source)
    if os.path.isabs(expanded):
        return expanded
    return os.path.normpath(os.path.join(base, expanded))


def read_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Every example of ``path`` (JSONL or CSV), validated; duplicate ids are an error."""
    file = Path(path)
    display = str(path)
    if file.is_dir():
        raise DatasetError(f"{display}: is a directory, not a dataset file (.jsonl or .csv)")
    base = file.resolve().parent
    csv_cell = file.suffix.lower() == ".csv"
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for line, row in _rows(file, display):
        example = _example(row, f"{display}:{line}", line, base, csv_cell=csv_cell)
        if example.id in seen:
            raise DatasetError(f'{display}:{line}: duplicate "id" {example.id!r} (first on line '
                               f"{seen[example.id]})")
        seen[example.id] = line
        examples.append(example)
    if not examples:
        raise DatasetError(f"{display}: the dataset has no examples")
    return Dataset(display, tuple(examples))


def load_dataset(path: str | os.PathLike[str], *, split: str | None = None,
                 tags: Sequence[str] = (), limit: int | None = None, sample: int | None = None,
                 seed: int = 0) -> Dataset:
    """Read ``path`` and select: ``split``, then ``tags`` (any), then ``sample`` (seeded), then
    ``limit`` (the first N). A selection that leaves nothing is an error naming the filters."""
    if split is not None and split not in SPLITS:
        raise DatasetError(f"--split: must be one of {', '.join(SPLITS)}, got {split!r}")
    for flag, value in (("--limit", limit), ("--sample", sample)):
        if value is not None and value < 1:
            raise DatasetError(f"{flag}: must be at least 1, got {value}")
    dataset = read_dataset(path).filter(tags=tuple(tags), split=split)
    if sample is not None:
        dataset = dataset.sample(sample, seed)
    if limit is not None:
        dataset = dataset.head(limit)
    if not dataset.examples:
        what = ", ".join(f for f in (f"split {split!r}" if split else "",
                                     f"tags {list(tags)}" if tags else "") if f)
        raise DatasetError(f"{path}: no example matches {what}")
    return dataset
