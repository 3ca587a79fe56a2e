"""Token estimates: how many tokens a text (or a count of characters) is, without a tokenizer.

Its own module because sources (a Context's size) and chunking (a chunk's size) both need it and
neither should import the other for it.
"""

from __future__ import annotations

__all__ = ["CHARS_PER_TOKEN", "estimate_tokens", "tokens_for_chars"]

CHARS_PER_TOKEN = 4
"""Characters per token for estimates. Measured on real code it is ~4.5, so 4 over-counts a
little: the safe side when the estimate decides whether text fits a window."""


def estimate_tokens(text: str) -> int:
    """Estimated tokens in ``text``: ``ceil(len(text) / 4)``.

    An estimate, not a count: no tokenizer is loaded, so this stays fast and works offline for every
    provider. Real code runs ~4.5 characters per token, so this over-counts slightly, which is the
    safe side for window limits.
    """
    return -(-len(text) // CHARS_PER_TOKEN)


def tokens_for_chars(chars: int) -> int:
    """``estimate_tokens`` for a text of ``chars`` characters, without the text."""
    return -(-chars // CHARS_PER_TOKEN)
