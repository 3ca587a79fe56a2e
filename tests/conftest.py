"""Test-wide setup: offline, strict plugins, and a fresh user directory for every test."""

from __future__ import annotations

import logging
import os

import pytest

# Before anything imports litellm: use its bundled cost map instead of fetching one.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_ponder(tmp_path_factory, monkeypatch):
    """No developer config, cache or PONDER_* variable leaks into a test; strict plugins."""
    from ponder.testing import isolated_user_dir

    root = tmp_path_factory.mktemp("ponder-home")
    with isolated_user_dir(root, chdir=False):
        os.environ["PONDER_STRICT_PLUGINS"] = "1"  # the suite runs strict, as the issue asks
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        yield root


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged():
    """Records logged on ``ponder.predictor``, by a handler on that logger itself (the CLI turns
    off propagation below ``ponder``, so a root handler may never see them)."""
    logger = logging.getLogger("ponder.predictor")
    handler, level = _ListHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
