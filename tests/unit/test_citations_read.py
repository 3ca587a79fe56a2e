"""Issue 15: citations point at lines that were actually read.

``extract_citations`` takes the spans a strategy read (``Draft.read``): a ``path:line`` outside
them, on a blank line, or in no loaded document is dropped and described; a loaded path with
spaces is found. When the model cites nothing, the answer cites where its findings came from
(``Draft.evidence``). End to end: ``map_reduce`` over a scripted model, then
``System._answer`` as ``ponder ask`` builds the answer (``citations``, ``citations_dropped``).
"""

from __future__ import annotations

from typing import Any

import pytest

from ponder.context.sources import Context, Document
from ponder.engine.answer import Citation, Draft, extract_citations
from ponder.engine.services import Services
from ponder.engine.system import System
from ponder.plugins import _common, direct, hierarchical, iterative, map_reduce, predict
from ponder.plugins.scripted import ScriptedAdapter, ScriptedSettings
from ponder.testing import plugin_set

NEEDLE = "MAGIC_PORT = 48213"


def documents() -> list[Document]:
    body = "\n".join(f"filler_{k} = {k}" if k != 5 else "" for k in range(1, 41))
    return [
        Document(path="src/app.py", text=body + "\n"),
        Document(path="docs/my notes/read me.txt",
                 text="intro\n" + NEEDLE + "\n\nend\n"),
    ]


def test_a_citation_outside_what_was_read_is_dropped_and_reported():
    docs = documents()
    read = [("src/app.py", 1, 20)]  # the strategy read lines 1-20 only
    dropped: list[dict[str, Any]] = []
    text = "See src/app.py:3 and src/app.py:30, also src/app.py:5 and nowhere.py:2."
    found = extract_citations(text, docs, read=read, dropped=dropped)
    assert found == [Citation("src/app.py", 3)]
    reasons = {(d["path"], d["line"]): d["reason"] for d in dropped}
    assert reasons == {("src/app.py", 30): "that line was not read",
                       ("src/app.py", 5): "a blank line",
                       ("nowhere.py", 2): "not a loaded document"}


def test_a_cited_path_with_spaces_is_kept():
    docs = documents()
    found = extract_citations("It is set in docs/my notes/read me.txt:2.", docs)
    assert found == [Citation("docs/my notes/read me.txt", 2)]


def test_without_read_spans_every_loaded_line_may_be_cited_but_not_past_the_end():
    dropped: list[dict[str, Any]] = []
    found = extract_citations("src/app.py:40 src/app.py:41", documents(), dropped=dropped)
    assert found == [Citation("src/app.py", 40)]
    assert [d["line"] for d in dropped] == [41]


def test_evidence_lines_point_at_the_line_holding_the_finding():
    docs = documents()
    chunk_like = _common._pieces_of(docs)
    found = _common.evidence_lines("MAGIC_PORT is 48213", chunk_like)
    assert found == [Citation("docs/my notes/read me.txt", 2)]
    # nothing locatable: the first non-blank line of the piece
    assert _common.evidence_lines("it is there", docs[1:]) == [
        Citation("docs/my notes/read me.txt", 1)]


# --- end to end: a strategy's draft, then the answer --------------------------------------------
def run(rules: list[dict[str, Any]], docs: list[Document], strategy: Any) -> Any:
    adapter = ScriptedAdapter(ScriptedSettings(rules=rules, context_window=2048,
                                               max_output_tokens=256))
    services = Services(lm=adapter.build_lm(), model_info=adapter.model_info(),
                        predictor=predict.PredictPredictor(),
                        plugin_set=plugin_set(map_reduce, direct, iterative, hierarchical,
                                              predict),
                        progress_mode="silent", chunk_tokens=120)
    context = Context(documents=docs, sources=["."])
    draft = strategy.run("What is MAGIC_PORT?", context, services)
    return draft, System._answer(draft, context, services, strategy.name, "scripted", 0.0,
                                 "run1")


MAP_RULES = [
    {"pattern": r"`relevant_info`.*\d+\| MAGIC_PORT = 48213",
     "reply": {"relevant_info": "MAGIC_PORT = 48213", "confidence": "high"}},
    {"pattern": r"`relevant_info`", "reply": {"relevant_info": "NOT FOUND",
                                              "confidence": "none"}},
]


def test_an_answer_that_cites_nothing_cites_the_chunks_its_findings_came_from():
    rules = [*MAP_RULES, {"pattern": r"`partial_answers`",
                          "reply": {"answer": "MAGIC_PORT is 48213."}}]
    draft, answer = run(rules, documents(), map_reduce.MapReduceStrategy())
    assert draft.read and draft.evidence
    assert answer.citations == [Citation("docs/my notes/read me.txt", 2)]
    assert answer.citations_dropped == []


def test_an_answer_that_found_nothing_is_not_given_the_findings_citations():
    """Evidence stands behind an answer; one that says it found nothing has none to cite."""
    rules = [*MAP_RULES, {"pattern": r"`partial_answers`",
                          "reply": {"answer": "I could not find MAGIC_PORT in the sources."}}]
    draft, answer = run(rules, documents(), map_reduce.MapReduceStrategy())
    assert draft.evidence  # a chunk did report a finding …
    assert answer.citations == []  # … but the answer disowns it, so nothing is cited


def test_a_cited_line_the_strategy_never_read_is_dropped_and_said():
    """The model cites a line of a chunk whose call failed (never read), and a blank line."""
    rules = [
        # no rule answers the first chunk (src/app.py's first lines): the script runs out and
        # that chunk's call fails, so its lines are never read
        MAP_RULES[0],
        {"pattern": r"`relevant_info`(?!.*filler_12 =)", "reply": {
            "relevant_info": "NOT FOUND", "confidence": "none"}},
        {"pattern": r"`partial_answers`", "reply": {
            "answer": "MAGIC_PORT is 48213 (docs/my notes/read me.txt:2; see also "
                      "src/app.py:12 and docs/my notes/read me.txt:3)."}},
    ]
    draft, answer = run(rules, documents(), map_reduce.MapReduceStrategy())
    assert [f.index for f in draft.failures] == [0]  # the chunk with line 12 was not read
    assert answer.citations == [Citation("docs/my notes/read me.txt", 2)]
    dropped = {(d["path"], d["line"]): d["reason"] for d in answer.citations_dropped}
    assert dropped == {("src/app.py", 12): "that line was not read",
                       ("docs/my notes/read me.txt", 3): "a blank line"}
    data = answer.to_dict()
    assert data["citations_dropped"] == answer.citations_dropped
    assert any("citation(s) dropped" in p for p in answer.problems)


@pytest.mark.parametrize("strategy", [direct.DirectStrategy(), map_reduce.MapReduceStrategy(),
                                      iterative.IterativeStrategy(),
                                      hierarchical.HierarchicalStrategy()],
                         ids=["direct", "map_reduce", "iterative", "hierarchical"])
def test_strategies_say_what_they_read(strategy):
    rules = [*MAP_RULES,
             {"pattern": r"`updated_notes`.*\d+\| MAGIC_PORT = 48213",
              "reply": {"updated_notes": "MAGIC_PORT = 48213"}},
             {"pattern": r"`updated_notes`.*48213", "reply": {"updated_notes":
                                                              "MAGIC_PORT = 48213"}},
             {"pattern": r"`updated_notes`", "reply": {"updated_notes": "NOT FOUND"}},
             {"pattern": r"`partial_answers`", "reply": {"answer": "MAGIC_PORT is 48213."}},
             {"pattern": r"`context`", "reply": {"answer": "MAGIC_PORT is 48213."}}]
    docs = documents()
    draft, answer = run(rules, docs, strategy)
    covered = {(path, line) for path, first, last in draft.read
               for line in range(first, last + 1)}
    assert ("docs/my notes/read me.txt", 2) in covered and ("src/app.py", 1) in covered
    assert answer.citations == [Citation("docs/my notes/read me.txt", 2)]


def test_a_draft_without_read_spans_keeps_the_old_rule():
    """A third-party strategy that does not fill ``Draft.read``: any loaded line counts."""
    draft = Draft(text="see src/app.py:33", chunks_total=1, chunks_read=1)
    found = extract_citations(draft.text, documents(), read=draft.read)
    assert found == [Citation("src/app.py", 33)]
