"""Settings from the environment and the public API's names."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

import rag
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
