"""Sync against a real Chroma store on disk with the real model: counts, no needless model calls, repair."""

from __future__ import annotations

import signal
import sqlite3
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from bench._process import child_env, start, wait_for
from rag.chunk import chunking_id
from rag.config import Config
from rag.embed import SentenceTransformerEmbedder
from rag.knowledge import SYNC_JOURNAL, KnowledgeBase
from rag.store import Store

from .conftest import ROOT

pytestmark = pytest.mark.slow  # every test here embeds with the real model


class CountingEmbedder:
    """The real embedder, counting how many texts reach the model."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_tokens = inner.max_tokens
        self.embedded = 0

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded += len(texts)
        return self.inner.embed_batch(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)


def stored_rows(sqlite: Path) -> int:
    """Chunks Chroma has committed so far, read from its SQLite file without opening a client."""
    if not sqlite.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{sqlite}?mode=ro", uri=True, timeout=0.1) as conn:
            return int(conn.execute("SELECT count(*) FROM embeddings").fetchone()[0])
    except sqlite3.Error:
        return 0


def snapshot(store: Store) -> dict[str, tuple[str, str]]:
    """Chunk id -> (text, note hash): what a clean build must equal."""
    return {c.id: (c.text, c.note_hash) for c in store.iter_chunks(with_text=True)}


def test_first_sync_adds_every_note(config: Config, embedder: SentenceTransformerEmbedder) -> None:
    counting = CountingEmbedder(embedder)
    kb = KnowledgeBase(config, embedder=counting)
    first = kb.sync()
    assert (first.added, first.updated, first.removed, first.unchanged) == (14, 0, 0, 0)
    assert first.notes == 14 and first.chunks == kb.store.count() > 14
    assert counting.embedded == first.chunks


def test_add_change_delete_unchanged(indexed_config: Config, embedder: SentenceTransformerEmbedder) -> None:
    config = indexed_config
    counting = CountingEmbedder(embedder)
    kb = KnowledgeBase(config, embedder=counting)
    again = kb.sync()
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 14)
    assert counting.embedded == 0, "an unchanged folder must not call the model"

    folder = config.knowledge_dir
    edited = folder / "glove.md"
    edited.write_text(edited.read_text() + "\n\n## Added section\n\nGloVe was released by Stanford in 2014.\n")
    (folder / "word2vec.md").unlink()
    (folder / "new.md").write_text("---\ntitle: New\n---\n# New\n\nA brand new note about sparse vectors.\n")
    before = snapshot(kb.store)
    counting.embedded = 0
    report = kb.sync()
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 12)
    after = snapshot(kb.store)
    glove_chunks = [i for i in after if i.startswith("glove.md#")]
    new_glove = [i for i in glove_chunks if i not in before]
    assert 1 <= len(new_glove) < len(glove_chunks)
    assert counting.embedded == report.embedded == len(new_glove) + 1, "only changed chunks and the new note"
    assert not any(i.startswith("word2vec.md#") for i in after)
    assert any("Stanford in 2014" in text for text, _ in after.values())
    untouched = {i: v for i, v in before.items() if not i.startswith(("glove.md#", "word2vec.md#"))}
    assert all(after[i] == v for i, v in untouched.items())
    assert report.notes == 14 and report.chunks == len(after)


def test_running_twice_changes_nothing(indexed_config: Config, embedder: SentenceTransformerEmbedder) -> None:
    config = indexed_config
    kb = KnowledgeBase(config, embedder=embedder)
    kb.sync()
    first = snapshot(kb.store)
    KnowledgeBase(config, embedder=embedder).sync()
    assert snapshot(kb.store) == first


def test_bad_edit_keeps_the_indexed_version(indexed_config: Config, embedder: SentenceTransformerEmbedder) -> None:
    config = indexed_config
    kb = KnowledgeBase(config, embedder=embedder)
    before = {i for i in snapshot(kb.store) if i.startswith("glove.md#")}
    (config.knowledge_dir / "glove.md").write_bytes(b"\xff\xfe broken \x00 bytes")
    (config.knowledge_dir / "empty.md").write_text("")
    report = kb.sync()
    reasons = {s.path: s.reason for s in report.skipped}
    assert "binary" in reasons["glove.md"] and "version indexed before is kept" in reasons["glove.md"]
    assert "empty" in reasons["empty.md"]
    assert {i for i in snapshot(kb.store) if i.startswith("glove.md#")} == before
    states = {f.path: f.state for f in kb.status().files}
    assert states["glove.md"] == "skipped" and states["cosine-similarity.md"] == "indexed"


def test_changing_the_model_rebuilds_and_says_why(
    indexed_config: Config, embedder: SentenceTransformerEmbedder
) -> None:
    config = indexed_config

    class Renamed(CountingEmbedder):
        pass

    other = Renamed(embedder)
    other.name = "another-model"
    report = KnowledgeBase(config, embedder=other).sync()
    assert report.rebuilt and "model changed" in report.rebuilt and "another-model" in report.rebuilt
    assert report.added == 14 and other.embedded == report.chunks


def test_changing_the_chunk_size_rebuilds_and_says_why(
    indexed_config: Config, embedder: SentenceTransformerEmbedder
) -> None:
    counting = CountingEmbedder(embedder)
    smaller = indexed_config.replace(chunk_tokens=96, overlap_tokens=16)
    report = KnowledgeBase(smaller, embedder=counting).sync()
    before = chunking_id(indexed_config.chunk_tokens, indexed_config.overlap_tokens)
    assert report.rebuilt == f"the chunking changed from {before!r} to {chunking_id(96, 16)!r}"
    assert chunking_id(96, 16).endswith(", 96 tokens, overlap 16")
    assert report.added == 14 and counting.embedded == report.chunks
    assert report.chunks > KnowledgeBase(indexed_config, embedder=embedder).sync().chunks


def test_status_reports_new_stale_and_deleted(indexed_config: Config, embedder: SentenceTransformerEmbedder) -> None:
    config = indexed_config
    kb = KnowledgeBase(config, embedder=embedder)
    folder = config.knowledge_dir
    (folder / "glove.md").write_text("# GloVe\n\nrewritten")
    (folder / "chunking.md").unlink()
    (folder / "fresh.md").write_text("# Fresh\n\nnew")
    states = {f.path: f.state for f in kb.status().files}
    assert states["glove.md"] == "stale" and states["chunking.md"] == "deleted" and states["fresh.md"] == "new"


def test_sync_killed_midway_is_repaired_by_the_next(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, rag_cache_dir: Path
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(150):
        (folder / f"note-{i:03}.md").write_text(f"# Note {i}\n\nSentence {i} about vectors and their neighbours.\n")
    db = tmp_path / "db"
    env = child_env({"RAG_KNOWLEDGE_DIR": str(folder), "RAG_DB_DIR": str(db)}, cache_dir=rag_cache_dir)
    log = tmp_path / "index.log"
    proc = start([sys.executable, "-m", "rag", "index", "--json"], log=log, env=env, cwd=ROOT)
    # Kill once the first batch is in the store, while later ones are still being embedded.
    try:
        stored = wait_for(
            lambda: stored_rows(db / "chroma.sqlite3"),
            timeout=180,
            interval=0.02,
            what="the first chunks were stored",
            process=proc,
            log=log,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 0 < stored < 150, "the kill must land mid-sync for this test to mean anything"

    config = Config(knowledge_dir=folder, db_dir=db)
    repaired = KnowledgeBase(config, embedder=embedder)
    repaired.sync()
    clean = KnowledgeBase(Config(knowledge_dir=folder, db_dir=tmp_path / "clean"), embedder=embedder)
    clean.sync()
    got, want = snapshot(repaired.store), snapshot(clean.store)
    assert got == want
    assert repaired.store.count() == len(want)


def test_a_journal_left_by_a_killed_sync_makes_the_next_rewrite_its_notes(
    indexed_config: Config, embedder: SentenceTransformerEmbedder
) -> None:
    counting = CountingEmbedder(embedder)
    kb = KnowledgeBase(indexed_config, embedder=counting)
    journal = kb.cache_dir / SYNC_JOURNAL
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text('["glove.md", "gone.md"]')
    before = snapshot(kb.store)
    report = kb.sync()
    assert (report.updated, report.unchanged) == (1, 13), "the journalled note is rewritten though its hash matches"
    assert counting.embedded == sum(1 for i in before if i.startswith("glove.md#"))
    assert snapshot(kb.store) == before and not journal.exists()
    assert kb.sync().unchanged == 14
