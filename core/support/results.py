"""Typed per-item results so a batch can succeed partially instead of failing as a whole."""

from __future__ import annotations

from typing import Any

import attrs

CONFIDENCE_LEVELS: frozenset[str] = frozenset({"high", "medium", "low", "none"})


def _normalise_confidence(value: Any) -> str:
    # models answer "High" or " medium "; accept those, reject anything else in the validator
    return str(value).strip().lower()


def _check_confidence(_inst: Any, _attr: attrs.Attribute, value: str) -> None:
    if value not in CONFIDENCE_LEVELS:
        allowed = ", ".join(sorted(CONFIDENCE_LEVELS))
        raise ValueError(f"confidence must be one of {allowed}; got {value!r}")


@attrs.frozen
class ChunkResult:
    """What one chunk contributed to the answer."""

    index: int
    relevant_info: str
    confidence: str = attrs.field(
        default="medium", converter=_normalise_confidence, validator=_check_confidence
    )
    metadata: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class FailedChunk:
    """A chunk that could not be processed; ``error`` is a short, secret-free description."""

    error: str
    index: int
    kind: str = "error"
    attempts: int = 1

    @classmethod
    def from_exception(cls, index: int, exc: BaseException, *,
                       attempts: int | None = None) -> FailedChunk:
        """Describe ``exc`` (secrets redacted, in ponder's words) as the failure of chunk
        ``index``.

        ``attempts`` defaults to what the call that raised ``exc`` recorded on it
        (``exc.ponder_attempts``, set by ``Services.predict``: the first try plus its retries),
        so a chunk that made four requests says 4, not 1.
        """
        # cheap, but keep this module dependency-free at import time
        from ponder.support.retry import describe_error
        from ponder.support.secrets import redact

        if attempts is None:
            recorded = getattr(exc, "ponder_attempts", None)
            # 0: the call failed before sending anything (the provider was already known to be
            # unreachable, or the key missing)
            attempts = recorded if isinstance(recorded, int) and recorded >= 0 else 1
        message = describe_error(exc)
        kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        return cls(error=redact(message), index=index, kind=kind, attempts=attempts)


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_outcome(
    succeeded: int, failed: list[FailedChunk], *, skipped: int = 0, max_failures: int = 5
) -> str:
    """``answered from 47 of 50 chunks; 3 failed: chunk 5 (timeout), …`` (see BatchResult)."""
    text = f"answered from {succeeded} of {succeeded + len(failed)} chunks"
    if failed:
        ordered = sorted(failed, key=lambda f: f.index)
        shown = ", ".join(f"chunk {f.index} ({_short(f.error)})" for f in ordered[:max_failures])
        more = len(ordered) - max_failures
        text += f"; {len(ordered)} failed: {shown}"
        if more > 0:
            text += f" and {more} more"
    if skipped:
        text += f"; {skipped} skipped"
    return text


@attrs.define
class BatchResult:
    """The outcome of a batch: successes, failures and items skipped before being attempted.

    ``total`` counts attempted items (results + failed); skipped items are reported apart.
    """

    results: list[ChunkResult] = attrs.field(factory=list)
    failed: list[FailedChunk] = attrs.field(factory=list)
    skipped: int = 0

    @property
    def succeeded(self) -> int:
        return len(self.results)

    @property
    def total(self) -> int:
        return len(self.results) + len(self.failed)

    @property
    def success_rate(self) -> float:
        """Succeeded / attempted, in 0..1; 0.0 when nothing was attempted (nothing succeeded)."""
        return self.succeeded / self.total if self.total else 0.0

    @property
    def is_partial(self) -> bool:
        """Some items succeeded and some failed: the answer is usable but incomplete."""
        return bool(self.results) and bool(self.failed)

    def summary(self, max_failures: int = 5) -> str:
        """One line for users: ``answered from 47 of 50 chunks; 3 failed: chunk 5 (timeout), …``.

        At most ``max_failures`` failures are named, then "and N more".
        """
        return describe_outcome(
            self.succeeded, self.failed, skipped=self.skipped, max_failures=max_failures
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready when metadata is), with the derived counts included."""
        return {
            "results": [attrs.asdict(r) for r in self.results],
            "failed": [attrs.asdict(f) for f in self.failed],
            "skipped": self.skipped,
            "total": self.total,
            "succeeded": self.succeeded,
            "success_rate": self.success_rate,
        }
