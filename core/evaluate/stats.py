"""The statistics an eval reports: bootstrap intervals, paired comparisons, McNemar's test.

- :func:`bootstrap_ci`: the mean of per-example scores with a percentile bootstrap interval
  (resampling examples with replacement, seeded, so the same scores give the same interval).
- :func:`paired_bootstrap`: two variants scored on the *same* examples; the mean of the
  per-example differences with its percentile interval, and a two-sided p-value from the
  bootstrap distribution of the difference re-centred on zero. Pairing matters: most of the
  spread between examples is the examples' difficulty, which a paired test removes.
- :func:`mcnemar`: for binary metrics (right/wrong), the exact two-sided McNemar test on the
  discordant pairs (b: only A right, c: only B right), a binomial test with p = 1/2; no
  continuity-corrected chi-square approximation is needed at eval sizes.

Resampling uses numpy (a dependency of dspy, so always installed), imported inside the
functions so that importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

RESAMPLES = 2000
CONFIDENCE = 0.95
#: a difference is called real when its interval excludes 0 and p is below this
ALPHA = 0.05


def _rng(seed: int) -> Any:
    import numpy as np

    return np.random.default_rng(seed)


def bootstrap_ci(values: Sequence[float], *, confidence: float = CONFIDENCE,
                 resamples: int = RESAMPLES, seed: int = 0) -> tuple[float | None, float | None,
                                                                    float | None]:
    """(mean, low, high) of ``values``; (None, None, None) for no values. One value: its own
    interval is the point (there is no spread to resample)."""
    import numpy as np

    data = np.asarray([float(v) for v in values], dtype=float)
    if data.size == 0:
        return None, None, None
    mean = float(data.mean())
    if data.size == 1 or float(data.std()) == 0.0:
        return mean, mean, mean
    picks = _rng(seed).integers(0, data.size, size=(resamples, data.size))
    means = data[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return mean, float(low), float(high)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, confidence: float = CONFIDENCE,
                     resamples: int = 5000, seed: int = 0) -> dict[str, Any]:
    """The mean of ``b - a`` over paired examples with its interval and two-sided p-value."""
    import numpy as np

    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    diffs = np.asarray([float(y) - float(x) for x, y in zip(a, b, strict=True)], dtype=float)
    if diffs.size == 0:
        return {"n": 0, "diff": None, "ci_low": None, "ci_high": None, "p_value": None}
    observed = float(diffs.mean())
    if float(diffs.std()) == 0.0:
        p = 1.0 if observed == 0.0 else 0.0
        return {"n": int(diffs.size), "diff": observed, "ci_low": observed,
                "ci_high": observed, "p_value": p}
    picks = _rng(seed).integers(0, diffs.size, size=(resamples, diffs.size))
    means = diffs[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    # the null distribution: the resampled means shifted to centre on 0
    centred = means - observed
    p = float((np.abs(centred) >= abs(observed)).sum() + 1) / (resamples + 1)
    return {"n": int(diffs.size), "diff": observed, "ci_low": float(low), "ci_high": float(high),
            "p_value": min(1.0, p)}


def mcnemar(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Exact McNemar test on paired binary outcomes (values > 0.5 count as right)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x > 0.5 >= y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y > 0.5 >= x)
    n = only_a + only_b
    if n == 0:
        return {"b": 0, "c": 0, "p_value": 1.0}
    k = min(only_a, only_b)
    # two-sided exact binomial: 2 * P(X <= k), X ~ Bin(n, 1/2), capped at 1
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return {"b": only_a, "c": only_b, "p_value": min(1.0, 2 * tail)}


def compare_scores(a: Sequence[float], b: Sequence[float], *, binary: bool,
                   seed: int = 0) -> dict[str, Any]:
    """Everything a comparison row shows: paired bootstrap, McNemar for binary metrics, and
    whether the difference is real (interval excludes 0 and the test's p < ALPHA)."""
    result = paired_bootstrap(a, b, seed=seed)
    if binary:
        test = mcnemar(a, b)
        result["mcnemar_p"] = test["p_value"]
        result["discordant"] = [test["b"], test["c"]]
    p = result.get("mcnemar_p", result["p_value"])
    excludes_zero = (result["ci_low"] is not None
                     and (result["ci_low"] > 0 or result["ci_high"] < 0))
    result["significant"] = bool(p is not None and p < ALPHA and excludes_zero)
    return result
