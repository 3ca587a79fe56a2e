"""Shared pieces of the benchmarks: machine/version facts, statistics, tables, JSON, and the
loopback fake provider run as a separate process.

Every benchmark module imports this first: it sets ``LITELLM_LOCAL_MODEL_COST_MAP`` (offline)
before anything can import litellm.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before any litellm import
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PACKAGES = ("ponder", "dspy", "litellm", "pydantic-monty", "attrs", "click", "pluggy")


# --- facts ----------------------------------------------------------------------------------------
def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (how busy the shared machine was)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count()}


def versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# --- statistics -----------------------------------------------------------------------------------
def summary(values: Sequence[float]) -> dict[str, float | int]:
    """Median, min and max (and n) of repeated measurements."""
    values = list(values)
    if not values:
        return {"n": 0, "median": math.nan, "min": math.nan, "max": math.nan}
    return {"n": len(values), "median": statistics.median(values), "min": min(values),
            "max": max(values)}


def fmt_range(s: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    """``median (min–max)`` of a :func:`summary`, scaled."""
    if not s.get("n"):
        return "-"
    if s["n"] == 1:
        return f"{s['median'] * scale:.{digits}f}"
    return (f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}–"
            f"{s['max'] * scale:.{digits}f})")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- output ---------------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "") -> str:
    """A plain aligned text table (first column left-aligned, the others right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    out = [title] if title else []
    out += [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)


def write_result(name: str, parameters: dict[str, Any], results: Any, *,
                 out_dir: Path | None = None, load_at_start: list[float] | None = None,
                 **extra: Any) -> Path:
    """bench/results/<name>.json with the machine, versions, parameters and figures."""
    host = {**machine(), "load_average_at_start": load_at_start,
            "load_average_at_end": load_average()}
    data = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": host, "versions": versions(), "parameters": parameters,
            "results": results, **extra}
    path = (out_dir or RESULTS_DIR) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


# --- isolation ------------------------------------------------------------------------------------
@contextlib.contextmanager
def isolated_ponder_dirs() -> Iterator[Path]:
    """Point ponder's config/cache/data dirs at a temporary directory (no developer config, no
    writes to the real run store or cache); subprocesses inherit it through the environment."""
    saved = {k: os.environ.get(k) for k in ("PONDER_CONFIG_DIR", "PONDER_CACHE_DIR",
                                             "PONDER_DATA_DIR", "PONDER_CONFIG")}
    with tempfile.TemporaryDirectory(prefix="ponder-bench-home-") as root:
        for name in ("config", "cache", "data"):
            Path(root, name).mkdir()
            os.environ[f"PONDER_{name.upper()}_DIR"] = str(Path(root, name))
        os.environ.pop("PONDER_CONFIG", None)
        try:
            yield Path(root)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


# --- the fake provider in its own process ---------------------------------------------------------
def _flag_args(options: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, list | tuple):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


class ProviderProcess:
    """``python -m ponder.testing.fake_provider`` in a subprocess (so its CPU is not this
    process's), bound to 127.0.0.1 on a free port; it exits by itself after ``max_lifetime``.

    ``ProviderProcess(mode="oracle", needle=["k=v"], latency=0.2)``: keyword names are the CLI
    flags with ``_`` for ``-``; a list repeats the flag.
    """

    def __init__(self, *, max_lifetime: float = 900.0, **options: Any) -> None:
        self.options = {"max_lifetime": max_lifetime, **options}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> ProviderProcess:
        cmd = [sys.executable, "-m", "ponder.testing.fake_provider", "--port", "0",
               *_flag_args(self.options)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # the URL, once it listens
        if not line.startswith("http://127.0.0.1:"):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.kill()
            raise RuntimeError(f"the fake provider did not start: {line!r} {err[-2000:]}")
        self.url = line
        return self

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def _call(self, method: str, path: str) -> dict[str, Any]:
        req = urllib.request.Request(self.url + path, method=method,
                                     data=b"{}" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def reset(self) -> None:
        self._call("POST", "/reset")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None


def openai_adapter(base_url: str, *, window: int = 131_072, max_output: int = 1024,
                   timeout_s: float = 120.0) -> Any:
    """ponder's ``openai_compatible`` adapter pointed at a fake provider."""
    from ponder.kernel.config import structure_settings
    from ponder.plugins.openai_compatible import OpenAICompatibleAdapter, OpenAICompatibleSettings

    settings = structure_settings(OpenAICompatibleSettings, {
        "base_url": base_url, "model": "fake-model", "context_window": window,
        "max_output_tokens": max_output, "timeout_s": timeout_s}, section="adapter")
    return OpenAICompatibleAdapter(settings)


def quiet_logs() -> None:
    """Keep litellm's and dspy's chatter (and ponder's expected warnings) off the tables."""
    import logging

    import dspy  # noqa: F401 - dspy sets its loggers' levels on import: quiet them after

    for name in ("LiteLLM", "litellm", "dspy", "httpx", "ponder"):
        logging.getLogger(name).setLevel(logging.ERROR)
