"""Config validation that tells the truth (issue 15): non-finite limits, the real origin of a
value (a ``--set`` flag, code, a file), secrets that say where they were configured, and a
``ponder.toml`` that is not a file."""

from __future__ import annotations

import math

import attrs
import pytest

from ponder import hookimpl
from ponder.errors import ConfigError
from ponder.kernel.config import (
    CODE_ORIGIN,
    Component,
    Config,
    LimitsConfig,
    check_components,
    load_config,
    secret_problems,
)
from ponder.support.secrets import Secret, redact
from ponder.testing import plugin_set


@attrs.define
class KeyedSettings:
    model: str = "m"
    api_key: Secret | None = None
    temperature: float = 0.0


@attrs.frozen
class FrozenKeyed:
    api_key: Secret | None = None


class Plugins:
    __name__ = "trust_plugins"

    @hookimpl
    def ponder_register_adapters(self, register):
        register("keyed", object, settings=KeyedSettings)
        register("frozen", object, settings=FrozenKeyed)

    @hookimpl
    def ponder_register_strategies(self, register):
        register("direct", object)


@pytest.fixture
def plugins():
    return plugin_set(Plugins())


def write(tmp_path, text: str):
    (tmp_path / "ponder.toml").write_text(text)


# --- non-finite limits ------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value"), [("max_cost", "nan"), ("timeout", "inf"),
                                            ("max_cost", "-inf"), ("breaker_cooldown", "nan")])
def test_non_finite_limit_in_toml_is_rejected_with_the_key(tmp_path, key, value):
    write(tmp_path, f"[limits]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=tmp_path, environ={})
    assert str(caught.value) == (f"ponder.toml: limits.{key}: expected a finite number, "
                                 f"got {float(value)!r}")
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("flag", "key"), [("--max-cost", "max_cost"), ("--timeout", "timeout")])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_flag_is_rejected_naming_the_flag(tmp_path, flag, key, value):
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=tmp_path, environ={}, overrides=[(("limits", key), value, flag)])
    assert str(caught.value).startswith(f"{flag}: limits.{key}: expected a finite number")


def test_non_finite_from_the_environment_and_set(tmp_path):
    with pytest.raises(ConfigError, match=r"^PONDER_LIMITS__MAX_COST: limits.max_cost: expected "
                                          r"a finite number, got 'nan'$"):
        load_config(cwd=tmp_path, environ={"PONDER_LIMITS__MAX_COST": "nan"})
    with pytest.raises(ConfigError, match=r"^--set limits\.timeout=inf: limits\.timeout: "):
        load_config(cwd=tmp_path, environ={},
                    overrides=[(("limits", "timeout"), math.inf, "--set limits.timeout=inf")])


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_rate_limit_is_rejected(tmp_path, value):
    with pytest.raises(ConfigError, match=r"^--set adapter\.rpm=x: adapter\.rpm: expected a "):
        load_config(cwd=tmp_path, environ={},
                    overrides=[(("adapter", "rpm"), value, "--set adapter.rpm=x")])


def test_non_finite_in_code_is_refused_by_the_class_itself():
    """The Python API builds LimitsConfig directly: the validators refuse nan there too."""
    with pytest.raises(ValueError, match="must be a finite number, got nan"):
        LimitsConfig(max_cost=math.nan)
    with pytest.raises(ValueError, match="must be a finite number, got inf"):
        LimitsConfig(timeout=math.inf)


def test_plugin_float_settings_reject_non_finite_too(tmp_path, plugins):
    write(tmp_path, '[adapter]\nname = "keyed"\ntemperature = nan\n')
    config = load_config(cwd=tmp_path, environ={})
    with pytest.raises(ConfigError, match=r"^ponder\.toml: adapter\.temperature: expected a fin"):
        check_components(config, plugins)


# --- origins --------------------------------------------------------------------------------
def test_set_below_a_scalar_names_the_flag_not_default(tmp_path):
    flag = "--set limits.concurrency.x=1"
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=tmp_path, environ={},
                    overrides=[(("limits", "concurrency", "x"), 1, flag)])
    assert str(caught.value).startswith(f"{flag}: limits.concurrency: expected int")
    assert "default" not in str(caught.value)


def test_python_api_errors_name_code_not_default(plugins):
    config = Config(adapter=Component("keyed", {"modle": "x"}))
    with pytest.raises(ConfigError) as caught:
        check_components(config, plugins)
    assert str(caught.value).startswith(f"{CODE_ORIGIN}: adapter.modle: unknown key; "
                                        "did you mean 'model'?")
    config = Config(adapter=Component("keyed", {"temperature": "hot"}))
    with pytest.raises(ConfigError, match=f"^{CODE_ORIGIN}: adapter.temperature: expected a"):
        check_components(config, plugins)


def test_python_api_unknown_name_is_reported_not_taken_for_a_default(plugins):
    """A name set in code that differs from the default is explicit: a typo is an error."""
    config = Config(strategy=Component("direkt"))
    assert config.origin("strategy.name") == CODE_ORIGIN
    with pytest.raises(ConfigError, match=f"^{CODE_ORIGIN}: strategy.name: unknown strategy "
                                          "'direkt'; did you mean 'direct'"):
        check_components(config, plugins)


def test_defaults_still_say_default(tmp_path):
    config = load_config(cwd=tmp_path, environ={})
    assert config.origin("limits.concurrency") == "default"
    assert config.origin("strategy.name") == "default"
    assert Config(limits=LimitsConfig(concurrency=9)).origin("limits.concurrency") == CODE_ORIGIN


# --- secrets --------------------------------------------------------------------------------
def test_an_unset_env_reference_names_file_and_key_when_revealed(tmp_path, plugins, monkeypatch):
    monkeypatch.delenv("TRUST_UNSET_KEY", raising=False)
    write(tmp_path, '[adapter]\nname = "keyed"\napi_key = "$env:TRUST_UNSET_KEY"\n')
    config = load_config(cwd=tmp_path, environ={})
    (settings,) = [s for s in check_components(config, plugins) if isinstance(s, KeyedSettings)]
    with pytest.raises(ConfigError) as caught:
        settings.api_key.reveal()
    assert str(caught.value) == ("ponder.toml: adapter.api_key: environment variable "
                                 "TRUST_UNSET_KEY is not set")


def test_secret_problems_finds_unset_variables_and_missing_files(tmp_path, plugins, monkeypatch):
    monkeypatch.delenv("TRUST_UNSET_KEY", raising=False)
    monkeypatch.setenv("TRUST_SET_KEY", "sk-trust-set-0123456789")
    write(tmp_path, '[adapters.keyed]\napi_key = "$env:TRUST_UNSET_KEY"\n'
                    f'[adapters.frozen]\napi_key = "$file:{tmp_path}/no-such-key"\n')
    config = load_config(cwd=tmp_path, environ={})
    keyed = config.adapter_settings("keyed", KeyedSettings)
    frozen = config.adapter_settings("frozen", FrozenKeyed)  # a frozen settings class works too
    assert secret_problems([keyed, frozen]) == [
        "ponder.toml: adapters.keyed.api_key: environment variable TRUST_UNSET_KEY is not set",
        f"ponder.toml: adapters.frozen.api_key: secret file {tmp_path}/no-such-key does not "
        "exist",
    ]
    fine = load_config(cwd=tmp_path, environ={}, overrides=[
        (("adapters", "keyed", "api_key"), "$env:TRUST_SET_KEY", "--set")])
    assert secret_problems([fine.adapter_settings("keyed", KeyedSettings)]) == []


def test_a_literal_secret_is_redacted_as_soon_as_the_config_is_read(tmp_path):
    """Before any plugin builds a Secret from it, a literal key in a file is already hidden."""
    literal = "trust-literal-NOT-A-KNOWN-SHAPE-93af01"
    write(tmp_path, f'[adapter]\nname = "keyed"\napi_key = "{literal}"\n')
    load_config(cwd=tmp_path, environ={})
    assert literal not in redact(f"a plugin said: {literal}")


# --- the project file -------------------------------------------------------------------------
def test_project_file_that_is_a_directory_is_an_error(tmp_path):
    (tmp_path / "ponder.toml").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=tmp_path, environ={})
    assert str(caught.value).startswith("ponder.toml: is a directory, not a config file")
    assert caught.value.exit_code == 2


def test_user_file_that_is_a_directory_is_an_error(tmp_path, monkeypatch):
    from ponder.kernel.config import user_config_path

    user = user_config_path()
    user.parent.mkdir(parents=True, exist_ok=True)
    user.mkdir()
    with pytest.raises(ConfigError, match=f"^{user}: is a directory"):
        load_config(cwd=tmp_path, environ={})
