"""Reusable conformance suites, one per component kind (the Haystack way).

A plugin author subclasses the suite for their kind in a pytest module and sets the class
attributes; pytest collects the inherited tests::

    from ponder.testing.conformance import AdapterConformance

    class TestGatewayAdapter(AdapterConformance):
        name = "gateway"                      # the registered name
        settings = {"model": "acme/large"}    # config values for the plugin's settings class
        plugins = (my_plugin_module,)         # omit to use the installed entry points

ponder's own first-party plugins are checked with these same suites.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from ponder.kinds import KIND_PROTOCOLS, ModelInfo
from ponder.loader import PluginSet, load_plugins

HEAVY_MODULES = ("dspy", "litellm", "llama_cpp", "torch", "sentence_transformers")


class ComponentConformance:
    """Checks every kind shares: registration, settings, factory, protocol, light import."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    settings: ClassVar[dict[str, Any]] = {}
    #: plugin objects/modules to load; empty = the installed entry points (strict)
    plugins: ClassVar[Sequence[Any]] = ()

    def load(self) -> PluginSet:
        if self.plugins:
            return load_plugins(entry_points=False, objects=self.plugins, strict=True)
        return load_plugins(strict=True, allow=None)

    def registration(self):
        return self.load().get(self.kind, self.name)

    def build_settings(self) -> Any:
        from ponder.config import structure_settings

        entry = self.registration()
        if entry.settings is None:
            assert not self.settings, f"{self.kind} {self.name!r} takes no settings"
            return None
        return structure_settings(entry.settings, self.settings, section=self.kind)

    def make(self) -> Any:
        entry = self.registration()
        settings = self.build_settings()
        return entry.factory(settings) if entry.settings is not None else entry.factory()

    # --- the tests ------------------------------------------------------------------------------
    def test_registered_under_its_name(self) -> None:
        entry = self.registration()
        assert entry.name == self.name and entry.kind == self.kind

    def test_settings_class_is_attrs_with_defaults_or_given(self) -> None:
        entry = self.registration()
        if entry.settings is not None:
            assert attrs.has(entry.settings)
            assert self.build_settings() is not None

    def test_factory_satisfies_protocol(self) -> None:
        component = self.make()
        protocol = KIND_PROTOCOLS[self.kind]
        assert isinstance(component, protocol), (
            f"{self.kind} {self.name!r} built {type(component).__name__}, which lacks the "
            f"{protocol.__name__} protocol's methods"
        )

    def test_plugin_import_is_light(self) -> None:
        """Importing the plugin module must not import dspy, litellm, torch or llama_cpp."""
        module = getattr(self.registration().factory, "__module__", None)
        if not module or module == "__main__" or module.startswith("test"):
            return  # an in-test fake: nothing to import in a fresh process
        code = (f"import sys, {module}; "
                f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == "", f"importing {module} imported {out}"


class AdapterConformance(ComponentConformance):
    """An adapter describes its model and builds a DSPy LM."""

    kind: ClassVar[str] = "adapter"

    def test_model_info(self) -> None:
        info = self.make().model_info()
        assert isinstance(info, ModelInfo)
        assert info.context_window > 0 and info.max_output_tokens > 0
        assert info.input_cost_per_token >= 0 and info.output_cost_per_token >= 0

    def test_build_lm_is_a_dspy_lm(self) -> None:
        import dspy

        assert isinstance(self.make().build_lm(), dspy.BaseLM)


class StrategyConformance(ComponentConformance):
    kind: ClassVar[str] = "strategy"


class PredictorConformance(ComponentConformance):
    kind: ClassVar[str] = "predictor"


class RetrieverConformance(ComponentConformance):
    kind: ClassVar[str] = "retriever"


class StorageConformance(ComponentConformance):
    kind: ClassVar[str] = "storage"
