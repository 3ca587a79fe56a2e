"""``retrieve_then_read`` and ``map_reduce``'s ``top_k`` with the real ``bm25`` retriever.

The model is the scripted oracle: a prompt that holds the planted needle line answers with it,
any other says it does not know, so a run answers correctly exactly when the retriever put the
needle's chunk among those read. Every call is recorded, so the tests check which chunks were
read and how many calls were made against the strategies' documented formulas. Retrieval goes
through the kernel's :meth:`ponder.engine.services.Services.index`, with a run store for
persistence.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from ponder.context.chunking import estimate_tokens
from ponder.context.sources import Context, load_sources
from ponder.engine.answer import extract_citations
from ponder.engine.services import Services
from ponder.errors import ConfigError
from ponder.plugins import _common, map_reduce, predict, retrieve_then_read
from ponder.plugins.scripted import ScriptedAdapter, ScriptedSettings
from ponder.support.observability import SpanType
from ponder.testing import plugin_set
from ponder.testing.conformance import StrategyConformance

pytest.importorskip("bm25s")

from ponder.plugins import bm25
from ponder.plugins.memory_store import MemoryStorage

QUESTION = "What is the value of MAGIC_PORT?"
NEEDLE = "MAGIC_PORT = 48213"
WINDOW = 2048
MAX_OUTPUT = 256
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda",
         "sigma", "omega", "record", "buffer", "socket", "window", "cursor", "ledger", "packet"]


# --- a generated codebase with one needle and near misses ----------------------------------------
def make_codebase(root: Path, *, files: int = 40, seed: int = 11) -> tuple[str, int]:
    """``files`` seeded modules; one holds the needle, several others mention ``port`` or
    ``magic`` alone (so only a retriever that weighs both terms ranks the needle first)."""
    rng = random.Random(seed)
    needle_at = files * 2 // 3
    needle = ("", 0)
    for i in range(files):
        rel = f"pkg{i % 5}/mod_{i:02d}.py"
        lines = [f'"""The mod_{i:02d} module: {" ".join(rng.sample(WORDS, 6))}."""', ""]
        if i % 7 == 3:
            port = rng.randint(1000, 9999)
            lines += [f"DEFAULT_PORT = {port}  # port of the {rng.choice(WORDS)}", ""]
        if i % 11 == 5:
            lines += [f"MAGIC_NUMBER = {rng.randint(2, 99)}  # magic", ""]
        for f in range(rng.randint(3, 5)):
            fn = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{f}"
            lines += [f"def {fn}(value, limit={rng.randint(2, 99)}):",
                      f'    """Return {" ".join(rng.sample(WORDS, 5))}."""']
            lines += [f"    value = value * {rng.randint(2, 9)} + {rng.randint(0, 999)}"
                      for _ in range(rng.randint(2, 6))]
            lines += ["    return value % limit", "", ""]
        if i == needle_at:
            at = len(lines) // 2
            lines.insert(at, NEEDLE)
            needle = (rel, at + 1)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return needle


@pytest.fixture
def codebase(tmp_path: Path) -> tuple[Context, str, int]:
    path, line = make_codebase(tmp_path / "repo")
    return load_sources([str(tmp_path / "repo")]), path, line


def oracle_rules(path: str, line: int) -> list[dict[str, Any]]:
    found = f"{path}:{line}: {NEEDLE}"
    answer = f"MAGIC_PORT is 48213 ({path}:{line})."
    return [
        # read (answer signature): the needle line as a chunk renders it
        {"pattern": r"`context`.*\d+\| MAGIC_PORT = 48213", "reply": {"answer": answer}},
        {"pattern": r"`context`", "reply": {"answer": "The text does not say."}},
        # map (extract)
        {"pattern": r"`relevant_info`.*\d+\| MAGIC_PORT = 48213",
         "reply": {"relevant_info": found, "confidence": "high"}},
        {"pattern": r"`relevant_info`", "reply": {"relevant_info": "NOT FOUND",
                                                  "confidence": "none"}},
        # combine
        {"pattern": r"`partial_answers`.*48213", "reply": {"answer": answer}},
        {"pattern": r"`partial_answers`", "reply": {"answer": "The text does not say."}},
    ]


def make_services(rules: list[dict], *, window: int = WINDOW, retriever: Any = "bm25",
                  storage: Any = None, **options: Any) -> Services:
    adapter = ScriptedAdapter(ScriptedSettings(rules=rules, context_window=window,
                                               max_output_tokens=MAX_OUTPUT))
    settings = bm25.BM25Settings()
    return Services(
        lm=adapter.build_lm(),
        model_info=adapter.model_info(),
        predictor=predict.PredictPredictor(),
        retriever=bm25.BM25Retriever(settings) if retriever == "bm25" else retriever,
        names={"retriever": ("bm25", settings)} if retriever == "bm25" else {},
        storage=storage,
        plugin_set=plugin_set(map_reduce, retrieve_then_read, predict, bm25),
        concurrency=2,
        progress_mode="silent",
        **options,
    )


def strategy(name: str, **options: Any) -> Any:
    return _common.make_strategy(make_services([], retriever=None), name, options)


def calls_with(services: Services, field: str) -> list[dict]:
    return [call for call in services.lm.calls if f"`{field}`" in call["prompt"]]


def assert_prompts_fit(services: Services) -> None:
    info = services.model_info
    budget = info.context_window - info.max_output_tokens
    largest = max(estimate_tokens(call["prompt"]) for call in services.lm.calls)
    assert largest <= budget, f"a prompt of ≈{largest} tokens exceeds the {budget}-token budget"


def assert_cites_needle(text: str, context: Context, path: str, line: int) -> None:
    assert "48213" in text
    citations = extract_citations(text, context.documents)
    assert any(c.path == path and c.line == line for c in citations), (text, citations)


def index_spans(services: Services) -> list[Any]:
    return [s for s in services.tracker.spans
            if s.type == SpanType.RETRIEVE and s.name == "index"]


def read_chunk_indices(services: Services, chunks: list[Any]) -> list[list[int]]:
    """For each read call, the chunks whose whole rendered text its prompt holds."""
    return [[c.index for c in chunks if c.render() in call["prompt"]]
            for call in calls_with(services, "context")]


# --- conformance ------------------------------------------------------------------------------
def test_retrieve_then_read_conformance() -> None:
    suite = type("Suite", (StrategyConformance,),
                 {"name": "retrieve_then_read", "plugins": (retrieve_then_read,)})()
    suite.test_registered_under_its_name()
    suite.test_settings_class_is_attrs_with_defaults_or_given()
    suite.test_factory_satisfies_protocol()
    suite.test_plugin_import_is_light()


# --- retrieve_then_read ---------------------------------------------------------------------------
@pytest.mark.parametrize("top_k", [3, 6])
def test_retrieve_then_read_reads_only_the_top_k_in_calls_that_fit(codebase, top_k: int) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line))
    rtr = strategy("retrieve_then_read", top_k=top_k)
    chunks = rtr.plan_chunks(QUESTION, context, services)
    assert len(chunks) > 3 * top_k, "the window is meant to give many chunks"
    draft = rtr.run(QUESTION, context, services)

    assert_cites_needle(draft.text, context, path, line)
    assert draft.strategy == "retrieve_then_read" and draft.failures == []
    assert draft.chunks_total == len(chunks) and draft.chunks_read == top_k
    # the chunks read are the retriever's top_k, each in exactly one read call
    reads = read_chunk_indices(services, chunks)
    read = sorted(i for group in reads for i in group)
    expected = bm25.BM25Retriever()
    expected.index(chunks)
    assert read == sorted(c.index for c, _ in expected.search(QUESTION, top_k))
    needle_chunk = next(c.index for c in chunks if NEEDLE in c.render())
    assert needle_chunk in read
    # calls: g reads (each holding whole chunks, at least two per call when they fit) + R(g)
    g = len(reads)
    assert 1 <= g < top_k
    combines = len(calls_with(services, "partial_answers"))
    assert combines == (0 if g == 1 else _common.reduce_calls(g, 8))
    assert len(services.lm.calls) == g + combines
    assert_prompts_fit(services)


def test_retrieve_then_read_answers_in_one_call_when_the_window_holds_the_hits(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line), window=100_000)
    rtr = strategy("retrieve_then_read", top_k=5, chunk_tokens=300)
    chunks = rtr.plan_chunks(QUESTION, context, services)
    draft = rtr.run(QUESTION, context, services)
    assert len(services.lm.calls) == 1 and calls_with(services, "context")
    assert_cites_needle(draft.text, context, path, line)
    assert draft.chunks_total == len(chunks) > 5 and draft.chunks_read == 5
    # the call shows its chunks in document order (not rank order)
    prompt = services.lm.calls[0]["prompt"]
    shown = sorted((prompt.index(c.render()), c.index) for c in chunks if c.render() in prompt)
    assert len(shown) == 5
    assert [index for _, index in shown] == sorted(index for _, index in shown)


def test_retrieve_then_read_needs_a_retriever(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line), retriever=None)
    with pytest.raises(ConfigError, match=r'(?s)\[retriever\].*name = "bm25"'):
        strategy("retrieve_then_read").run(QUESTION, context, services)
    assert services.lm.calls == []


def test_retrieve_then_read_min_score_can_leave_nothing_to_read(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line))
    draft = strategy("retrieve_then_read", min_score=1e9).run(QUESTION, context, services)
    assert services.lm.calls == []
    assert draft.text.startswith(_common.NOTHING_FOUND) and draft.chunks_read == 0
    assert draft.chunks_total > 0


def test_retrieve_then_read_lists_the_chunks_of_a_failed_read(codebase) -> None:
    context, path, line = codebase
    # no rule answers the read that holds the needle: the scripted model raises for it
    # (ScriptExhaustedError), so that read call fails; the other reads still answer
    others = {"pattern": r"`context`(?!.*MAGIC_PORT = 48213)",
              "reply": {"answer": "The text does not say."}}
    services = make_services([others, *oracle_rules(path, line)[2:]])
    rtr = strategy("retrieve_then_read", top_k=6)
    chunks = rtr.plan_chunks(QUESTION, context, services)
    draft = rtr.run(QUESTION, context, services)
    failed = sorted(f.index for f in draft.failures)
    read = sorted(i for group in read_chunk_indices(services, chunks) for i in group)
    needle_chunk = next(c.index for c in chunks if NEEDLE in c.render())
    # every chunk of the failed call is listed, and only those: read + failed = the top 6
    assert needle_chunk in failed and len(failed) >= 1
    expected = bm25.BM25Retriever()
    expected.index(chunks)
    assert sorted(read + failed) == sorted(c.index for c, _ in expected.search(QUESTION, 6))
    assert draft.chunks_read == len(read) and draft.chunks_read + len(failed) == 6
    assert all("no rule matched" in f.error for f in draft.failures), draft.failures
    assert draft.chunks_total == len(chunks)
    assert "48213" not in draft.text  # the needle's read failed, and the draft does not invent it


# --- map_reduce with top_k --------------------------------------------------------------------
def test_map_reduce_top_k_with_bm25_reads_k_chunks(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line))
    mr = strategy("map_reduce", top_k=3)
    chunks = mr.plan_chunks(QUESTION, context, services)
    draft = mr.run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    # 3 map calls; the needle's chunk is the one finding: R(1) = 1 combine call
    assert len(calls_with(services, "relevant_info")) == 3
    assert len(calls_with(services, "partial_answers")) == 1
    assert len(services.lm.calls) == 3 + 1
    assert draft.chunks_total == len(chunks) > 3 and draft.chunks_read == 3
    assert len(index_spans(services)) == 1
    assert_prompts_fit(services)


# --- the index is stored and loaded through the kernel ----------------------------------------
@pytest.mark.parametrize("name, options", [("retrieve_then_read", {"top_k": 4}),
                                           ("map_reduce", {"top_k": 4})])
def test_a_second_run_loads_the_stored_index(codebase, name: str, options: dict) -> None:
    context, path, line = codebase
    store = MemoryStorage()
    first = make_services(oracle_rules(path, line), storage=store)
    draft1 = strategy(name, **options).run(QUESTION, context, first)
    second = make_services(oracle_rules(path, line), storage=store)
    draft2 = strategy(name, **options).run(QUESTION, context, second)

    [built], [loaded] = index_spans(first), index_spans(second)
    assert built.attributes["loaded_from_store"] is False
    assert loaded.attributes["loaded_from_store"] is True
    assert draft2.text == draft1.text and draft2.chunks_read == draft1.chunks_read
    prompts = [sorted(c["prompt"] for c in s.lm.calls) for s in (first, second)]
    assert prompts[0] == prompts[1]  # the same chunks read (calls run in parallel: any order)
    assert_cites_needle(draft2.text, context, path, line)
    # another setting is another index
    other = make_services(oracle_rules(path, line), storage=store)
    other.retriever = bm25.BM25Retriever(bm25.BM25Settings(k1=1.2))
    other.names = {"retriever": ("bm25", other.retriever.settings)}
    strategy(name, **options).run(QUESTION, context, other)
    assert index_spans(other)[0].attributes["loaded_from_store"] is False
