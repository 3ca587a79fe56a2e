"""The first-party strategies end to end over a generated codebase, driven by a scripted model.

The scripted model is an *oracle*: a map/extract prompt that holds the planted needle line gets the
needle (with its ``path:line``), any other gets ``NOT FOUND`` / confidence none, and a combine
prompt echoes the needle when one of its findings holds it. So a strategy answers correctly exactly
when it routes the needle's chunk through to the answer, and every call is recorded, so the tests
check call counts and prompt sizes against each strategy's documented formula.
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Any

import pytest

from ponder.context.chunking import estimate_tokens
from ponder.context.sources import Context, Document, load_sources
from ponder.engine.answer import extract_citations
from ponder.engine.services import Services
from ponder.errors import PonderError
from ponder.plugins import (
    _common,
    auto,
    chain_of_thought,
    direct,
    hierarchical,
    iterative,
    map_reduce,
    predict,
    rlm,
)
from ponder.plugins.scripted import ScriptedAdapter, ScriptedSettings
from ponder.testing import plugin_set, rlm_needle_script
from ponder.testing.conformance import StrategyConformance

STRATEGY_MODULES = (direct, map_reduce, iterative, hierarchical, auto, rlm)
QUESTION = "What is the value of MAGIC_PORT?"
NEEDLE = "MAGIC_PORT = 48213"
WINDOW = 2048
MAX_OUTPUT = 256

DIRECTORIES = ["app/core", "app/api", "app/api/handlers", "lib/storage", "lib/net", "tools"]
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda",
         "sigma", "omega", "record", "buffer", "socket", "window", "cursor", "ledger", "packet"]


# --- the generated codebase -------------------------------------------------------------------
def _module_text(rng: random.Random, name: str) -> list[str]:
    lines = [f'"""The {name} module: {" ".join(rng.sample(WORDS, 6))}."""', ""]
    for f in range(rng.randint(3, 5)):
        fn = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{f}"
        lines += [f"def {fn}(value, limit={rng.randint(2, 99)}):",
                  f'    """Return {" ".join(rng.sample(WORDS, 5))}."""']
        for _ in range(rng.randint(2, 6)):
            lines.append(f"    value = value * {rng.randint(2, 9)} + {rng.randint(0, 999)}")
        lines += ["    return value % limit", "", ""]
    return lines


def make_codebase(root: Path, *, files: int = 40, seed: int = 7) -> tuple[str, int]:
    """``files`` seeded Python modules in a few directories; returns the needle's (path, line)."""
    rng = random.Random(seed)
    needle_at = files * 2 // 3
    needle = ("", 0)
    for i in range(files):
        rel = f"{DIRECTORIES[i % len(DIRECTORIES)]}/mod_{i:02d}.py"
        lines = _module_text(rng, f"mod_{i:02d}")
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
    root = tmp_path / "repo"
    path, line = make_codebase(root)
    context = load_sources([str(root)])
    assert any(doc.path == path for doc in context.documents)
    return context, path, line


# --- the scripted oracle ----------------------------------------------------------------------
def oracle_rules(path: str, line: int, *, extra: tuple[dict[str, Any], ...] = ()) -> list[dict]:
    """Rules keyed on the signatures' field names (how DSPy's prompts list them)."""
    found = f"{path}:{line}: {NEEDLE}"
    answer = f"MAGIC_PORT is 48213 ({path}:{line})."
    return [
        *extra,
        # extract (map): the needle line as the chunk renders it, "  17| MAGIC_PORT = 48213"
        {"pattern": r"`relevant_info`.*\d+\| MAGIC_PORT = 48213",
         "reply": {"relevant_info": found, "confidence": "high"}},
        {"pattern": r"`relevant_info`", "reply": {"relevant_info": "NOT FOUND",
                                                  "confidence": "none"}},
        # combine (reduce): echo the needle when a finding holds it
        {"pattern": r"`partial_answers`.*48213", "reply": {"answer": answer}},
        {"pattern": r"`partial_answers`", "reply": {"answer": "The text does not say."}},
        # refine (iterative): the notes keep the needle once seen
        {"pattern": r"`updated_notes`.*48213", "reply": {"updated_notes": found}},
        {"pattern": r"`updated_notes`", "reply": {"updated_notes": "NOT FOUND"}},
        # answer (direct): the whole context in one prompt
        {"pattern": r"`context`.*\d+\| MAGIC_PORT = 48213", "reply": {"answer": answer}},
    ]


def make_services(rules: list[dict], *, window: int = WINDOW, max_output: int = MAX_OUTPUT,
                  predictor: Any = None, concurrency: int = 4, **limits: Any) -> Services:
    adapter = ScriptedAdapter(ScriptedSettings(rules=rules, context_window=window,
                                               max_output_tokens=max_output))
    return Services(
        lm=adapter.build_lm(),
        model_info=adapter.model_info(),
        predictor=predictor or predict.PredictPredictor(),
        plugin_set=plugin_set(*STRATEGY_MODULES, predict, chain_of_thought),
        concurrency=concurrency,
        progress_mode="silent",
        **limits,
    )


def strategy(name: str, **options: Any) -> Any:
    return _common.make_strategy(make_services([]), name, options)


def calls_with(services: Services, field: str) -> list[dict]:
    return [call for call in services.lm.calls if f"`{field}`" in call["prompt"]]


def assert_prompts_fit(services: Services) -> None:
    info = services.model_info
    budget = info.context_window - info.max_output_tokens
    assert services.lm.calls, "no LM call was made"
    largest = max(estimate_tokens(call["prompt"]) for call in services.lm.calls)
    assert largest <= budget, f"a prompt of ≈{largest} tokens exceeds the {budget}-token budget"


def assert_cites_needle(text: str, context: Context, path: str, line: int) -> None:
    assert "48213" in text
    citations = extract_citations(text, context.documents)
    assert any(c.path == path and c.line == line for c in citations), (text, citations)


# --- conformance ------------------------------------------------------------------------------
@pytest.mark.parametrize("module, name", [(direct, "direct"), (map_reduce, "map_reduce"),
                                          (iterative, "iterative"),
                                          (hierarchical, "hierarchical"), (auto, "auto"),
                                          (rlm, "rlm")])
def test_strategy_conformance(module: Any, name: str) -> None:
    suite = type("Suite", (StrategyConformance,), {"name": name, "plugins": (module,)})()
    suite.test_registered_under_its_name()
    suite.test_settings_class_is_attrs_with_defaults_or_given()
    suite.test_factory_satisfies_protocol()
    suite.test_plugin_import_is_light()


# --- direct -----------------------------------------------------------------------------------
def test_direct_answers_in_one_call_when_the_context_fits(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line), window=200_000)
    draft = strategy("direct").run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    assert len(services.lm.calls) == 1
    assert draft.strategy == "direct" and draft.chunks_read == draft.chunks_total == 1
    assert_prompts_fit(services)
    # every document went into the one prompt, with line numbers
    prompt = services.lm.calls[0]["prompt"]
    assert all(f"=== {doc.path} (lines 1-" in prompt for doc in context.documents)


def test_direct_refuses_a_context_larger_than_the_window(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line))
    with pytest.raises(PonderError, match=r"does not fit.*map_reduce.*auto"):
        strategy("direct").run(QUESTION, context, services)
    assert services.lm.calls == []


# --- map_reduce -------------------------------------------------------------------------------
def test_map_reduce_finds_the_needle_with_one_call_per_chunk_plus_reduce(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line))
    mr = strategy("map_reduce")
    chunks = mr.plan_chunks(QUESTION, context, services)
    n = len(chunks)
    assert n >= 10, "the window is meant to be small enough for many chunks"
    draft = mr.run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    # n map calls; one finding (the needle's chunk) → R(1) = 1 combine call
    assert len(calls_with(services, "relevant_info")) == n
    assert len(calls_with(services, "partial_answers")) == 1
    assert len(services.lm.calls) == n + 1
    assert draft.chunks_total == draft.chunks_read == n and draft.failures == []
    assert_prompts_fit(services)
    assert draft.largest_prompt_tokens == services.largest_prompt_tokens > 0


@pytest.mark.parametrize("fan_in", [2, 3, 8])
def test_map_reduce_reduce_tree_matches_the_formula(codebase, fan_in: int) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line))
    mr = strategy("map_reduce", fan_in=fan_in, skip_empty=False)
    n = len(mr.plan_chunks(QUESTION, context, services))
    draft = mr.run(QUESTION, context, services)
    levels = max(1, math.ceil(math.log(n, fan_in) - 1e-9))
    expected = sum(math.ceil(n / fan_in**i) for i in range(1, levels + 1))
    assert _common.reduce_calls(n, fan_in) == expected
    assert len(calls_with(services, "partial_answers")) == expected
    assert len(services.lm.calls) == n + expected
    assert_cites_needle(draft.text, context, path, line)
    assert_prompts_fit(services)


def test_reduce_splits_groups_that_would_overflow_the_window() -> None:
    # fan-in 8 but only ~3 findings fit one prompt: groups close early, no prompt overflows
    big = "x" * 1200  # ≈300 tokens each
    services = make_services([{"pattern": r"`partial_answers`", "reply": {"answer": "combined"}}])
    reduced = _common.reduce_answers(services, QUESTION, [f"finding {i}: {big}" for i in range(8)],
                                     fan_in=8)
    assert reduced.text == "combined"
    calls = calls_with(services, "partial_answers")
    assert len(calls) == reduced.calls > _common.reduce_calls(8, 8) == 1
    assert reduced.levels >= 2
    assert_prompts_fit(services)


def test_plan_groups_respects_fan_in_and_room() -> None:
    assert _common.plan_groups([1] * 7, 3, 100) == [[0, 1, 2], [3, 4, 5], [6]]
    assert _common.plan_groups([40, 40, 40, 10], 8, 90) == [[0, 1], [2, 3]]
    assert _common.plan_groups([500], 8, 90) == [[0]]


def test_map_reduce_reports_a_chunk_that_always_fails(codebase) -> None:
    context, path, line = codebase
    poisoned = context.documents[3]
    context.documents[3] = Document(poisoned.path, poisoned.text + "POISON_PILL = 1\n")
    # a reply no DSPy adapter accepts (confidence outside its Literal): ChatAdapter fails to
    # parse it, then its JSON fallback fails too, so the chunk's call raises
    rules = oracle_rules(path, line, extra=(
        {"pattern": r"`relevant_info`.*POISON_PILL",
         "reply": {"relevant_info": "poison", "confidence": "bogus"}},))
    services = make_services(rules)
    mr = strategy("map_reduce")
    chunks = mr.plan_chunks(QUESTION, context, services)
    bad = [c.index for c in chunks if "POISON_PILL" in c.render()]
    assert len(bad) == 1
    draft = mr.run(QUESTION, context, services)
    assert [f.index for f in draft.failures] == bad
    assert draft.chunks_total == len(chunks)
    assert draft.chunks_read + len(draft.failures) == draft.chunks_total
    assert services.stopped_by is None
    assert_cites_needle(draft.text, context, path, line)  # the other chunks still answer
    assert "AdapterParseError" in draft.failures[0].kind + draft.failures[0].error


@pytest.mark.parametrize("limit", [{"max_tokens": 4000}, {"max_cost": 0.01}])
def test_map_reduce_stops_at_a_limit_with_a_partial_answer(codebase, limit) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line), concurrency=1, **limit)
    services.model_info = type(services.model_info)(
        model="scripted", context_window=WINDOW, max_output_tokens=MAX_OUTPUT,
        input_cost_per_token=1e-6, output_cost_per_token=1e-6)
    mr = strategy("map_reduce", skip_empty=False)
    n = len(mr.plan_chunks(QUESTION, context, services))
    draft = mr.run(QUESTION, context, services)
    assert services.stopped_by == next(iter(limit))
    assert 0 < draft.chunks_read < n
    assert draft.chunks_read + len(draft.failures) == draft.chunks_total == n
    assert {f.kind for f in draft.failures} == {services.stopped_by}
    assert "partial" in draft.text and services.stopped_by in draft.text
    assert "NOT FOUND" in draft.text  # the findings so far are kept
    assert len(services.lm.calls) == draft.chunks_read  # no combine call after the stop


def test_map_reduce_clamps_an_oversized_chunk_setting_to_the_window(codebase, caplog) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line))
    with caplog.at_level("WARNING", logger="ponder.strategy"):
        draft = strategy("map_reduce", chunk_tokens=100_000).run(QUESTION, context, services)
    assert "does not fit the window" in caplog.text
    assert_cites_needle(draft.text, context, path, line)
    assert_prompts_fit(services)
    # the clamp is tight: the largest map prompt fills most of the budget
    largest = max(estimate_tokens(c["prompt"]) for c in calls_with(services, "relevant_info"))
    assert largest > 0.8 * (WINDOW - MAX_OUTPUT)


class KeywordRetriever:
    """Ranks chunks by how often they mention the question's identifiers."""

    def index(self, chunks: list[Any]) -> None:
        self.chunks = list(chunks)

    def search(self, query: str, k: int) -> list[tuple[Any, float]]:
        words = re.findall(r"[A-Z_]{4,}", query)
        scored = [(c, float(sum(c.render().count(w) for w in words))) for c in self.chunks]
        return sorted(scored, key=lambda pair: -pair[1])[:k]


def test_map_reduce_reads_only_top_k_chunks_with_a_retriever(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line))
    services.retriever = KeywordRetriever()
    mr = strategy("map_reduce", top_k=2)
    n = len(mr.plan_chunks(QUESTION, context, services))
    draft = mr.run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    assert len(calls_with(services, "relevant_info")) == 2 and len(services.lm.calls) == 3
    assert draft.chunks_total == n and draft.chunks_read == 2
    # without a retriever, top_k is ignored: every chunk is read
    plain = make_services(oracle_rules(path, line))
    assert strategy("map_reduce", top_k=2).run(QUESTION, context, plain).chunks_read == n


def test_map_reduce_with_nothing_relevant_makes_no_combine_call(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_codebase(root, files=8)
    context = load_sources([str(root)])
    context = Context([d for d in context.documents if "48213" not in d.text])
    services = make_services(oracle_rules("x.py", 1))
    draft = strategy("map_reduce").run(QUESTION, context, services)
    assert draft.text.startswith(_common.NOTHING_FOUND)
    assert calls_with(services, "partial_answers") == []


def _small_codebase(tmp_path: Path) -> tuple[Context, str, int]:
    """Two short files, the needle in one: the whole context fits one call of WINDOW."""
    root = tmp_path / "small"
    root.mkdir()
    (root / "a.py").write_text("def helper():\n    return 1\n")
    (root / "b.py").write_text("import os\n\nMAGIC_PORT = 48213\n")
    return load_sources([str(root)]), "b.py", 3


def test_map_reduce_answers_a_context_that_fits_one_call_in_that_call(tmp_path: Path) -> None:
    context, path, line = _small_codebase(tmp_path)
    services = make_services(oracle_rules(path, line))
    mr = strategy("map_reduce")
    assert len(mr.plan_chunks(QUESTION, context, services)) == 1
    assert mr.reads_in_one_call(QUESTION, context, services)
    draft = mr.run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    # one answer call over everything: no extract call, no combine call
    assert len(services.lm.calls) == 1
    assert calls_with(services, "relevant_info") == calls_with(services, "partial_answers") == []
    assert draft.strategy == "map_reduce" and draft.chunks_total == draft.chunks_read == 1
    assert {span[0] for span in draft.read} == {"a.py", "b.py"}
    # the plan counts what the run makes
    auto = strategy("auto")
    figures = auto.plan_for("map_reduce", mr, QUESTION, context, services)
    assert figures["calls_min"] == figures["calls_max"] == 1 and figures["waves"] == 1


def test_map_reduce_single_read_off_keeps_extract_and_combine(tmp_path: Path) -> None:
    context, path, line = _small_codebase(tmp_path)
    services = make_services(oracle_rules(path, line))
    mr = strategy("map_reduce", single_read=False)
    assert len(mr.plan_chunks(QUESTION, context, services)) == 1
    assert not mr.reads_in_one_call(QUESTION, context, services)
    draft = mr.run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    assert len(calls_with(services, "relevant_info")) == 1
    assert len(calls_with(services, "partial_answers")) == 1 == len(services.lm.calls) - 1


def test_map_reduce_one_chunk_of_a_configured_size_is_one_call(tmp_path: Path) -> None:
    context, path, line = _small_codebase(tmp_path)
    services = make_services(oracle_rules(path, line))
    mr = strategy("map_reduce", chunk_tokens=200)  # the whole context is one 200-token chunk
    assert mr.reads_in_one_call(QUESTION, context, services)
    draft = mr.run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    assert len(services.lm.calls) == 1


def test_map_reduce_single_read_that_fails_is_a_listed_failure(tmp_path: Path) -> None:
    context, _path, _line = _small_codebase(tmp_path)
    # no rule matches and there is no default reply: the scripted LM raises on the call
    rules = [{"pattern": r"never-in-a-prompt", "reply": {"answer": "x"}}]
    services = make_services(rules)
    draft = strategy("map_reduce").run(QUESTION, context, services)
    assert draft.chunks_read == 0 and [f.index for f in draft.failures] == [0]
    assert draft.text.startswith("No answer: none of the 1 chunks could be read")
    assert draft.read == [] and draft.evidence == []


# --- iterative --------------------------------------------------------------------------------
def test_iterative_reads_chunks_in_order_then_answers(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line))
    it = strategy("iterative")
    chunk_tokens, _notes = it.budgets(QUESTION, services)
    from ponder.context.chunking import chunk_context

    n = len(chunk_context(context, chunk_tokens=chunk_tokens))
    draft = it.run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    refines = calls_with(services, "updated_notes")
    assert len(refines) == n
    assert len(services.lm.calls) == n + 1
    assert "`partial_answers`" in services.lm.calls[-1]["prompt"]
    # the notes carry the needle forward from its chunk to the end
    first = next(i for i, c in enumerate(refines) if re.search(r"\| MAGIC_PORT = 48213",
                                                               c["prompt"]))
    assert all("48213" in c["prompt"] for c in refines[first:])
    assert draft.chunks_total == draft.chunks_read == n
    assert_prompts_fit(services)


def test_iterative_stops_at_a_limit_and_keeps_its_notes(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line), max_tokens=5_000)
    draft = strategy("iterative").run(QUESTION, context, services)
    assert services.stopped_by == "max_tokens"
    assert 0 < draft.chunks_read < draft.chunks_total
    assert draft.chunks_read + len(draft.failures) == draft.chunks_total
    assert {f.kind for f in draft.failures} == {"max_tokens"}
    assert len(services.lm.calls) == draft.chunks_read  # no final call after the stop
    assert draft.text.startswith("[partial: the run stopped (max_tokens)")


def test_iterative_truncates_long_notes_to_fit(codebase) -> None:
    context, path, line = codebase
    long_notes = "note " * 2000  # ≈2,500 tokens: more than the whole window
    rules = oracle_rules(path, line, extra=(
        {"pattern": r"`updated_notes`", "reply": {"updated_notes": long_notes + " 48213"}},))
    services = make_services(rules)
    draft = strategy("iterative").run(QUESTION, context, services)
    assert draft.failures == []
    assert_prompts_fit(services)


# --- hierarchical -----------------------------------------------------------------------------
def test_hierarchical_answers_per_section_then_combines(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line))
    # each section through extract + combine (single_read off: the formula below is that one's)
    h = strategy("hierarchical", section_chunks=4, sub_settings={"single_read": False})
    sections = hierarchical.plan_sections(context.documents, h.section_budget(QUESTION, services))
    assert len(sections) > len({p.split("/")[0] for p in (d.path for d in context.documents)})
    # every document in exactly one section, in order
    assert [d.path for s in sections for d in s.documents] == [d.path for d in context.documents]
    mr = strategy("map_reduce", single_read=False)
    n_s = [len(mr.plan_chunks(QUESTION, Context(list(s.documents)), services)) for s in sections]
    draft = h.run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    # Σ n_s map calls; the needle's section: R(1) = 1 combine; one section found something: 0 more
    assert len(calls_with(services, "relevant_info")) == sum(n_s)
    assert len(calls_with(services, "partial_answers")) == 1
    assert len(services.lm.calls) == sum(n_s) + 1
    assert draft.chunks_total == draft.chunks_read == sum(n_s)
    assert_prompts_fit(services)


def test_hierarchical_combines_several_sections_window_safely(codebase) -> None:
    context, path, line = codebase
    # every chunk "finds" something, so every section answers and the answers are combined
    rules = oracle_rules(path, line, extra=(
        {"pattern": r"`relevant_info`(?!.*48213)", "reply": {"relevant_info": "a helper",
                                                             "confidence": "low"}},
        {"pattern": r"`partial_answers`(?!.*48213)", "reply": {"answer": "helpers only"}},))
    services = make_services(rules)
    h = strategy("hierarchical", section_chunks=4, fan_in=3,
                 sub_settings={"fan_in": 3, "single_read": False})
    sections = hierarchical.plan_sections(context.documents, h.section_budget(QUESTION, services))
    draft = h.run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    mr = strategy("map_reduce", fan_in=3, single_read=False)
    n_s = [len(mr.plan_chunks(QUESTION, Context(list(s.documents)), services)) for s in sections]
    expected = sum(n + _common.reduce_calls(n, 3) for n in n_s) + _common.reduce_calls(
        len(sections), 3)
    assert len(services.lm.calls) == expected
    assert_prompts_fit(services)


def test_hierarchical_uses_the_registry_for_its_sub_strategy(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line))
    draft = strategy("hierarchical", sub_strategy="iterative").run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    assert calls_with(services, "updated_notes") and not calls_with(services, "relevant_info")
    with pytest.raises(PonderError, match="unknown strategy 'nope'"):
        strategy("hierarchical", sub_strategy="nope").run(QUESTION, context, services)


# --- auto -------------------------------------------------------------------------------------
def test_auto_picks_direct_for_a_tiny_context() -> None:
    context = Context([Document("app/settings.py", "DEBUG = False\nMAGIC_PORT = 48213\n")])
    services = make_services(oracle_rules("app/settings.py", 2))
    draft = strategy("auto").run(QUESTION, context, services)
    assert draft.strategy == "direct"
    assert re.search(r"context ≈ \d+ tokens ≤ window budget [\d,]+ → direct", draft.reason)
    assert len(services.lm.calls) == 1
    assert_cites_needle(draft.text, context, "app/settings.py", 2)


def test_auto_picks_map_reduce_for_a_large_context(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line))
    draft = strategy("auto").run(QUESTION, context, services)
    n = len(strategy("map_reduce").plan_chunks(QUESTION, context, services))
    assert draft.strategy == "map_reduce"
    assert re.search(rf"context ≈ [\d,]+ tokens > window budget [\d,]+; {n} chunks ≤ 64 "
                     r"→ map_reduce", draft.reason), draft.reason
    assert_cites_needle(draft.text, context, path, line)
    assert len(services.lm.calls) == n + 1


def test_auto_rule_for_aggregation_and_hierarchical(codebase) -> None:
    context, _path, _line = codebase
    services = make_services([])
    choice = strategy("auto").choose("How many functions are there?", context, services)
    assert choice.strategy == "map_reduce" and "aggregation ('how many')" in choice.reason
    picky = strategy("auto", map_reduce_chunks=2, hierarchical_chunks=3, hierarchical_dirs=3)
    choice = picky.choose(QUESTION, context, services)
    assert choice.strategy == "hierarchical" and "directories ≥ 3" in choice.reason
    few_dirs = strategy("auto", map_reduce_chunks=2, hierarchical_chunks=3, hierarchical_dirs=50)
    assert few_dirs.choose(QUESTION, context, services).strategy == "map_reduce"
    assert services.lm.calls == []  # choosing costs no LM call


# --- the chain_of_thought predictor drives the strategies too ---------------------------------
def test_map_reduce_with_chain_of_thought(codebase) -> None:
    context, path, line = codebase
    services = make_services(oracle_rules(path, line),
                             predictor=chain_of_thought.ChainOfThoughtPredictor())
    draft = strategy("map_reduce").run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    assert all("`reasoning`" in call["prompt"] for call in services.lm.calls)
    assert_prompts_fit(services)


# --- rlm --------------------------------------------------------------------------------------
SEARCH_CODE, SUBMIT_CODE = rlm_needle_script("MAGIC_PORT")


def root_rules(*codes: str, sub: dict | None = None) -> list[dict]:
    """A scripted root model writing ``codes[i]`` at iteration i + 1 (and a sub-call reply)."""
    rules = [{"pattern": r"`response`.*Which port does this line set",
              "reply": sub or {"response": "MAGIC_PORT is 48213."}}]
    rules += [{"pattern": rf"\[\[ ## iteration ## \]\]\s*{i}/",
               "reply": {"reasoning": f"step {i}", "code": code}}
              for i, code in enumerate(codes, 1)]
    return rules


def rlm_spans(services: Services) -> list[Any]:
    return [span for span in services.tracker.spans if span.name == "rlm"]


def test_rlm_searches_the_context_in_code_then_sub_calls_and_submits(codebase) -> None:
    context, path, line = codebase
    services = make_services(root_rules(SEARCH_CODE, SUBMIT_CODE), window=32_000,
                             max_output=1024)
    draft = strategy("rlm").run(QUESTION, context, services)
    assert_cites_needle(draft.text, context, path, line)
    assert draft.strategy == "rlm"
    # two root turns and one llm_query sub-call, all metered
    roots = [c for c in services.lm.calls if "[[ ## iteration ## ]]" in c["prompt"]]
    subs = calls_with(services, "response")
    assert len(roots) == 2 and len(subs) == 1 and len(services.lm.calls) == 3
    assert services.usage.calls == 3
    assert services.usage.input_tokens == sum(c["prompt_tokens"] for c in services.lm.calls)
    # the second turn saw what the first one printed, found by code in the sandbox
    assert f"{path}:{line} {NEEDLE}" in roots[1]["prompt"]
    # the context stayed out of the prompts: only dspy's preview of it is shown
    assert all(estimate_tokens(c["prompt"]) < context.estimated_tokens / 4
               for c in services.lm.calls)
    assert [span.attributes["sandbox"] for span in rlm_spans(services)] == ["monty"]


def test_rlm_sandbox_refuses_files_and_environment(codebase, caplog, monkeypatch) -> None:
    context, _path, _line = codebase
    monkeypatch.setenv("PONDER_TEST_SECRET", "hunter2-secret-value")
    probe_files = "```python\nprint(open('/etc/passwd').read())\n```"
    probe_env = "```python\nimport os\nprint(os.environ['PONDER_TEST_SECRET'])\n```"
    give_up = "```python\nSUBMIT(answer='The sandbox refused both.')\n```"
    services = make_services(root_rules(probe_files, probe_env, give_up), window=32_000,
                             max_output=1024)
    rlm_strategy = strategy("rlm")
    with caplog.at_level("WARNING", logger="ponder.strategy.rlm"):
        draft = rlm_strategy.run(QUESTION, context, services)
    assert draft.text == "The sandbox refused both."
    # both attempts were refused, reported to the model, logged, and recorded on the span
    roots = [c for c in services.lm.calls if "[[ ## iteration ## ]]" in c["prompt"]]
    assert len(roots) == 3
    assert "PermissionError" in roots[1]["prompt"]
    assert "os.environ" in roots[2]["prompt"] and "not supported" in roots[2]["prompt"]
    refused = rlm_spans(services)[0].attributes["refused"]
    assert len(refused) >= 2 and refused == rlm_strategy.refused
    assert any("/etc/passwd" in r for r in refused) and any("os.environ" in r for r in refused)
    assert "the sandbox refused" in caplog.text
    # nothing of the host leaked into any prompt
    everything = "\n".join(c["prompt"] for c in services.lm.calls)
    assert "root:x:0:0" not in everything and "hunter2-secret-value" not in everything


def test_rlm_stops_at_a_limit(codebase) -> None:
    context, _path, _line = codebase
    loop = "```python\nprint(len(context))\n```"
    services = make_services(root_rules(*[loop] * 12), window=32_000, max_output=1024,
                             max_tokens=3_000)
    draft = strategy("rlm").run(QUESTION, context, services)
    assert services.stopped_by == "max_tokens"
    assert "partial" in draft.text and "max_tokens" in draft.text
    # a root turn costs ≈1,400 tokens: the limit is seen before the third snippet runs
    assert len(services.lm.calls) <= 3


def test_rlm_unsafe_local_exec_must_be_asked_for_and_warns(codebase, caplog) -> None:
    context, path, line = codebase
    services = make_services(root_rules(SEARCH_CODE, SUBMIT_CODE), window=32_000,
                             max_output=1024)
    with caplog.at_level("WARNING", logger="ponder.strategy.rlm"):
        draft = strategy("rlm", unsafe_local_exec=True).run(QUESTION, context, services)
    assert "NOT in a sandbox" in caplog.text
    assert_cites_needle(draft.text, context, path, line)
    assert [span.attributes["sandbox"] for span in rlm_spans(services)] == ["local (unsafe)"]
    assert rlm.RLMSettings().unsafe_local_exec is False
