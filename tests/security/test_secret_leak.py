"""A planted API key never leaves the process: not on stdout, not on stderr, not in any file.

Real ``ponder ask`` processes (``python -m ponder``, so logging and tracebacks are the real ones)
talk over loopback HTTP to a :class:`FakeProvider`, with the key planted in the environment
(``PLANTED_KEY``, referenced from ponder.toml as ``$env:PLANTED_KEY``) or written literally in
ponder.toml. The runs cover the success path, a 401 whose body echoes the ``Authorization`` header
(as some real providers do), 5xx until the retries are exhausted, ``--json``, ``-v``/``-vv``, a
crash: a local ``--plugin`` strategy raising ``RuntimeError`` with the key in its message, and a
``--plugin`` that fails to load with both keys in its error, shown by ``ponder plugins`` (the
table's footer), ``ponder plugins --json`` (``error``) and ``ponder config check``.

Then stdout, stderr and every file under the run's data, cache, config, home and working
directories (SQLite databases read both as bytes and cell by cell, WAL included) are searched for
the key in many spellings: raw, UTF-16, hex, base64 at every alignment, JSON ``\\u`` escapes, and
its random tail alone (a partly masked or split key).

The literal key has no well-known key shape, so only ponder's registry of configured secrets can
hide it; the environment key looks like an OpenAI key (``sk-…``).
"""

from __future__ import annotations

import base64
import concurrent.futures as futures
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ponder.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.slow

ENV_KEY = "sk-ponder-PLANTED-7f3a9c2e1b"
LITERAL_KEY = "pndr-literal-PLANTED-e4b19d07c6"  # no known key shape: the registry must hide it
RIGHT_KEY = "sk-the-right-key-0123456789abcdef"  # what the 401 provider accepts
CORPUS = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tiny-service"

BOOM_PLUGIN = '''\
"""A strategy that crashes with the key in its message (an unexpected exception)."""
import os

from ponder import hookimpl


class Boom:
    name = "boom"

    def run(self, question, context, services):
        raise RuntimeError("strategy exploded; the key is " + os.environ["PLANTED_KEY"])


@hookimpl
def ponder_register_strategies(register):
    register("boom", Boom)
'''


BROKEN_PLUGIN = f'''\
"""A plugin whose import fails with both keys in its message (a licence check gone wrong)."""
import os

raise RuntimeError("licence check failed for " + os.environ["PLANTED_KEY"]
                   + " and {LITERAL_KEY}")
'''


@dataclass(frozen=True)
class Scenario:
    name: str
    key: str  # "env": api_key = "$env:PLANTED_KEY"; "literal": the literal key in ponder.toml
    strategy: str = "map_reduce"
    provider: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()  # before the subcommand: -v, -vv
    args: tuple[str, ...] = ()  # after it: --json
    command: tuple[str, ...] = ()  # another subcommand than `ask` (then args are ignored)
    plugin: str = "boom"  # "broken": a --plugin whose import fails with the keys in its error
    strict: bool = True  # PONDER_STRICT_PLUGINS; off, a broken plugin is listed, not fatal
    telemetry: bool = False  # [telemetry] jsonl export, content on, into the searched data dir


SCENARIOS = (
    Scenario("success-json-vv", "env", flags=("-vv",), args=("--json",)),
    Scenario("success-literal-v", "literal", flags=("-v",)),
    Scenario("auth-401-literal-vv", "literal", strategy="direct",
             provider={"api_key": RIGHT_KEY}, flags=("-vv",)),
    Scenario("server-5xx-exhausted-vv", "env", flags=("-vv",), args=("--json",),
             provider={"fail_first_n": 10_000, "fail_first_kind": "server_error"}),
    Scenario("crash-traceback-vv", "env", strategy="boom", flags=("-vv",)),
    # the telemetry exporter: a run that succeeds and one that crashes with the key in its error
    Scenario("telemetry-jsonl-literal", "literal", telemetry=True),
    Scenario("telemetry-jsonl-crash", "env", strategy="boom", telemetry=True),
    # a plugin failing to load with a key in its error: the table's footer, --json's `error`
    # and `config check`'s warning show the error text (issue 15)
    Scenario("broken-plugin-table", "literal", command=("plugins",), plugin="broken",
             strict=False),
    Scenario("broken-plugin-json-v", "literal", flags=("-v",), command=("plugins", "--json"),
             plugin="broken", strict=False),
    Scenario("broken-plugin-config-check", "literal", command=("config", "check"),
             plugin="broken", strict=False),
)


@dataclass
class Run:
    scenario: Scenario
    returncode: int
    stdout: str
    stderr: str
    dirs: dict[str, Path]
    provider_stats: dict[str, Any]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


# --- running ---------------------------------------------------------------------------------
def _environment(root: Path) -> tuple[dict[str, str], dict[str, Path]]:
    dirs = {name: root / name for name in ("data", "cache", "config", "home", "work")}
    for path in dirs.values():
        path.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PONDER_") and k not in ("PLANTED_KEY", "OPENAI_API_KEY")}
    env.update(
        PLANTED_KEY=ENV_KEY,
        PONDER_DATA_DIR=str(dirs["data"]),
        PONDER_CACHE_DIR=str(dirs["cache"]),
        PONDER_CONFIG_DIR=str(dirs["config"]),
        PONDER_STRICT_PLUGINS="1",
        HOME=str(dirs["home"]),  # anything a library writes under ~ is searched too
        XDG_CACHE_HOME=str(dirs["home"] / ".cache"),
        XDG_DATA_HOME=str(dirs["home"] / ".local" / "share"),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        PYTHONUNBUFFERED="1",
    )
    return env, dirs


def run_scenario(scenario: Scenario, root: Path) -> Run:
    env, dirs = _environment(root)
    env["PONDER_STRICT_PLUGINS"] = "1" if scenario.strict else "0"
    # the project config and the plugin live outside every searched directory
    project = root / "project"
    project.mkdir()
    plugin = project / f"{scenario.plugin}_plugin.py"
    plugin.write_text(BROKEN_PLUGIN if scenario.plugin == "broken" else BOOM_PLUGIN,
                      encoding="utf-8")
    key = '"$env:PLANTED_KEY"' if scenario.key == "env" else f'"{LITERAL_KEY}"'
    options = {"mode": "oracle", "needles": {"PORT": "48213"}, "retry_after": 0.1,
               "max_lifetime": 180, **scenario.provider}
    with FakeProvider(**options) as provider:
        config = project / "ponder.toml"
        config.write_text(
            f'[strategy]\nname = "{scenario.strategy}"\n[limits]\nmax_retries = 1\n'
            f'[adapter]\nname = "openai_compatible"\nbase_url = "{provider.base_url}"\n'
            f'model = "fake-model"\napi_key = {key}\n'
            + ('[telemetry]\nexporter = "jsonl"\ncapture_content = true\n'
               if scenario.telemetry else ""), encoding="utf-8")
        subcommand = list(scenario.command) or [
            "ask", "What port does the service listen on?", str(CORPUS), *scenario.args]
        command = [sys.executable, "-m", "ponder", *scenario.flags, "--plugin", str(plugin),
                   "--config", str(config), *subcommand]
        proc = subprocess.run(command, env=env, cwd=dirs["work"], capture_output=True,
                              text=True, timeout=240)
        stats = provider.stats()
    return Run(scenario, proc.returncode, proc.stdout, proc.stderr, dirs, stats)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    base = tmp_path_factory.mktemp("secret-leak")
    with futures.ThreadPoolExecutor(max_workers=3) as pool:
        jobs = {s.name: pool.submit(run_scenario, s, base / s.name) for s in SCENARIOS}
        return {name: job.result() for name, job in jobs.items()}


# --- searching -------------------------------------------------------------------------------
def leak_forms(secret: str) -> dict[str, bytes]:
    """Spellings of ``secret`` that would betray it, as bytes to look for."""
    raw = secret.encode()
    tail = secret.rsplit("-", 1)[1]  # the random part: a partly masked or split key
    forms = {
        "raw": raw,
        "tail": tail.encode(),
        "utf-16": secret.encode("utf-16-le"),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
        "json \\u-escaped": "".join(f"\\u{ord(c):04x}" for c in secret).encode(),
        "json hyphens escaped": secret.replace("-", "\\u002d").encode(),
        "reversed": secret[::-1].encode(),
    }
    for shift in range(3):  # base64 of a longer blob holding the key at any alignment
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            blob = encode(b"\0" * shift + raw)
            forms[f"{name}@{shift}"] = blob[4:-4] if shift else blob[:-4]
    return forms


FORMS = {name: form for secret in (ENV_KEY, LITERAL_KEY)
         for name, form in ((f"{secret[:8]}… {k}", v) for k, v in leak_forms(secret).items())}


def find_leaks(data: bytes) -> list[str]:
    return [name for name, form in FORMS.items() if form in data]


def _decoded_variants(data: bytes) -> list[bytes]:
    """``data`` plus what it may hold in a decoded form: zlib/gzip bodies, JSON text."""
    variants = [data]
    for wbits in (zlib.MAX_WBITS, zlib.MAX_WBITS | 16):
        with contextlib.suppress(zlib.error):
            variants.append(zlib.decompress(data, wbits))
    for blob in list(variants):
        try:
            decoded = json.loads(blob)
        except (ValueError, UnicodeDecodeError):
            continue
        variants.append(json.dumps(decoded, ensure_ascii=False).encode())
    return variants


def sqlite_cells(path: Path, scratch: Path) -> list[bytes]:
    """Every cell of every table of a SQLite database (its -wal/-shm replayed on a copy)."""
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / path.name
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            shutil.copyfile(source, copy.with_name(copy.name + suffix))
    cells: list[bytes] = []
    connection = sqlite3.connect(copy)
    try:
        tables = [row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, str):
                        cells.append(value.encode("utf-8", "surrogatepass"))
                    elif isinstance(value, bytes | bytearray | memoryview):
                        cells.append(bytes(value))
    finally:
        connection.close()
    return cells


def is_sqlite(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def files_under(run: Run) -> list[Path]:
    return sorted(p for d in run.dirs.values() for p in d.rglob("*") if p.is_file())


def leaks_in_files(run: Run, scratch: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in files_under(run):
        hits = set(find_leaks(path.read_bytes()))
        if is_sqlite(path):
            for cell in sqlite_cells(path, scratch / path.relative_to(path.anchor).parent):
                for variant in _decoded_variants(cell):
                    hits.update(find_leaks(variant))
        if hits:
            found[str(path)] = sorted(hits)
    return found


# --- the tests -------------------------------------------------------------------------------
def test_the_search_finds_what_it_looks_for(tmp_path):
    """The detector itself: every spelling is caught, in a file and in a SQLite cell."""
    for secret in (ENV_KEY, LITERAL_KEY):
        assert find_leaks(f"x {secret} y".encode())
        escaped = "".join(f"\\u{ord(c):04x}" for c in secret)
        assert json.loads(f'"{escaped}"') == secret
        assert find_leaks(f'{{"k": "{escaped}"}}'.encode())
        for shift in range(3):
            blob = base64.b64encode(b"pad"[:shift] + f"Bearer {secret}!".encode())
            assert find_leaks(blob), (secret, shift)
        assert find_leaks(secret[-10:].encode())  # a tail left by a mask showing too much
    db = tmp_path / "store.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE t (v BLOB)")
        connection.execute("INSERT INTO t VALUES (?)", (zlib.compress(ENV_KEY.encode()),))
    assert not find_leaks(db.read_bytes())  # compressed: invisible to a plain byte search…
    cells = sqlite_cells(db, tmp_path / "scratch")
    assert any(find_leaks(v) for c in cells for v in _decoded_variants(c))  # …but not here
    assert not find_leaks(b"sk-ponder-******** PLANTED ********")


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_no_key_on_stdout_or_stderr(runs, name):
    run = runs[name]
    leaks = find_leaks(run.output.encode())
    if run.stdout.strip().startswith("{"):
        leaks += find_leaks(json.dumps(json.loads(run.stdout), ensure_ascii=False).encode())
    assert not leaks, f"{name}: {sorted(set(leaks))}\n{run.output[-3000:]}"


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_no_key_in_any_file_ponder_wrote(runs, name, tmp_path):
    run = runs[name]
    leaks = leaks_in_files(run, tmp_path / "scratch")
    assert not leaks, f"{name}: {leaks}"


def test_the_scenarios_took_the_paths_they_claim(runs):
    """Each run really was what its name says (else a clean search proves nothing)."""
    ok = runs["success-json-vv"]
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "48213" in json.loads(ok.stdout)["answer"]
    assert ok.provider_stats["completed"] >= 1 and ok.provider_stats["failures"]["auth"] == 0

    plain = runs["success-literal-v"]
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "48213" in plain.stdout and "ponder: info:" in plain.stderr

    # the provider refused the key and echoed it back; ponder said so without repeating it
    auth = runs["auth-401-literal-vv"]
    assert auth.returncode != 0, auth.output[-2000:]
    assert auth.provider_stats["failures"]["auth"] >= 1
    assert auth.provider_stats["completed"] == 0
    assert "401" in auth.stderr

    # 5xx on every request: retried once, then listed as failed (map_reduce reads this small
    # project in one answer call, single_read); nothing was read, so the run
    # failed (rc 1, status failed) rather than being "partial" (issue 15)
    server = runs["server-5xx-exhausted-vv"]
    data = json.loads(server.stdout)
    assert server.returncode == 1 and data["status"] == "failed"
    assert data["chunks"]["read"] == 0 and data["failures"]
    assert data["usage"]["retries"] >= 1 and "retrying answer call" in server.stderr
    assert server.provider_stats["failures"]["server_error"] >= 2

    # the crash is reported, the key in its message masked, the traceback shown under -vv
    crash = runs["crash-traceback-vv"]
    assert crash.returncode == 1
    assert "ponder: internal error: RuntimeError: strategy exploded; the key is ********" \
        in crash.stderr
    assert "Traceback (most recent call last)" in crash.stderr
    assert "boom_plugin.py" in crash.stderr

    # the broken plugin was listed as failed, its error shown with both keys masked
    masked = "import raised RuntimeError: licence check failed for ******** and ********"
    table = runs["broken-plugin-table"]
    assert table.returncode == 0, table.output[-2000:]
    assert f"broken_plugin.py: {masked}" in table.stdout  # the footer under the table
    listed = runs["broken-plugin-json-v"]
    assert listed.returncode == 0, listed.output[-2000:]
    (row,) = [r for r in json.loads(listed.stdout) if r["status"] == "failed"]
    assert row["error"] == masked and "failed to load and was skipped" in listed.stderr
    check = runs["broken-plugin-config-check"]
    assert check.returncode == 0 and "config OK" in check.stdout, check.output[-2000:]
    assert f"failed to load: {masked}" in check.stderr


def test_a_successful_run_writes_to_the_data_dir(runs):
    """The run store lives in the data dir, so the file search above covered it."""
    run = runs["success-json-vv"]
    written = [p for p in run.dirs["data"].rglob("*") if p.is_file()]
    assert written, "nothing under PONDER_DATA_DIR after a successful run"
    assert any(is_sqlite(p) for p in written)


def test_the_telemetry_export_was_written_and_holds_no_key(runs):
    """The exporter really ran (so the file search above covered its output), errors included."""
    for name in ("telemetry-jsonl-literal", "telemetry-jsonl-crash"):
        run = runs[name]
        path = run.dirs["data"] / "telemetry" / "spans.jsonl"
        spans = [json.loads(line) for line in path.read_text().splitlines()]
        assert spans and spans[0]["name"] == "invoke_agent ponder", run.output[-2000:]
        assert not find_leaks(path.read_bytes())
    crashed = [json.loads(line) for line in (runs["telemetry-jsonl-crash"].dirs["data"]
               / "telemetry" / "spans.jsonl").read_text().splitlines()]
    errors = [s for s in crashed if s["status"]["code"] == "ERROR"]
    assert errors and errors[0]["attributes"]["error.type"] == "RuntimeError"
    assert "********" in errors[0]["status"]["description"]
