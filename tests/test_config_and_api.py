"""Settings from the environment (the library's and the web server's) and the public API's names."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import pytest

import rag
from demo.settings import ServerSettings
from rag.config import Config
from rag.errors import ConfigError


def test_from_env_reads_rag_variables() -> None:
    config = Config.from_env(
        {"RAG_KNOWLEDGE_DIR": "notes", "RAG_CHUNK_TOKENS": "128", "RAG_READ_ONLY": "yes", "HOME": "/x"}
    )
    assert config.knowledge_dir == Path("notes") and config.chunk_tokens == 128 and config.read_only is True
    assert Config.from_env({}) == Config()


def test_unknown_variable_is_rejected_with_the_known_names() -> None:
    with pytest.raises(ConfigError, match="unknown setting RAG_KNOWLEGE_DIR.*RAG_KNOWLEDGE_DIR"):
        Config.from_env({"RAG_KNOWLEGE_DIR": "x"})


@pytest.mark.parametrize(
    ("key", "value"), [("RAG_CHUNK_TOKENS", "many"), ("RAG_CONFIDENT_SCORE", "high"), ("RAG_READ_ONLY", "perhaps")]
)
def test_bad_values_name_the_variable(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Config.from_env({key: value})


def test_replace_ignores_missing_flags() -> None:
    assert Config().replace(db_dir=None, model="m").model == "m"


def test_public_api_is_exactly_all() -> None:
    # Submodules appear as attributes once imported; everything else public must be listed in __all__.
    exported = {n for n in dir(rag) if not n.startswith("_") and not isinstance(getattr(rag, n), types.ModuleType)}
    assert exported == set(rag.__all__)
    for name in rag.__all__:
        assert getattr(rag, name) is not None


def test_the_web_server_variables_are_accepted_but_are_not_library_settings() -> None:
    server = {"RAG_HOST": "0.0.0.0", "RAG_PORT": "8080", "RAG_AUTH": "ada:s3cret", "RAG_ALLOWED_HOSTS": "box.local"}
    assert Config.from_env({**server, "RAG_READ_ONLY": "1"}) == Config(read_only=True)
    assert not {"host", "port", "auth", "allowed_hosts"} & {f.name for f in dataclasses.fields(Config)}
    with pytest.raises(ConfigError, match="unknown setting RAG_HOSTS"):
        Config.from_env({"RAG_HOSTS": "x"})


def test_server_settings_read_their_variables_and_flags_win() -> None:
    environ = {"RAG_HOST": "::1", "RAG_PORT": "8080", "RAG_AUTH": "ada:s3cret", "RAG_ALLOWED_HOSTS": "Box.local, ,a:81"}
    settings = ServerSettings.from_env(environ)
    assert settings == ServerSettings(host="::1", port=8080, auth="ada:s3cret", allowed_hosts=("box.local", "a:81"))
    assert settings.credentials == ("ada", "s3cret")
    assert settings.replace(port=9000, host=None).port == 9000 and settings.replace(host=None).host == "::1"
    assert ServerSettings.from_env({}) == ServerSettings() and ServerSettings().credentials is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RAG_PORT", "http", "--port .RAG_PORT."),
        ("RAG_PORT", "70000", "--port .RAG_PORT."),
        ("RAG_AUTH", "ada", "user:password"),
        ("RAG_AUTH", ":s3cret", "user:password"),
        ("RAG_ALLOWED_HOSTS", "http://box.local", "not a host name"),
        ("RAG_ALLOWED_HOSTS", "box.local:port", "not a host name"),
    ],
)
def test_bad_server_settings_name_the_flag_and_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        ServerSettings.from_env({variable: value})
    assert "s3cret" not in str(error.value)


def test_the_password_never_appears_in_a_repr() -> None:
    settings = ServerSettings(auth="ada:s3cret-pass")
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)
    assert "s3cret" not in repr(ServerSettings.from_env({"RAG_AUTH": "ada:s3cret-pass"}))
    assert "s3cret" not in repr(Config.from_env({"RAG_AUTH": "ada:s3cret-pass"}))
    assert "host='127.0.0.1'" in repr(settings)
