"""Hybrid search: BM25 kept in step with Chroma through syncs and restarts, fused ranking, cosine scores shown."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from bench._process import free_port, listens, serve
from rag.calibrate import Calibration, background
from rag.config import Config
from rag.errors import ConfigError
from rag.keyword import KeywordIndex
from rag.knowledge import KnowledgeBase
from rag.retrieve import Hit, fuse, judge

from .factories import make_hit


def note(path: Path, title: str, body: str) -> None:
    path.write_text(f"---\ntitle: {title}\n---\n\n{body}\n", encoding="utf-8")


def ids_for(kb: KnowledgeBase, question: str, mode: str = "bm25") -> list[str]:
    return [h.chunk.id for h in kb.search(question, k=5, mode=mode).hits]


def assert_vectors_current(kb: KnowledgeBase) -> None:
    """The keyword index's copy of the vectors scores every chunk exactly as the store does."""
    index = kb.keyword_index()
    probe = np.random.default_rng(1).normal(size=index.vectors.shape[1]).astype(np.float32)
    assert sorted(index.ids) == sorted(c.id for c in kb.store.iter_chunks())
    assert index.similarities(probe, index.ids) == pytest.approx(kb.store.similarities(probe, index.ids), abs=1e-5)


@pytest.mark.slow
def test_keyword_side_follows_add_change_delete_and_restart(config: Config, embedder) -> None:
    kb = KnowledgeBase(config, embedder=embedder)
    kb.sync()
    assert ids_for(kb, "zorblatt quenching") == []
    extra = config.knowledge_dir / "zorblatt.md"
    note(extra, "Zorblatt", "The zorblatt quenching method cools forged blades in whale oil.")
    kb.sync()
    assert ids_for(kb, "zorblatt quenching")[0].startswith("zorblatt.md#")
    assert_vectors_current(kb)

    note(extra, "Blade cooling", "Forged blades are now cooled in brine by the flimflam process.")
    kb.sync()
    assert ids_for(kb, "zorblatt quenching") == []
    assert ids_for(kb, "flimflam")[0].startswith("zorblatt.md#")
    assert_vectors_current(kb)

    # A new process over the same store loads the saved index instead of rebuilding it.
    saved = kb.cache_dir / "bm25" / "chunks.json"
    before = saved.stat().st_mtime_ns
    fresh = KnowledgeBase(config, embedder=embedder)
    assert ids_for(fresh, "flimflam")[0].startswith("zorblatt.md#")
    assert saved.stat().st_mtime_ns == before
    _, rebuilt = KeywordIndex.open(fresh.store, fresh.cache_dir / "bm25")
    assert rebuilt is False

    extra.unlink()
    fresh.sync()
    assert ids_for(fresh, "flimflam") == []
    assert saved.stat().st_mtime_ns != before


@pytest.mark.slow
def test_an_edit_saved_by_another_process_reaches_this_ones_keyword_side(config: Config, embedder) -> None:
    # The chat and a CLI run are two KnowledgeBase objects over one store; an edit that keeps the chunk count
    # must still reach the chat's in-memory BM25 index.
    extra = config.knowledge_dir / "zorblatt.md"
    note(extra, "Zorblatt", "The zorblatt quenching method cools forged blades in whale oil.")
    chat, cli = KnowledgeBase(config, embedder=embedder), KnowledgeBase(config, embedder=embedder)
    chat.sync()
    assert ids_for(chat, "zorblatt quenching")[0].startswith("zorblatt.md#")
    chunks = chat.store.count()
    note(extra, "Blade cooling", "Forged blades are now cooled in brine by the flimflam process.")
    assert cli.sync().updated == 1
    assert chat.store.count() == chunks
    assert ids_for(chat, "flimflam")[0].startswith("zorblatt.md#")
    assert ids_for(chat, "zorblatt quenching") == []
    assert_vectors_current(chat)


@pytest.mark.slow
def test_an_edit_synced_by_a_dense_only_process_reaches_the_keyword_side(config: Config, embedder) -> None:
    # A CLI run configured for dense search keeps no keyword index of its own; the chat's must still follow it.
    extra = config.knowledge_dir / "zorblatt.md"
    note(extra, "Zorblatt", "The zorblatt quenching method cools forged blades in whale oil.")
    chat = KnowledgeBase(config, embedder=embedder)
    cli = KnowledgeBase(config.replace(search_mode="dense"), embedder=embedder)
    chat.sync()
    assert ids_for(chat, "zorblatt quenching")[0].startswith("zorblatt.md#")
    note(extra, "Blade cooling", "Forged blades are now cooled in brine by the flimflam process.")
    assert cli.sync().updated == 1
    assert ids_for(chat, "flimflam")[0].startswith("zorblatt.md#")
    assert ids_for(chat, "zorblatt quenching") == []
    assert_vectors_current(chat)


@pytest.mark.slow
def test_keyword_scores_keep_the_best_and_the_asked_for(config: Config, embedder) -> None:
    kb = KnowledgeBase(config, embedder=embedder)
    kb.sync()
    index = kb.keyword_index()
    question = "cosine similarity of embedding vectors"
    everything = index.scores(question)
    best = sorted(everything, key=everything.__getitem__, reverse=True)
    assert len(best) > 6
    assert set(index.scores(question, top=3)) == set(best[:3])
    wanted = [best[-1], "no-such-chunk#0"]
    assert index.scores(question, top=3, among=wanted) == {i: everything[i] for i in [*best[:3], best[-1]]}
    assert index.scores(question, top=0) == {}


@pytest.mark.slow
def test_stale_cache_is_rebuilt_from_the_store_texts(config: Config, embedder) -> None:
    kb = KnowledgeBase(config, embedder=embedder)
    kb.sync()
    folder = kb.cache_dir / "bm25"
    kb.keyword_index()
    (folder / "chunks.json").write_text('{"format": 1, "fingerprint": "old", "ids": [], "note_hashes": []}')
    index, rebuilt = KeywordIndex.open(kb.store, folder)
    assert rebuilt is True
    assert len(index) == kb.store.count()


class Shifted:
    """The real model's vectors pulled toward one fixed direction and made unit length again: a second model whose
    chunks all sit closer together than the first one's, as models differ in how their scores spread."""

    name = "shifted-all-MiniLM-L6-v2"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.max_tokens = inner.max_tokens

    def embed_batch(self, texts):
        vectors = self.inner.embed_batch(texts)
        vectors = vectors + 0.5 / np.sqrt(vectors.shape[1])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def count_tokens(self, texts):
        return self.inner.count_tokens(texts)


@pytest.mark.slow
def test_keyword_side_and_calibration_follow_a_model_change(config: Config, embedder) -> None:
    # Same notes, same chunk ids and note hashes, another model: nothing derived from the old vectors may survive.
    first = KnowledgeBase(config, embedder=embedder)
    first.sync()
    before = first.calibration()
    second = KnowledgeBase(config, embedder=Shifted(embedder))
    assert second.sync().rebuilt
    after = second.calibration()
    assert before is not None and after is not None
    assert np.median(after.quantiles) > np.median(before.quantiles) + 0.1
    question = "How does BM25 weigh rare terms?"
    vector = second.embedder.embed_batch([question])[0]
    index, rebuilt = KeywordIndex.open(second.store, second.cache_dir / "bm25")
    assert rebuilt is False
    ids = index.ids[:50]
    stored = second.store.similarities(vector, ids)
    assert index.similarities(vector, ids) == pytest.approx(stored, abs=1e-5)
    hits = second.search(question, k=5, mode="hybrid").hits
    exact = second.store.similarities(vector, [h.chunk.id for h in hits])
    assert [h.score for h in hits] == pytest.approx([exact[h.chunk.id] for h in hits], abs=1e-5)


@pytest.mark.slow
def test_hybrid_hits_show_cosine_similarity_and_keyword_score(config: Config, embedder) -> None:
    kb = KnowledgeBase(config, embedder=embedder)
    kb.sync()
    question = "How does BM25 weigh rare terms?"
    result = kb.search(question, k=5, mode="hybrid")
    assert result.hits
    q = embedder.embed_batch([question])[0]
    for hit in result.hits:
        chunk_vector = embedder.embed_batch([hit.chunk.embedding_text])[0]
        assert hit.score == pytest.approx(float(q @ chunk_vector), abs=1e-3)
        assert 0.0 <= hit.percentile <= 100.0
    assert [h.rank_score for h in result.hits] == sorted((h.rank_score for h in result.hits), reverse=True)
    assert any(h.keyword_score for h in result.hits)
    assert result.hits[0].chunk.source == "hybrid-search-bm25.md"
    assert kb.search(question, k=5, mode="dense").hits[0].keyword_score is None
    with pytest.raises(ConfigError, match="unknown search mode"):
        kb.search(question, mode="fuzzy")


@pytest.mark.slow
def test_confidence_comes_from_the_corpus_calibration(config: Config, embedder) -> None:
    kb = KnowledgeBase(config, embedder=embedder)
    kb.sync()
    assert (kb.cache_dir / "calibration.json").exists()
    assert kb.search("what is cosine similarity?").confident
    off_topic = kb.search("Does vitamin D supplementation reduce hip fractures in elderly women?")
    assert not off_topic.confident
    assert max(h.percentile for h in off_topic.hits) < 95.0
    assert off_topic.confident_by == "percentile" and "beats only" in off_topic.reason
    assert all(off_topic.weak(h) for h in off_topic.hits)


@pytest.mark.slow
def test_keyword_cache_is_local_and_keyed_for_a_chroma_server(tmp_path: Path, knowledge: Path, embedder) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    chroma = Path(sys.executable).with_name("chroma")
    argv = [str(chroma), "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)]
    with serve(argv, url=url, ready=listens(port), log=tmp_path / "chroma.log", timeout=120, stop_timeout=30):
        config = Config(knowledge_dir=knowledge, db_dir=tmp_path / "local", chroma_url=url)
        kb = KnowledgeBase(config, embedder=embedder)
        kb.sync()
        assert ids_for(kb, "reciprocal rank fusion", mode="hybrid")
        assert "127-0-0-1" in kb.cache_dir.name and kb.cache_dir.name.endswith("--knowledge")
        assert (kb.cache_dir / "bm25" / "chunks.json").exists()


def test_fuse_scales_each_side_and_weights_them() -> None:
    dense = {"a": 0.9, "b": 0.5, "c": 0.1}
    lexical = {"a": 0.0, "b": 10.0, "c": 5.0}
    assert fuse(dense, lexical, dense_weight=1.0) == {"a": 1.0, "b": 0.5, "c": 0.0}
    fused = fuse(dense, lexical, dense_weight=0.5)
    assert max(fused, key=fused.get) == "b"
    assert fuse({}, {}, dense_weight=0.5) == {}


def test_calibration_percentile_and_staleness() -> None:
    vectors = np.eye(3, dtype=np.float32)
    assert background(["a", "a", "b"], vectors).tolist() == [0.0, 0.0]
    cal = Calibration(quantiles=list(np.linspace(-0.1, 0.5, 1001)), pairs=100, chunks=5000)
    assert cal.percentile(-1.0) == 0.0
    assert cal.percentile(0.2) == pytest.approx(50.0, abs=0.1)
    assert cal.percentile(0.9) == 100.0
    assert not cal.stale(5200, "") and cal.stale(5600, "")
    assert cal.stale(5000, "another-model | v2, 128 tokens, overlap 16")
    small = Calibration(quantiles=[0.0, 1.0], pairs=10, chunks=40)
    assert small.stale(41, "") and not small.stale(40, "")


def test_terminal_output_shows_the_percentile_and_why_not_confident() -> None:
    from rag.cli import format_result

    hit = make_hit(0.31, text="body", source="a.md", title="A", heading="", start_line=1, end_line=2, percentile=42.0)
    verdict = judge([hit], calibrated=True, score_bar=0.4, percentile_bar=95.0)
    text = format_result(dataclasses.replace(verdict, question="q", hits=[hit]))
    assert text.startswith(
        "No confident match: the best score, 0.31, beats only 42.0% of pairs of unrelated chunks in these notes; "
        "a confident match beats 95%. Nearest chunks:"
    )
    assert "[1] 0.31 (p42.0)  A  [weak]" in text and "    a.md:1-2" in text


def test_one_verdict_for_every_interface_and_weak_hits_by_the_same_bar() -> None:
    def hit(score: float, percentile: float | None) -> Hit:
        return make_hit(score, text="t", source="a.md", title="A", heading="", percentile=percentile)

    # Calibrated: the percentile decides, whatever the raw cosine says.
    low_cosine = judge([hit(0.31, 99.2), hit(0.6, 80.0)], calibrated=True, score_bar=0.4, percentile_bar=95.0)
    assert low_cosine.confident and (low_cosine.confident_by, low_cosine.confident_at) == ("percentile", 95.0)
    assert "0.31, beats 99.2% of pairs" in low_cosine.reason
    assert [low_cosine.weak(h) for h in (hit(0.31, 99.2), hit(0.6, 80.0))] == [False, True]
    # Too few notes to calibrate: the raw cosine bar decides, and says so.
    raw = judge([hit(0.35, None)], calibrated=False, score_bar=0.4, percentile_bar=95.0)
    assert not raw.confident and raw.confident_by == "score" and raw.weak(hit(0.35, None))
    assert raw.reason == "the best score, 0.35, is under 0.40 (too few notes to calibrate the scores yet)"
    assert judge([], calibrated=True, score_bar=0.4, percentile_bar=95.0).confident is False
