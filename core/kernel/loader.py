"""Plugin discovery: entry points and in-house modules into frozen registries.

Lifecycle of one plugin: *selected* (allow/deny lists, before any import) → *imported* (timed,
isolated) → *checked* (plugin API version, hook names) → *registered* (its hooks are called one
plugin at a time, so a failure is attributed to the plugin that raised) → *committed*. A plugin
that fails any step is skipped with one warning and everything else keeps working; in strict
mode the first failure is an error instead. When every plugin is done, the registries freeze.

**Built-ins load on first use.** A run needs five or six of the ~37 built-in plugins; importing
all of them (and registering their hooks with pluggy) was ~40 ms of every start. The names each
built-in provides are listed in :mod:`ponder.kernel.builtin_plugins` (generated from the plugins
themselves and checked by a test), so a built-in whose entry point is listed there is *declared*
(:meth:`Registry.declare`) instead of imported: its module is imported, checked and registered
exactly as above when one of its names is first looked up. Everything that reports on plugins
(``PluginSet.plugins``, ``failed()``, iterating a registry) loads what is left first, so
``ponder plugins`` and ``config check`` show every plugin's real status. Third-party and
in-house plugins, built-ins missing from the list, and every plugin in strict mode are imported
at discovery, as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pluggy

from ponder.errors import PonderError
from ponder.kernel import hookspecs
from ponder.kernel.registry import DuplicateNameError, Provider, Registration, Registry, validate

log = logging.getLogger("ponder.plugins")

ENTRY_POINT_GROUP = "ponder"
BUILTIN_DISTRIBUTION = "ponder"


class PluginLoadError(PonderError):
    """A plugin could not be loaded and strict mode is on."""


@attrs.define
class PluginInfo:
    """What ``ponder plugins`` shows about one plugin."""

    name: str
    module: str
    distribution: str
    version: str
    builtin: bool = False
    local: bool = False
    status: str = "ok"  # ok | failed | disabled
    error: str | None = None
    provides: dict[str, list[str]] = attrs.Factory(dict)
    commands: list[str] = attrs.Factory(list)
    import_ms: float = 0.0

    @property
    def source(self) -> str:
        return "local" if self.local else ("built-in" if self.builtin else "installed")

    def describe(self) -> str:
        if self.distribution.startswith("("):  # "(local)", "(in-process)": already in brackets
            return f"plugin {self.name!r} {self.distribution}"
        version = f" {self.version}" if self.version else ""
        return f"plugin {self.name!r} ({self.distribution}{version})"

    def how_to_disable(self) -> str:
        """What the user changes to stop loading this plugin."""
        if self.local and self.distribution == "(local)":
            # named by --plugin or [plugins] load: PONDER_DISABLE_PLUGINS would be a detour
            return f"Stop loading it: remove {self.module!r} from --plugin / [plugins] load"
        return f"Disable it with PONDER_DISABLE_PLUGINS={self.name}"

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["source"] = self.source
        data["import_ms"] = round(self.import_ms, 2)
        return data


@attrs.define
class _Candidate:
    """A plugin found but not yet imported."""

    info: PluginInfo
    load: Callable[[], Any]
    aliases: tuple[str, ...] = ()  # other names the allow/deny lists may use


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _matches(candidate: _Candidate, names: Iterable[str]) -> bool:
    wanted = {_normalize(n) for n in names}
    keys = {candidate.info.name, candidate.info.module, *candidate.aliases}
    return any(_normalize(key) in wanted for key in keys)


def _entry_point_candidates(group: str) -> list[_Candidate]:
    seen: set[tuple[str, str]] = set()
    candidates = []
    # ``dist.metadata`` parses the METADATA file (an e-mail parser) on every access, and
    # ``dist.version`` parses it again: twice per entry point, 74 parses of one file for the
    # 37 built-ins (~45 ms of start-up). One parse per distribution instead.
    described: dict[str, tuple[str, str]] = {}
    for ep in metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        if dist is None:
            dist_name, version = "(unknown)", ""
        else:
            where = str(getattr(dist, "_path", id(dist)))
            if where not in described:
                meta = dist.metadata
                described[where] = (meta["Name"], meta["Version"] or "")
            dist_name, version = described[where]
        key = (_normalize(dist_name), ep.name)
        if key in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add(key)
        info = PluginInfo(
            name=ep.name, module=ep.value.split(":")[0], distribution=dist_name,
            version=version, builtin=_normalize(dist_name) == BUILTIN_DISTRIBUTION,
        )
        candidates.append(_Candidate(info, ep.load, aliases=(dist_name,)))
    return sorted(candidates, key=lambda c: (not c.info.builtin, c.info.name))


def _import_local(spec: str) -> ModuleType:
    """Import an in-house plugin given as a dotted module path or a path to a ``.py`` file."""
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no such plugin file: {spec!r}")
        module_name = f"ponder_local_{_normalize(path.stem).replace('-', '_')}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot import plugin file {spec!r}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


def _local_candidate(spec: str) -> _Candidate:
    info = PluginInfo(name=spec, module=spec, distribution="(local)", version="", local=True)
    return _Candidate(info, lambda: _import_local(spec))


def _object_candidate(obj: Any, name: str | None = None) -> _Candidate:
    plugin_name = name or getattr(obj, "__name__", None) or type(obj).__name__
    info = PluginInfo(name=plugin_name, module=plugin_name, distribution="(in-process)",
                      version="", local=True)
    return _Candidate(info, lambda: obj)


class PluginSet:
    """The outcome of discovery: one frozen registry per kind and a report per plugin."""

    def __init__(self, plugins: list[PluginInfo], registries: dict[str, Registry[Any]],
                 manager: pluggy.PluginManager, *, strict: bool,
                 deferred: dict[str, _Candidate] | None = None) -> None:
        self._plugins = plugins
        self.registries = registries
        self.manager = manager
        self.strict = strict
        self._commands_added = False
        #: built-ins declared but not imported yet: plugin name -> candidate
        self._deferred: dict[str, _Candidate] = dict(deferred or {})
        self._lock = threading.RLock()  # a name may first be looked up from two threads

    def __getstate__(self) -> dict[str, Any]:
        """A copy for another process (an executor's worker): every built-in imported first, so
        the copy needs no lazy loading, and without the lock (locks do not pickle)."""
        self.load_all()
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    @property
    def plugins(self) -> list[PluginInfo]:
        """Every plugin found, each loaded (a report must show real statuses and errors)."""
        self.load_all()
        return self._plugins

    def load_all(self) -> None:
        """Import every built-in not imported yet (what reports and conformance need)."""
        for name in list(self._deferred):
            self._load_deferred(name)

    def deferred(self) -> list[str]:
        """Names of the plugins declared but not imported yet (for tests and ``-vv``)."""
        return sorted(self._deferred)

    def _load_deferred(self, name: str) -> None:
        with self._lock:
            candidate = self._deferred.pop(name, None)
            if candidate is None:  # loaded already (by another thread, or a name before)
                return
            info = candidate.info
            declared = {kind: list(names) for kind, names in info.provides.items()}
            info.provides = {}
            provider = _provider(info)
            _load_one(candidate, self.manager, self.registries, strict=False,
                      commit=lambda entry: self.registries[entry.kind].settle(entry))
            if info.status == "failed":
                reason = f"{info.describe()} failed to load: {info.error}"
            else:
                reason = f"{info.describe()} no longer provides it (stale built-in list)"
            for kind, names in declared.items():
                for missing in set(names) - set(info.provides.get(kind, ())):
                    if info.status != "failed":
                        log.warning("%s %r: %s", kind, missing, reason)
                    self.registries[kind].withdraw(missing, provider, reason)

    def registry(self, kind: str) -> Registry[Any]:
        try:
            return self.registries[kind]
        except KeyError:
            raise PonderError(
                f"unknown component kind {kind!r} (kinds: {', '.join(hookspecs.ALL_KIND_HOOKS)})"
            ) from None

    def get(self, kind: str, name: str) -> Registration[Any]:
        return self.registry(kind).entry(name)

    @property
    def adapters(self) -> Registry[Any]:
        return self.registries["adapter"]

    @property
    def strategies(self) -> Registry[Any]:
        return self.registries["strategy"]

    @property
    def retrievers(self) -> Registry[Any]:
        return self.registries["retriever"]

    @property
    def predictors(self) -> Registry[Any]:
        return self.registries["predictor"]

    @property
    def storage(self) -> Registry[Any]:
        return self.registries["storage"]

    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.status == "failed"]  # .plugins loads the rest

    def plugin(self, name: str) -> PluginInfo:
        """The report of plugin ``name`` (loaded first, if it was only declared)."""
        self._load_deferred(name)
        for info in self._plugins:
            if info.name == name:
                return info
        raise KeyError(name)

    def add_commands(self, cli: Any) -> None:
        """Let every loaded plugin add CLI subcommands (isolated like the register hooks)."""
        if self._commands_added:
            return
        self._commands_added = True
        hook = self.manager.hook.ponder_register_commands
        by_plugin = {id(impl.plugin): impl for impl in hook.get_hookimpls()}
        # the imported ones only: a declared built-in is listed as adding no commands
        for info in self._plugins:
            module = self.manager.get_plugin(info.name)
            impl = by_plugin.get(id(module)) if module is not None else None
            if impl is None:
                continue
            before = set(getattr(cli, "commands", {}))
            try:
                impl.function(cli=cli)
            except Exception as exc:  # a plugin's bug must not take the CLI down
                _fail(info, f"its ponder_register_commands hook raised {_describe(exc)}",
                      strict=self.strict)
                continue
            info.commands = sorted(set(getattr(cli, "commands", {})) - before)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _fail(info: PluginInfo, reason: str, *, strict: bool) -> None:
    from ponder.support.secrets import redact

    # A plugin's exception text is its own: it may hold a key (a licence check, a URL with a
    # token). It is redacted here, once, so every place that shows it (the log line, the
    # `ponder plugins` table and --json, `config check`) shows the masked text.
    reason = redact(reason)
    info.status = "failed"
    info.error = reason
    if strict:  # nothing is skipped: the run stops here
        raise PluginLoadError(f"{info.describe()} failed to load: {reason} (strict mode: "
                              "PONDER_STRICT_PLUGINS=1 or [plugins] strict = true)")
    log.warning("%s failed to load and was skipped: %s. %s", info.describe(), reason,
                info.how_to_disable())


def load_plugins(
    *,
    entry_points: bool = True,
    modules: Sequence[str] = (),
    objects: Sequence[Any] = (),
    allow: Sequence[str] | None = None,
    disable: Sequence[str] = (),
    strict: bool = False,
    group: str = ENTRY_POINT_GROUP,
    lazy: bool = True,
) -> PluginSet:
    """Discover, import and register plugins, then freeze the registries.

    ``allow``: None loads every installed plugin; a list loads the built-ins plus the named
    third-party plugins (so an empty list means built-ins only). ``disable`` names plugins
    (entry-point, distribution or module names) that are never imported, built-ins included.
    ``modules`` are in-house plugin modules (dotted paths or ``.py`` files); ``objects`` are
    in-process plugin objects (what ``ponder.testing`` uses to register fakes). ``lazy``: the
    built-ins listed in :mod:`ponder.kernel.builtin_plugins` are imported on first use (see the
    module docstring); False imports every plugin now.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    registries: dict[str, Registry[Any]] = {
        kind: Registry(kind) for kind in hookspecs.ALL_KIND_HOOKS
    }

    candidates = _entry_point_candidates(group) if entry_points else []
    candidates += [_local_candidate(spec) for spec in modules]
    candidates += [_object_candidate(obj) for obj in objects]

    plugins: list[PluginInfo] = []
    deferred: dict[str, _Candidate] = {}
    plugin_set: PluginSet | None = None  # the declared names' loaders need it; built below
    for candidate in candidates:
        info = candidate.info
        plugins.append(info)
        if _matches(candidate, disable):
            info.status = "disabled"
            continue
        if allow is not None and not (info.builtin or info.local or _matches(candidate, allow)):
            info.status = "disabled"
            info.error = "not in PONDER_LOAD_PLUGINS"
            continue
        provides = None if strict or not lazy else _declared_provides(candidate)
        if provides is None:
            _load_one(candidate, manager, registries, strict=strict)
            continue
        deferred[info.name] = candidate
        provider = _provider(info)

        def load(name: str = info.name) -> None:
            assert plugin_set is not None
            plugin_set._load_deferred(name)

        for kind, names in provides.items():
            for name in names:
                try:
                    registries[kind].declare(name, provider, load)
                except DuplicateNameError as exc:
                    log.warning("%s", exc)
                    continue
                info.provides.setdefault(kind, []).append(name)

    for registry in registries.values():
        registry.freeze()
    plugin_set = PluginSet(plugins, registries, manager, strict=strict, deferred=deferred)
    return plugin_set


def _declared_provides(candidate: _Candidate) -> dict[str, tuple[str, ...]] | None:
    """What a built-in entry point provides, from the generated list; None: import it now."""
    info = candidate.info
    if not info.builtin or info.local:
        return None
    from ponder.kernel.builtin_plugins import PROVIDES

    listed = PROVIDES.get(info.name)
    if listed is None or listed[0] != info.module:
        return None
    if any(kind not in hookspecs.ALL_KIND_HOOKS for kind in listed[1]):
        return None
    return listed[1]


def _provider(info: PluginInfo) -> Provider:
    return Provider(plugin=info.name, distribution=info.distribution, version=info.version)


def _load_one(candidate: _Candidate, manager: pluggy.PluginManager,
              registries: dict[str, Registry[Any]], *, strict: bool,
              commit: Callable[[Registration[Any]], None] | None = None) -> None:
    info = candidate.info
    started = time.perf_counter()
    try:
        plugin = candidate.load()
    except Exception as exc:
        info.import_ms = (time.perf_counter() - started) * 1000
        _fail(info, f"import raised {_describe(exc)}", strict=strict)
        return
    info.import_ms = (time.perf_counter() - started) * 1000

    required = getattr(plugin, "PONDER_PLUGIN_API", hookspecs.PLUGIN_API_VERSION)
    if required != hookspecs.PLUGIN_API_VERSION:
        _fail(info, f"it requires plugin API {required}, but this ponder provides plugin API "
                    f"{hookspecs.PLUGIN_API_VERSION}", strict=strict)
        return

    try:
        manager.register(plugin, name=info.name)
    except Exception as exc:  # pluggy validates hook names and signatures here
        _fail(info, f"invalid hook implementation: {_describe(exc)}", strict=strict)
        return
    unknown = [
        impl.function.__name__
        for caller in manager.get_hookcallers(plugin) or []
        if caller.spec is None
        for impl in caller.get_hookimpls() if impl.plugin is plugin
    ]
    if unknown:
        manager.unregister(plugin)
        _fail(info, f"unknown hook(s) {', '.join(sorted(unknown))} (known: "
                    f"{', '.join(sorted(hookspecs.ALL_KIND_HOOKS.values()))}, "
                    f"ponder_register_commands)", strict=strict)
        return

    provider = _provider(info)
    staged: list[Registration[Any]] = []
    for kind, hook_name in hookspecs.ALL_KIND_HOOKS.items():
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            if impl.plugin is not plugin:
                continue

            def register(name: str, factory: Any, *, settings: type | None = None,
                         _kind: str = kind) -> None:
                entry = Registration(_kind, name, factory, settings, provider)
                validate(entry)  # a bad registration fails the hook, so nothing is committed
                staged.append(entry)

            try:
                impl.function(register=register)
            except Exception as exc:
                manager.unregister(plugin)
                _fail(info, f"its {hook_name} hook raised {_describe(exc)}", strict=strict)
                return

    # All hooks succeeded: commit. A plugin contributes all of its names or none of them,
    # except names another plugin already holds, which become conflicts reported on use.
    commit = commit or (lambda entry: registries[entry.kind].add(entry))
    for entry in staged:
        try:
            commit(entry)
        except DuplicateNameError as exc:
            if strict:
                raise PluginLoadError(f"{exc} (strict mode: PONDER_STRICT_PLUGINS=1)") from None
            log.warning("%s", exc)
            continue
        info.provides.setdefault(entry.kind, []).append(entry.name)
