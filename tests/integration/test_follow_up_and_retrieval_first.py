"""Two-hop answers (``follow_up``) and ``auto``'s retrieval-first path, over real HTTP.

The reader is the loopback fake provider through the ``openai_compatible`` adapter (dspy's
native engine): in ``oracle`` mode it answers with a needle only when that needle is in the
prompt; in ``rules`` mode the two-hop rules answer A's line when A is in the prompt and both
lines only when A and B are in one prompt, so a strategy is right only if it brings B's
definition together with what it learnt about A.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from ponder.context.sources import load_sources
from ponder.engine.system import System
from ponder.kernel.config import CacheConfig, Component, Config, LimitsConfig
from ponder.plugins.follow_up import definition_pattern, unresolved_names
from ponder.testing.conformance import StrategyConformance
from ponder.testing.fake_provider import FakeProvider

WORDS = ["alpha", "beta", "gamma", "delta", "sigma", "omega", "record", "buffer", "socket",
         "window", "cursor", "packet", "frame", "batch", "queue", "token", "stream", "channel"]
LINE_A = "def handshake_timeout(): return grace_window_seconds()"
LINE_B = "def grace_window_seconds(): return 731"


class TestFollowUpConformance(StrategyConformance):
    name = "follow_up"


def write_codebase(root: Path, *, files: int = 60, plant: dict[int, str] | None = None) -> None:
    """``files`` seeded modules of ~4 KB; ``plant`` puts a line into file i's middle."""
    rng = random.Random(3)
    for i in range(files):
        lines = [f'"""Module {i}: {" ".join(rng.sample(WORDS, 6))}."""', ""]
        while sum(len(x) + 1 for x in lines) < 4000:
            name = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{len(lines)}"
            lines += [f"def {name}(value, limit={rng.randint(2, 99)}):",
                      f'    """Return the {" ".join(rng.sample(WORDS, 4))}."""',
                      f"    value = value * {rng.randint(2, 9)} + {rng.randint(0, 999)}",
                      "    return value % limit", ""]
        if plant and i in plant:
            lines.insert(len(lines) // 2, plant[i])
        path = root / f"pkg_{i % 4}" / f"mod_{i:02d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


def system(provider: FakeProvider, strategy: str, **options: Any) -> System:
    config = Config(
        limits=LimitsConfig(concurrency=8),
        cache=CacheConfig(enabled=False),
        adapter=Component("openai_compatible", {
            "base_url": provider.base_url, "model": "fake-model", "context_window": 16_384,
            "max_output_tokens": 512}),
        strategy=Component(strategy, options),
        storage=Component(None),
    )
    return System(config, progress="silent")


def two_hop_rules() -> dict[str, Any]:
    a, b = re.escape(LINE_A), re.escape(LINE_B)
    return {"mode": "rules", "default_reply": "NOT FOUND",
            "rules": [(rf"(?s)\A(?=.*?{a})(?=.*?{b})", f"{LINE_A}\n{LINE_B}"),
                      (rf"(?s){a}", LINE_A)]}


@pytest.fixture
def two_hop(tmp_path: Path) -> Any:
    write_codebase(tmp_path, plant={5: LINE_A, 50: LINE_B})
    return load_sources([str(tmp_path)])


def test_unresolved_names_are_called_but_not_defined() -> None:
    assert unresolved_names(LINE_A) == ["grace_window_seconds"]
    assert unresolved_names(f"{LINE_A}\n{LINE_B}") == []
    assert unresolved_names("MAGIC_PORT = 48213") == []
    assert unresolved_names("`load_config` calls print(x) and parse_args(y)") == [
        "load_config", "parse_args"]
    pattern = definition_pattern(["grace_window_seconds"])
    assert pattern.search(LINE_B) and not pattern.search("    x = grace_window_seconds()")


def test_map_reduce_alone_misses_the_second_hop(two_hop) -> None:
    with FakeProvider(**two_hop_rules(), max_lifetime=120) as provider:
        answer = system(provider, "map_reduce", chunk_tokens=2000).run(
            "What value does handshake_timeout() return?", two_hop)
    assert LINE_B not in answer.answer


def test_follow_up_reads_the_definition_the_first_answer_names(two_hop) -> None:
    with FakeProvider(**two_hop_rules(), max_lifetime=120) as provider:
        answer = system(provider, "follow_up",
                        base_options={"chunk_tokens": 2000}).run(
            "What value does handshake_timeout() return?", two_hop)
    assert LINE_B in answer.answer
    assert answer.strategy.endswith("map_reduce+follow_up")
    assert "definitions of grace_window_seconds" in (answer.strategy_reason or "")
    assert answer.chunks["read"] > answer.chunks["total"]  # every chunk, then the definition


def test_auto_reads_a_few_retrieved_chunks_for_a_lookup(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    write_codebase(tmp_path, plant={40: "MAGIC_PORT = 48213"})
    context = load_sources([str(tmp_path)])
    with FakeProvider(mode="oracle", needles={"n": "MAGIC_PORT = 48213"},
                      max_lifetime=120) as provider:
        answer = system(provider, "auto").run("What is the value of MAGIC_PORT?", context)
        retrieval = provider.stats()
        provider.reset()
        mapped = system(provider, "map_reduce").run("What is the value of MAGIC_PORT?", context)
        full = provider.stats()
    assert "48213" in answer.answer and "48213" in mapped.answer
    assert answer.strategy == "auto → retrieve_then_read"
    # the question names an identifier: the chunk holding it verbatim is read, no index built
    assert "exact MAGIC_PORT: 1 chunk(s), found" in answer.strategy_reason
    assert retrieval["requests"] == 1 < full["requests"]
    assert retrieval["prompt_tokens"] * 4 < full["prompt_tokens"]


def test_auto_widens_then_maps_everything_when_retrieval_finds_nothing(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    write_codebase(tmp_path, files=120, plant={70: "ZX_LIMIT = 17"})
    context = load_sources([str(tmp_path)])
    # the needle shares no word with the question: bm25 cannot rank it, the full map finds it
    with FakeProvider(mode="oracle", needles={"n": "ZX_LIMIT = 17"}, max_lifetime=300) as provider:
        answer = system(provider, "auto").run("Which threshold caps the frobnicator?", context)
    reason = answer.strategy_reason
    assert "top-8: nothing found" in reason and "top-32: nothing found" in reason, reason
    assert answer.strategy == "auto → map_reduce" and "over every chunk" in reason
    assert "ZX_LIMIT = 17" in answer.answer


def test_auto_maps_everything_for_a_relation_question(tmp_path: Path) -> None:
    write_codebase(tmp_path, files=30)
    context = load_sources([str(tmp_path)])
    with FakeProvider(mode="oracle", needles={"n": "nothing"}, max_lifetime=120) as provider:
        answer = system(provider, "auto").run("Which two modules import each other?", context)
    assert answer.strategy == "auto → map_reduce"
    assert "relation ('which two')" in answer.strategy_reason


def test_auto_ranks_with_bm25_when_the_question_names_no_identifier(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    line = "def luhn_fold(value):  # folds the digits of an invoice number into a checksum"
    write_codebase(tmp_path, plant={40: line})
    context = load_sources([str(tmp_path)])
    with FakeProvider(mode="oracle", needles={"n": "luhn_fold"}, max_lifetime=120) as provider:
        answer = system(provider, "auto").run(
            "Which function folds the digits of an invoice number into a checksum?", context)
        requests = provider.stats()["requests"]
    assert "luhn_fold" in answer.answer
    assert "exact" not in answer.strategy_reason and "top-8: found" in answer.strategy_reason
    assert requests == 1
