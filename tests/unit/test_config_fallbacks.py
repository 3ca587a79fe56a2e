"""``[adapter] fallbacks``, ``[adapters.<name>]`` sections and the breaker limits."""

from __future__ import annotations

import attrs
import pytest

from ponder import hookimpl
from ponder.errors import ConfigError
from ponder.kernel.config import Config, check_components, load_config, render_toml
from ponder.support.secrets import Secret
from ponder.testing import plugin_set


@attrs.define
class GatewaySettings:
    model: str = "m"
    base_url: str | None = None
    api_key: Secret | None = None
    context_window: int = attrs.field(default=8192, validator=attrs.validators.gt(0))


@attrs.define
class HostedSettings:
    model: str | None = None
    api_key: Secret | None = None


class Plugins:
    __name__ = "fallback_test_plugins"

    @hookimpl
    def ponder_register_adapters(self, register):
        register("gateway", object, settings=GatewaySettings)
        register("hosted", object, settings=HostedSettings)
        register("bare", object)


@pytest.fixture
def plugins():
    return plugin_set(Plugins())


def load(tmp_path, text: str, environ: dict[str, str] | None = None) -> Config:
    (tmp_path / "ponder.toml").write_text(text)
    return load_config(cwd=tmp_path, environ=environ or {})


CHAIN = '''
[adapter]
name = "gateway"
base_url = "http://gw.internal/v1"
fallbacks = ["hosted", "bare"]

[adapters.hosted]
model = "openai/gpt-4o-mini"
api_key = "$env:BACKUP_KEY"
'''


def test_fallbacks_are_a_kernel_key_not_a_plugin_setting(tmp_path, plugins):
    config = load(tmp_path, CHAIN)
    assert config.adapter.fallbacks == ["hosted", "bare"]
    assert "fallbacks" not in config.adapter.options
    assert config.adapters == {"hosted": {"model": "openai/gpt-4o-mini",
                                          "api_key": "$env:BACKUP_KEY"}}
    check_components(config, plugins)  # GatewaySettings has no `fallbacks` and does not mind
    primary = config.adapter_settings("gateway", GatewaySettings)
    assert primary.base_url == "http://gw.internal/v1"
    hosted = config.adapter_settings("hosted", HostedSettings)
    assert isinstance(hosted, HostedSettings) and hosted.model == "openai/gpt-4o-mini"
    assert str(hosted.api_key) == "$env:BACKUP_KEY"
    assert config.adapter_settings("bare", None) is None


def test_a_fallback_without_a_section_gets_defaults(tmp_path):
    config = load(tmp_path, '[adapter]\nname = "gateway"\nfallbacks = ["hosted"]\n')
    assert config.adapter_settings("hosted", HostedSettings) == HostedSettings()


def test_env_form_splits_on_commas(tmp_path, plugins):
    config = load(tmp_path, '[adapter]\nname = "gateway"\n',
                  environ={"PONDER_ADAPTER__FALLBACKS": "hosted, bare",
                           "PONDER_ADAPTERS__HOSTED__MODEL": "openai/from-env"})
    assert config.adapter.fallbacks == ["hosted", "bare"]
    assert config.origin("adapter.fallbacks") == "PONDER_ADAPTER__FALLBACKS"
    assert config.adapter_settings("hosted", HostedSettings).model == "openai/from-env"
    check_components(config, plugins)


def test_flag_form(tmp_path):
    (tmp_path / "ponder.toml").write_text('[adapter]\nname = "gateway"\n')
    config = load_config(cwd=tmp_path, environ={},
                         overrides=[(("adapter", "fallbacks"), ["hosted"], "--set")])
    assert config.adapter.fallbacks == ["hosted"]


def test_fallbacks_of_the_wrong_type(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, '[adapter]\nname = "gateway"\nfallbacks = "hosted"\n')
    assert str(caught.value) == (
        "ponder.toml: adapter.fallbacks: expected a list of adapter names, got 'hosted'")
    with pytest.raises(ConfigError, match=r"adapter\.fallbacks: expected a list .* got \[1\]"):
        load(tmp_path, '[adapter]\nname = "gateway"\nfallbacks = [1]\n')


def test_unknown_fallback_with_did_you_mean(tmp_path, plugins):
    config = load(tmp_path, '[adapter]\nname = "gateway"\nfallbacks = ["hostd"]\n')
    with pytest.raises(ConfigError) as caught:
        check_components(config, plugins)
    assert str(caught.value) == (
        "ponder.toml: adapter.fallbacks: unknown adapter 'hostd'; did you mean 'hosted'? "
        "(available: bare, gateway, hosted)")


def test_a_fallback_equal_to_the_primary_or_repeated(tmp_path, plugins):
    config = load(tmp_path, '[adapter]\nname = "gateway"\nfallbacks = ["gateway", "hosted", '
                            '"hosted"]\n')
    with pytest.raises(ConfigError) as caught:
        check_components(config, plugins)
    assert str(caught.value).splitlines() == [
        "ponder.toml: adapter.fallbacks: 'gateway' is the adapter itself (adapter.name); "
        "a fallback must be another adapter",
        "ponder.toml: adapter.fallbacks: 'hosted' is listed twice",
    ]


def test_adapters_section_is_validated_against_its_plugin(tmp_path, plugins):
    config = load(tmp_path, CHAIN + 'modle = "x"\n')
    with pytest.raises(ConfigError) as caught:
        check_components(config, plugins)
    assert str(caught.value).startswith(
        "ponder.toml: adapters.hosted.modle: unknown key; did you mean 'model'?")

    config = load(tmp_path, '[adapters.gateway]\ncontext_window = "big"\n')
    with pytest.raises(ConfigError) as caught:
        check_components(config, plugins)
    assert str(caught.value) == (
        "ponder.toml: adapters.gateway.context_window: expected int, got 'big'")

    config = load(tmp_path, "[adapters.gateway]\ncontext_window = -1\n")
    with pytest.raises(ConfigError, match=r"^ponder\.toml: adapters\.gateway\.context_window: "
                                          r".*> 0"):
        check_components(config, plugins)

    config = load(tmp_path, "[adapters.bare]\nmodel = 'x'\n")
    with pytest.raises(ConfigError, match=r"^ponder\.toml: adapters\.bare\.model: adapter "
                                          r"'bare' takes no settings"):
        check_components(config, plugins)


def test_unknown_adapters_section_with_did_you_mean(tmp_path, plugins):
    config = load(tmp_path, "[adapters.gatway]\nmodel = 'x'\n")
    with pytest.raises(ConfigError) as caught:
        check_components(config, plugins)
    assert str(caught.value) == (
        "ponder.toml: adapters.gatway: unknown adapter 'gatway'; did you mean 'gateway'? "
        "(available: bare, gateway, hosted)")


def test_adapters_entry_must_be_a_table(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, '[adapters]\nhosted = "openai/gpt-4o-mini"\n')
    assert str(caught.value) == (
        "ponder.toml: adapters.hosted: expected a table of the adapter's settings "
        "([adapters.hosted]), got 'openai/gpt-4o-mini'")


def test_primary_settings_in_adapters_section(tmp_path, plugins):
    config = load(tmp_path, '[adapter]\nname = "gateway"\nfallbacks = ["hosted"]\n'
                            '[adapters.gateway]\nmodel = "big"\n')
    check_components(config, plugins)
    assert config.adapter_settings("gateway", GatewaySettings).model == "big"


def test_primary_settings_in_two_places_is_an_error(tmp_path, plugins):
    config = load(tmp_path, '[adapter]\nname = "gateway"\nmodel = "a"\n'
                            '[adapters.gateway]\nmodel = "b"\n')
    with pytest.raises(ConfigError) as caught:
        check_components(config, plugins)
    assert str(caught.value) == (
        "ponder.toml: adapters.gateway: adapter 'gateway' is configured in [adapter] already; "
        "put its settings in one section, [adapter] or [adapters.gateway]")


def test_choosing_another_adapter_drops_the_old_ones_fallbacks(tmp_path):
    config = load(tmp_path, CHAIN, environ={"PONDER_ADAPTER": "hosted"})
    assert config.adapter.name == "hosted"
    assert config.adapter.fallbacks == []  # they were the gateway's, like its other settings
    assert "hosted" in config.adapters  # [adapters.*] sections stay


def test_to_dict_and_render_show_the_chain_with_secrets_masked(tmp_path):
    config = load(tmp_path, CHAIN + '[adapters.bare]\napi_key = "fk-literal-1234567"\n')
    data = config.to_dict()
    assert data["adapter"]["fallbacks"] == ["hosted", "bare"]
    assert list(data["adapter"])[:2] == ["name", "fallbacks"]
    assert data["adapters"]["hosted"]["model"] == "openai/gpt-4o-mini"
    assert data["adapters"]["bare"]["api_key"] == "********"
    text = render_toml(config)
    assert 'fallbacks = ["hosted", "bare"]  # ponder.toml' in text
    assert "[adapters.hosted]\n" in text
    assert 'model = "openai/gpt-4o-mini"  # ponder.toml' in text
    assert "fk-literal-1234567" not in text
    import tomllib

    parsed = tomllib.loads(text)  # the rendering is valid TOML
    assert parsed["adapters"]["hosted"]["model"] == "openai/gpt-4o-mini"
    assert parsed["adapter"]["fallbacks"] == ["hosted", "bare"]


def test_no_chain_leaves_to_dict_as_it_was(tmp_path):
    data = load(tmp_path, '[adapter]\nname = "gateway"\n').to_dict()
    assert "fallbacks" not in data["adapter"] and "adapters" not in data


def test_breaker_limits(tmp_path):
    limits = load(tmp_path, "").limits
    assert (limits.breaker_failures, limits.breaker_cooldown) == (3, 30.0)
    limits = load(tmp_path, "[limits]\nbreaker_failures = 5\nbreaker_cooldown = 2\n").limits
    assert (limits.breaker_failures, limits.breaker_cooldown) == (5, 2.0)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "[limits]\nbreaker_failures = 0\n")
    assert str(caught.value) == "ponder.toml: limits.breaker_failures: must be > 0, got 0"
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "[limits]\nbreaker_cooldown = -1.0\n")
    assert str(caught.value) == "ponder.toml: limits.breaker_cooldown: must be >= 0, got -1.0"
    limits = load(tmp_path, "", environ={"PONDER_LIMITS__BREAKER_COOLDOWN": "0.5"}).limits
    assert limits.breaker_cooldown == 0.5


def test_unknown_section_suggests_adapters(tmp_path):
    with pytest.raises(ConfigError, match=r"adaptors: unknown section; did you mean "
                                          r"'adapters'\?"):
        load(tmp_path, "[adaptors.hosted]\nmodel = 'x'\n")
