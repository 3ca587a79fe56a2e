"""Strict structuring of settings: raw layer values into attrs classes, with located errors.

TOML gives real types, so a string is never silently an int: the cattrs converter here accepts
a value of the declared type, or text (:class:`~ponder.kernel.layers.EnvString`) from the
environment or a flag that parses as one, and rejects unknown keys. When structuring fails, the
errors cattrs collects are walked down to each dotted key and reported with the layer that gave
it (``ponder.toml: strategy.chunk_size: expected int, got 'abc'``). It is its own module because
the kernel's sections, every plugin's settings and every subsystem's section go through it,
while it needs nothing of the config model itself.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

from ponder.errors import ConfigError
from ponder.kernel.layers import EnvString, Path_, origin_for
from ponder.kernel.registry import did_you_mean


class ConfigTypeError(ValueError):
    """A value of the wrong type; the message is the part after the dotted key."""


def describe_value(value: Any) -> str:
    return repr(str(value)) if isinstance(value, EnvString) else repr(value)


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, EnvString):
        try:
            return int(value)
        except ValueError:
            pass
    raise ConfigTypeError(f"expected int, got {describe_value(value)}")


def _structure_float(value: Any, _: type) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, EnvString):
        with contextlib.suppress(ValueError):
            number = float(value)
    if number is None:
        raise ConfigTypeError(f"expected a number, got {describe_value(value)}")
    if not math.isfinite(number):  # TOML and float() both accept nan and inf; no setting wants them
        raise ConfigTypeError(f"expected a finite number, got {describe_value(value)}")
    return number


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _structure_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, EnvString) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigTypeError(f"expected true or false, got {describe_value(value)}")


def _structure_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return str(value)
    raise ConfigTypeError(f"expected a string, got {describe_value(value)}")


def structure_str_list(value: Any, _: type) -> list[str]:
    if isinstance(value, EnvString):  # PONDER_DISABLE_PLUGINS=a,b
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [str(item) for item in value]
    raise ConfigTypeError(f"expected a list of strings, got {describe_value(value)}")


def _structure_secret(value: Any, _: type) -> Any:
    from ponder.support.secrets import Secret

    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret.parse(str(value))
    raise ConfigTypeError(f"expected a string or a $env:NAME / $file:PATH reference, "
                          f"got {describe_value(value)}")


def make_converter() -> cattrs.Converter:
    """A cattrs converter that rejects unknown keys and never coerces across types."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook_func(lambda t: t == list[str], structure_str_list)
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


def unstructure(obj: Any) -> Any:
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
        if not options and _all_defaults(cls):
            # nothing to convert: cattrs would generate (and compile) a structuring function
            # per class only to call cls() with no arguments (~3 ms each at start-up)
            settings = cls()
        else:
            settings = converter().structure(dict(options), cls)
    except (ClassValidationError, IterableValidationError) as exc:
        messages = []
        for path, inner in _walk_errors(exc, ()):
            dotted = ".".join((section, *path))
            origin = origin_for(origins, dotted, section, options)
            messages.append(f"{origin}: {dotted}: {_message_for(inner, path, cls)}")
        raise ConfigError("\n".join(messages)) from None
    except (ValueError, TypeError) as exc:  # raised by a validator in the class's __init__
        dotted = ".".join((section, *_validator_attribute(exc)))
        origin = origin_for(origins, dotted, section, options)
        raise ConfigError(f"{origin}: {dotted}: {_validator_message(exc)}") from None
    _locate_secrets(settings, section, origins, options)
    return settings


def _all_defaults(cls: type) -> bool:
    """Whether every field of attrs class ``cls`` has a default (so ``cls()`` is valid)."""
    return attrs.has(cls) and all(field.default is not attrs.NOTHING or not field.init
                                  for field in attrs.fields(cls))


def _locate_secrets(settings: Any, section: str, origins: Mapping[str, str],
                    options: Mapping[str, Any]) -> None:
    """Tell every secret of ``settings`` where it was configured.

    A ``$env:`` variable that is unset is found only when the adapter reveals the key, long
    after the config was read; the secret carries ``ponder.toml: adapter.api_key`` so that
    error still names the file and key.
    """
    from ponder.support.secrets import Secret

    if not attrs.has(type(settings)):
        return
    for field in attrs.fields(type(settings)):
        value = getattr(settings, field.name, None)
        if isinstance(value, Secret) and value.origin is None:
            dotted = f"{section}.{field.name}"
            where = f"{origin_for(origins, dotted, section, options)}: {dotted}"
            # settings classes may be frozen; the field is only being annotated, not changed
            object.__setattr__(settings, field.name, attrs.evolve(value, origin=where))


def secret_problems(settings: Iterable[Any]) -> list[str]:
    """What is wrong with the secrets of ``settings``: an unset ``$env:`` variable, a missing,
    unreadable or empty ``$file:``. Each message names where the reference was configured.

    ``ponder config check`` calls this for the components a run would use, so a reference that
    cannot be resolved is found before a run, not in the middle of one.
    """
    from ponder.support.secrets import Secret

    problems: list[str] = []
    for item in settings:
        if not attrs.has(type(item)):
            continue
        for field in attrs.fields(type(item)):
            value = getattr(item, field.name, None)
            if isinstance(value, Secret) and value.is_reference:
                try:
                    value.reveal()
                except ConfigError as exc:
                    problems.append(str(exc))
    return problems

