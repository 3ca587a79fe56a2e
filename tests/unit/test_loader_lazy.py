"""Built-in plugins load on first use, and a run keeps no copies it does not need.

The loader declares the names of the built-ins listed in ``ponder.kernel.builtin_plugins``
instead of importing them; the first lookup imports the plugin. What a command imported is read
from a fresh interpreter (``sys.modules`` of this test process is shared with every other test),
outside strict mode (strict mode, which the suite runs in, imports every plugin at start-up).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

from ponder.context.chunking import Piece, split_context
from ponder.context.documents import Context, Document
from ponder.kernel import builtin_plugins, manifest
from ponder.kernel.loader import load_plugins
from ponder.kernel.registry import (
    DuplicateNameError,
    FrozenRegistryError,
    Provider,
    Registration,
    Registry,
    RegistryError,
)

CONFIG = """\
[cache]
enabled = false

[adapter]
name = "scripted"
default = "NOT FOUND"
rules = [{ pattern = "MAGIC_PORT = 48213", reply = "MAGIC_PORT is 48213 (tiny.py:2)" }]
"""

#: after the command: which plugin modules and heavy libraries it imported, dspy's trace/history
PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    from ponder.cli.main import main
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(sys.argv[1:])
    import dspy
    from dspy.clients.base_lm import GLOBAL_HISTORY
    print(json.dumps({
        "code": code, "stdout": out.getvalue(),
        "plugins": sorted(m for m in sys.modules if m.startswith("ponder.plugins.")
                          and not m.split(".")[-1].startswith("_")),
        "heavy": sorted({m.split(".")[0] for m in sys.modules}
                        & {"bm25s", "scipy", "numpy", "litellm", "rich", "optuna", "ray"}),
        "trace": len(dspy.settings.trace or []), "history": len(GLOBAL_HISTORY),
    }))
""")


def probe(args: list[str], cwd: str) -> dict:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "PONDER_CONFIG": os.path.join(cwd, "ponder.toml")}
    env.pop("PONDER_STRICT_PLUGINS", None)  # the suite runs strict, which imports every plugin
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    for name in ("config", "cache", "data"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(f"PONDER_{name.upper()}_DIR", str(tmp_path / name))
    (tmp_path / "ponder.toml").write_text(CONFIG)
    (tmp_path / "tiny.py").write_text('"""A tiny module."""\nMAGIC_PORT = 48213\n')
    return tmp_path


def test_the_list_of_built_ins_is_current():
    # stale: `python -m ponder.kernel.manifest --write` after adding or renaming a plugin
    assert manifest.main(["--check"]) == 0


def test_ask_imports_only_the_plugins_it_uses(workdir):
    seen = probe(["ask", "What is MAGIC_PORT?", "tiny.py", "--strategy", "map_reduce",
                  "--json"], str(workdir))
    assert seen["code"] == 0 and json.loads(seen["stdout"])["strategy"] == "map_reduce"
    imported = {name.rsplit(".", 1)[1] for name in seen["plugins"]}
    assert {"scripted", "map_reduce"} <= imported
    # what a map_reduce ask on the scripted adapter has no use for stays unimported
    never = {"rlm", "hierarchical", "iterative", "embeddings", "bm25", "react", "gemini",
             "local", "memory_store", "exporter_otlp", "executor_ray", "optimizer_tpe",
             "metric_llm_judge", "retrieve_then_read", "structured", "tools"}
    assert imported & never == set(), imported & never
    assert len(imported) <= 8, imported
    # nor the libraries behind them (bm25s pulls numpy and scipy: ~30 MB for nothing)
    assert seen["heavy"] == [], seen["heavy"]
    # dspy kept no trace or history of the calls (each holds every prompt for the process)
    assert seen["trace"] == 0 and seen["history"] == 0


def test_plugins_lists_every_plugin_loaded(workdir):
    seen = probe(["plugins", "--json"], str(workdir))
    rows = json.loads(seen["stdout"])
    builtins = [row for row in rows if row["builtin"]]
    assert len(builtins) >= len(builtin_plugins.PROVIDES)
    assert all(row["status"] == "ok" and row["provides"] for row in builtins), builtins
    assert len(seen["plugins"]) >= len(builtin_plugins.PROVIDES)


def test_declared_built_ins_load_on_first_lookup():
    plugins = load_plugins()
    assert "rlm" in plugins.deferred()
    assert "rlm" in plugins.strategies and "rlm" in plugins.strategies.names()
    assert not plugins.strategies.loaded("rlm")
    entry = plugins.get("strategy", "rlm")
    assert plugins.strategies.loaded("rlm") and "rlm" not in plugins.deferred()
    assert entry.provider.plugin == "rlm" and callable(entry.factory)
    assert plugins.plugin("rlm").status == "ok" and plugins.plugin("rlm").import_ms > 0
    # reports see every plugin loaded
    assert all(info.status != "failed" for info in plugins.plugins)
    assert plugins.deferred() == []


def test_a_plugin_set_with_declared_built_ins_pickles_for_a_worker():
    """An executor's worker (a Ray actor) gets the driver's plugins pickled: the copy has every
    built-in loaded and a lock of its own (cloudpickle, as Ray pickles; a dspy dependency)."""
    import cloudpickle

    plugins = load_plugins()
    assert plugins.deferred()
    copy = pickle.loads(cloudpickle.dumps(plugins))
    assert copy.deferred() == [] and plugins.deferred() == []
    assert copy.get("strategy", "map_reduce").name == "map_reduce"
    assert copy._lock is not plugins._lock


def test_a_declared_built_in_that_fails_to_import_says_so_on_first_use(monkeypatch):
    from ponder.kernel import loader

    info = loader.PluginInfo(name="broken", module="ponder.plugins.broken",
                             distribution="ponder", version="0", builtin=True)

    def boom():
        raise ImportError("No module named 'missing_dep'")

    monkeypatch.setattr(loader, "_entry_point_candidates",
                        lambda group: [loader._Candidate(info, boom)])
    monkeypatch.setitem(builtin_plugins.PROVIDES, "broken",
                        ("ponder.plugins.broken", {"strategy": ("broken",)}))
    plugins = load_plugins()
    assert plugins.deferred() == ["broken"] and "broken" in plugins.strategies
    with pytest.raises(RegistryError, match=r"plugin 'broken'.*failed to load.*missing_dep"):
        plugins.get("strategy", "broken")
    assert plugins.plugin("broken").status == "failed" and "broken" not in plugins.strategies
    # the registries stay frozen: declaring names deferred the import, not the freeze
    with pytest.raises(FrozenRegistryError):
        plugins.strategies.register("late", object)


def test_eager_and_strict_loading_import_every_plugin():
    assert load_plugins(lazy=False).deferred() == []
    assert load_plugins(strict=True).deferred() == []


# --- the registry's side ----------------------------------------------------------------------
def _registration(name: str, provider: Provider) -> Registration:
    return Registration("strategy", name, object, None, provider)


def test_a_declared_name_is_loaded_by_its_first_lookup_only():
    registry: Registry = Registry("strategy")
    provider = Provider("lazy")
    calls = []

    def load():
        calls.append(1)
        registry.settle(_registration("fast", provider))

    registry.declare("fast", provider, load)
    registry.freeze()
    assert "fast" in registry and registry.names() == ["fast"] and len(registry) == 1
    assert calls == []
    assert registry.get("fast") is object and registry.get("fast") is object
    assert calls == [1]
    with pytest.raises(FrozenRegistryError):
        registry.declare("late", provider, load)


def test_a_withdrawn_name_says_why():
    registry: Registry = Registry("strategy")
    provider = Provider("broken")
    registry.declare("gone", provider,
                     lambda: registry.withdraw("gone", provider, "plugin 'broken' failed"))
    registry.freeze()
    with pytest.raises(RegistryError, match="unavailable: plugin 'broken' failed"):
        registry.entry("gone")
    assert "gone" not in registry


def test_a_declared_name_claimed_twice_is_a_conflict():
    registry: Registry = Registry("strategy")
    registry.declare("same", Provider("one"), lambda: None)
    with pytest.raises(DuplicateNameError):
        registry.add(_registration("same", Provider("two")))
    registry.freeze()
    with pytest.raises(DuplicateNameError, match=r"'one'.*'two'"):
        registry.entry("same")


# --- chunks are views of the documents' text ---------------------------------------------------
def test_chunk_pieces_are_views_that_equal_and_pickle_as_copies():
    text = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(400))
    context = Context([Document("big.py", text), Document("small.py", "x = 1\n")])
    pieces = [p for chunk in split_context(context, chunk_tokens=512) for p in chunk.pieces]
    assert len(pieces) > 3
    lines = text[:-1].split("\n")  # the final newline ends the last line
    for piece in pieces:
        copy = Piece(piece.path, piece.start_line, piece.end_line, piece.text, piece.part)
        assert piece == copy and hash(piece) == hash(copy)
        restored = pickle.loads(pickle.dumps(piece))
        assert restored == piece and restored.render() == piece.render()
        if piece.path == "big.py":
            want = "\n".join(lines[piece.start_line - 1:piece.end_line])
            assert piece.text == want
            # a worker process gets the piece's lines, not the whole document
            assert len(pickle.dumps(piece)) < len(want) + 500
    assert [p.text for p in pieces if p.path == "small.py"] == ["x = 1"]
