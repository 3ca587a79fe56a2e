"""Reading the configuration layers: TOML files, ``PONDER_*`` variables and flag overrides.

This is the part of configuration that knows where values come from and nothing about what they
mean: it reads the files, turns the environment and ``--set`` flags into dotted key paths, and
merges everything key by key in :class:`Layers`, remembering the origin of every value. It sits
below the settings structuring (:mod:`ponder.kernel.settings`) and the model
(:mod:`ponder.kernel.config`), which both need the origins to name the file and key at fault, so
it imports neither of them.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.kernel.hookspecs import KINDS

CONFIG_FILENAME = "ponder.toml"
ENV_PREFIX = "PONDER_"
#: Environment variables read elsewhere (paths, keys); never parsed as config keys.
RESERVED_ENV = frozenset({
    "PONDER_CONFIG", "PONDER_CONFIG_DIR", "PONDER_CACHE_DIR", "PONDER_DATA_DIR", "PONDER_API_KEY",
    "PONDER_LOAD_PLUGINS", "PONDER_DISABLE_PLUGINS", "PONDER_STRICT_PLUGINS",
})
#: ``[adapters.<name>]``: the settings of an adapter used as a fallback (or chosen at run time).
#: Defined here, with the other names the layers and the TOML rendering need, so neither has to
#: import the model.
ADAPTERS_SECTION = "adapters"

Path_ = tuple[str, ...]


class EnvString(str):
    """A value that came from the environment or a flag as text; hooks may convert it."""


# --- origins -------------------------------------------------------------------------------------
#: the origin of a value that no layer gave but code did (``Config(...)``, a ``Component``)
CODE_ORIGIN = "set in code"


def recorded_origin(origins: Mapping[str, str], dotted: str) -> str | None:
    """The layer that gave ``dotted``, one of its parents, or the first of its children.

    ``--set limits.concurrency.x=1`` records ``limits.concurrency.x``; the error is about
    ``limits.concurrency`` (a table where a number belongs), and it came from that flag.
    """
    if dotted in origins:
        return origins[dotted]
    prefix = dotted + "."
    child = next((origin for key, origin in origins.items() if key.startswith(prefix)), None)
    if child is not None:
        return child
    parent = dotted.rpartition(".")[0]
    while parent:
        if parent in origins:
            return origins[parent]
        parent = parent.rpartition(".")[0]
    return None


def origin_for(origins: Mapping[str, str], dotted: str, section: str,
               options: Mapping[str, Any] | None = None) -> str:
    """Where ``dotted`` (a key of ``section``, whose raw ``options`` are given) came from, for an
    error message: a layer, code (a key the options hold but no layer gave), or the default."""
    found = recorded_origin(origins, dotted)
    if found is not None:
        return found
    # a key given in the options that no layer recorded was passed in code (the Python API)
    key = dotted[len(section) + 1:].split(".")[0] if dotted.startswith(section + ".") else ""
    if options is not None and key in options:
        return CODE_ORIGIN
    return "default"


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


def _present(path: Path, display: str) -> bool:
    """Whether the config file at a default location is there to read.

    Absent is fine (the layer is empty); something else by that name (a directory, a socket)
    is an error: ignoring it would silently run with another configuration than the user wrote.
    """
    if not path.exists():
        return False
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file"
        raise ConfigError(f"{display}: is {what}, not a config file ({path})")
    return True


def _register_literal_secrets(layers: Layers, environ: Mapping[str, str] | None = None) -> None:
    """Register every literal value under a secret-looking key as soon as it is read.

    A plugin's settings turn ``api_key = "…"`` into a :class:`Secret` (which registers it) only
    when that plugin is built; until then an error text holding the key (a plugin failing to
    load, a provider echoing it) would not be redacted. The same goes for the environment's
    keys (``OPENAI_API_KEY``, ``GITHUB_TOKEN``): litellm and plugins read them without ponder,
    and one that is not key-shaped would otherwise reach ``ponder plugins`` in clear.
    """
    from ponder.support.secrets import is_secret_key, is_secret_reference, register_secret

    for path, value in layers.values.items():
        if isinstance(value, str) and not is_secret_reference(value) \
                and any(is_secret_key(part) for part in path):
            register_secret(str(value))
    for name, value in (environ or {}).items():
        if is_secret_key(name) and not is_secret_reference(value):
            register_secret(value)


def _flatten(data: Mapping[str, Any], prefix: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key)), value


class Layers:
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


def _env_layer(environ: Mapping[str, str],
               sections: Sequence[str]) -> Iterator[tuple[Path_, Any, str]]:
    plugin_switches = {
        "PONDER_LOAD_PLUGINS": ("plugins", "allow"),
        "PONDER_DISABLE_PLUGINS": ("plugins", "disable"),
        "PONDER_STRICT_PLUGINS": ("plugins", "strict"),
    }
    for variable, path in plugin_switches.items():
        if variable in environ:
            yield path, EnvString(environ[variable]), variable
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


def read_layers(
    path: str | os.PathLike[str] | None,
    *,
    sections: Sequence[str],
    overrides: Sequence[tuple[Path_, Any, str]] = (),
    environ: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    user_file: bool = True,
) -> tuple[Layers, list[str]]:
    """Every layer, lowest first, merged; and the files that were read.

    ``sections`` are the section names a ``PONDER_<SECTION>…`` variable may set (other
    ``PONDER_*`` variables belong to other tools); ``overrides`` are CLI-flag values as
    ``(dotted path, value, flag name)``.
    """
    layers = Layers()
    files: list[str] = []

    if user_file:
        user_path = user_config_path()
        if _present(user_path, str(user_path)):
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
        if _present(project, CONFIG_FILENAME):
            layers.add(_read_toml(project, CONFIG_FILENAME), CONFIG_FILENAME)
            files.append(CONFIG_FILENAME)

    for key_path, value, origin in _env_layer(environ, sections):
        layers.set(key_path, value, origin)
    for key_path, value, origin in overrides:
        if key_path and key_path[0] in KINDS and len(key_path) == 1:
            key_path = (key_path[0], "name")
        layers.set(tuple(key_path), value, origin)

    _register_literal_secrets(layers, environ)
    return layers, files
