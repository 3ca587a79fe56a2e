"""The live layer: a tiny ``ponder ask`` against each real provider whose key is set.

Opt in with ``.venv/bin/pytest -m live`` (the project's ``addopts`` deselect ``live`` otherwise).
A provider without a key is *skipped* with the reason ``live layer did not run: … is not set``,
never passed, and ``tests/live/conftest.py`` ends the session with one line saying which
providers ran and which did not. Each run is capped at a few cents (``--max-cost``) and a time
limit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ponder.testing import run_cli

pytestmark = pytest.mark.live

CORPUS = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tiny-service"
QUESTION = "What port does the service listen on? Answer with the number."

#: provider label -> (key variables, any one of which enables it; the [adapter] section)
PROVIDERS: dict[str, tuple[tuple[str, ...], str]] = {
    "gemini": (("GEMINI_API_KEY", "GOOGLE_API_KEY"), '[adapter]\nname = "gemini"\n'),
    "openai": (("OPENAI_API_KEY",),
               '[adapter]\nname = "litellm"\nmodel = "openai/gpt-4o-mini"\n'
               'api_key = "$env:OPENAI_API_KEY"\n'),
}


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_a_tiny_ask_finds_the_port(provider, tmp_path, record_property):
    variables, adapter = PROVIDERS[provider]
    record_property("live_provider", provider)  # for the session summary (conftest.py)
    if not any(os.environ.get(name, "").strip() for name in variables):
        pytest.skip(f"live layer did not run: {' or '.join(variables)} is not set")
    config = tmp_path / "ponder.toml"
    config.write_text(adapter + "[limits]\nmax_cost = 0.05\ntimeout = 120\n", encoding="utf-8")
    result = run_cli(["--config", str(config), "ask", QUESTION, str(CORPUS), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert "48213" in data["answer"], data["answer"]
    assert data["usage"]["calls"] >= 1 and data["usage"]["input_tokens"] > 0
    assert data["failures"] == [] and data["stopped_by"] is None
