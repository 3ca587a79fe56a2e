"""What a metric is, and the small helpers every metric plugin shares.

A metric (kind ``metric``, hook ``ponder_register_metrics``) scores one prediction against one
example: ``score(example, prediction) -> Score`` with a value in [0, 1] (or ``None`` when the
metric does not apply, e.g. ``citations`` on an example without ``evidence``: such an example is
left out of that metric's mean rather than counted as 0), optional feedback text and optional
sub-scores.

:class:`BaseMetric` makes a metric a DSPy metric too: ``metric(example, prediction, trace=None)``
returns the float when ``trace`` is None (``dspy.Evaluate``) and, inside an optimizer's
bootstrapping (``trace`` given), whether the value reaches ``pass_threshold``, as DSPy expects.
``example`` and ``prediction`` may be ponder's (:class:`ponder.evaluate.dataset.Example`,
:class:`ponder.engine.answer.Answer`), DSPy's (``dspy.Example``, ``dspy.Prediction``) or dicts;
:func:`gold_answers`, :func:`answer_text` and friends read any of them.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ponder.errors import ConfigError


@attrs.frozen
class Score:
    """One metric's verdict on one prediction."""

    #: in [0, 1]; None = the metric does not apply to this example
    value: float | None
    feedback: str | None = None
    #: sub-scores, e.g. ``{"precision": 0.5, "recall": 1.0}``
    parts: dict[str, float] = attrs.field(factory=dict)
    #: LM usage the metric itself spent (``llm_judge``): calls, input_tokens, output_tokens,
    #: cost; counted apart from the system's
    usage: dict[str, float] | None = None

    def __attrs_post_init__(self) -> None:
        if self.value is not None and not (isinstance(self.value, int | float)
                                           and 0.0 <= float(self.value) <= 1.0
                                           and not math.isnan(float(self.value))):
            raise ValueError(f"a metric score must be in [0, 1] or None, got {self.value!r}")


class MetricError(Exception):
    """A metric could not score an example; ``usage`` is what it spent trying (an
    ``llm_judge`` call that failed past its retries, or whose grade did not parse, was still
    sent and priced), so the eval reports that spend with the failure instead of losing it.

    Any other exception a metric raises fails the example the same way, with no usage."""

    def __init__(self, message: str, *, usage: Mapping[str, float] | None = None) -> None:
        super().__init__(message)
        self.usage = dict(usage) if usage else None


def as_score(result: Any) -> Score:
    """A metric's return value as a :class:`Score` (a bare float or bool is accepted)."""
    if isinstance(result, Score):
        return result
    if result is None:
        return Score(None)
    if isinstance(result, bool | int | float):
        return Score(float(result))
    raise TypeError(f"a metric must return a Score or a float, got {type(result).__name__}")


# --- reading examples and predictions of any flavour ------------------------------------------
def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    value = getattr(obj, name, None)
    if value is not None:
        return value
    getter = getattr(obj, "get", None)
    if callable(getter):
        try:
            return getter(name, default)
        except Exception:
            return default
    return default


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [str(value)]
    return [str(v) for v in value]


def gold_answers(example: Any) -> list[str]:
    """The acceptable answers of ``example``."""
    return _strings(_field(example, "answer"))


def evidence_of(example: Any) -> list[str]:
    return _strings(_field(example, "evidence"))


def metadata_of(example: Any, key: str, default: Any = None) -> Any:
    """A metadata field (ponder's ``Example.metadata``, or a dspy.Example's own field)."""
    metadata = getattr(example, "metadata", None)
    if isinstance(metadata, Mapping):
        return metadata.get(key, default)
    return _field(example, key, default)


def answer_text(prediction: Any) -> str:
    if prediction is None:
        return ""
    if isinstance(prediction, str):
        return prediction
    value = _field(prediction, "answer")
    return "" if value is None else str(value)


def question_of(example: Any) -> str:
    return str(_field(example, "question", "") or "")


# --- normalisation (SQuAD's) -------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_PUNCTUATION = set(string.punctuation)


def normalize(text: str, *, spaced: bool = False) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, one space.

    ``spaced``: punctuation becomes a space instead of vanishing, so ``config.py:6`` keeps
    ``config py`` as words (what a substring test wants)."""
    text = unicodedata.normalize("NFKC", text).lower()
    gap = " " if spaced else ""
    text = "".join(gap if ch in _PUNCTUATION else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    return normalize(text).split()


# --- the base class ----------------------------------------------------------------------------
class BaseMetric:
    """Subclass and implement :meth:`score`; the instance is then a DSPy metric as well."""

    #: the registered name (set by subclasses; reported in results)
    name: str = "metric"
    #: values are only ever 0 or 1 (McNemar's test applies in comparisons)
    binary: bool = False
    #: with ``trace`` given (DSPy bootstrapping) the metric answers ``value >= pass_threshold``
    pass_threshold: float = 1.0

    def score(self, example: Any, prediction: Any) -> Score:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, example: Any, prediction: Any, trace: Any = None) -> float | bool:
        value = as_score(self.score(example, prediction)).value
        value = 0.0 if value is None else float(value)
        if trace is None:
            return value
        return value >= self.pass_threshold

    def __repr__(self) -> str:
        return f"<metric {self.name}>"


def as_dspy_metric(metric: Any, pass_threshold: float | None = None) -> Any:
    """``metric`` as a DSPy metric function ``(example, prediction, trace=None)``."""
    threshold = getattr(metric, "pass_threshold", 1.0) if pass_threshold is None \
        else pass_threshold

    def dspy_metric(example: Any, prediction: Any, trace: Any = None) -> float | bool:
        value = as_score(metric.score(example, prediction)).value
        value = 0.0 if value is None else float(value)
        return value if trace is None else value >= threshold

    dspy_metric.__name__ = str(getattr(metric, "name", "metric"))
    return dspy_metric


def build_metric(name: str, plugins: Any, settings: Mapping[str, Any] | None = None, *,
                 origins: Mapping[str, str] | None = None) -> Any:
    """The metric plugin ``name`` with ``settings`` validated against its settings class.

    An unknown name raises the registry's did-you-mean error (exit 2)."""
    from ponder.kernel.config import structure_settings
    from ponder.kernel.registry import UnknownNameError

    try:
        entry = plugins.get("metric", name)
    except UnknownNameError as exc:  # a misspelt --metric is bad input (exit 2)
        raise ConfigError(f"--metric {name}: {exc}") from None
    if entry.settings is None:
        if settings:
            raise ConfigError(f"eval.metric.{name}: metric {name!r} takes no settings, got "
                              f"{next(iter(settings))!r}")
        metric = entry.factory()
    else:
        metric = entry.factory(structure_settings(entry.settings, dict(settings or {}),
                                                  section=f"eval.metric.{name}",
                                                  origins=dict(origins or {})))
    if not callable(getattr(metric, "score", None)):
        raise ConfigError(f"metric {name!r} has no score(example, prediction) method")
    bind = getattr(metric, "bind", None)
    if callable(bind):  # a metric that needs the plugin set (llm_judge builds an adapter)
        bind(plugins)
    return metric


def build_metrics(names: Sequence[str], plugins: Any,
                  settings: Mapping[str, Mapping[str, Any]] | None = None, *,
                  origins: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Each named metric, in order; a name given twice is an error."""
    if not names:
        raise ConfigError("--metric: name at least one metric (e.g. --metric contains)")
    built: dict[str, Any] = {}
    for name in names:
        if name in built:
            raise ConfigError(f"--metric {name}: given twice")
        built[name] = build_metric(name, plugins, (settings or {}).get(name), origins=origins)
    return built


def mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None
