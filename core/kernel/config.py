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
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

from ponder.errors import ConfigError
from ponder.kernel.hookspecs import KINDS
from ponder.kernel.registry import did_you_mean

CONFIG_FILENAME = "ponder.toml"
ENV_PREFIX = "PONDER_"
#: Environment variables read elsewhere (paths, keys); never parsed as config keys.
RESERVED_ENV = frozenset({
    "PONDER_CONFIG", "PONDER_CONFIG_DIR", "PONDER_CACHE_DIR", "PONDER_DATA_DIR", "PONDER_API_KEY",
    "PONDER_LOAD_PLUGINS", "PONDER_DISABLE_PLUGINS", "PONDER_STRICT_PLUGINS",
})
#: Component sections when nothing selects a name (None: chosen at run time, e.g. the adapter).
DEFAULT_NAMES: dict[str, str | None] = {
    "adapter": None,
    "strategy": "auto",
    "predictor": "predict",
    "retriever": None,
    "storage": "sqlite",
    "executor": None,  # None: Services' own thread pool
}

Path_ = tuple[str, ...]


class EnvString(str):
    """A value that came from the environment or a flag as text; hooks may convert it."""


# --- the kernel's own sections ----------------------------------------------------------------
def _non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"must be >= 0, got {value!r}", attribute)


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"must be > 0, got {value!r}", attribute)


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

    max_cost: float | None = attrs.field(default=None, validator=_non_negative)
    timeout: float | None = attrs.field(default=None, validator=_positive)
    max_tokens: int | None = attrs.field(default=None, validator=_positive)
    concurrency: int = attrs.field(default=4, validator=_positive)
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


#: ``[adapters.<name>]``: the settings of an adapter used as a fallback (or chosen at run time).
ADAPTERS_SECTION = "adapters"


KERNEL_SECTIONS: dict[str, type] = {
    "plugins": PluginsConfig, "limits": LimitsConfig, "cache": CacheConfig,
}

#: Sections a subsystem validates itself (``config.section(name, cls)``): the kernel keeps them
#: as raw tables with their origins, so it never imports the subsystem to know its settings.
SUBSYSTEM_SECTIONS: tuple[str, ...] = (
    "eval", "optimize", "pipeline", "sessions", "telemetry", "batch",
)


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
    #: dotted key -> where its value came from (a file, an environment variable, a flag)
    origins: dict[str, str] = attrs.field(factory=dict, repr=False)
    #: the files that were read, lowest layer first
    files: list[str] = attrs.field(factory=list)

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
        return self.origins.get(dotted, "default")

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
        prefix = section + "."
        return next((origin for key, origin in self.origins.items() if key.startswith(prefix)),
                    "default")

    def _located(self, dotted: str, message: str) -> str:
        return f"{self.origin(dotted)}: {dotted}: {message}"

    def to_dict(self, *, masked: bool = True) -> dict[str, Any]:
        """The resolved configuration as plain data; secrets masked unless told otherwise."""
        data: dict[str, Any] = {
            section: _unstructure(getattr(self, section)) for section in KERNEL_SECTIONS
        }
        for kind in KINDS:
            component = getattr(self, kind)
            chain = {"fallbacks": list(component.fallbacks)} if component.fallbacks else {}
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


# --- strict structuring: TOML gives real types, so a string is never silently an int ------
class ConfigTypeError(ValueError):
    """A value of the wrong type; the message is the part after the dotted key."""


def _describe(value: Any) -> str:
    return repr(str(value)) if isinstance(value, EnvString) else repr(value)


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, EnvString):
        try:
            return int(value)
        except ValueError:
            pass
    raise ConfigTypeError(f"expected int, got {_describe(value)}")


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, EnvString):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigTypeError(f"expected a number, got {_describe(value)}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _structure_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, EnvString) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigTypeError(f"expected true or false, got {_describe(value)}")


def _structure_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return str(value)
    raise ConfigTypeError(f"expected a string, got {_describe(value)}")


def _structure_str_list(value: Any, _: type) -> list[str]:
    if isinstance(value, EnvString):  # PONDER_DISABLE_PLUGINS=a,b
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [str(item) for item in value]
    raise ConfigTypeError(f"expected a list of strings, got {_describe(value)}")


def _structure_secret(value: Any, _: type) -> Any:
    from ponder.support.secrets import Secret

    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret.parse(str(value))
    raise ConfigTypeError(f"expected a string or a $env:NAME / $file:PATH reference, "
                          f"got {_describe(value)}")


def make_converter() -> cattrs.Converter:
    """A cattrs converter that rejects unknown keys and never coerces across types."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook_func(lambda t: t == list[str], _structure_str_list)
    try:
        from ponder.support.secrets import Secret
    except ImportError:  # pragma: no cover - the kernel always ships it
        pass
    else:
        converter.register_structure_hook(Secret, _structure_secret)
    return converter


_converter: cattrs.Converter | None = None


def converter() -> cattrs.Converter:
    global _converter
    if _converter is None:
        _converter = make_converter()
    return _converter


def _unstructure(obj: Any) -> Any:
    return converter().unstructure(obj)


def _walk_errors(exc: BaseException, path: Path_) -> Iterator[tuple[Path_, BaseException]]:
    if isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield (*path, key), exc
    elif isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, without = exc.group_exceptions()
        for inner, note in with_notes:
            step = getattr(note, "name", None)
            if step is None:
                step = f"[{getattr(note, 'index', '?')}]"
            yield from _walk_errors(inner, (*path, str(step)))
        for inner in without:  # raised by the class's own validators, after structuring
            yield from _walk_errors(inner, (*path, *_validator_attribute(inner)))
    else:
        yield path, exc


def _validator_attribute(exc: BaseException) -> tuple[str, ...]:
    """The attribute an attrs validator complained about, if the error says which."""
    attribute = exc.args[1] if len(exc.args) > 1 else None
    name = getattr(attribute, "name", None)
    if name is None and exc.args:  # attrs' validators say "'chunk_size' must be > 0: -5"
        found = re.match(r"'(\w+)' ", str(exc.args[0]))
        name = found.group(1) if found else None
    return (name,) if name else ()


def _message_for(exc: BaseException, path: Path_, cls: type | None) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        suggestion = did_you_mean(path[-1], known)
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        listing = ", ".join(known) if known else "none"
        return f"unknown key{hint} (known keys: {listing})"
    if isinstance(exc, ConfigTypeError):
        return str(exc)
    if isinstance(exc, KeyError):
        return "missing required key"
    if isinstance(exc, (ValueError, TypeError)):
        return _validator_message(exc)
    return f"{type(exc).__name__}: {exc}"


def _validator_message(exc: BaseException) -> str:
    # attrs' own validators put (message, attribute, …) in args; keep the human part.
    if exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def structure_settings(cls: type, options: Mapping[str, Any], *, section: str,
                       origins: Mapping[str, str] | None = None) -> Any:
    """Build ``cls`` from ``options``, raising ConfigError with file and dotted key on error."""
    origins = origins or {}
    try:
        return converter().structure(dict(options), cls)
    except (ClassValidationError, IterableValidationError) as exc:
        messages = []
        for path, inner in _walk_errors(exc, ()):
            dotted = ".".join((section, *path))
            origin = _origin_for(origins, dotted, section)
            messages.append(f"{origin}: {dotted}: {_message_for(inner, path, cls)}")
        raise ConfigError("\n".join(messages)) from None
    except (ValueError, TypeError) as exc:  # raised by a validator in the class's __init__
        dotted = ".".join((section, *_validator_attribute(exc)))
        origin = _origin_for(origins, dotted, section)
        raise ConfigError(f"{origin}: {dotted}: {_validator_message(exc)}") from None


def _origin_for(origins: Mapping[str, str], dotted: str, section: str) -> str:
    while dotted:
        if dotted in origins:
            return origins[dotted]
        dotted = dotted.rpartition(".")[0]
    return origins.get(section, "default")


# --- reading the layers --------------------------------------------------------------------------
def user_config_path() -> Path:
    from ponder.support.fileutils import get_config_dir

    return Path(get_config_dir()) / CONFIG_FILENAME


def _read_toml(path: Path, display: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{display}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{display}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{display}: cannot read config file: {exc.strerror}") from None


def _flatten(data: Mapping[str, Any], prefix: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key)), value


class _Layers:
    """Merges layers key by key, remembering the origin of every value."""

    def __init__(self) -> None:
        self.values: dict[Path_, Any] = {}
        self.origins: dict[Path_, str] = {}

    def add(self, data: Mapping[str, Any], origin: str) -> None:
        data = dict(data)
        for kind in KINDS:  # `strategy = "map_reduce"` is short for `[strategy] name = …`
            if isinstance(data.get(kind), str):
                data[kind] = {"name": data[kind]}
        for path, value in _flatten(data):
            self.set(path, value, origin)

    def set(self, path: Path_, value: Any, origin: str) -> None:
        # Choosing another plugin for a component drops the settings meant for the old one.
        if len(path) == 2 and path[0] in KINDS and path[1] == "name":
            old = self.values.get(path)
            if old is not None and old != value:
                for key in [k for k in self.values if k[0] == path[0] and k != path]:
                    del self.values[key]
                    del self.origins[key]
        self.values[path] = value
        self.origins[path] = origin

    def nested(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path, value in self.values.items():
            if path[0] != name or len(path) < 2:
                continue
            node = out
            for key in path[1:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        return out


def _env_layer(environ: Mapping[str, str]) -> Iterator[tuple[Path_, Any, str]]:
    plugin_switches = {
        "PONDER_LOAD_PLUGINS": ("plugins", "allow"),
        "PONDER_DISABLE_PLUGINS": ("plugins", "disable"),
        "PONDER_STRICT_PLUGINS": ("plugins", "strict"),
    }
    for variable, path in plugin_switches.items():
        if variable in environ:
            yield path, EnvString(environ[variable]), variable
    sections = (*KERNEL_SECTIONS, *KINDS, ADAPTERS_SECTION, *SUBSYSTEM_SECTIONS)
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in RESERVED_ENV:
            continue
        parts = variable[len(ENV_PREFIX):].lower().split("__")
        if parts[0] not in sections:
            continue  # other PONDER_* variables belong to other tools or plugins
        if len(parts) == 1:
            if parts[0] in KINDS:
                yield (parts[0], "name"), EnvString(environ[variable]), variable
            continue
        yield tuple(parts), EnvString(environ[variable]), variable


def parse_assignment(text: str) -> tuple[Path_, Any]:
    """``strategy.chunk_size=2000`` → (("strategy", "chunk_size"), 2000); TOML values allowed."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. strategy.chunk_size=2000")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = EnvString(raw.strip())
    return tuple(part.strip() for part in key.split(".")), value


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
    environ = os.environ if environ is None else environ
    layers = _Layers()
    files: list[str] = []

    if user_file:
        user_path = user_config_path()
        if user_path.is_file():
            layers.add(_read_toml(user_path, str(user_path)), str(user_path))
            files.append(str(user_path))

    explicit = path or environ.get("PONDER_CONFIG")
    if explicit:
        project = Path(explicit).expanduser()
        display = str(explicit)
        layers.add(_read_toml(project, display), display)
        files.append(display)
    else:
        project = Path(cwd or Path.cwd()) / CONFIG_FILENAME
        if project.is_file():
            layers.add(_read_toml(project, CONFIG_FILENAME), CONFIG_FILENAME)
            files.append(CONFIG_FILENAME)

    for key_path, value, origin in _env_layer(environ):
        layers.set(key_path, value, origin)
    for key_path, value, origin in overrides:
        if key_path and key_path[0] in KINDS and len(key_path) == 1:
            key_path = (key_path[0], "name")
        layers.set(tuple(key_path), value, origin)

    return _build(layers, files)


def _build(layers: _Layers, files: list[str]) -> Config:
    origins = {".".join(path): origin for path, origin in layers.origins.items()}
    errors: list[str] = []
    known_sections = [*KERNEL_SECTIONS, *KINDS, ADAPTERS_SECTION, *SUBSYSTEM_SECTIONS]
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
                fallbacks = _structure_str_list(raw, list[str])
            except ConfigTypeError:
                errors.append(f"{origins.get('adapter.fallbacks', 'default')}: adapter.fallbacks: "
                              f"expected a list of adapter names, got {_describe(raw)}")
        setattr(config, kind, Component(str(name) if name is not None else None, options,
                                        fallbacks))
    for name, options in layers.nested(ADAPTERS_SECTION).items():
        if not isinstance(options, dict):
            dotted = f"{ADAPTERS_SECTION}.{name}"
            errors.append(f"{origins.get(dotted, 'default')}: {dotted}: expected a table of the "
                          f"adapter's settings ([{dotted}]), got {_describe(options)}")
            continue
        config.adapters[name] = options
    for name in SUBSYSTEM_SECTIONS:
        table = layers.nested(name)
        if table:
            config.sections[name] = table
    if errors:
        raise ConfigError("\n".join(errors))
    return config


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


# --- display -----------------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def render_toml(config: Config) -> str:
    """The resolved config as TOML, secrets masked, each value annotated with its origin."""
    lines: list[str] = []
    for section, values in config.to_dict(masked=True).items():
        if section == ADAPTERS_SECTION:  # one [adapters.<name>] table per adapter
            for name, options in values.items():
                lines.append(f"[{section}.{_toml_key(name)}]")
                for key, value in options.items():
                    origin = config.origin(f"{section}.{name}.{key}")
                    lines.append(f"{_toml_key(key)} = {_toml_value(value)}  # {origin}")
                lines.append("")
            continue
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} = (not set)")
                continue
            origin = config.origin(f"{section}.{key}")
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}  # {origin}")
        lines.append("")
    return "\n".join(lines)
