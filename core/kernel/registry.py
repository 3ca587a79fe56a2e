"""A named registry per component kind, frozen once discovery is over.

The seed's usage works as written::

    strategies = Registry[Strategy]("strategies")

    @strategies.register("chunked")
    class ChunkedStrategy: ...

    strategies.freeze()
    strategy = strategies.get("chunked")
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
        if self._frozen:
            raise FrozenRegistryError(
                f"the {self.kind} registry is frozen: {entry.name!r} must be registered by a "
                f"plugin hook during discovery, not at run time"
            )
        validate(entry)
        existing = self._entries.get(entry.name)
        if existing is not None or entry.name in self._conflicts:
            claimants = self._conflicts.setdefault(
                entry.name, [existing.provider] if existing else []
            )
            claimants.append(entry.provider)
            self._entries.pop(entry.name, None)
            raise self._duplicate_error(entry.name)
        self._entries[entry.name] = entry

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
        try:
            return self._entries[name]
        except KeyError:
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
        return sorted(self._entries)

    def conflicts(self) -> dict[str, list[Provider]]:
        return {name: list(providers) for name, providers in self._conflicts.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Registration[T]]:
        return iter(self._entries[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        state = "frozen" if self._frozen else "open"
        return f"Registry({self.kind!r}, {len(self)} names, {state})"
