"""Eval datasets: every field read, every bad input a clear error naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ponder.evaluate import DatasetError, load_dataset, read_dataset

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, lines: list, name: str = "qa.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines))
    return path


GOOD = {"question": "Which port?", "answer": "48213"}


def test_every_field_and_metadata(tmp_path: Path):
    path = write(tmp_path, [
        {"id": "a", "question": " Which port? ", "sources": "src/", "answer": ["48213", 48213],
         "evidence": ["src/config.py:6", "src/app.py:3-9"], "tags": ["config"], "split": "test",
         "difficulty": "easy"},
        "# a comment line", "",
        {"question": "Second?", "answer": "x", "sources": ["/abs/path", "docs/*.md"]},
    ])
    dataset = read_dataset(path)
    first, second = dataset.examples
    assert first.id == "a" and first.question == "Which port?"
    assert first.sources == (str(tmp_path / "src"),)  # relative to the dataset file
    assert first.answer == ("48213", "48213") and first.split == "test"
    assert first.evidence == ("src/config.py:6", "src/app.py:3-9")
    assert first.metadata == {"difficulty": "easy"} and first.line == 1
    assert second.id == "4"  # the line number
    assert second.sources == ("/abs/path", str(tmp_path / "docs" / "*.md"))


def test_csv_with_list_cells(tmp_path: Path):
    path = tmp_path / "qa.csv"
    path.write_text('id,question,answer,sources,tags,evidence\n'
                    'p,Which port?,48213,src/;docs/,"[""a"", ""b""]",src/c.py:6\n')
    (example,) = read_dataset(path).examples
    assert example.sources == (str(tmp_path / "src"), str(tmp_path / "docs"))
    assert example.tags == ("a", "b") and example.answer == ("48213",)
    assert example.evidence == ("src/c.py:6",)


@pytest.mark.parametrize(("lines", "message"), [
    ([GOOD] * 6 + [{"answer": "x"}], 'qa.jsonl:7: missing "question"'),
    ([{"question": "q"}], 'qa.jsonl:1: missing "answer"'),
    ([{"question": "q", "answer": ""}], 'qa.jsonl:1: "answer" is empty'),
    ([{"question": "", "answer": "a"}], 'qa.jsonl:1: "question" must be a non-empty string'),
    ([{"question": "q", "answer": "a", "sources": 3}], 'qa.jsonl:1: "sources" must be a string'),
    ([{"question": "q", "answer": "a", "tags": [1]}], 'qa.jsonl:1: "tags" must be a string'),
    ([{"question": "q", "answer": "a", "evidence": ["app.py"]}],
     'qa.jsonl:1: "evidence" item \'app.py\' is not "path:line"'),
    ([{"question": "q", "answer": "a", "evidence": ["app.py:9-3"]}], '"evidence" item'),
    ([{"question": "q", "answer": "a", "split": "dev"}], '"split" must be one of train'),
    ([{"id": "x", **GOOD}, {"id": "x", **GOOD}], 'qa.jsonl:2: duplicate "id" \'x\''),
    ([{"id": True, **GOOD}], '"id" must be a string or an integer'),
    (['{"question": "q",'], "qa.jsonl:1: not valid JSON"),
    (["[1, 2]"], "qa.jsonl:1: expected a JSON object, got list"),
    ([GOOD, {"question": "q", "answer": "a", "sources": "-"}], "cannot be standard input"),
    (["# only a comment"], "qa.jsonl: the dataset has no examples"),
])
def test_bad_dataset_names_file_line_and_field(tmp_path: Path, lines, message):
    path = write(tmp_path, lines)
    with pytest.raises(DatasetError) as info:
        read_dataset(path)
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_missing_and_unreadable_files(tmp_path: Path):
    with pytest.raises(DatasetError, match="no such dataset file"):
        read_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="is a directory"):
        read_dataset(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DatasetError, match="cannot read"):
        read_dataset(bad)
    csv = tmp_path / "wide.csv"
    csv.write_text("question,answer\nq,a,extra\n")
    with pytest.raises(DatasetError, match=r"wide\.csv:2: more cells"):
        read_dataset(csv)


def test_selection_split_tags_sample_limit(tmp_path: Path):
    lines = [{"id": str(i), "question": f"q{i}", "answer": "a",
              "tags": ["even" if i % 2 == 0 else "odd"], "split": "test" if i < 6 else "train"}
             for i in range(10)]
    path = write(tmp_path, lines)
    assert [e.id for e in load_dataset(path, split="test")] == ["0", "1", "2", "3", "4", "5"]
    assert [e.id for e in load_dataset(path, tags=["odd"], split="test")] == ["1", "3", "5"]
    sample = load_dataset(path, sample=4, seed=7)
    assert len(sample) == 4 and sample.digest == load_dataset(path, sample=4, seed=7).digest
    assert [e.id for e in sample] == sorted((e.id for e in sample), key=int)  # file order
    assert load_dataset(path, sample=4, seed=8).digest != sample.digest
    assert [e.id for e in load_dataset(path, limit=2)] == ["0", "1"]
    with pytest.raises(DatasetError, match="no example matches tags"):
        load_dataset(path, tags=["none"])
    with pytest.raises(DatasetError, match="--limit: must be at least 1"):
        load_dataset(path, limit=0)
    with pytest.raises(DatasetError, match="--split: must be one of"):
        load_dataset(path, split="dev")


def test_prompt_digest_ignores_gold(tmp_path: Path):
    a = read_dataset(write(tmp_path, [{"question": "q", "answer": "a", "sources": "s"}]))[0]
    b = read_dataset(write(tmp_path, [{"question": "q", "answer": "b", "sources": "s"}]))[0]
    assert a.prompt_digest == b.prompt_digest and a.gold_digest != b.gold_digest
    assert a.digest != b.digest


def test_the_shipped_dataset_reads_and_its_evidence_exists():
    from ponder.plugins.metric_citations import line_exists, parse_ref

    dataset = read_dataset(ROOT / "docs" / "examples" / "datasets" / "tiny-service.jsonl")
    assert 10 <= len(dataset) <= 20
    for example in dataset:
        assert example.evidence, example.id
        for item in example.evidence:
            path, start, end = parse_ref(item)
            assert line_exists(path, start, example.sources), item
            assert line_exists(path, end, example.sources), item
