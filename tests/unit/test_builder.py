"""The fluent builder mirrors config one to one: equal configs, errors naming the call."""

from __future__ import annotations

import pytest

import ponder
from ponder.errors import ConfigError
from ponder.kernel.config import load_config

URL = "http://127.0.0.1:9/v1"
TOML = f'''
[adapter]
name = "openai_compatible"
base_url = "{URL}"
model = "m"
api_key = "$env:GATEWAY_KEY"

[strategy]
name = "map_reduce"
fan_in = 4

[retriever]
name = "bm25"

[limits]
max_cost = 0.5
concurrency = 8

[sessions]
ttl = 3600
'''


def builder():
    return (ponder.build()
            .adapter("openai_compatible", base_url=URL, model="m", api_key="$env:GATEWAY_KEY")
            .strategy("map_reduce", fan_in=4)
            .retriever("bm25")
            .limits(max_cost=0.50, concurrency=8)
            .sessions(ttl=3600))


def test_builder_and_toml_give_equal_configs(tmp_path):
    path = tmp_path / "ponder.toml"
    path.write_text(TOML)
    from_file = load_config(path, environ={}, user_file=False)
    # equal values, though one came from a file and one from builder calls
    assert from_file.origin("strategy.fan_in") != builder().config().origin("strategy.fan_in")
    assert builder().config() == from_file


def test_to_toml_loads_back_equal(tmp_path):
    path = tmp_path / "out.toml"
    path.write_text(builder().to_toml())
    loaded = load_config(path, environ={}, user_file=False)
    assert loaded == builder().config() and builder().matches(loaded)
    assert not builder().strategy("map_reduce", fan_in=5).matches(loaded)
    assert builder().strategy("map_reduce", fan_in=5).config() != loaded
    assert builder().config().origin("strategy.fan_in") == "builder .strategy(fan_in=…)"


def test_builder_system_checks_plugins():
    system = builder().system()
    assert system.config.strategy.options == {"fan_in": 4}
    assert system.build("strategy").settings.fan_in == 4


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ponder.build().limits(concurrency=0),
     "builder .limits(concurrency=…): limits.concurrency: must be > 0, got 0"),
    (lambda: ponder.build().limits(concurency=3),
     "builder .limits(concurency=…): limits.concurency: unknown key; did you mean "
     "'concurrency'?"),
    (lambda: ponder.build().strategy("map_reduce", fan_in="four").system(),
     "builder .strategy(fan_in=…): strategy.fan_in: expected int, got 'four'"),
    (lambda: ponder.build().strategy("mapreduce").system(),
     "builder .strategy('mapreduce'): strategy.name: unknown strategy 'mapreduce'; did you "
     "mean 'map_reduce'?"),
    (lambda: ponder.build().section("sesions", ttl=1),
     "builder .section('sesions'): unknown section"),
])
def test_builder_errors_name_the_call(make, message):
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value).startswith(message)


def test_the_same_error_from_a_file_names_the_file(tmp_path):
    path = tmp_path / "ponder.toml"
    path.write_text("[limits]\nconcurrency = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={}, user_file=False)
    assert str(info.value) == f"{path}: limits.concurrency: must be > 0, got 0"


def test_secrets_never_reach_the_origin():
    config = ponder.build().adapter("openai_compatible", base_url=URL, api_key="sk-live-123")\
        .config()
    assert "sk-live-123" not in " ".join(config.origins.values())


def test_ask_one_liner_and_builder_ask_over_http(tmp_path):
    from ponder.testing.fake_provider import FakeProvider

    (tmp_path / "app.py").write_text("MAGIC_PORT = 48213\n")
    with FakeProvider(rules=[("MAGIC_PORT", {"answer": "48213 (app.py:1)"})]) as fake:
        answer = ponder.ask("What is MAGIC_PORT?", [str(tmp_path / "app.py")],
                            adapter="openai_compatible", adapters__openai_compatible__base_url=
                            fake.base_url, strategy="direct", cache__enabled=False)
        assert answer.answer == "48213 (app.py:1)"
        built = (ponder.build().adapter("openai_compatible", base_url=fake.base_url)
                 .strategy("direct").cache(enabled=False))
        assert built.ask("What is MAGIC_PORT?", [str(tmp_path / "app.py")]).usage.calls == 1
        assert fake.stats()["requests"] == 2
    with pytest.raises(ConfigError, match=r"ponder.ask\(colour=…\): unknown setting"):
        ponder.ask("q", ["x"], colour="red")
