"""The first-party metrics: known values, DSPy interop, and each one's conformance suite."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from ponder.evaluate import Example, Prediction, Score, as_dspy_metric
from ponder.evaluate.metric import normalize
from ponder.plugins.metric_citations import Citations, CitationsSettings
from ponder.plugins.metric_contains import Contains
from ponder.plugins.metric_exact_match import ExactMatch, ExactMatchSettings
from ponder.plugins.metric_llm_judge import LLMJudge, LLMJudgeSettings, parse_grade
from ponder.plugins.metric_numeric import Numeric, NumericSettings, numbers_in
from ponder.plugins.metric_token_f1 import TokenF1, token_f1
from ponder.testing.metric_conformance import MetricConformance

# a small corpus for the citations metric (its lines must exist)
CORPUS = Path(tempfile.mkdtemp(prefix="ponder-metric-"))
(CORPUS / "service").mkdir()
(CORPUS / "service" / "config.py").write_text("".join(f"LINE_{i} = {i}\n" for i in range(1, 21)))


def ex(answer, **kw):
    return Example(id="1", question=kw.pop("question", "q?"), answer=answer, **kw)


def value(metric, answer, gold, **kw):
    return metric.score(ex(gold, **kw), Prediction(answer)).value


# --- exact_match ---------------------------------------------------------------------------------
def test_exact_match_normalises_case_punctuation_and_articles():
    m = ExactMatch()
    assert value(m, "The 48213.", ("48213",)) == 1.0
    assert value(m, "port 48213", ("48213",)) == 0.0
    assert value(m, "Paris", ("London", "paris")) == 1.0
    strict = ExactMatch(ExactMatchSettings(normalize=False))
    assert value(strict, "The 48213.", ("48213",)) == 0.0
    assert normalize("  The  Quick, brown fox! ") == "quick brown fox"


# --- contains ------------------------------------------------------------------------------------
def test_contains_whole_words_and_must_lists():
    m = Contains()
    assert value(m, "The port is 48213 (service/config.py:6).", ("48213",)) == 1.0
    assert value(m, "It is 1700.", ("7",)) == 0.0  # whole words: 7 is not in 1700
    assert value(m, "routes /health and /orders", ("/health",),
                 metadata={"must_include": ["/orders"]}) == 1.0
    score = m.score(ex(("/health",), metadata={"must_include": ["/orders"]}),
                    Prediction("only /health"))
    assert score.value == 0.0 and "/orders" in score.feedback
    assert value(m, "1200 or 3400", ("1200",), metadata={"must_not_include": ["3400"]}) == 0.0
    assert m.binary


# --- token_f1 ------------------------------------------------------------------------------------
def test_token_f1_squad_values():
    # answer tokens: [red, fox, jumps] vs gold [quick, red, fox]: common 2 -> P = R = 2/3
    f1, p, r = token_f1("the red fox jumps", "a quick red fox")
    assert p == pytest.approx(2 / 3) and r == pytest.approx(2 / 3) and f1 == pytest.approx(2 / 3)
    assert token_f1("", "") == (1.0, 1.0, 1.0)
    assert token_f1("nothing alike", "red fox")[0] == 0.0
    score = TokenF1().score(ex(("blue whale", "red fox")), Prediction("red fox"))
    assert score.value == 1.0 and score.parts == {"precision": 1.0, "recall": 1.0}
    # duplicates count with multiplicity: "fox fox" vs "fox": P = 1/2, R = 1
    assert token_f1("fox fox", "fox")[0] == pytest.approx(2 * 0.5 * 1 / 1.5)


# --- numeric -------------------------------------------------------------------------------------
def test_numeric_tolerance_and_citations_ignored():
    assert numbers_in("1,200 apples, -3.5 and 2e3 (app.py:17)") == [1200.0, -3.5, 2000.0]
    m = Numeric(NumericSettings(rel_tol=0.01))
    assert value(m, "about 101 ms", ("100",)) == 1.0
    assert value(m, "about 102 ms", ("100",)) == 0.0
    # the line number of a citation is not the answer
    assert value(Numeric(), "see service/config.py:6", ("6",)) == 0.0
    assert value(Numeric(NumericSettings(pick="last")), "3 then 4", ("3",)) == 0.0
    # a gold answer that is not a number: not applicable (None), never a failed example
    score = Numeric().score(ex(("many",)), Prediction("1"))
    assert score.value is None and "not applicable" in score.feedback
    # the numeric one of mixed gold answers counts
    assert value(Numeric(), "three: 3", ("three", "3")) == 1.0


# --- citations -----------------------------------------------------------------------------------
def cite(answer, evidence, **settings):
    m = Citations(CitationsSettings(**settings))
    return m.score(ex(("x",), evidence=evidence, sources=(str(CORPUS),)), Prediction(answer))


def test_citations_precision_recall_f1():
    # one right (line 6 is evidence), one wrong (line 2 is not): P = 1/2; evidence 6 hit of
    # {6, 11-12}: R = 1/2; F1 = 1/2
    score = cite("at service/config.py:6 and service/config.py:2",
                 ["service/config.py:6", "service/config.py:11-12"])
    assert score.parts == {"precision": 0.5, "recall": 0.5} and score.value == 0.5
    # a range: line 12 inside 11-12; the evidence path as written relative to the dataset
    score = cite("config.py:12 service/config.py:6", ["corpus/service/config.py:6",
                                                      "service/config.py:11-12"])
    assert score.parts["recall"] == 1.0


def test_a_cited_line_must_exist():
    # line 99 is in the evidence range but the file has 20 lines: never correct
    score = cite("service/config.py:99", ["service/config.py:90-100"])
    assert score.value == 0.0 and "no such line" in score.feedback
    assert cite("service/config.py:5", ["service/config.py:3-6"], line_tolerance=0).value == 1.0
    assert cite("service/config.py:8", ["service/config.py:3-6"], line_tolerance=2).value == 1.0


def test_citations_without_evidence_is_not_applicable():
    score = cite("service/config.py:6", [])
    assert score.value is None
    assert cite("no citation here", ["service/config.py:6"]).value == 0.0


# --- llm_judge -----------------------------------------------------------------------------------
JUDGE = {"adapter": "scripted", "settings": {
    "rules": [{"pattern": r"## answer ## \]\]\s*\S*48213",
               "reply": {"score": "0.9", "feedback": "right port"}}],
    "default": {"score": "0", "feedback": "wrong"}}}


def test_llm_judge_grades_and_counts_its_own_calls():
    from ponder.kernel.config import structure_settings

    judge = LLMJudge(structure_settings(LLMJudgeSettings, JUDGE, section="eval.metric.llm_judge"))
    right = judge.score(ex(("48213",), question="Which port?"), Prediction("48213"))
    wrong = judge.score(ex(("48213",), question="Which port?"), Prediction("8080"))
    assert right.value == pytest.approx(0.9) and right.feedback == "right port"
    assert wrong.value == 0.0
    assert right.usage["calls"] == 1 and right.usage["input_tokens"] > 0


def test_parse_grade_scales():
    assert parse_grade("0.25") == 0.25
    assert parse_grade("7/10") == 0.7
    assert parse_grade("85") == 0.85
    with pytest.raises(ValueError):
        parse_grade("excellent")


# --- DSPy interop --------------------------------------------------------------------------------
def test_metrics_are_dspy_metrics():
    import dspy

    example = dspy.Example(question="Which port?", answer="48213").with_inputs("question")
    prediction = dspy.Prediction(answer="It is 48213.")
    assert Contains()(example, prediction) == 1.0
    assert Contains()(example, prediction, trace=[]) is True
    f1 = as_dspy_metric(TokenF1(), pass_threshold=0.9)
    assert f1(example, dspy.Prediction(answer="48213 maybe")) == pytest.approx(2 / 3)
    assert f1(example, dspy.Prediction(answer="48213 maybe"), trace=[]) is False
    evaluate = dspy.Evaluate(devset=[example], metric=Contains(), num_threads=1,
                             display_progress=False)
    program = lambda question: dspy.Prediction(answer="48213")  # noqa: E731
    assert float(evaluate(program).score) == 100.0


def test_score_range_is_checked():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Score(1.5)


# --- conformance ---------------------------------------------------------------------------------
class TestExactMatchConformance(MetricConformance):
    name = "exact_match"


class TestContainsConformance(MetricConformance):
    name = "contains"


class TestTokenF1Conformance(MetricConformance):
    name = "token_f1"


class TestNumericConformance(MetricConformance):
    name = "numeric"


class TestCitationsConformance(MetricConformance):
    name = "citations"
    right = ({"question": "Which port?", "answer": ["6"], "evidence": ["service/config.py:6"],
              "sources": [str(CORPUS)]}, {"answer": "LINE_6 (service/config.py:6)"})
    wrong = ({"question": "Which port?", "answer": ["6"], "evidence": ["service/config.py:6"],
              "sources": [str(CORPUS)]}, {"answer": "see service/config.py:40"})


class TestLLMJudgeConformance(MetricConformance):
    name = "llm_judge"
    settings = JUDGE


def test_citations_count_the_engines_validated_citations():
    m = Citations()
    example = ex(("x",), evidence=["service/config.py:6"], sources=(str(CORPUS),))
    score = m.score(example, Prediction("48213", citations=["service/config.py:6"]))
    assert score.value == 1.0
