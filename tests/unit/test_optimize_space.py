"""The variable space: the expression language, parsing and checking against plugin settings,
sampling, the grid, validation and applying an assignment to a config."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ponder.errors import ConfigError
from ponder.kernel.config import Component, Config
from ponder.kernel.loader import load_plugins
from ponder.optimize import expr
from ponder.optimize.checks import load_space
from ponder.optimize.space import SpaceError
from ponder.testing import run_cli


@pytest.fixture(scope="module")
def plugins():
    return load_plugins(strict=True)


def space_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "space.toml"
    path.write_text("[optimize.space]\n" + body)
    return path


BASE = Config(strategy=Component("map_reduce"), adapter=Component("openai_compatible"))

FULL = """
"strategy.name"           = { choice = ["map_reduce", "hierarchical", "retrieve_then_read"] }
"strategy.fan_in"         = { int = [2, 16], log = true, when = "strategy.name == 'map_reduce'" }
"strategy.top_k"          = { int = [4, 40], step = 4, when = "strategy.name != 'map_reduce'" }
"strategy.chunk_tokens"   = { int = [500, 4000], step = 500, when = "strategy.fan_in > 0" }
"strategy.overlap_tokens" = { choice = [0, 200, 400], when = "strategy.name == 'map_reduce'" }
"adapter.temperature"     = { float = [0.0, 1.0], step = 0.1 }
"predictor"               = { module = ["predict", "chain_of_thought"] }
constraints = ["strategy.overlap_tokens <= strategy.chunk_tokens / 2"]
"""


# --- the expression language ---------------------------------------------------------------------
@pytest.mark.parametrize(("text", "env", "value"), [
    ("strategy.name == 'map_reduce'", {"strategy.name": "map_reduce"}, True),
    ("a <= b / 2", {"a": 3, "b": 6}, True),
    ("a <= b / 2", {"a": 4, "b": 6}, False),
    ("not (x > 1 and y < 2) or z == \"q\"", {"x": 2, "y": 1, "z": "q"}, True),
    ("x in [1, 2, 3]", {"x": 2}, True),
    ("x not in [1, 2]", {"x": 2}, False),
    ("-x + 3 * 2 % 4 == 0", {"x": 2}, True),
    ("missing >= 4", {}, False),  # an inactive variable is none, and none >= 4 is false
    ("missing == none", {}, True),
    ("1.5e1 > 10 and true", {}, True),
])
def test_expressions(text: str, env: dict, value: bool) -> None:
    assert expr.parse(text).holds(env) is value


@pytest.mark.parametrize(("text", "message"), [
    ("a ==", "expected a value"),
    ("a == 1)", "unexpected token"),
    ("__import__('os')", "unexpected token"),
    ("a ; b", "unexpected character ';'"),
    ("(a == 1", "expected ')'"),
])
def test_bad_expressions_are_errors_with_a_column(text: str, message: str) -> None:
    with pytest.raises(expr.ExprError, match="column"):
        expr.parse(text)
    with pytest.raises(expr.ExprError, match=message.replace("(", r"\(").replace(")", r"\)")):
        expr.parse(text)


def test_names_read_by_an_expression() -> None:
    assert expr.parse("a.b <= c / 2 or d in [e, 1]").names == {"a.b", "c", "d", "e"}


# --- reading and checking -----------------------------------------------------------------
def test_space_reads_orders_and_counts(tmp_path: Path, plugins) -> None:
    space = load_space(space_file(tmp_path, FULL), plugins=plugins, base=BASE)
    keys = space.keys
    assert keys.index("strategy.name") < keys.index("strategy.fan_in")
    assert {v.key for v in space.conditional} == {"strategy.fan_in", "strategy.top_k",
                                                 "strategy.chunk_tokens",
                                                 "strategy.overlap_tokens"}
    # top_k exists on retrieve_then_read and map_reduce, not hierarchical: implicit condition
    assert space["strategy.top_k"].requires[1] == {"map_reduce", "retrieve_then_read"}
    grid = list(space.grid())
    count, finite = space.size()
    assert finite and count == len(grid)
    # map_reduce: fan_in grid x 8 chunk sizes x 3 overlaps (minus the constraint), others apart
    for point in grid:
        space.validate(point)
        if point["strategy.name"] != "map_reduce":
            assert "strategy.fan_in" not in point
    assert not any(p.get("strategy.overlap_tokens", 0) > p.get("strategy.chunk_tokens", 1e9) / 2
                   for p in grid)


def test_sample_is_seeded_and_valid(tmp_path: Path, plugins) -> None:
    space = load_space(space_file(tmp_path, FULL), plugins=plugins, base=BASE)
    first = [space.sample(random.Random(7)) for _ in range(1)]
    again = [space.sample(random.Random(7)) for _ in range(1)]
    assert first == again
    rng = random.Random(1)
    for _ in range(200):
        point = space.sample(rng)
        space.validate(point)
        assert point["adapter.temperature"] in [round(i / 10, 10) for i in range(11)]
        if "strategy.fan_in" in point:
            assert 2 <= point["strategy.fan_in"] <= 16


@pytest.mark.parametrize(("body", "message"), [
    ('"strategy.fan_ib" = { int = [2, 8] }', "unknown key 'fan_ib'.*did you mean 'fan_in'"),
    ('"strategy.fan_in" = { int = [1, 8] }', "value 1 is outside what strategy 'map_reduce' "
                                             "accepts for 'fan_in': .*>= 2"),
    ('"strategy.fan_in" = { choice = [] }', "empty choice"),
    ('"strategy.fan_in" = { int = [9, 3] }', r"min > max: 9 > 3"),
    ('"strategy.fan_in" = { int = [2, 8], when = "strategy.nam == 1" }',
     "names unknown variable 'strategy.nam'"),
    ('"predictor" = { module = ["predict", "chain_of_thougt"] }', "chain_of_thougt"),
    ('"limits.concurency" = { int = [1, 4] }', "did you mean 'concurrency'"),
    ('"strateg.fan_in" = { int = [2, 8] }', "unknown section 'strateg'.*did you mean 'strategy'"),
    ('"strategy.fan_in" = { int = [2, 8], stepp = 2 }', "unknown option 'stepp'.*'step'"),
    ('"strategy.fan_in" = { int = [2.5, 8] }', "expected \\[min, max\\] of integers"),
    ('"adapter.temperature" = { float = [0.0, 1.0], log = true }', "log scale needs min > 0"),
    ('"strategy.fan_in" = { int = [2, 8] }\nconstraints = ["strategy.fan_in < chunk"]',
     "unknown variable 'chunk'"),
])
def test_bad_spaces_name_the_file_and_key(tmp_path: Path, plugins, body: str,
                                          message: str) -> None:
    path = space_file(tmp_path, body)
    with pytest.raises(SpaceError, match=message) as info:
        load_space(path, plugins=plugins, base=BASE)
    assert str(info.value).startswith(f"{path}: optimize.space.")


def test_a_missing_table_and_bad_toml(tmp_path: Path, plugins) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[optimize]\ntrials = 3\n")
    with pytest.raises(SpaceError, match=r"no \[optimize.space\] table"):
        load_space(path, plugins=plugins)
    path.write_text("[optimize.space\n")
    with pytest.raises(SpaceError, match="not valid TOML"):
        load_space(path, plugins=plugins)


def test_validate_lists_every_problem(tmp_path: Path, plugins) -> None:
    space = load_space(space_file(tmp_path, FULL), plugins=plugins, base=BASE)
    with pytest.raises(SpaceError) as info:
        space.validate({"strategy.name": "hierarchical", "strategy.fan_in": 4,
                        "adapter.temperature": 0.35, "predictor": "predict", "tempreature": 1})
    text = str(info.value)
    assert "'strategy.fan_in' is set but inactive" in text
    assert "'adapter.temperature' = 0.35 is outside its domain" in text
    assert "'tempreature' is not a variable" in text


def test_to_config_applies_with_origins(tmp_path: Path, plugins) -> None:
    base = Config(strategy=Component("hierarchical", {"fan_in": 3}),
                  adapter=Component("openai_compatible", {"base_url": "http://x"}))
    space = load_space(space_file(tmp_path, FULL), plugins=plugins, base=base)
    point = {"strategy.name": "map_reduce", "strategy.fan_in": 4, "strategy.chunk_tokens": 1000,
             "strategy.overlap_tokens": 200, "adapter.temperature": 0.2,
             "predictor": "chain_of_thought"}
    config = space.to_config(point, trial=7)
    assert config.strategy.name == "map_reduce"
    # choosing another strategy drops the old one's settings, like a --set would
    assert config.strategy.options == {"fan_in": 4, "chunk_tokens": 1000, "overlap_tokens": 200}
    assert config.adapter.options == {"base_url": "http://x", "temperature": 0.2}
    assert config.predictor.name == "chain_of_thought"
    assert config.origin("strategy.fan_in") == "optimize trial 7"
    assert base.strategy.name == "hierarchical"  # the base is untouched


def test_composite_presets(tmp_path: Path, plugins) -> None:
    body = ('preset = { composite = { fast = { "strategy.fan_in" = 16, '
            '"limits.concurrency" = 8 }, careful = { "strategy.fan_in" = 2 } } }\n')
    space = load_space(space_file(tmp_path, body), plugins=plugins, base=BASE)
    assert sorted(p["preset"] for p in space.grid()) == ["careful", "fast"]
    config = space.to_config({"preset": "fast"})
    assert config.strategy.options["fan_in"] == 16 and config.limits.concurrency == 8
    bad = space_file(tmp_path, 'preset = { composite = { x = { "strategy.fan_in" = 1 } } }\n')
    with pytest.raises(SpaceError, match="value 1 is outside"):
        load_space(bad, plugins=plugins, base=BASE)


def test_space_command(tmp_path: Path) -> None:
    path = space_file(tmp_path, FULL)
    (tmp_path / "ponder.toml").write_text('[strategy]\nname = "map_reduce"\n'
                                          '[adapter]\nname = "openai_compatible"\n')
    result = run_cli(["--config", str(tmp_path / "ponder.toml"), "optimize", "space", str(path)])
    assert result.exit_code == 0, result.output
    assert "size: " in result.stdout
    assert "conditional: strategy.fan_in, strategy.top_k" in result.stdout
    bad = space_file(tmp_path, '"strategy.fan_in" = { int = [9, 3] }')
    result = run_cli(["--config", str(tmp_path / "ponder.toml"), "optimize", "space", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: optimize.space.\"strategy.fan_in\": min > max" in result.stderr


def test_config_error_base_class() -> None:
    assert issubclass(SpaceError, ConfigError)
