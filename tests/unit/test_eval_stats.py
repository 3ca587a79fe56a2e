"""The eval's statistics: bootstrap intervals, paired comparisons, McNemar, percentiles."""

from __future__ import annotations

import math

import pytest

from ponder.evaluate.stats import (
    bootstrap_ci,
    compare_scores,
    mcnemar,
    paired_bootstrap,
)
from ponder.support.measured import percentile


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    values = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1] * 4
    mean, low, high = bootstrap_ci(values, seed=3)
    assert mean == pytest.approx(0.7) and low < 0.7 < high
    # about the normal interval: 0.7 ± 1.96 * sqrt(0.7 * 0.3 / 40) = ± 0.142
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.21 / 40), abs=0.05)
    assert bootstrap_ci(values, seed=3) == (mean, low, high)
    assert bootstrap_ci([]) == (None, None, None)
    assert bootstrap_ci([0.5]) == (0.5, 0.5, 0.5)
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0, 1.0)


def test_mcnemar_exact_values():
    # 10 discordant pairs, all one way: p = 2 * 0.5**10
    a, b = [0] * 10 + [1] * 5, [1] * 10 + [1] * 5
    result = mcnemar(a, b)
    assert (result["b"], result["c"]) == (0, 10)
    assert result["p_value"] == pytest.approx(2 / 1024)
    # 3 vs 2 discordant: p = 2 * P(X <= 2 | n=5) = 2 * 16/32 = 1.0
    assert mcnemar([1, 1, 1, 0, 0], [0, 0, 0, 1, 1])["p_value"] == 1.0
    assert mcnemar([1, 0], [1, 0])["p_value"] == 1.0


def test_a_real_difference_is_significant():
    # B right on 18 of 20 where A is right on 4: a paired difference far from 0
    a = [1] * 4 + [0] * 16
    b = [1] * 18 + [0] * 2
    result = compare_scores(a, b, binary=True)
    assert result["diff"] == pytest.approx(0.7)
    assert result["ci_low"] > 0 and result["mcnemar_p"] < 0.001
    assert result["significant"] is True


def test_noise_is_not_significant():
    # the same accuracy, wrong on different examples: the difference is noise
    a = [1, 0] * 10
    b = [0, 1] * 10
    result = compare_scores(a, b, binary=True)
    assert result["diff"] == 0.0 and result["ci_low"] < 0 < result["ci_high"]
    assert result["mcnemar_p"] == 1.0 and result["significant"] is False
    # a small continuous difference within the spread
    c = [0.5, 0.6, 0.4, 0.7, 0.3, 0.55, 0.45, 0.65]
    d = [0.52, 0.58, 0.43, 0.69, 0.33, 0.53, 0.44, 0.66]
    assert compare_scores(c, d, binary=False)["significant"] is False


def test_paired_bootstrap_edges():
    assert paired_bootstrap([], [])["diff"] is None
    same = paired_bootstrap([1, 0, 1], [1, 0, 1])
    assert same["diff"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1], [1, 0])


def test_percentile_matches_linear_interpolation():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([1, 2, 3, 4, 5], 95) == pytest.approx(4.8)
    assert percentile([], 50) is None and percentile([7], 95) == 7
