"""ponder.support.secrets: masking, redaction, log filtering and secret references."""

from __future__ import annotations

import io
import logging
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path

import pytest

from ponder.errors import ConfigError, PonderError
from ponder.support.secrets import (
    MASK,
    MissingSecretError,
    Secret,
    SecretsFilter,
    clean_secrets,
    forget_secrets,
    get_api_key,
    install_log_redaction,
    is_secret_key,
    known_secrets,
    mask_value,
    redact,
    register_secret,
)


@pytest.fixture(autouse=True)
def _isolated_registry() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


# -- mask_value ----------------------------------------------------------------------------------


def test_mask_value_is_fixed_length() -> None:
    assert mask_value("sk-1234567890") == "********"
    assert mask_value("x") == "********"
    assert mask_value("a" * 200) == "********"
    assert mask_value(None) == "********"


def test_mask_value_show_tail_only_for_long_values() -> None:
    assert mask_value("abcdefghijklmnop", show=4) == "********mnop"
    assert mask_value("abcdefghijklmno", show=4) == "********"  # 15 < 16
    assert mask_value("abc", show=0) == "********"


# -- keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "API_KEY",
        "apiKey",
        "x-api-key",
        "GEMINI_API_KEY",
        "access_token",
        "refresh_token",
        "token",
        "authToken",
        "auth",
        "Authorization",
        "password",
        "db_passwd",
        "client_secret",
        "private_key",
        "session_cookie",
        "credentials",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key) is True


@pytest.mark.parametrize(
    "key",
    [
        "max_tokens",
        "input_tokens",
        "output_tokens",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "token_count",
        "tokens",
        "maxTokens",
        "max_output_tokens",
        "tokens_per_second",
        "tokenizer",
        "token_type",
        "author",
        "name",
        "model",
    ],
)
def test_not_secret_keys(key: str) -> None:
    assert is_secret_key(key) is False


# -- clean_secrets -----------------------------------------------------------------------------


def test_seed_example() -> None:
    assert clean_secrets({"api_key": "sk-1234567890", "name": "test"}) == {
        "api_key": "********",
        "name": "test",
    }


def test_planted_key_in_nested_data() -> None:
    planted = "sk-proj-ABCDEFGHIJKLMNOPQRSTUV0123"
    data = {
        "run": {
            "adapter": {"model": "gpt-4o", "headers": {"Authorization": f"Bearer {planted}"}},
            "usage": {"max_tokens": 512, "input_tokens": 1000, "token_count": 7},
            "messages": [
                {"role": "user", "content": f"my key is {planted}, keep it safe"},
                ("tuple", planted),
            ],
        },
        "credentials": {"user": "bob", "enabled": True, "scopes": ["a", "b"], "expires": None},
    }
    cleaned = clean_secrets(data)
    assert planted not in repr(cleaned)
    assert cleaned["run"]["adapter"]["headers"]["Authorization"] == MASK
    assert cleaned["run"]["usage"] == {"max_tokens": 512, "input_tokens": 1000, "token_count": 7}
    assert cleaned["run"]["messages"][0]["content"] == "my key is ********, keep it safe"
    assert cleaned["run"]["messages"][1] == ("tuple", MASK)
    assert cleaned["credentials"] == {
        "user": MASK,
        "enabled": True,
        "scopes": [MASK, MASK],
        "expires": None,
    }
    # a deep copy: the input is untouched
    assert data["run"]["adapter"]["headers"]["Authorization"] == f"Bearer {planted}"


def test_registered_secret_is_redacted_anywhere() -> None:
    register_secret("plain-looking-value-42")
    cleaned = clean_secrets({"note": ["prefix plain-looking-value-42 suffix"], "n": 3})
    assert cleaned == {"note": ["prefix ******** suffix"], "n": 3}


def test_namedtuples_and_sets_keep_their_type() -> None:
    Pair = namedtuple("Pair", "a b")
    key = "ghp_" + "A" * 36
    cleaned = clean_secrets({"p": Pair(key, 1), "s": {key}})
    assert cleaned["p"] == Pair(MASK, 1)
    assert cleaned["s"] == {MASK}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key sk-abcdefghijklmnop1234 end", "key ******** end"),
        ("AIza" + "b" * 35, MASK),
        ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer ********"),
        ("token ghp_" + "x" * 36, "token ********"),
        ("slack xoxb-1234567890-abcdef", "slack ********"),
        ("https://h/v1/m?alt=sse&key=AIzaSomething&x=1", "https://h/v1/m?alt=sse&key=********&x=1"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ********"),
        ("a bearer of bad news", "a bearer of bad news"),
        ("Basic information about tokens", "Basic information about tokens"),
        ("sk-short", "sk-short"),  # too short to be a key
        ("nothing to see", "nothing to see"),
    ],
)
def test_redact_key_shapes(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_register_ignores_short_values_and_longest_wins() -> None:
    register_secret("abc")
    register_secret(None)
    register_secret("secret-value")
    register_secret("secret-value-extended")
    assert known_secrets() == {"secret-value", "secret-value-extended"}
    assert redact("abc secret-value-extended") == "abc ********"


# -- logging ------------------------------------------------------------------------------------


def test_secrets_filter_redacts_message_args_and_exception() -> None:
    register_secret("my-db-password-123")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(SecretsFilter())
    logger = logging.getLogger("ponder.test.secrets.filter")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("connecting with %s and %r", "my-db-password-123", {"k": "sk-" + "z" * 20})
        try:
            raise RuntimeError("failed with my-db-password-123")
        except RuntimeError:
            logger.exception("oops")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "my-db-password-123" not in out
    assert "sk-zzzz" not in out
    assert "INFO connecting with ******** and {'k': '********'}" in out
    assert "RuntimeError: failed with ********" in out


def test_install_log_redaction_on_handlers_of_a_logger() -> None:
    register_secret("token-value-xyz")
    stream = io.StringIO()
    parent = logging.getLogger("ponder.test.secrets.install")
    parent.propagate = False
    handler = logging.StreamHandler(stream)
    parent.addHandler(handler)
    try:
        first = install_log_redaction(parent)
        install_log_redaction("ponder.test.secrets.install")  # idempotent
        assert sum(isinstance(f, SecretsFilter) for f in handler.filters) == 1
        assert isinstance(first, SecretsFilter)
        # a child logger's record reaches the parent's handler and is redacted there
        child = logging.getLogger("ponder.test.secrets.install.child")
        child.warning("value=%s", "token-value-xyz")
    finally:
        parent.removeHandler(handler)
    assert stream.getvalue() == "value=********\n"


# -- get_api_key ----------------------------------------------------------------------------------


def test_get_api_key_first_non_empty_and_registers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_TEST_EMPTY", "  ")
    monkeypatch.setenv("PONDER_TEST_KEY", "env-key-123456")
    monkeypatch.delenv("PONDER_TEST_MISSING", raising=False)
    key = get_api_key(["PONDER_TEST_MISSING", "PONDER_TEST_EMPTY", "PONDER_TEST_KEY"])
    assert key == "env-key-123456"
    assert "env-key-123456" in known_secrets()
    assert get_api_key(["PONDER_TEST_MISSING"]) is None
    assert get_api_key(["PONDER_TEST_MISSING"], default="fallback") == "fallback"


def test_get_api_key_default_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_API_KEY", "ponder-key-abcdef")
    assert get_api_key() == "ponder-key-abcdef"


# -- Secret --------------------------------------------------------------------------------------


def test_secret_literal_never_prints_and_is_registered() -> None:
    secret = Secret.parse("literal-secret-999", origin="ponder.toml: adapter.api_key")
    assert not secret.is_reference
    assert secret.reference is None
    assert str(secret) == MASK
    assert repr(secret) == "Secret('********')"
    assert f"{secret}" == MASK
    assert "literal-secret-999" in known_secrets()
    assert secret.reveal() == "literal-secret-999"


def test_secret_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_TEST_GEMINI", "gemini-key-0000\n")
    secret = Secret.parse("$env:PONDER_TEST_GEMINI")
    assert secret.is_reference
    assert secret.reference == "$env:PONDER_TEST_GEMINI"
    assert str(secret) == "$env:PONDER_TEST_GEMINI"
    assert "gemini-key" not in repr(secret)
    assert secret.reveal() == "gemini-key-0000"
    assert "gemini-key-0000" in known_secrets()
    assert secret == Secret.parse("$env:PONDER_TEST_GEMINI", origin="elsewhere")


def test_secret_env_missing_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    secret = Secret.parse("$env:GEMINI_API_KEY", origin="ponder.toml: adapter.api_key")
    with pytest.raises(MissingSecretError) as info:
        secret.reveal()
    assert str(info.value) == (
        "ponder.toml: adapter.api_key: environment variable GEMINI_API_KEY is not set"
    )
    assert info.value.variable == "GEMINI_API_KEY"
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, PonderError)


def test_secret_env_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_TEST_BLANK", "")
    with pytest.raises(MissingSecretError) as info:
        Secret.parse("$env:PONDER_TEST_BLANK").reveal()
    assert str(info.value) == "environment variable PONDER_TEST_BLANK is empty"


def test_secret_file_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text("file-key-abcdef\n", encoding="utf-8")
    assert Secret.parse(f"$file:{key_file}").reveal() == "file-key-abcdef"
    assert "file-key-abcdef" in known_secrets()
    # ~ is expanded
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Secret.parse("$file:~/key.txt").reveal() == "file-key-abcdef"


def test_secret_file_missing_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    secret = Secret.parse(f"$file:{missing}", origin="ponder.toml: adapter.api_key")
    with pytest.raises(MissingSecretError) as info:
        secret.reveal()
    assert str(info.value) == f"ponder.toml: adapter.api_key: secret file {missing} does not exist"
    assert info.value.path == str(missing)


def test_secret_file_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read secret file"):
        Secret.parse(f"$file:{tmp_path}").reveal()


def test_secret_reference_must_name_something() -> None:
    with pytest.raises(ConfigError, match="names nothing"):
        Secret.parse("$env:", origin="cfg")
