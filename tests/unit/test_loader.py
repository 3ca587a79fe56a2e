"""The loader with in-process plugins: isolation, strictness, API versions, allow/deny."""

import logging
import sys
import textwrap
import types

import attrs
import pytest

from ponder import hookimpl
from ponder.kernel.loader import PluginLoadError, load_plugins
from ponder.kernel.registry import FrozenRegistryError
from ponder.testing import plugin_set


@attrs.define
class EchoSettings:
    prefix: str = ">"


class EchoStrategy:
    def __init__(self, settings):
        self.settings = settings

    def run(self, question, context, services):
        return f"{self.settings.prefix} {question}"


class GoodPlugin:
    __name__ = "good"

    @hookimpl
    def ponder_register_strategies(self, register):
        register("echo", EchoStrategy, settings=EchoSettings)

    @hookimpl
    def ponder_register_adapters(self, register):
        register("fake_adapter", object)


class RaisingHookPlugin:
    __name__ = "raising"

    @hookimpl
    def ponder_register_strategies(self, register):
        register("half", EchoStrategy)  # staged, then discarded: all or nothing
        raise RuntimeError("boom in hook")


def test_plugin_set_holds_only_given_plugins_and_freezes():
    plugins = plugin_set(GoodPlugin())
    assert plugins.strategies.names() == ["echo"]
    assert plugins.adapters.names() == ["fake_adapter"]
    assert plugins.plugin("good").provides == {"strategy": ["echo"], "adapter": ["fake_adapter"]}
    with pytest.raises(FrozenRegistryError):
        plugins.strategies.register("late", EchoStrategy)


def test_hook_that_raises_is_isolated_by_default(caplog):
    with caplog.at_level(logging.WARNING, logger="ponder.plugins"):
        plugins = plugin_set(GoodPlugin(), RaisingHookPlugin(), strict=False)
    info = plugins.plugin("raising")
    assert info.status == "failed"
    assert "RuntimeError: boom in hook" in info.error
    assert "half" not in plugins.strategies  # nothing from a failed plugin is committed
    assert plugins.strategies.names() == ["echo"]  # the rest keeps working
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "plugin 'raising'" in warnings[0] and "PONDER_DISABLE_PLUGINS=raising" in warnings[0]


def test_hook_that_raises_is_fatal_in_strict_mode():
    with pytest.raises(PluginLoadError, match=r"plugin 'raising'.*boom in hook.*strict"):
        plugin_set(GoodPlugin(), RaisingHookPlugin(), strict=True)


def test_incompatible_plugin_api_version_is_a_clear_error():
    module = types.ModuleType("future_plugin")
    module.PONDER_PLUGIN_API = 99
    plugins = plugin_set(module, strict=False)
    info = plugins.plugin("future_plugin")
    assert info.status == "failed"
    assert info.error == ("it requires plugin API 99, but this ponder provides plugin API 1")


def test_misspelled_hook_is_reported():
    class Typo:
        __name__ = "typo"

        @hookimpl
        def ponder_register_strategy(self, register):  # missing "ies"
            pass

    plugins = plugin_set(Typo(), strict=False)
    assert plugins.plugin("typo").status == "failed"
    assert "ponder_register_strategy" in plugins.plugin("typo").error


def test_duplicate_names_between_plugins():
    class Other:
        __name__ = "other"

        @hookimpl
        def ponder_register_strategies(self, register):
            register("echo", EchoStrategy)

    with pytest.raises(PluginLoadError, match="strategy 'echo' is provided by both"):
        plugin_set(GoodPlugin(), Other(), strict=True)
    plugins = plugin_set(GoodPlugin(), Other(), strict=False)
    with pytest.raises(Exception, match=r"plugin 'good'.*plugin 'other'"):
        plugins.strategies.get("echo")


def test_disable_list_skips_before_import():
    plugins = plugin_set(GoodPlugin(), disable=["good"])
    assert plugins.plugin("good").status == "disabled"
    assert len(plugins.strategies) == 0


def test_local_module_by_dotted_path_and_file(tmp_path, monkeypatch):
    source = textwrap.dedent('''
        from ponder import hookimpl

        class Shout:
            def run(self, question, context, services):
                return question.upper()

        @hookimpl
        def ponder_register_strategies(register):
            register("shout", Shout)
    ''')
    (tmp_path / "acme_local.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = load_plugins(entry_points=False, modules=["acme_local"], strict=True)
    assert plugins.plugin("acme_local").local is True
    assert plugins.plugin("acme_local").distribution == "(local)"
    assert plugins.strategies.get("shout")().run("hi", None, None) == "HI"

    (tmp_path / "by_file.py").write_text(source)
    plugins = load_plugins(entry_points=False, modules=[str(tmp_path / "by_file.py")],
                           strict=True)
    assert "shout" in plugins.strategies
    sys.modules.pop("acme_local", None)


def test_local_module_that_fails_to_import():
    plugins = load_plugins(entry_points=False, modules=["no_such_module_xyz"], strict=False)
    info = plugins.plugin("no_such_module_xyz")
    assert info.status == "failed" and "ModuleNotFoundError" in info.error
