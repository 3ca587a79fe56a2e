"""Configuration: TOML files, then ``PONDER_*`` environment variables, then CLI flags.

Layers, lowest first:

1. the user file ``<platform config dir>/ponder.toml`` (``PONDER_CONFIG_DIR`` moves it);
2. the project file: ``--config PATH`` (or ``PONDER_CONFIG``), else ``./ponder.toml``;
3. environment: ``PONDER_STRATEGY=map_reduce`` sets ``strategy.name``,
   ``PONDER_STRATEGY__CHUNK_SIZE=2000`` sets ``strategy.chunk_size`` (double underscore = one
   level down), plus the plugin switches ``PONDER_LOAD_PLUGINS``, ``PONDER_DISABLE_PLUGINS``
   (comma-separated) and ``PONDER_STRICT_PLUGINS=1``;
4. CLI flags (``--strategy``, ``--set strategy.chunk_size=2000``, …).

Every value remembers which layer gave it, so an error reads
``ponder.toml: strategy.chunk_size: expected int, got 'abc'``. The kernel's own sections are attrs
classes structured by cattrs; a component section (``[adapter]``, ``[strategy]``, …) holds
``name`` plus that plugin's settings, validated against the settings class the plugin registered
once discovery has run (:meth:`Config.component_settings`).

This module is the model: the sections, :class:`Config`, :func:`load_config` and
:func:`check_components`. Reading the layers is :mod:`ponder.kernel.layers`, strict structuring
and its error messages :mod:`ponder.kernel.settings`, the TOML display
:mod:`ponder.kernel.render`; their public names are re-exported here, so
``from ponder.kernel.config import …`` keeps working for every one of them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ponder.errors import ConfigError
from ponder.kernel.hookspecs import KINDS
from ponder.kernel.layers import (
    ADAPTERS_SECTION,
    CODE_ORIGIN,
    CONFIG_FILENAME,
    ENV_PREFIX,
    RESERVED_ENV,
    EnvString,
    Layers,
    Path_,
    parse_assignment,
    read_layers,
    recorded_origin,
    user_config_path,
)
from ponder.kernel.registry import did_you_mean
from ponder.kernel.render import render_toml, toml_key, toml_value
from ponder.kernel.settings import (
    ConfigTypeError,
    converter,
    describe_value,
    make_converter,
    secret_problems,
    structure_settings,
    structure_str_list,
    unstructure,
)

__all__ = [
    "ADAPTERS_SECTION", "CODE_ORIGIN", "CONFIG_FILENAME", "DEFAULT_NAMES", "ENV_PREFIX",
    "KERNEL_SECTIONS", "RESERVED_ENV", "SUBSYSTEM_SECTIONS", "CacheConfig", "Component", "Config",
    "ConfigError", "ConfigTypeError", "EnvString", "Layers", "LimitsConfig", "Path_",
    "PluginsConfig", "build_config", "check_components", "converter", "load_config",
    "make_converter", "parse_assignment", "render_toml", "secret_problems", "structure_settings",
    "toml_key", "toml_value", "user_config_path",
]

#: Component sections when nothing selects a name (None: chosen at run time, e.g. the adapter).
DEFAULT_NAMES: dict[str, str | None] = {
    "adapter": None,
    "strategy": "auto",
    "predictor": "predict",
    "retriever": None,
    "storage": "sqlite",
    "executor": "threads",  # daemon threads in this process (ponder.engine.executor)
}


# --- the kernel's own sections ----------------------------------------------------------------
class _BadValue(ValueError):
    """A refused value: ``args`` are ``(message, attribute)`` (the settings layer reads the
    attribute to name the key and its layer); printed alone (a ``LimitsConfig(...)`` built in
    Python) it reads ``max_cost: must be a finite number, got nan``, not a tuple."""

    def __str__(self) -> str:
        attribute = self.args[1] if len(self.args) > 1 else None
        name = getattr(attribute, "name", None)
        return f"{name}: {self.args[0]}" if name else str(self.args[0])


def _finite(attribute: attrs.Attribute, value: Any) -> None:
    # nan compares false with everything, so `nan < 0` would let it through and turn a limit
    # off; inf is no limit either (None says that) and overflows timers. Neither is accepted.
    if isinstance(value, float) and not math.isfinite(value):
        raise _BadValue(f"must be a finite number, got {value!r}", attribute)


def _non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    _finite(attribute, value)
    if value is not None and value < 0:
        raise _BadValue(f"must be >= 0, got {value!r}", attribute)


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    _finite(attribute, value)
    if value is not None and value <= 0:
        raise _BadValue(f"must be > 0, got {value!r}", attribute)


@attrs.define
class PluginsConfig:
    """``[plugins]``: which plugins load."""

    #: in-house plugin modules (dotted paths or .py files), loaded like entry points
    load: list[str] = attrs.field(factory=list)
    #: third-party plugins allowed to load; None = all installed, [] = built-ins only
    allow: list[str] | None = None
    #: plugins never imported (entry-point, distribution or module names)
    disable: list[str] = attrs.field(factory=list)
    #: a plugin that fails to load is an error instead of a warning
    strict: bool = False


@attrs.define
class LimitsConfig:
    """``[limits]``: enforced while a run is going, not only checked before it."""

    #: USD a run may cost at most; checked before every LM call (None: no limit)
    max_cost: float | None = attrs.field(default=None, validator=_non_negative)
    #: seconds, hard: in-flight calls are abandoned and listed as cancelled (None: no limit)
    timeout: float | None = attrs.field(default=None, validator=_positive)
    #: input + output tokens a run may use at most (None: no limit)
    max_tokens: int | None = attrs.field(default=None, validator=_positive)
    #: parallel LM calls at most
    concurrency: int = attrs.field(default=4, validator=_positive)
    #: retries per LM call, on retryable errors only (429, 5xx, time-outs, connection errors)
    max_retries: int = attrs.field(default=3, validator=_non_negative)
    #: consecutive failures that open an adapter's circuit (with ``[adapter] fallbacks``)
    breaker_failures: int = attrs.field(default=3, validator=_positive)
    #: seconds an open circuit waits before letting one trial call through
    breaker_cooldown: float = attrs.field(default=30.0, validator=_non_negative)


@attrs.define
class CacheConfig:
    """``[cache]``: the LM response cache (:mod:`ponder.engine.cache`)."""

    #: serve a reply seen before from disk; ``ponder ask --no-cache`` turns it off for one run
    enabled: bool = True
    #: the cache file; None = ``<ponder cache dir>/responses.sqlite``
    path: str | None = None


@attrs.define
class Component:
    """A component section: the plugin ``name`` plus its raw settings, validated later."""

    name: str | None = None
    options: dict[str, Any] = attrs.field(factory=dict)
    #: ``[adapter] fallbacks``: adapters tried in order when this one fails (a kernel key, never
    #: passed to the plugin's settings; see :mod:`ponder.engine.fallback`)
    fallbacks: list[str] = attrs.field(factory=list)
    #: ``[adapter] rpm`` / ``tpm``: requests / tokens per minute for the whole run, across every
    #: worker (kernel keys like ``fallbacks``; see :mod:`ponder.engine.ratelimit`)
    rpm: float | None = None
    tpm: int | None = None
    #: ``[adapter] order``: "configured" (the chain as written) or "measured" (by recorded
    #: success rate, then latency; the rule is in :mod:`ponder.support.measured`)
    order: str = "configured"


KERNEL_SECTIONS: dict[str, type] = {
    "plugins": PluginsConfig, "limits": LimitsConfig, "cache": CacheConfig,
}

#: Sections a subsystem validates itself (``config.section(name, cls)``): the kernel keeps them
#: as raw tables with their origins, so it never imports the subsystem to know its settings.
SUBSYSTEM_SECTIONS: tuple[str, ...] = (
    "eval", "optimize", "pipeline", "sessions", "telemetry", "batch",
)
#: every section a file, a ``PONDER_*`` variable or a flag may set
_SECTIONS: tuple[str, ...] = (*KERNEL_SECTIONS, *KINDS, ADAPTERS_SECTION, *SUBSYSTEM_SECTIONS)


@attrs.define
class Config:
    """The resolved configuration. Build it with :func:`load_config` or directly in code."""

    plugins: PluginsConfig = attrs.field(factory=PluginsConfig)
    limits: LimitsConfig = attrs.field(factory=LimitsConfig)
    cache: CacheConfig = attrs.field(factory=CacheConfig)
    adapter: Component = attrs.field(factory=lambda: Component(DEFAULT_NAMES["adapter"]))
    strategy: Component = attrs.field(factory=lambda: Component(DEFAULT_NAMES["strategy"]))
    predictor: Component = attrs.field(factory=lambda: Component(DEFAULT_NAMES["predictor"]))
    retriever: Component = attrs.field(factory=lambda: Component(DEFAULT_NAMES["retriever"]))
    storage: Component = attrs.field(factory=lambda: Component(DEFAULT_NAMES["storage"]))
    executor: Component = attrs.field(factory=lambda: Component(DEFAULT_NAMES["executor"]))
    #: the subsystem sections (:data:`SUBSYSTEM_SECTIONS`) as raw tables, validated by their
    #: subsystem through :meth:`section`
    sections: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: ``[adapters.<name>]`` sections: adapter name -> raw settings, validated later
    adapters: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: dotted key -> where its value came from (a file, an environment variable, a flag);
    #: not part of equality: the same values from a file and from the builder are one config
    origins: dict[str, str] = attrs.field(factory=dict, repr=False, eq=False)
    #: the files that were read, lowest layer first (not part of equality either)
    files: list[str] = attrs.field(factory=list, eq=False)

    def component(self, kind: str) -> Component:
        if kind not in KINDS:
            raise ConfigError(f"unknown component kind {kind!r} (kinds: {', '.join(KINDS)})")
        return getattr(self, kind)

    def section(self, name: str, settings_cls: type | None = None) -> Any:
        """A subsystem section: its raw table, or validated into ``settings_cls`` with errors
        naming the file and key (``ponder.toml: eval.concurrency: …``)."""
        if name not in SUBSYSTEM_SECTIONS:
            raise ConfigError(f"unknown subsystem section {name!r} "
                              f"(known: {', '.join(SUBSYSTEM_SECTIONS)})")
        raw = self.sections.get(name, {})
        if settings_cls is None:
            return dict(raw)
        return structure_settings(settings_cls, raw, section=name, origins=self.origins)

    def origin(self, dotted: str) -> str:
        """Where the value at ``dotted`` came from: a file, a variable, a flag, code, default.

        A key the layers did not give but that holds a value (a ``Config`` built in Python, a
        name set on a component) came from code, not from the defaults, so an error about it
        must not say ``default:``.
        """
        found = recorded_origin(self.origins, dotted)
        if found is not None:
            return found
        return CODE_ORIGIN if self._set_in_code(dotted) else "default"

    def _set_in_code(self, dotted: str) -> bool:
        section, _, rest = dotted.partition(".")
        key = rest.split(".")
        if section in KINDS:
            component = getattr(self, section)
            if key == ["name"]:
                return component.name != DEFAULT_NAMES[section]
            if key == ["fallbacks"]:
                return bool(component.fallbacks)
            return bool(rest) and key[0] in component.options
        if section == ADAPTERS_SECTION:
            return bool(rest) and key[0] in self.adapters and (
                len(key) == 1 or key[1] in self.adapters[key[0]])
        if section in self.sections:
            return not rest or key[0] in self.sections[section]
        cls = KERNEL_SECTIONS.get(section)
        if cls is None or not rest:
            return False
        field = getattr(attrs.fields(cls), key[0], None)
        if field is None:
            return False
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        return getattr(getattr(self, section), key[0], default) != default

    def component_settings(self, kind: str, settings_cls: type | None) -> Any:
        """Validate ``[kind]``'s options against the plugin's settings class."""
        component = self.component(kind)
        if settings_cls is None:
            if component.options:
                key = next(iter(component.options))
                raise ConfigError(self._located(
                    f"{kind}.{key}",
                    f"{kind} {component.name!r} takes no settings, got {key!r}",
                ))
            return None
        return structure_settings(settings_cls, component.options, section=kind,
                                  origins=self.origins)

    def adapter_settings(self, name: str, settings_cls: type | None) -> Any:
        """Validate the settings of adapter ``name`` against its plugin's settings class.

        The configured adapter (``adapter.name``) takes ``[adapter]``'s settings, or
        ``[adapters.<name>]``'s when ``[adapter]`` has none (setting both is an error); any other
        adapter (a fallback, or one chosen at run time) takes ``[adapters.<name>]``'s, defaults
        when that section is absent.
        """
        section = f"{ADAPTERS_SECTION}.{name}"
        options = self.adapters.get(name, {})
        if name == self.adapter.name:
            if self.adapter.options and name in self.adapters:
                raise ConfigError(
                    f"{self._section_origin(section)}: {section}: adapter {name!r} is configured "
                    f"in [adapter] already; put its settings in one section, [adapter] or "
                    f"[{section}]")
            if not options:
                return self.component_settings("adapter", settings_cls)
        if settings_cls is None:
            if options:
                key = next(iter(options))
                raise ConfigError(self._located(
                    f"{section}.{key}", f"adapter {name!r} takes no settings, got {key!r}"))
            return None
        return structure_settings(settings_cls, options, section=section, origins=self.origins)

    def _section_origin(self, section: str) -> str:
        """Where the first key of ``section`` came from."""
        return self.origin(section)

    def _located(self, dotted: str, message: str) -> str:
        return f"{self.origin(dotted)}: {dotted}: {message}"

    def to_dict(self, *, masked: bool = True) -> dict[str, Any]:
        """The resolved configuration as plain data; secrets masked unless told otherwise."""
        data: dict[str, Any] = {
            section: unstructure(getattr(self, section)) for section in KERNEL_SECTIONS
        }
        for kind in KINDS:
            component = getattr(self, kind)
            chain = {"fallbacks": list(component.fallbacks)} if component.fallbacks else {}
            chain.update({key: getattr(component, key) for key in ("rpm", "tpm")
                          if getattr(component, key, None) is not None})
            if component.order != "configured":
                chain["order"] = component.order
            data[kind] = {"name": component.name, **chain, **component.options}
        if self.adapters:
            data[ADAPTERS_SECTION] = {name: dict(options)
                                      for name, options in self.adapters.items()}
        for name, table in self.sections.items():
            data[name] = dict(table)
        if masked:
            from ponder.support.secrets import clean_secrets

            data = clean_secrets(data)
        return data


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Sequence[tuple[Path_, Any, str]] = (),
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    user_file: bool = True,
) -> Config:
    """Read every layer and return a validated :class:`Config`.

    ``overrides`` are CLI-flag values as ``(dotted path, value, flag name)``.
    """
    layers, files = read_layers(
        path, sections=_SECTIONS, overrides=overrides,
        environ=os.environ if environ is None else environ, cwd=cwd, user_file=user_file)
    return build_config(layers, files)


def build_config(layers: Layers, files: list[str]) -> Config:
    """Validate merged layers into a :class:`Config`, every problem in one ConfigError.

    :func:`load_config` and the builder (:mod:`ponder.builder`, which fills :class:`Layers` from
    its calls) both end here, so a value is checked the same way whichever way it was given.
    """
    origins = {".".join(path): origin for path, origin in layers.origins.items()}
    errors: list[str] = []
    known_sections = list(_SECTIONS)
    for section in sorted({path[0] for path in layers.values}):
        if section not in known_sections:
            suggestion = did_you_mean(section, known_sections)
            hint = f"; did you mean {suggestion!r}?" if suggestion else ""
            first = next(p for p in layers.values if p[0] == section)
            origin = origins[".".join(first)]
            errors.append(f"{origin}: {section}: unknown section{hint} "
                          f"(known: {', '.join(known_sections)})")

    config = Config(origins=origins, files=files)
    for section, cls in KERNEL_SECTIONS.items():
        try:
            setattr(config, section,
                    structure_settings(cls, layers.nested(section), section=section,
                                       origins=origins))
        except ConfigError as exc:
            errors.append(str(exc))
    for kind in KINDS:
        options = layers.nested(kind)
        name = options.pop("name", DEFAULT_NAMES[kind])
        if name is not None and not isinstance(name, str):
            errors.append(f"{origins.get(kind + '.name', 'default')}: {kind}.name: "
                          f"expected a plugin name (string), got {name!r}")
            name = None
        fallbacks: list[str] = []
        if kind == "adapter" and "fallbacks" in options:
            raw = options.pop("fallbacks")
            try:
                fallbacks = structure_str_list(raw, list[str])
            except ConfigTypeError:
                errors.append(f"{origins.get('adapter.fallbacks', 'default')}: adapter.fallbacks: "
                              f"expected a list of adapter names, got {describe_value(raw)}")
        rates: dict[str, Any] = {}
        if kind == "adapter":
            for key in ("rpm", "tpm"):
                if key in options:
                    rates[key] = _rate_limit(key, options.pop(key), origins, errors)
        if kind == "adapter" and "order" in options:
            order = options.pop("order")
            if order in ("configured", "measured"):
                rates["order"] = order
            else:
                errors.append(f"{origins.get('adapter.order', 'default')}: adapter.order: "
                              f"expected \"configured\" or \"measured\", "
                              f"got {describe_value(order)}")
        setattr(config, kind, Component(str(name) if name is not None else None, options,
                                        fallbacks, **rates))
    for name, options in layers.nested(ADAPTERS_SECTION).items():
        if not isinstance(options, dict):
            dotted = f"{ADAPTERS_SECTION}.{name}"
            errors.append(f"{origins.get(dotted, 'default')}: {dotted}: expected a table of the "
                          f"adapter's settings ([{dotted}]), got {describe_value(options)}")
            continue
        config.adapters[name] = options
    for name in SUBSYSTEM_SECTIONS:
        table = layers.nested(name)
        if table:
            config.sections[name] = table
    if errors:
        raise ConfigError("\n".join(errors))
    return config


def _rate_limit(key: str, raw: Any, origins: dict[str, str], errors: list[str]) -> Any:
    """``[adapter] rpm`` (requests, may be fractional) or ``tpm`` (tokens): a number > 0."""
    value: Any = raw
    if isinstance(raw, str):  # from the environment or a flag
        try:
            value = float(raw) if key == "rpm" else int(raw)
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (
            key == "tpm" and not isinstance(value, int)) or not math.isfinite(value):
        what = "a number of requests per minute" if key == "rpm" else "a whole number of " \
            "tokens per minute"
        errors.append(f"{origins.get('adapter.' + key, 'default')}: adapter.{key}: expected "
                      f"{what} > 0, got {describe_value(raw)}")
        return None
    return value


def check_components(config: Config, plugin_set: Any) -> list[Any]:
    """Validate every selected component against the loaded plugins.

    Returns the settings instances (kind order); raises ConfigError listing every problem:
    unknown plugin names (with a suggestion) and invalid plugin settings.
    """
    from ponder.kernel.registry import RegistryError

    errors: list[str] = []
    settings: list[Any] = []
    for kind in KINDS:
        component = config.component(kind)
        if component.name is None:
            continue
        explicit = config.origin(f"{kind}.name") != "default"
        if not explicit and component.name not in plugin_set.registry(kind):
            continue  # a default that this plugin set lacks is reported when it is used
        try:
            entry = plugin_set.get(kind, component.name)
        except RegistryError as exc:
            errors.append(f"{config.origin(kind + '.name')}: {kind}.name: {exc}")
            continue
        try:
            settings.append(config.component_settings(kind, entry.settings))
        except ConfigError as exc:
            errors.append(str(exc))
    errors.extend(_adapter_chain_errors(config, plugin_set))
    if errors:
        raise ConfigError("\n".join(errors))
    return settings


def _adapter_chain_errors(config: Config, plugin_set: Any) -> list[str]:
    """Problems with ``[adapter] fallbacks`` and the ``[adapters.<name>]`` sections."""
    from ponder.kernel.registry import RegistryError

    errors: list[str] = []
    primary = config.adapter.name
    where = config.origin("adapter.fallbacks")
    seen: set[str] = set()
    for name in config.adapter.fallbacks:
        if name == primary:
            errors.append(f"{where}: adapter.fallbacks: {name!r} is the adapter itself "
                          "(adapter.name); a fallback must be another adapter")
        elif name in seen:
            errors.append(f"{where}: adapter.fallbacks: {name!r} is listed twice")
        else:
            try:
                plugin_set.get("adapter", name)
            except RegistryError as exc:
                errors.append(f"{where}: adapter.fallbacks: {exc}")
        seen.add(name)
    for name in config.adapters:
        section = f"{ADAPTERS_SECTION}.{name}"
        try:
            entry = plugin_set.get("adapter", name)
        except RegistryError as exc:
            errors.append(f"{config._section_origin(section)}: {section}: {exc}")
            continue
        try:
            config.adapter_settings(name, entry.settings)
        except ConfigError as exc:
            errors.append(str(exc))
    return errors
