"""A named registry per component kind, frozen once discovery is over.

The seed's usage works as written::

    strategies = Registry[Strategy]("strategies")

    @strategies.register("chunked")
    class ChunkedStrategy: ...

    strategies.freeze()
    strategy = strategies.get("chunked")

A name can also be *declared* before its factory exists (:meth:`Registry.declare`): the loader
does this for built-in plugins, whose names are known without importing them, so a run imports
only the plugins it uses. The first lookup of a declared name imports its plugin, which then
*settles* its names (the real registrations take the declared ones' place). Declared names count
as registered for everything else: listing, ``in``, conflicts, and freezing.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

import attrs

from ponder.errors import PonderError

T = TypeVar("T")


class RegistryError(PonderError):
    """Base for registry misuse that a user or plugin author can act on."""


class FrozenRegistryError(RegistryError):
    """Raised when something registers after discovery is over."""


class DuplicateNameError(RegistryError):
    """Two providers registered the same name in one kind."""


class UnknownNameError(RegistryError, KeyError):
    """A name that no provider registered; the message lists what exists."""

    def __init__(self, message: str, *, kind: str, name: str, available: list[str],
                 suggestion: str | None) -> None:
        super().__init__(message)
        self.kind, self.name, self.available, self.suggestion = kind, name, available, suggestion

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


def did_you_mean(name: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """The closest candidate to ``name``, or None when nothing is close enough."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


@attrs.frozen
class Provider:
    """Where a registration came from: shown by ``ponder plugins`` and in error messages."""

    plugin: str
    distribution: str = "(local)"
    version: str = ""

    def describe(self) -> str:
        version = f" {self.version}" if self.version else ""
        return f"plugin {self.plugin!r} from {self.distribution}{version}"


UNKNOWN_PROVIDER = Provider(plugin="(direct)", distribution="(direct)")


def validate(entry: Registration[Any]) -> None:
    """Check what can be checked about a registration before it is committed."""
    if not isinstance(entry.name, str) or not entry.name.strip():
        raise RegistryError(f"{entry.kind} names must be non-empty strings, got {entry.name!r}")
    if not callable(entry.factory):
        raise RegistryError(f"{entry.kind} {entry.name!r}: factory must be callable, "
                            f"got {entry.factory!r}")
    if entry.settings is not None and not attrs.has(entry.settings):
        raise RegistryError(
            f"{entry.kind} {entry.name!r}: settings must be an attrs class, got {entry.settings!r}"
        )


@attrs.frozen
class Registration(Generic[T]):
    """One registered name: the factory, its settings class and who provided it."""

    kind: str
    name: str
    factory: T
    settings: type | None = None
    provider: Provider = UNKNOWN_PROVIDER


class Registry(Generic[T]):
    """Names to factories for one kind. ``freeze()`` ends registration for good."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Registration[T]] = {}
        # name -> (provider, import its plugin): declared names whose plugin is not loaded yet
        self._pending: dict[str, tuple[Provider, Callable[[], None]]] = {}
        # declared names whose plugin failed to load or did not register them: name -> why
        self._unavailable: dict[str, str] = {}
        # name -> every provider that claimed it, for names claimed more than once
        self._conflicts: dict[str, list[Provider]] = {}
        self._frozen = False

    # --- registration -------------------------------------------------------------------
    @overload
    def register(self, name: str, factory: None = None, *, settings: type | None = None,
                 provider: Provider | None = None) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, factory: T, *, settings: type | None = None,
                 provider: Provider | None = None) -> T: ...

    def register(self, name: str, factory: Any = None, *, settings: type | None = None,
                 provider: Provider | None = None) -> Any:
        """Register ``factory`` under ``name``; without a factory, return a decorator."""
        if factory is None:
            def decorator(obj: T) -> T:
                self.register(name, obj, settings=settings, provider=provider)
                return obj
            return decorator
        self.add(Registration(self.kind, name, factory, settings, provider or UNKNOWN_PROVIDER))
        return factory

    def add(self, entry: Registration[T]) -> None:
        self._check_open(entry.name)
        validate(entry)
        self._claim(entry.name, entry.provider)
        self._entries[entry.name] = entry

    def declare(self, name: str, provider: Provider, load: Callable[[], None]) -> None:
        """Register ``name`` for a plugin not imported yet; ``load()`` imports it on first use.

        ``load`` must end by calling :meth:`settle` for each name the plugin registers, and
        :meth:`withdraw` for a declared name it did not (or when it failed to load).
        """
        self._check_open(name)
        if not isinstance(name, str) or not name.strip():
            raise RegistryError(f"{self.kind} names must be non-empty strings, got {name!r}")
        self._claim(name, provider)
        self._pending[name] = (provider, load)

    def settle(self, entry: Registration[T]) -> None:
        """A declared plugin's real registration, once it is imported (also after freezing:
        its discovery was only deferred). A name it had not declared is added the same way."""
        validate(entry)
        pending = self._pending.get(entry.name)
        if pending is not None and pending[0] == entry.provider:
            del self._pending[entry.name]
        else:
            self._claim(entry.name, entry.provider)
        self._entries[entry.name] = entry

    def withdraw(self, name: str, provider: Provider, reason: str) -> None:
        """A declared name its plugin did not provide after all: lookups now say ``reason``."""
        pending = self._pending.get(name)
        if pending is not None and pending[0] == provider:
            del self._pending[name]
            self._unavailable[name] = reason

    def _check_open(self, name: str) -> None:
        if self._frozen:
            raise FrozenRegistryError(
                f"the {self.kind} registry is frozen: {name!r} must be registered by a "
                f"plugin hook during discovery, not at run time"
            )

    def _claim(self, name: str, provider: Provider) -> None:
        """Raise DuplicateNameError (recording every claimant) when ``name`` is taken."""
        existing = self._entries.get(name)
        holder = existing.provider if existing is not None else None
        if holder is None and name in self._pending:
            holder = self._pending[name][0]
        if holder is not None or name in self._conflicts:
            claimants = self._conflicts.setdefault(name, [holder] if holder else [])
            claimants.append(provider)
            self._entries.pop(name, None)
            self._pending.pop(name, None)
            raise self._duplicate_error(name)

    def _duplicate_error(self, name: str) -> DuplicateNameError:
        who = " and ".join(p.describe() for p in self._conflicts[name])
        return DuplicateNameError(
            f"{self.kind} {name!r} is provided by both {who}; disable one of them "
            f"(PONDER_DISABLE_PLUGINS) so the choice is not left to load order"
        )

    def freeze(self) -> None:
        self._frozen = True

    @property
    def frozen(self) -> bool:
        return self._frozen

    # --- lookup ---------------------------------------------------------------------------
    def entry(self, name: str) -> Registration[T]:
        """The full registration for ``name`` (factory, settings class, provider)."""
        if name in self._conflicts:
            raise self._duplicate_error(name)
        pending = self._pending.get(name)
        if pending is not None:
            pending[1]()  # import the plugin that declared it: it settles or withdraws the name
            if name in self._conflicts:
                raise self._duplicate_error(name)
        try:
            return self._entries[name]
        except KeyError:
            if name in self._unavailable:
                raise RegistryError(f"{self.kind} {name!r} is unavailable: "
                                    f"{self._unavailable[name]}") from None
            raise self._unknown(name) from None

    def get(self, name: str) -> T:
        """The factory registered under ``name``."""
        return self.entry(name).factory

    def _unknown(self, name: str) -> UnknownNameError:
        available = self.names()
        suggestion = did_you_mean(name, available)
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        listing = ", ".join(available) if available else "none registered"
        return UnknownNameError(
            f"unknown {self.kind} {name!r}{hint} (available: {listing})",
            kind=self.kind, name=name, available=available, suggestion=suggestion,
        )

    def names(self) -> list[str]:
        """Every name registered or declared (declared ones are not imported by listing)."""
        return sorted({*self._entries, *self._pending})

    def loaded(self, name: str) -> bool:
        """Whether ``name``'s factory is imported already (False for a declared name)."""
        return name in self._entries

    def conflicts(self) -> dict[str, list[Provider]]:
        return {name: list(providers) for name, providers in self._conflicts.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._pending

    def __iter__(self) -> Iterator[Registration[T]]:
        """Every registration, by name; iterating imports the plugins of declared names."""
        for name in self.names():
            if name in self._pending:
                self._pending[name][1]()
            if name in self._entries:
                yield self._entries[name]

    def __len__(self) -> int:
        return len(self._entries.keys() | self._pending.keys())

    def __repr__(self) -> str:
        state = "frozen" if self._frozen else "open"
        return f"Registry({self.kind!r}, {len(self)} names, {state})"
