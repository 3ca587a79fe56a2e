import attrs
import pytest

from ponder import Registry
from ponder.kernel.registry import (
    DuplicateNameError,
    FrozenRegistryError,
    Provider,
    RegistryError,
    UnknownNameError,
)


def test_seed_usage_decorator_freeze_get():
    strategies = Registry[type]("strategies")

    @strategies.register("chunked")
    class ChunkedStrategy:
        pass

    strategies.freeze()
    assert strategies.get("chunked") is ChunkedStrategy
    assert strategies.names() == ["chunked"]
    assert "chunked" in strategies and len(strategies) == 1


def test_register_after_freeze_raises():
    registry = Registry("strategy")
    registry.register("a", object)
    registry.freeze()
    with pytest.raises(FrozenRegistryError, match="frozen"):
        registry.register("b", object)
    assert registry.names() == ["a"]


def test_unknown_name_lists_available_and_suggests():
    registry = Registry("strategy")
    for name in ("direct", "map_reduce", "iterative"):
        registry.register(name, object)
    with pytest.raises(UnknownNameError) as caught:
        registry.get("map_reduc")
    message = str(caught.value)
    assert message == ("unknown strategy 'map_reduc'; did you mean 'map_reduce'? "
                       "(available: direct, iterative, map_reduce)")
    assert caught.value.suggestion == "map_reduce"


def test_unknown_name_without_close_match_has_no_suggestion():
    registry = Registry("adapter")
    registry.register("gemini", object)
    with pytest.raises(UnknownNameError, match=r"^unknown adapter 'zzz' \(available: gemini\)$"):
        registry.get("zzz")


def test_duplicate_name_from_two_distributions_names_both():
    registry = Registry("adapter")
    first = Provider("gateway", "acme-one", "1.0")
    second = Provider("gateway2", "acme-two", "2.0")
    registry.register("gateway", object, provider=first)
    with pytest.raises(DuplicateNameError) as caught:
        registry.register("gateway", object, provider=second)
    assert "acme-one 1.0" in str(caught.value) and "acme-two 2.0" in str(caught.value)
    # the name is now ambiguous: using it repeats the error instead of picking by load order
    with pytest.raises(DuplicateNameError, match="acme-one"):
        registry.get("gateway")


def test_settings_must_be_attrs_and_factory_callable():
    registry = Registry("strategy")
    with pytest.raises(RegistryError, match="attrs class"):
        registry.register("x", object, settings=dict)
    with pytest.raises(RegistryError, match="callable"):
        registry.register("y", 42)

    @attrs.define
    class Settings:
        size: int = 1

    registry.register("z", object, settings=Settings)
    assert registry.entry("z").settings is Settings
