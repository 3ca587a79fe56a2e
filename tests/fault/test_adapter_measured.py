"""``ponder runs stats`` and ``[adapter] order = "measured"`` over recorded LM calls.

Two loopback providers: the configured primary fails every request (HTTP 500), the fallback
answers. After a few asks the store holds the primary's failures and the fallback's successes;
``runs stats`` shows them per adapter, and with ``order = "measured"`` the next ask goes to the
reliable adapter first, so the failing one gets no request at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ponder.support.measured import adapter_stats, measured_order
from ponder.testing import isolated_user_dir, run_cli
from ponder.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.fault


def _config(work: Path, primary: FakeProvider, backup: FakeProvider, order: str) -> Path:
    path = work / f"{order}.toml"
    path.write_text(f"""
strategy = "direct"
[limits]
max_retries = 0
[cache]
enabled = false
[storage]
name = "sqlite"
path = "{work / 'runs.sqlite'}"
[adapter]
name = "openai_compatible"
base_url = "{primary.base_url}"
model = "fake-model"
fallbacks = ["litellm"]
order = "{order}"
[adapters.litellm]
model = "openai/fake-model"
api_base = "{backup.base_url}"
api_key = "sk-fake"
context_window = 8192
""")
    return path


def test_stats_and_measured_order(tmp_path: Path) -> None:
    with isolated_user_dir(tmp_path) as root, \
            FakeProvider(fault_rate=1.0, fault_kinds=("server_error",)) as primary, \
            FakeProvider(default_reply="Paris") as backup:
        work = root / "work"
        notes = work / "notes.txt"
        notes.write_text("The capital of France is Paris.\n")
        configured = _config(work, primary, backup, "configured")
        for _ in range(6):
            result = run_cli(["--config", str(configured), "ask", "Capital?", str(notes), "-q"])
            assert result.exit_code == 0, result.output
        assert primary.stats()["requests"] >= 6

        stats = run_cli(["--config", str(configured), "runs", "stats", "--json"])
        assert stats.exit_code == 0, stats.output
        rows = {row["adapter"]: row for row in json.loads(stats.stdout)["adapters"]}
        assert rows["openai_compatible"]["success_rate"] == 0.0
        assert rows["litellm"]["success_rate"] == 1.0 and rows["litellm"]["calls"] >= 6
        assert rows["litellm"]["latency_p50"] is not None
        assert json.loads(stats.stdout)["measured_order"] == ["litellm", "openai_compatible"]
        table = run_cli(["--config", str(configured), "runs", "stats"])
        assert "measured order: litellm -> openai_compatible" in table.stdout

        primary.reset()
        measured = _config(work, primary, backup, "measured")
        result = run_cli(["--config", str(measured), "ask", "Capital?", str(notes), "--json"])
        assert result.exit_code == 0, result.output
        assert "Paris" in json.loads(result.stdout)["answer"]
        assert primary.stats()["requests"] == 0  # the failing adapter is no longer tried first

        bad = work / "bad.toml"
        bad.write_text(measured.read_text().replace('order = "measured"', 'order = "fastest"'))
        result = run_cli(["--config", str(bad), "ask", "Capital?", str(notes)])
        assert result.exit_code == 2
        assert "adapter.order: expected \"configured\" or \"measured\", got 'fastest'" \
            in result.stderr
        since = run_cli(["--config", str(configured), "runs", "stats", "--since", "soon"])
        assert since.exit_code == 2 and "--since" in since.output


def test_measured_order_rule() -> None:
    def calls(adapter: str, n: int, errors: int, latency: float) -> list[dict]:
        return [{"adapter": adapter, "model": "m", "latency_s": latency,
                 "error": "boom" if i < errors else None, "input_tokens": 10,
                 "output_tokens": 5, "cost_usd": 0.001} for i in range(n)]

    stats = adapter_stats(calls("a", 20, 0, 2.0) + calls("b", 20, 0, 0.5)
                          + calls("c", 20, 5, 0.1) + calls("d", 2, 0, 0.01)
                          + [{"adapter": "b", "model": "m", "cached": True, "latency_s": 9}])
    # same reliability: the faster first; 75% success loses to any latency; d is unmeasured
    assert measured_order(["c", "a", "b", "d"], stats) == ["b", "a", "d", "c"]
    row = next(r for r in stats if r["adapter"] == "c")
    assert row["success_rate"] == 0.75 and row["calls"] == 20
    assert row["cost_per_1k_tokens"] == pytest.approx(0.02 / 300 * 1000)
    assert measured_order(["x", "y"], []) == ["x", "y"]
