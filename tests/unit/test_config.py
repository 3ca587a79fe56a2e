"""Config layering, strict types and messages that name the file, the key and the expectation."""

from __future__ import annotations

import attrs
import pytest

from ponder import hookimpl
from ponder.errors import ConfigError
from ponder.kernel.config import check_components, load_config, render_toml
from ponder.support.secrets import Secret
from ponder.testing import plugin_set


@attrs.define
class ChunkySettings:
    chunk_size: int = attrs.field(default=4000, validator=attrs.validators.gt(0))
    overlap: int = 0


@attrs.define
class KeyedSettings:
    model: str = "m"
    api_key: Secret | None = None


class Plugins:
    __name__ = "test_plugins"

    @hookimpl
    def ponder_register_strategies(self, register):
        register("map_reduce", object, settings=ChunkySettings)
        register("direct", object)

    @hookimpl
    def ponder_register_adapters(self, register):
        register("keyed", object, settings=KeyedSettings)


@pytest.fixture
def plugins():
    return plugin_set(Plugins())


def write(tmp_path, text: str):
    path = tmp_path / "ponder.toml"
    path.write_text(text)
    return path


def load(tmp_path, text: str, **kwargs):
    write(tmp_path, text)
    return load_config(cwd=tmp_path, environ=kwargs.pop("environ", {}), **kwargs)


def test_defaults_without_any_file(tmp_path):
    config = load_config(cwd=tmp_path, environ={})
    assert config.strategy.name == "auto" and config.adapter.name is None
    assert config.limits.concurrency == 4 and config.files == []


def test_wrong_type_names_file_key_and_expectation(tmp_path, plugins):
    config = load(tmp_path, '[strategy]\nname = "map_reduce"\nchunk_size = "abc"\n')
    with pytest.raises(ConfigError) as caught:
        check_components(config, plugins)
    assert str(caught.value) == "ponder.toml: strategy.chunk_size: expected int, got 'abc'"


def test_validator_error_is_located(tmp_path, plugins):
    config = load(tmp_path, '[strategy]\nname = "map_reduce"\nchunk_size = -5\n')
    with pytest.raises(ConfigError, match=r"^ponder\.toml: strategy\.chunk_size: .*> 0"):
        check_components(config, plugins)


def test_kernel_section_wrong_type(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "[limits]\nconcurrency = 2.5\n")
    assert str(caught.value) == "ponder.toml: limits.concurrency: expected int, got 2.5"


def test_unknown_key_with_did_you_mean(tmp_path, plugins):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "[limits]\nconcurency = 3\n")
    assert str(caught.value).startswith(
        "ponder.toml: limits.concurency: unknown key; did you mean 'concurrency'?")
    config = load(tmp_path, '[strategy]\nname = "map_reduce"\nchunk_sise = 10\n')
    with pytest.raises(ConfigError, match=r"strategy\.chunk_sise: unknown key; did you mean "
                                          r"'chunk_size'\?"):
        check_components(config, plugins)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match=r"ponder\.toml: stratgy: unknown section; "
                                          r"did you mean 'strategy'\?"):
        load(tmp_path, "[stratgy]\nname = 'x'\n")


def test_unknown_plugin_name_with_suggestion(tmp_path, plugins):
    config = load(tmp_path, 'strategy = "map_reduc"\n')
    with pytest.raises(ConfigError) as caught:
        check_components(config, plugins)
    assert str(caught.value) == (
        "ponder.toml: strategy.name: unknown strategy 'map_reduc'; did you mean 'map_reduce'? "
        "(available: direct, map_reduce)")


def test_plugin_without_settings_rejects_options(tmp_path, plugins):
    config = load(tmp_path, '[strategy]\nname = "direct"\nchunk_size = 3\n')
    with pytest.raises(ConfigError, match=r"strategy\.chunk_size: strategy .direct. takes no"):
        check_components(config, plugins)


def test_missing_env_secret_names_variable_not_value(tmp_path, plugins, monkeypatch):
    monkeypatch.delenv("ACME_KEY", raising=False)
    config = load(tmp_path, '[adapter]\nname = "keyed"\napi_key = "$env:ACME_KEY"\n')
    (settings,) = [s for s in check_components(config, plugins) if isinstance(s, KeyedSettings)]
    assert str(settings.api_key) == "$env:ACME_KEY"  # not resolved until used
    with pytest.raises(ConfigError) as caught:
        settings.api_key.reveal()
    assert "ACME_KEY" in str(caught.value) and "not set" in str(caught.value)

    monkeypatch.setenv("ACME_KEY", "sk-live-planted-0123456789abcdef")
    assert settings.api_key.reveal() == "sk-live-planted-0123456789abcdef"


def test_layers_env_over_file_flags_over_env(tmp_path, plugins):
    text = '[strategy]\nname = "map_reduce"\nchunk_size = 100\n[limits]\nconcurrency = 2\n'
    environ = {"PONDER_STRATEGY__CHUNK_SIZE": "200", "PONDER_LIMITS__CONCURRENCY": "3"}
    config = load(tmp_path, text, environ=environ,
                  overrides=[(("limits", "concurrency"), 5, "--concurrency")])
    assert config.limits.concurrency == 5 and config.origin("limits.concurrency") == "--concurrency"
    settings = config.component_settings("strategy", ChunkySettings)
    assert settings.chunk_size == 200
    assert config.origin("strategy.chunk_size") == "PONDER_STRATEGY__CHUNK_SIZE"
    assert config.origin("strategy.name") == "ponder.toml"


def test_env_value_of_wrong_type_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=tmp_path, environ={"PONDER_LIMITS__CONCURRENCY": "many"})
    assert str(caught.value) == (
        "PONDER_LIMITS__CONCURRENCY: limits.concurrency: expected int, got 'many'")


def test_switching_plugin_drops_settings_meant_for_the_old_one(tmp_path):
    config = load(tmp_path, '[strategy]\nname = "map_reduce"\nchunk_size = 100\n',
                  environ={"PONDER_STRATEGY": "direct"})
    assert config.strategy.name == "direct" and config.strategy.options == {}


def test_plugin_lists_from_env(tmp_path):
    config = load_config(cwd=tmp_path, environ={"PONDER_LOAD_PLUGINS": "",
                                                "PONDER_DISABLE_PLUGINS": "a, b",
                                                "PONDER_STRICT_PLUGINS": "1"})
    assert config.plugins.allow == [] and config.plugins.disable == ["a", "b"]
    assert config.plugins.strict is True
    assert load_config(cwd=tmp_path, environ={}).plugins.allow is None


def test_user_file_under_project_file(tmp_path, monkeypatch):
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    (user_dir / "ponder.toml").write_text("[limits]\nconcurrency = 7\nmax_retries = 1\n")
    monkeypatch.setenv("PONDER_CONFIG_DIR", str(user_dir))
    config = load(tmp_path, "[limits]\nconcurrency = 3\n")
    assert config.limits.concurrency == 3 and config.limits.max_retries == 1
    assert config.files == [str(user_dir / "ponder.toml"), "ponder.toml"]


def test_bad_toml_and_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match=r"ponder\.toml: not valid TOML"):
        load(tmp_path, "[limits\n")
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_show_masks_literal_secrets(tmp_path):
    config = load(tmp_path, '[adapter]\nname = "keyed"\napi_key = "sk-live-planted-0123456789ab"\n')
    text = render_toml(config)
    assert "sk-live-planted" not in text and "api_key" in text
    assert "sk-live-planted" not in str(config.to_dict())
