"""Live layer bookkeeping: at the end of a session that ran live tests, one line saying which
providers ran and which did not (and why), so a green run without keys cannot pass for a
tested one."""

from __future__ import annotations

import pytest

_SKIP_PREFIX = "live layer did not run: "

#: provider -> "passed", "FAILED (call)" or the reason it did not run; filled as tests report
_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    provider = dict(report.user_properties).get("live_provider")
    if provider is None:
        return
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ").removeprefix(_SKIP_PREFIX)
        _outcomes[provider] = f"did not run: {reason}"
    elif report.failed:
        _outcomes[provider] = f"FAILED ({report.when})"
    elif report.when == "call":
        _outcomes.setdefault(provider, "passed")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _outcomes:
        return  # no live test ran (the default: `-m 'not live'` deselects them)
    ran = [f"{p} ({o})" for p, o in sorted(_outcomes.items()) if not o.startswith("did not run")]
    missed = [f"{p} ({o.removeprefix('did not run: ')})" for p, o in sorted(_outcomes.items())
              if o.startswith("did not run")]
    failed = any(o.startswith("FAILED") for o in _outcomes.values())
    terminalreporter.write_line(
        f"live layer: ran: {', '.join(ran) or 'none'}; did not run: {', '.join(missed) or 'none'}",
        red=failed, yellow=bool(missed) and not failed, green=not (missed or failed))
