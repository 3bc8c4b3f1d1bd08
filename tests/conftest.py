"""Shared fixtures: isolated RAG_* settings, a copy of the starter notes, and one real model per session."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

import pytest

from bench._process import answers, free_port, serve
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
    """Settings for a fresh, empty store beside a copy of the starter notes."""
    return Config(knowledge_dir=knowledge, db_dir=tmp_path / "db")


@pytest.fixture(scope="session")
def starter_db(tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder) -> Path:
    """A store holding the starter notes, built once per session with the real model; copy it, never write it."""

    db = tmp_path_factory.mktemp("starter") / "db"
    report = KnowledgeBase(Config(knowledge_dir=KNOWLEDGE, db_dir=db), embedder=embedder).sync()
    assert report.added == len(list(KNOWLEDGE.glob("*.md"))) and not report.skipped
    return db


@pytest.fixture
def indexed_config(tmp_path: Path, knowledge: Path, starter_db: Path) -> Config:
    """Settings for a private copy of the starter store, already in sync with `knowledge`."""
    db = tmp_path / "db"
    shutil.copytree(starter_db, db)
    return Config(knowledge_dir=knowledge, db_dir=db)


@pytest.fixture(scope="session")
def rag_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`RAG_CACHE_DIR` for every child process of the session, so no ONNX export lands in ~/.cache/rag."""
    return tmp_path_factory.mktemp("rag-cache")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `chroma run` server on a free loopback port for the whole session; yields its URL."""
    # The venv's own `chroma` first: `make test` runs .venv/bin/python without putting .venv/bin on PATH.
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if chroma is None:
        pytest.fail("the `chroma` command (installed with chromadb) is not on PATH; run `make install`")
    folder = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [chroma, "run", "--path", str(folder / "db"), "--host", "127.0.0.1", "--port", str(port)]
    ready = answers(f"{url}/api/v2/heartbeat")
    with serve(argv, url=url, ready=ready, log=folder / "server.log", timeout=60, stop_timeout=10):
        yield url


@pytest.fixture(params=["embedded", "server"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """Run a test against the embedded store (None) and against a real Chroma server (its URL)."""
    if request.param == "embedded":
        return None
    return request.getfixturevalue("chroma_server")


@pytest.fixture
def collection_name(request: pytest.FixtureRequest) -> str:
    """A collection name unique to the test, so tests sharing the session's Chroma server never meet."""
    import hashlib

    return "t" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]


# The web chat's live-server fixtures, shared by tests/test_web_*.py.
from .web_fixtures import browser, live_chat, live_kb  # noqa: E402, F401
