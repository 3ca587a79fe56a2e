"""The Python API: a fluent builder that says in code everything config can say, and ``ask``.

::

    import ponder

    system = (ponder.build()
              .adapter("openai_compatible", base_url=URL, model="m")
              .strategy("map_reduce", fan_in=4)
              .retriever("bm25")
              .limits(max_cost=0.50, concurrency=8)
              .system())
    answer = system.ask("What is MAGIC_PORT?", ["src/"])

    answer = ponder.ask("What is MAGIC_PORT?", ["src/"], strategy="map_reduce",
                        strategy__fan_in=4)

Every builder call is one section of ponder.toml, one to one: ``.adapter(name, **settings)`` is
``[adapter]``, ``.adapters(name, **settings)`` is ``[adapters.<name>]``, ``.limits(**values)`` is
``[limits]``, ``.section("sessions", ttl=…)`` a subsystem section, and so on. The values go
through the kernel's own config code (the same layers, the same validation), with the builder
call as each value's origin instead of a file, so a mistake reads like a config error that names
the call::

    builder .strategy(fan_in=…): strategy.fan_in: expected int, got 'four'

(The origin never shows a value: a value may be a key.) Kernel sections are checked at the call;
plugin settings when :meth:`Builder.system` (or :meth:`Builder.check`) has the plugins.
:meth:`Builder.to_toml` writes the same system as a config file, and that file loaded back gives
a config equal to :meth:`Builder.config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ponder.errors import ConfigError
from ponder.kernel.config import (
    ADAPTERS_SECTION,
    KERNEL_SECTIONS,
    SUBSYSTEM_SECTIONS,
    Config,
    Layers,
    build_config,
    toml_key,
    toml_value,
)
from ponder.kernel.hookspecs import KINDS

__all__ = ["Builder", "ask", "build"]


def _origin(call: str, name: str | None = None, key: str | None = None) -> str:
    if key is None:
        return f"builder .{call}({name!r})"
    return f"builder .{call}({key}=…)"


class Builder:
    """Accumulates config values call by call; each call returns the builder."""

    def __init__(self) -> None:
        self._layers = Layers()

    # --- component sections ----------------------------------------------------------------
    def _component(self, kind: str, name: str | None, settings: Mapping[str, Any],
                   call: str | None = None) -> Builder:
        call = call or kind
        if name is not None:
            self._layers.set((kind, "name"), name, _origin(call, name))
        for key, value in settings.items():
            self._layers.set((kind, *key.split("__")), value, _origin(call, key=key))
        self._validate()
        return self

    def adapter(self, name: str | None = None, *, fallbacks: Sequence[str] | None = None,
                **settings: Any) -> Builder:
        """``[adapter]``: the adapter plugin and its settings (``fallbacks``: the chain)."""
        if fallbacks is not None:
            settings = {**settings, "fallbacks": list(fallbacks)}
        return self._component("adapter", name, settings)

    def adapters(self, name: str, **settings: Any) -> Builder:
        """``[adapters.<name>]``: the settings of a fallback (or run-time chosen) adapter."""
        for key, value in settings.items():
            self._layers.set((ADAPTERS_SECTION, name, key), value,
                             f"builder .adapters({name!r}, {key}=…)")
        self._validate()
        return self

    def strategy(self, name: str | None = None, **settings: Any) -> Builder:
        return self._component("strategy", name, settings)

    def predictor(self, name: str | None = None, **settings: Any) -> Builder:
        return self._component("predictor", name, settings)

    def retriever(self, name: str | None = None, **settings: Any) -> Builder:
        return self._component("retriever", name, settings)

    def storage(self, name: str | None = None, **settings: Any) -> Builder:
        return self._component("storage", name, settings)

    def executor(self, name: str | None = None, **settings: Any) -> Builder:
        return self._component("executor", name, settings)

    # --- the kernel's and the subsystems' sections -----------------------------------------
    def _section(self, section: str, values: Mapping[str, Any], call: str) -> Builder:
        for key, value in values.items():
            self._layers.set((section, *key.split("__")), value, _origin(call, key=key))
        self._validate()
        return self

    def limits(self, **values: Any) -> Builder:
        """``[limits]``: max_cost, timeout, max_tokens, concurrency, max_retries, …"""
        return self._section("limits", values, "limits")

    def cache(self, **values: Any) -> Builder:
        return self._section("cache", values, "cache")

    def plugins(self, **values: Any) -> Builder:
        return self._section("plugins", values, "plugins")

    def section(self, name: str, **values: Any) -> Builder:
        """A subsystem section (``sessions``, ``pipeline``, ``eval``, …), kept raw like TOML's."""
        if name not in SUBSYSTEM_SECTIONS and name not in KERNEL_SECTIONS:
            known = ", ".join((*KERNEL_SECTIONS, *SUBSYSTEM_SECTIONS))
            raise ConfigError(f"builder .section({name!r}): unknown section (known: {known})")
        return self._section(name, values, f"section({name!r}, …)")

    def sessions(self, **values: Any) -> Builder:
        return self._section("sessions", values, "sessions")

    # --- results ---------------------------------------------------------------------------
    def _validate(self) -> Config:
        return build_config(self._layers, [])

    def config(self) -> Config:
        """The :class:`Config` these calls describe (no file, no environment)."""
        return self._validate()

    def check(self, plugins: Any = None) -> Config:
        """The config, with every selected plugin and its settings checked."""
        from ponder.kernel.config import check_components
        from ponder.kernel.loader import load_plugins

        config = self.config()
        if plugins is None:
            settings = config.plugins
            plugins = load_plugins(modules=settings.load, allow=settings.allow,
                                   disable=settings.disable, strict=settings.strict)
        check_components(config, plugins)
        return config

    def system(self, *, plugins: Any = None, progress: str = "silent") -> Any:
        """A :class:`ponder.engine.system.System` over this config (plugins checked)."""
        from ponder.engine.system import System

        return System(self.config(), plugins=plugins, progress=progress)

    def ask(self, question: str, sources: Sequence[str] | Any, **kwargs: Any) -> Any:
        return self.system().ask(question, sources, **kwargs)

    def matches(self, config: Config) -> bool:
        """Whether ``config`` (one loaded from :meth:`to_toml`'s file, say) holds the same
        values as these calls: ``self.config() == config`` (equality ignores where each value
        came from, a file line or a builder call)."""
        return self.config() == config

    def to_toml(self) -> str:
        """These calls as a ponder.toml (secrets as written: ``$env:NAME`` stays a reference)."""
        tables: dict[tuple[str, ...], dict[str, Any]] = {}
        for path, value in self._layers.values.items():
            if path[0] == ADAPTERS_SECTION:
                table, key = path[:2], path[2:]
            else:
                table, key = path[:1], path[1:]
            node = tables.setdefault(table, {})
            for part in key[:-1]:
                node = node.setdefault(part, {})
            node[key[-1]] = value
        lines: list[str] = []
        for table, values in tables.items():
            lines.append("[" + ".".join(toml_key(part) for part in table) + "]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in values.items()]
            lines.append("")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<ponder.Builder {len(self._layers.values)} values>"


def build() -> Builder:
    """A new :class:`Builder`: ``ponder.build().adapter(…).strategy(…).system()``."""
    return Builder()


#: ``ponder.ask`` keywords that are the ``ponder ask`` flags of the same name
_FLAGS = {
    "strategy": ("strategy", "name"), "adapter": ("adapter", "name"),
    "predictor": ("predictor", "name"), "retriever": ("retriever", "name"),
    "model": ("adapter", "model"), "concurrency": ("limits", "concurrency"),
    "max_cost": ("limits", "max_cost"), "max_tokens": ("limits", "max_tokens"),
    "timeout": ("limits", "timeout"),
}


def ask(question: str, sources: Sequence[str] | Any, *, config: str | os.PathLike[str] |
        None = None, **overrides: Any) -> Any:
    """Answer ``question`` over ``sources`` with ./ponder.toml (or ``config``), ``PONDER_*`` and
    ``overrides``: the ``ask`` flags by name (``strategy="map_reduce"``, ``max_cost=0.5``) or
    any key as ``section__key`` (``strategy__fan_in=4``). Returns an ``Answer``."""
    from ponder.engine.system import System
    from ponder.kernel.config import load_config

    layered: list[tuple[tuple[str, ...], Any, str]] = []
    for key, value in overrides.items():
        path = _FLAGS.get(key) or tuple(key.split("__"))
        if len(path) < 2 or path[0] not in (*KINDS, *KERNEL_SECTIONS, *SUBSYSTEM_SECTIONS,
                                            ADAPTERS_SECTION):
            raise ConfigError(f"ponder.ask({key}=…): unknown setting; use a flag name "
                              f"({', '.join(_FLAGS)}) or section__key, e.g. strategy__fan_in=4")
        layered.append((path, value, f"ponder.ask({key}=…)"))
    loaded = load_config(config, overrides=layered)
    if "model" in overrides and not loaded.adapter.name:
        loaded.adapter.name = "litellm"  # as `ponder ask --model`
    return System(loaded, progress="silent").ask(question, sources)
