"""Discovery through real entry points: distributions installed on sys.path as dist-info."""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ponder.kernel.loader import PluginLoadError, load_plugins

GOOD = textwrap.dedent('''
    from ponder import hookimpl

    class Tool:
        def run(self, question, context, services):
            return "tool"

    @hookimpl
    def ponder_register_strategies(register):
        register("acme_strategy", Tool)
''')


def install_fake_dist(site: Path, dist: str, version: str, entry_points: dict[str, str],
                      modules: dict[str, str]) -> None:
    """Write what pip would: the modules plus a dist-info with METADATA and entry_points.txt."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[ponder]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    for name in [m for m in sys.modules if m.startswith("acme_")]:
        del sys.modules[name]


def test_third_party_plugin_is_discovered_with_provenance(site):
    install_fake_dist(site, "acme-tools", "1.2.0", {"acme": "acme_tools"}, {"acme_tools": GOOD})
    plugins = load_plugins(strict=False)
    info = plugins.plugin("acme")
    assert (info.distribution, info.version, info.status) == ("acme-tools", "1.2.0", "ok")
    assert info.builtin is False and info.provides == {"strategy": ["acme_strategy"]}
    assert plugins.strategies.entry("acme_strategy").provider.distribution == "acme-tools"
    assert plugins.strategies.frozen


def test_plugin_that_raises_on_import_is_skipped_with_dist_and_version(site, caplog):
    install_fake_dist(site, "acme-tools", "1.2.0", {"acme": "acme_tools"}, {"acme_tools": GOOD})
    install_fake_dist(site, "acme-broken", "0.3.1", {"broken": "acme_broken"},
                      {"acme_broken": "raise ImportError('needs libfoo')\n"})
    with caplog.at_level(logging.WARNING, logger="ponder.plugins"):
        plugins = load_plugins(strict=False)
    assert plugins.plugin("broken").status == "failed"
    assert plugins.plugin("acme").status == "ok"  # everything else keeps working
    warning = next(r.getMessage() for r in caplog.records if "broken" in r.getMessage())
    assert "plugin 'broken' (acme-broken 0.3.1) failed to load" in warning
    assert "ImportError: needs libfoo" in warning
    assert "PONDER_DISABLE_PLUGINS=broken" in warning

    with pytest.raises(PluginLoadError, match=r"acme-broken 0\.3\.1.*needs libfoo"):
        load_plugins(strict=True, disable=[p.name for p in plugins.plugins
                                           if p.name != "broken"])


def test_allow_and_block_lists_apply_before_import(site):
    # importing this module would raise: proof that a filtered plugin is never imported
    install_fake_dist(site, "acme-bomb", "1.0", {"bomb": "acme_bomb"},
                      {"acme_bomb": "raise SystemExit('imported!')\n"})
    install_fake_dist(site, "acme-tools", "1.2.0", {"acme": "acme_tools"}, {"acme_tools": GOOD})

    only_builtins = load_plugins(strict=False, allow=[])
    assert only_builtins.plugin("bomb").status == "disabled"
    assert only_builtins.plugin("acme").status == "disabled"
    assert all(p.status != "disabled" for p in only_builtins.plugins if p.builtin)

    by_dist_name = load_plugins(strict=False, allow=["acme-tools"])
    assert by_dist_name.plugin("acme").status == "ok"
    assert by_dist_name.plugin("bomb").status == "disabled"

    blocked = load_plugins(strict=False, disable=["bomb", "acme_tools"])
    assert blocked.plugin("bomb").status == "disabled"
    assert blocked.plugin("acme").status == "disabled"


def test_same_name_from_two_distributions(site):
    install_fake_dist(site, "acme-one", "1.0", {"one": "acme_one"}, {"acme_one": GOOD})
    install_fake_dist(site, "acme-two", "2.0", {"two": "acme_two"}, {"acme_two": GOOD})
    with pytest.raises(PluginLoadError, match=r"acme-one 1\.0.*acme-two 2\.0"):
        load_plugins(strict=True, allow=["acme-one", "acme-two"],
                     disable=[])
    plugins = load_plugins(strict=False)
    with pytest.raises(Exception, match=r"acme-one 1\.0.*acme-two 2\.0"):
        plugins.strategies.get("acme_strategy")


def test_cli_honours_env_lists_through_real_discovery(site):
    install_fake_dist(site, "acme-tools", "1.2.0", {"acme": "acme_tools"}, {"acme_tools": GOOD})
    env = {**os.environ, "PYTHONPATH": str(site), "PONDER_STRICT_PLUGINS": "0"}

    def plugins_json(**extra: str) -> dict[str, dict]:
        out = subprocess.run([sys.executable, "-m", "ponder", "plugins", "--json"],
                             env={**env, **extra}, capture_output=True, text=True, check=True)
        return {row["name"]: row for row in json.loads(out.stdout)}

    assert plugins_json()["acme"]["status"] == "ok"
    assert plugins_json(PONDER_DISABLE_PLUGINS="acme")["acme"]["status"] == "disabled"
    assert plugins_json(PONDER_LOAD_PLUGINS="")["acme"]["status"] == "disabled"
    assert plugins_json(PONDER_LOAD_PLUGINS="acme")["acme"]["status"] == "ok"
