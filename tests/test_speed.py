"""The fast paths: encoders that agree with fp32, a query path without torch, and a sync that skips the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from rag.chunk import chunk_note
from rag.config import Config
from rag.embed import PairedEmbedder, SentenceTransformerEmbedder, embed_query, make_embedder
from rag.errors import ConfigError
from rag.knowledge import KnowledgeBase
from rag.load import find_notes, load_note
from rag.onnx_embed import OnnxEmbedder

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["what is cosine similarity?", "How does Chroma store vectors", "word2vec skip-gram", "x"]
HEAVY = ("torch", "sentence_transformers", "transformers")


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder) -> Path:
    """A cache folder holding the ONNX export of the packaged model, made once per session."""
    cache = tmp_path_factory.mktemp("cache")
    OnnxEmbedder(location=embedder.location, max_tokens=embedder.max_tokens, cache_dir=cache).prepare()
    return cache


@pytest.fixture(scope="session")
def starter_texts(embedder: SentenceTransformerEmbedder) -> list[str]:
    root = ROOT / "knowledge"
    texts = []
    for path in find_notes(root):
        note = load_note(root, path)
        texts += [c.embedding_text for c in chunk_note(note, count_tokens=embedder.count_tokens, max_tokens=200)]
    return texts


class CountingEmbedder:
    """The real embedder, with a count of every call that needs the model."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_tokens = inner.max_tokens
        self.calls = 0

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return self.inner.embed_batch(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self.calls += 1
        return self.inner.count_tokens(texts)


def run_python(code: str, env: dict[str, str]) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["bf16", "onnx"])
def test_fast_encoder_agrees_with_fp32(encoder, embedder, onnx_cache, starter_texts) -> None:
    fast = make_embedder(Config(encoder=encoder, cache_dir=onnx_cache))
    want = embedder.embed_batch(starter_texts)
    got = fast.embed_batch(starter_texts)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * want).sum(axis=1).min() >= 0.99
    assert fast.name == embedder.name  # same model identity: switching encoders needs no rebuild


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["fp32", "bf16", "onnx", "auto"])
def test_query_vectors_match_fp32(encoder, embedder, onnx_cache) -> None:
    fast = make_embedder(Config(encoder=encoder, cache_dir=onnx_cache))
    for question in QUESTIONS:
        assert float(embed_query(fast, question) @ embed_query(embedder, question)) >= 0.999


@pytest.mark.slow
def test_unchanged_sync_calls_no_model_and_imports_no_torch(config, embedder, onnx_cache) -> None:
    counting = CountingEmbedder(embedder)
    first = KnowledgeBase(config, embedder=counting).sync()
    assert first.added == 14 and counting.calls > 0
    counting.calls = 0
    again = KnowledgeBase(config, embedder=counting).sync()
    assert (again.unchanged, again.added, again.updated, again.removed) == (14, 0, 0, 0)
    assert counting.calls == 0

    env = {"RAG_KNOWLEDGE_DIR": str(config.knowledge_dir), "RAG_DB_DIR": str(config.db_dir)}
    env["RAG_CACHE_DIR"] = str(onnx_cache)
    code = (
        "import json, sys; from rag.knowledge import KnowledgeBase; r = KnowledgeBase().sync(); "
        f"print(json.dumps({{'unchanged': r.unchanged, 'added': r.added, 'heavy': [m for m in {HEAVY!r} "
        "if m in sys.modules], 'onnxruntime': 'onnxruntime' in sys.modules}))"
    )
    result = run_python(code, env)
    assert result == {"unchanged": 14, "added": 0, "heavy": [], "onnxruntime": False}


@pytest.mark.slow
def test_cli_ask_on_existing_index_imports_no_torch_and_ranks_like_fp32(config, embedder, onnx_cache) -> None:
    KnowledgeBase(config, embedder=embedder).sync()
    want = KnowledgeBase(config, embedder=embedder).search(QUESTIONS[0], k=5)
    env = {"RAG_KNOWLEDGE_DIR": str(config.knowledge_dir), "RAG_DB_DIR": str(config.db_dir)}
    env["RAG_CACHE_DIR"] = str(onnx_cache)
    code = (
        "import io, json, sys; from rag.cli import main; out = io.StringIO(); "
        f"code = main(['ask', {QUESTIONS[0]!r}, '--json'], stdout=out); result = json.loads(out.getvalue()); "
        f"result['heavy'] = [m for m in {HEAVY!r} if m in sys.modules]; result['code'] = code; "
        "print(json.dumps(result))"
    )
    got = run_python(code, env)
    assert got["code"] == 0 and got["heavy"] == []
    assert [h["id"] for h in got["hits"]] == [h.chunk.id for h in want.hits]
    assert [h["score"] for h in got["hits"]] == pytest.approx([h.score for h in want.hits], abs=1e-3)


def test_unknown_encoder_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="RAG_ENCODER='fast'"):
        make_embedder(Config(encoder="fast"))


def test_encoder_is_read_from_the_environment() -> None:
    assert Config.from_env({"RAG_ENCODER": "onnx"}).encoder == "onnx"
    assert isinstance(make_embedder(Config(encoder="bf16")), PairedEmbedder)
    assert isinstance(make_embedder(Config(encoder="onnx")), OnnxEmbedder)
    assert type(make_embedder(Config(encoder="fp32"))) is SentenceTransformerEmbedder


class Fixed:
    """A fake encoder returning one constant unit vector (pure routing logic only)."""

    def __init__(self, value: float) -> None:
        self.name, self.max_tokens, self.value = "m", 10, value

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        return np.full((len(texts), 1), self.value, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [int(self.value)] * len(texts)


def test_paired_embedder_sends_questions_to_the_query_encoder() -> None:
    paired = PairedEmbedder(Fixed(1.0), Fixed(-1.0))
    assert paired.embed_batch(["a"])[0, 0] == 1.0
    assert embed_query(paired, "a")[0] == -1.0
    assert embed_query(Fixed(1.0), "a")[0] == 1.0
    assert paired.count_tokens(["a"]) == [1]
    with pytest.raises(ValueError, match="share a model"):
        other = Fixed(1.0)
        other.name = "other"
        PairedEmbedder(Fixed(1.0), other)
