"""Errors ponder reports to users: the message is shown without a traceback.

Exit codes: 1 when a run could not be completed, 2 for bad input (usage, config, sources).
"""

from __future__ import annotations


class PonderError(Exception):
    """Base for every error ponder reports to users; its message is shown without a traceback."""

    exit_code: int = 1


class ConfigError(PonderError):
    """A configuration value is missing or invalid; the message names where it came from."""

    exit_code = 2
