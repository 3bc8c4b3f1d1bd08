"""Shared fixtures: isolated RAG_* settings, a copy of the starter notes, and one real model per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rag.config import Config
from rag.embed import SentenceTransformerEmbedder
from rag.knowledge import KnowledgeBase

ROOT = Path(__file__).resolve().parent.parent
KNOWLEDGE = ROOT / "knowledge"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RAG_* variable from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("RAG_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real packaged all-MiniLM-L6-v2, loaded once per test session."""
    return SentenceTransformerEmbedder()


@pytest.fixture
def knowledge(tmp_path: Path) -> Path:
    """A writable copy of the starter notes."""
    target = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE, target)
    return target


@pytest.fixture
def config(tmp_path: Path, knowledge: Path) -> Config:
    return Config(knowledge_dir=knowledge, db_dir=tmp_path / "db")


@pytest.fixture(scope="session")
def built_index(tmp_path_factory: pytest.TempPathFactory, embedder) -> Path:  # type: ignore[no-untyped-def]
    """A Chroma folder holding the starter notes, built once per session with the real model; copy, never write."""
    base = tmp_path_factory.mktemp("built")
    shutil.copytree(KNOWLEDGE, base / "knowledge")
    kb = KnowledgeBase(Config(knowledge_dir=base / "knowledge", db_dir=base / "db"), embedder=embedder)
    report = kb.sync()
    assert report.notes > 0 and not report.skipped
    return base / "db"


@pytest.fixture
def indexed_config(tmp_path: Path, knowledge: Path, built_index: Path) -> Config:
    """Settings for a writable copy of the starter notes and of their index."""
    shutil.copytree(built_index, tmp_path / "db")
    return Config(knowledge_dir=knowledge, db_dir=tmp_path / "db")
