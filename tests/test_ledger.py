"""The note ledger: an unchanged sync reads no chunk metadata from Chroma, and any write it did not record (another
process, a crash) makes the store be read again; a switch cut short leaves no second generation behind."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rag.config import Config
from rag.embed import SentenceTransformerEmbedder
from rag.knowledge import KnowledgeBase
from rag.store import NoteLedger, Store

pytestmark = pytest.mark.slow  # the real model and Chroma on disk


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the generations whose every chunk's metadata was read (`Store.note_states`)."""
    calls: list[str] = []
    original = Store.note_states

    def counted(self: Store):  # type: ignore[no-untyped-def]
        calls.append(self.name)
        return original(self)

    monkeypatch.setattr(Store, "note_states", counted)
    return calls


def states_by_scan(config: Config) -> dict:
    store = Store.active(db_dir=config.db_dir, name=config.collection)
    assert store is not None
    return Store.note_states(store)


def test_an_unchanged_sync_reads_the_ledger_not_the_store(
    indexed_config: Config, embedder: SentenceTransformerEmbedder, scans: list[str]
) -> None:
    kb = KnowledgeBase(indexed_config, embedder=embedder)
    kb.sync()  # records the ledger (the copied store may have none yet)
    scans.clear()
    report = kb.sync()
    assert report.unchanged == 14 and report.added == report.updated == 0
    assert scans == []
    # A new knowledge base (a new process) trusts the file too.
    assert KnowledgeBase(indexed_config, embedder=embedder).sync().unchanged == 14
    assert scans == []


def test_the_ledger_after_edits_equals_the_store(
    indexed_config: Config, embedder: SentenceTransformerEmbedder, scans: list[str]
) -> None:
    kb = KnowledgeBase(indexed_config, embedder=embedder)
    kb.sync()
    folder = indexed_config.knowledge_dir
    (folder / "glove.md").write_text((folder / "glove.md").read_text() + "\n\nGloVe came out of Stanford in 2014.\n")
    (folder / "word2vec.md").unlink()
    (folder / "fresh.md").write_text("---\ntitle: Fresh\n---\n# Fresh\n\nA note about sparse vectors.\n")
    scans.clear()
    report = kb.sync()
    assert (report.added, report.updated, report.removed) == (1, 1, 1)
    assert scans == []
    recorded = NoteLedger(kb.derived_dir(kb.store) / "notes.json").states(kb.store)
    assert recorded == states_by_scan(indexed_config)
    assert "word2vec.md" not in recorded and recorded["fresh.md"].complete


def test_a_write_the_ledger_did_not_see_makes_the_sync_read_the_store(
    indexed_config: Config, embedder: SentenceTransformerEmbedder, scans: list[str]
) -> None:
    kb = KnowledgeBase(indexed_config, embedder=embedder)
    kb.sync()
    # Another writer (a process of an older version, or one killed before it recorded) drops a note's chunks.
    other = Store.active(db_dir=indexed_config.db_dir, name=indexed_config.collection)
    assert other is not None
    other.delete_notes(["glove.md"])
    scans.clear()
    report = KnowledgeBase(indexed_config, embedder=embedder).sync()
    assert scans, "a stale ledger must not be trusted"
    assert report.updated + report.added == 1 and report.unchanged == 13
    assert states_by_scan(indexed_config)["glove.md"].complete


def test_a_sync_cut_short_leaves_a_ledger_that_is_not_trusted(
    indexed_config: Config, embedder: SentenceTransformerEmbedder, scans: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = KnowledgeBase(indexed_config, embedder=embedder)
    kb.sync()
    folder = indexed_config.knowledge_dir
    for name in ("glove.md", "chunking.md"):
        (folder / name).write_text((folder / name).read_text() + "\n\nOne more line about vectors.\n")

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt("killed between the write and the ledger")

    monkeypatch.setattr(NoteLedger, "record", crash)
    with pytest.raises(KeyboardInterrupt):
        kb.sync()
    monkeypatch.undo()
    scans.clear()
    calls: list[str] = []
    original = Store.note_states
    monkeypatch.setattr(Store, "note_states", lambda self: calls.append(self.name) or original(self))
    report = KnowledgeBase(indexed_config, embedder=embedder).sync()
    assert calls, "the ledger from before the cut-short sync must not be trusted"
    assert report.unchanged == 14, "both edits were written before the crash"


def test_a_switch_cut_short_is_finished_by_the_next_sync(
    indexed_config: Config, embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rebuild for new chunking is killed after its metadata write made it the answering generation, before the
    # old generation was dropped: two ready generations are left.
    monkeypatch.setattr(Store, "activate", lambda self: self.collection.modify(metadata={
        **(self.collection.metadata or {}), "state": "ready"}) or [])  # fmt: skip
    smaller = replace(indexed_config, chunk_tokens=96)
    KnowledgeBase(smaller, embedder=embedder).sync()
    monkeypatch.undo()
    import chromadb

    def names() -> list[str]:
        client = chromadb.PersistentClient(path=str(indexed_config.db_dir))
        return sorted(c.name for c in client.list_collections())

    assert names() == ["knowledge", "knowledge--2"]
    report = KnowledgeBase(smaller, embedder=embedder).sync()
    assert report.unchanged == 14
    assert names() == ["knowledge--2"]
    assert not (Path(indexed_config.db_dir) / "derived" / "knowledge").exists()


def settle(folder: Path, seconds_ago: float = 60.0) -> None:
    """Date every note back, as files last edited a while ago are."""
    import os
    import time

    when = time.time_ns() - int(seconds_ago * 1e9)
    for path in folder.rglob("*.md"):
        os.utime(path, ns=(when, when))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The notes whose bytes a sync read."""
    import rag.sync

    calls: list[str] = []
    original = rag.sync.read_bytes

    def counted(path, rel, *, max_bytes):  # type: ignore[no-untyped-def]
        calls.append(rel)
        return original(path, rel, max_bytes=max_bytes)

    monkeypatch.setattr(rag.sync, "read_bytes", counted)
    return calls


@pytest.fixture
def settled_kb(indexed_config: Config, embedder: SentenceTransformerEmbedder) -> KnowledgeBase:
    """The starter notes, last edited a minute ago, synced once, so the ledger holds every file's stamp."""
    settle(indexed_config.knowledge_dir)
    kb = KnowledgeBase(indexed_config, embedder=embedder)
    kb.sync()
    return kb


def test_an_unchanged_sync_reads_no_note_whose_stamp_is_unchanged(
    indexed_config: Config, embedder: SentenceTransformerEmbedder, settled_kb: KnowledgeBase, reads: list[str]
) -> None:
    folder, kb = indexed_config.knowledge_dir, settled_kb
    reads.clear()
    assert KnowledgeBase(indexed_config, embedder=embedder).sync().unchanged == 14
    assert reads == []

    # Same size, new bytes, a new time: read and re-indexed.
    note = folder / "glove.md"
    text = note.read_text()
    note.write_text(text.replace("GloVe", "Glove", 1))
    report = kb.sync()
    assert reads == ["glove.md"] and report.updated == 1


def test_a_note_changed_moments_before_a_sync_is_read_again_even_with_its_old_stamp(
    indexed_config: Config, settled_kb: KnowledgeBase, reads: list[str]
) -> None:
    import os

    kb = settled_kb
    note = indexed_config.knowledge_dir / "glove.md"
    note.write_text(note.read_text() + "\nA fresh line.\n")
    fresh = os.stat(note)
    assert kb.sync().updated == 1  # changed within the last seconds: its stamp is not kept
    # A second write in the same clock tick, same size: the stamp cannot tell, so the file must be read.
    note.write_text(note.read_text().replace("A fresh line.", "A fresh LINE."))
    os.utime(note, ns=(fresh.st_atime_ns, fresh.st_mtime_ns))
    reads.clear()
    report = kb.sync()
    assert "glove.md" in reads and report.updated == 1
    hits = kb.search("A fresh LINE", k=3, mode="bm25").hits
    assert any("LINE" in h.chunk.text for h in hits)


def test_a_skipped_note_is_read_and_reported_at_every_sync(
    indexed_config: Config, embedder: SentenceTransformerEmbedder, reads: list[str]
) -> None:
    folder = indexed_config.knowledge_dir
    # A new note with nothing but front matter, and an indexed note emptied the same way (its old version stays).
    (folder / "empty.md").write_text("---\ntitle: Empty\n---\n")
    (folder / "glove.md").write_text("---\ntitle: GloVe\n---\n")
    settle(folder)
    kb = KnowledgeBase(indexed_config, embedder=embedder)
    assert sorted(s.path for s in kb.sync().skipped) == ["empty.md", "glove.md"]
    reads.clear()
    report = kb.sync()
    assert sorted(s.path for s in report.skipped) == ["empty.md", "glove.md"]
    assert sorted(reads) == ["empty.md", "glove.md"]
    assert "glove.md" in states_by_scan(indexed_config)
