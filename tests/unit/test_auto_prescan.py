"""``auto``'s exact round scans the documents' raw text before chunking, over real HTTP.

The question names an identifier (``MAGIC_PORT``): ``auto`` reads the chunks holding it
verbatim. With the scan (``AutoStrategy.prescan``, the default) only the documents naming it
are chunked; without it the whole context is, as before. These tests run both against the
loopback fake provider (``openai_compatible``, dspy's native engine) in oracle mode, which
answers with a needle only when the needle is in the prompt, and record every prompt and every
chunking, to show that the scan reads the same lines with the same numbers, gives the same
answers and citations, chunks only the naming documents, and falls back where it should.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

import ponder.context.chunking as chunking
from ponder.context.sources import load_sources
from ponder.engine.plan import make_plan
from ponder.engine.system import System
from ponder.kernel.config import CacheConfig, Component, Config, LimitsConfig
from ponder.plugins.auto import AutoStrategy, naming_documents
from ponder.testing.fake_provider import FakeProvider

WORDS = ["alpha", "beta", "gamma", "delta", "sigma", "omega", "record", "buffer", "socket",
         "window", "cursor", "packet", "frame", "batch", "queue", "token", "stream", "channel"]
NEEDLES = {"port": "MAGIC_PORT = 48213", "timeout": "def handshake_timeout(): return 731",
           "retry": "maxRetryCount = 9", "frob": "FROB_THRESHOLD = 17"}
#: needle lines planted in the modules (index -> line) and in the small settings files
MODULE_LINES = {5: NEEDLES["retry"], 12: '    sock.bind(("", MAGIC_PORT))',
                20: NEEDLES["timeout"], 33: "# the frobnicator threshold caps the frobnicator",
                34: NEEDLES["frob"], 40: "    level = maxRetryCount"}
SETTINGS_LINES = {7: NEEDLES["port"]}
QUESTIONS = {"port": "What is the value of MAGIC_PORT?",
             "timeout": "What does handshake_timeout() return?",
             "retry": "What is maxRetryCount set to?"}


class Recording(FakeProvider):
    """The fake provider, keeping the prompt of every chat request."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prompts: list[str] = []

    def _reply_text(self, request: dict, messages: list[dict], texts: list[str]) -> Any:
        self.prompts.append("\n".join(texts))
        return super()._reply_text(request, messages, texts)


def write_corpus(root: Path, *, modules: int = 48, settings: int = 12,
                 module_lines: dict[int, str] | None = None,
                 settings_lines: dict[int, str] | None = None) -> None:
    """``modules`` seeded modules of ~3 KB in four packages (a line planted in the middle of
    module i) and ``settings`` small files of two constants, which chunking packs together."""
    module_lines = MODULE_LINES if module_lines is None else module_lines
    settings_lines = SETTINGS_LINES if settings_lines is None else settings_lines
    rng = random.Random(7)
    for i in range(modules):
        lines = [f'"""Module {i}: {" ".join(rng.sample(WORDS, 6))}."""', ""]
        while sum(len(x) + 1 for x in lines) < 3000:
            name = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{len(lines)}"
            lines += [f"def {name}(value, limit={rng.randint(2, 99)}):",
                      f"    value = value * {rng.randint(2, 9)} + {rng.randint(0, 999)}",
                      "    return value % limit", ""]
        if i in module_lines:
            lines.insert(len(lines) // 2, module_lines[i])
        path = root / f"pkg_{i % 4}" / f"mod_{i:02d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    for i in range(settings):
        extra = f"{settings_lines[i]}\n" if i in settings_lines else ""
        (root / f"settings_{i:02d}.py").write_text(
            f"DEBUG_{i} = False\n{extra}TIMEOUT_{i} = {rng.randint(1, 60)}\n")


def system(provider: FakeProvider, **options: Any) -> System:
    config = Config(
        limits=LimitsConfig(concurrency=4),
        cache=CacheConfig(enabled=False),
        adapter=Component("openai_compatible", {
            "base_url": provider.base_url, "model": "fake-model", "context_window": 16_384,
            "max_output_tokens": 512}),
        strategy=Component("auto", options),
        storage=Component(None),
    )
    return System(config, progress="silent")


@pytest.fixture
def corpus(tmp_path: Path) -> Any:
    write_corpus(tmp_path)
    return load_sources([str(tmp_path)])


@pytest.fixture
def chunked(monkeypatch) -> list[tuple[tuple[str, ...], int]]:
    """Every ``chunk_context`` call of the run (the real one, recorded): the paths of the
    context it cut and the chunk size."""
    calls: list[tuple[tuple[str, ...], int]] = []
    real = chunking.chunk_context

    def recording(context: Any, *, chunk_tokens: int, overlap_tokens: int = 0) -> Any:
        calls.append((tuple(d.path for d in context.documents), chunk_tokens))
        return real(context, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)

    monkeypatch.setattr(chunking, "chunk_context", recording)
    return calls


@pytest.fixture
def prescan():
    """Set ``AutoStrategy.prescan`` for a test, restored after it."""
    saved = AutoStrategy.prescan

    def set_to(value: bool) -> None:
        AutoStrategy.prescan = value

    yield set_to
    AutoStrategy.prescan = saved


def ask(question: str, context: Any, **options: Any) -> tuple[Any, list[str]]:
    with Recording(mode="oracle", needles=NEEDLES, max_lifetime=300) as provider:
        answer = system(provider, **options).run(question, context)
    return answer, provider.prompts


def blocks(prompt: str) -> list[str]:
    """The chunk pieces shown in a prompt: each ``=== path (lines a-b) ===`` header and its
    numbered lines."""
    return re.findall(r"^=== .+? ===\n(?:\d+\| .*\n?)+", prompt, re.M)


def citations(answer: Any) -> list[tuple[str, int]]:
    return [(c.path, c.line) for c in answer.citations]


@pytest.mark.parametrize("key", sorted(QUESTIONS))
def test_the_scan_reads_the_same_lines_and_answers_the_same(corpus, chunked, prescan,
                                                            key) -> None:
    question = QUESTIONS[key]
    names = [n for n in ("MAGIC_PORT", "handshake_timeout", "maxRetryCount") if n in question]
    naming = {d.path for d in naming_documents(corpus, names)}
    prescan(False)
    before, before_prompts = ask(question, corpus)
    whole = list(chunked)
    chunked.clear()
    prescan(True)
    after, after_prompts = ask(question, corpus)

    assert NEEDLES[key] in after.answer
    assert (after.answer, citations(after), after.strategy) == \
        (before.answer, citations(before), before.strategy)
    assert citations(after) and after.strategy == "auto → retrieve_then_read"
    assert len(after_prompts) == len(before_prompts) == 1  # one read call, no follow-up
    # the pieces naming the identifier: the same lines with the same numbers in both prompts
    hits_after = [b for b in blocks(after_prompts[0]) if any(n in b for n in names)]
    hits_before = [b for b in blocks(before_prompts[0]) if any(n in b for n in names)]
    assert hits_after and sorted(hits_after) == sorted(hits_before)
    # only the documents naming it were chunked, and shown
    assert chunked and all(set(paths) <= naming for paths, _ in chunked), chunked
    assert any(len(paths) == len(corpus.documents) for paths, _ in whole)
    shown = {re.match(r"=== (\S+)", b).group(1) for b in blocks(after_prompts[0])}
    assert shown <= naming
    # the counts say what was considered: the naming documents' chunks
    total = after.chunks["total"]
    assert after.chunks["read"] <= total < before.chunks["total"]
    assert (f"({len(naming)} of {len(corpus.documents)} documents name it; only they were "
            f"chunked: {total} chunks)") in after.strategy_reason


def test_whole_chunking_packs_neighbours_the_scan_leaves_out(corpus, prescan) -> None:
    # MAGIC_PORT is defined in a small settings file: the whole chunking packs its neighbours
    # into the same chunk; the scan's chunks hold the naming documents only
    prescan(False)
    _, before = ask(QUESTIONS["port"], corpus)
    prescan(True)
    _, after = ask(QUESTIONS["port"], corpus)
    paths = [{re.match(r"=== (\S+)", b).group(1) for b in blocks(p[0])} for p in (before, after)]
    assert paths[1] == {"settings_07.py", "pkg_0/mod_12.py"}
    assert paths[1] < paths[0]


def test_no_naming_document_ends_the_round_without_chunking(tmp_path, chunked) -> None:
    write_corpus(tmp_path)
    context = load_sources([str(tmp_path)])
    # ZX_LIMIT is in no document: the exact round ends at the scan, bm25 ranks the chunks
    answer, _ = ask("What is the frobnicator threshold, ZX_LIMIT?", context)
    reason = answer.strategy_reason
    assert f"exact ZX_LIMIT: in none of the {len(context.documents)} documents → ranking" in reason
    assert "top-8: found" in reason and NEEDLES["frob"] in answer.answer
    assert all(len(paths) == len(context.documents) for paths, _ in chunked), chunked
    # the choice gave a lower bound of the retrieval chunks; the ranking counted them all
    floor = int(re.search(r"of ≥ ([\d,]+) chunks", reason).group(1).replace(",", ""))
    assert 4 < floor <= answer.chunks["total"]


def test_more_naming_documents_than_the_limit_chunks_everything(tmp_path, chunked) -> None:
    lines = {i: "    MAGIC_PORT = 1024 + i" for i in (1, 2, 3, 4)}
    write_corpus(tmp_path, module_lines=lines)
    context = load_sources([str(tmp_path)])
    assert len(naming_documents(context, ["MAGIC_PORT"])) == 5 > 4
    answer, _ = ask(QUESTIONS["port"], context, retrieval_top_k=[4])
    reason = answer.strategy_reason
    assert re.search(r"exact MAGIC_PORT: \d+ chunks, more than 4 → ranking", reason), reason
    assert "only they were chunked" not in reason
    # the exact round cut the whole context, as before the scan
    assert chunked[0][0] == tuple(d.path for d in context.documents)
    assert NEEDLES["port"] in answer.answer


def test_few_naming_documents_with_too_many_chunks_rank(tmp_path, chunked) -> None:
    # three naming documents (at most top_k 3), but one names it in three far-apart chunks
    write_corpus(tmp_path)
    big = tmp_path / "pkg_0" / "mod_00.py"
    body = big.read_text().splitlines()
    filler = [f"x_{i} = {i}  # filler line of the port table" for i in range(400)]
    big.write_text("\n".join(["PORT_BASE = MAGIC_PORT", *filler, "PORT_TOP = MAGIC_PORT + 1",
                              *filler, "PORT_END = MAGIC_PORT + 2", *body]) + "\n")
    context = load_sources([str(tmp_path)])
    answer, _ = ask(QUESTIONS["port"], context, retrieval_top_k=[3])
    reason = answer.strategy_reason
    assert re.search(r"exact MAGIC_PORT: [4-9] chunks, more than 3 \(3 of \d+ documents name "
                     r"it; only they were chunked: \d+ chunks\) → ranking", reason), reason
    naming = {d.path for d in naming_documents(context, ["MAGIC_PORT"])}
    assert set(chunked[0][0]) == naming  # the scan's round
    assert len(chunked[1][0]) == len(context.documents)  # then bm25 over everything


def test_the_plan_counts_the_exact_round_and_cuts_nothing_at_retrieval_size(corpus,
                                                                            chunked) -> None:
    with FakeProvider(mode="oracle", needles=NEEDLES, max_lifetime=60) as provider:
        plan = make_plan(system(provider), QUESTIONS["port"], corpus)
        assert provider.stats()["requests"] == 0
    assert plan.strategy.startswith("auto → retrieval first")
    assert "of ≥ " in plan.reason
    assert (f"exact round: 2 of {len(corpus.documents)} documents name MAGIC_PORT; only they "
            "are chunked, and the chunks naming it are read first") in plan.notes
    assert "the exact round + 2 ranking round(s) at most" in plan.formula
    assert plan.calls_min == 1 and plan.calls_max >= plan.chunks + 1 + 3
    # the whole context was cut once, for the full map's figures, not into retrieval chunks
    sizes = {size for paths, size in chunked if len(paths) == len(corpus.documents)}
    assert len(sizes) == 1, chunked


def test_the_context_size_is_measured_once_per_document(corpus) -> None:
    from ponder.context import chunking
    from ponder.plugins._common import fits_rendered, rendered_tokens

    whole_corpus = rendered_tokens(corpus.documents)
    # each document's rendered size is remembered once counted (the plan and the run ask again)
    assert all(id(d) in chunking._WHOLE for d in corpus.documents if d.text)
    assert rendered_tokens(corpus.documents) == whole_corpus
    smaller = load_sources([corpus.sources[0] + "/settings_07.py"])
    assert rendered_tokens(smaller.documents) < whole_corpus
    # map_reduce's single-read test: the quick bound or the remembered figure, never wrong
    whole = rendered_tokens(smaller.documents)
    assert fits_rendered(smaller, whole) and not fits_rendered(smaller, whole - 1)
    assert not fits_rendered(corpus, 10)  # decided by the raw size alone
    key = id(smaller.documents[0])
    del smaller  # the entries go with their documents
    assert key not in chunking._WHOLE
