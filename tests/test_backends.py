"""Store, sync and retrieval against both backends: the embedded store on disk and a real `chroma run` server.

Every test here takes the `backend` fixture, so it runs twice; the server is started once per session by
`chroma_server` in conftest.py. Real model throughout.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rag.chunk import CHUNKER_VERSION, chunk_note
from rag.cli import main
from rag.config import Config
from rag.knowledge import KnowledgeBase, sync_lock_path
from rag.load import find_notes, load_note
from rag.store import Build, NoteWrite, Store

KNOWLEDGE = Path(__file__).resolve().parent.parent / "knowledge"

NOTES = ["cosine-similarity.md", "glove.md", "word2vec.md"]


@pytest.fixture
def small_knowledge(tmp_path: Path) -> Path:
    """Three of the starter notes: enough to rank, quick to embed."""
    folder = tmp_path / "knowledge"
    folder.mkdir()
    for name in NOTES:
        shutil.copy(KNOWLEDGE / name, folder / name)
    return folder


@pytest.fixture
def kb(tmp_path: Path, small_knowledge: Path, backend: str | None, collection_name: str, embedder) -> KnowledgeBase:
    config = Config(
        knowledge_dir=small_knowledge, db_dir=tmp_path / "db", chroma_url=backend, collection=collection_name
    )
    return KnowledgeBase(config, embedder=embedder)


def expected_chunks(folder: Path, embedder, config: Config) -> dict[str, str]:
    """What a clean build holds: chunk id -> text, computed without the store."""
    budget = min(config.chunk_tokens, embedder.max_tokens)
    result = {}
    for path in find_notes(folder):
        note = load_note(folder, path)
        for chunk in chunk_note(
            note,
            count_tokens=embedder.count_tokens,
            max_tokens=budget,
            overlap_tokens=config.overlap_tokens,
            model=embedder.name,
        ):
            result[chunk.id] = chunk.text
    return result


def stored_chunks(store: Store) -> dict[str, str]:
    chunks = list(store.iter_chunks(with_text=True))
    duplicates = [i for i, n in Counter(c.id for c in chunks).items() if n > 1]
    assert not duplicates, f"duplicate chunk ids {duplicates}"
    return {c.id: c.text for c in chunks}


@pytest.mark.slow
def test_store_round_trip(
    tmp_path: Path, backend: str | None, collection_name: str, embedder, small_knowledge: Path
) -> None:
    build = Build(embedder.name, CHUNKER_VERSION)
    assert Store.active(db_dir=tmp_path / "db", chroma_url=backend, name=collection_name) is None
    store = Store.for_build(db_dir=tmp_path / "db", chroma_url=backend, name=collection_name, build=build)
    assert store.ready and store.count() == 0 and store.build == build
    note = load_note(small_knowledge, small_knowledge / "glove.md")
    chunks = chunk_note(note, count_tokens=embedder.count_tokens, max_tokens=200)
    vectors = embedder.embed_batch([c.embedding_text for c in chunks])
    by_id = {c.id: v for c, v in zip(chunks, vectors, strict=True)}
    store.write_notes([NoteWrite(note.path, chunks, by_id)])
    assert store.count() == len(chunks)
    assert stored_chunks(store) == {c.id: c.text for c in chunks}
    assert {c.id: c for c in store.iter_chunks(with_text=True)} == {c.id: c for c in chunks}
    state = store.note_states()["glove.md"]
    assert state.complete and state.note_hash == note.content_hash

    # Writing a note never leaves the chunks it lost beside the new ones, and kept chunks need no vector.
    store.write_notes([NoteWrite(note.path, chunks[:1], {}, state.chunk_ids)])
    assert set(stored_chunks(store)) == {chunks[0].id}
    store.write_notes(
        [NoteWrite(note.path, chunks, {c.id: by_id[c.id] for c in chunks[1:]}, frozenset({chunks[0].id}))]
    )

    # The only distance -> similarity conversion gives the cosine similarity numpy computes.
    query = embedder.embed_batch(["global word vectors from co-occurrence counts"])[0]
    hits = store.query(query, k=3)
    assert len(hits) == 3
    for chunk, similarity in hits:
        assert similarity == pytest.approx(float(np.dot(query, by_id[chunk.id])), abs=1e-4)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert [c.id for c in store.get([chunks[1].id, "nope#0", chunks[0].id])] == [chunks[1].id, chunks[0].id]

    store.delete_notes(["glove.md"])
    assert store.count() == 0


@pytest.mark.slow
def test_a_generation_per_build_and_nothing_opened_is_created(
    tmp_path: Path, backend: str | None, collection_name: str
) -> None:
    where = {"db_dir": tmp_path / "db", "chroma_url": backend, "name": collection_name}
    assert Store.active(**where) is None
    first = Store.for_build(**where, build=Build("m", "1"))
    assert first.ready and Store.active(**where).name == first.name
    # Another build is a new generation beside the active one, which keeps answering until it is activated.
    second = Store.for_build(**where, build=Build("other", "1"))
    assert not second.ready and second.name != first.name
    assert Store.active(**where).name == first.name
    assert Store.for_build(**where, build=Build("other", "1")).name == second.name, "a rebuild resumes"
    assert first.pending_rebuild().name == second.name
    assert Store.active(**where).build.difference(Build("other", "1")) == "the model changed from 'm' to 'other'"
    assert second.activate() == [first.name]
    assert Store.active(**where).name == second.name and Store.active(**where).build == Build("other", "1")


@pytest.mark.slow
def test_sync_is_incremental_and_equals_clean_build(kb: KnowledgeBase, small_knowledge: Path, embedder) -> None:
    first = kb.sync()
    assert (first.added, first.updated, first.removed) == (3, 0, 0)
    assert stored_chunks(kb.store) == expected_chunks(small_knowledge, embedder, kb.config)

    again = kb.sync()
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 3)

    glove = small_knowledge / "glove.md"
    glove.write_text(glove.read_text(encoding="utf-8") + "\n\n## Added later\n\nA new closing section about GloVe.\n")
    (small_knowledge / "word2vec.md").unlink()
    (small_knowledge / "fresh.md").write_text("# Fresh\n\nA brand new note about vector quantisation.\n")
    changed = kb.sync()
    assert (changed.added, changed.updated, changed.removed, changed.unchanged) == (1, 1, 1, 1)
    assert stored_chunks(kb.store) == expected_chunks(small_knowledge, embedder, kb.config)

    states = {f.path: f.state for f in kb.status().files}
    assert states == {"cosine-similarity.md": "indexed", "fresh.md": "indexed", "glove.md": "indexed"}


@pytest.mark.slow
def test_search_finds_the_right_note(kb: KnowledgeBase) -> None:
    kb.sync()
    result = kb.search("How is cosine similarity computed from the dot product?", k=3)
    assert result.confident
    assert result.hits[0].chunk.source == "cosine-similarity.md"
    assert result.hits[0].score > result.hits[-1].score or len({h.score for h in result.hits}) == 1
    assert all(-1.0 <= h.score <= 1.0 for h in result.hits)


@pytest.mark.slow
def test_cli_end_to_end(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, small_knowledge: Path, backend: str | None, collection_name: str
) -> None:
    """`python -m rag index | ask | status` with --chroma-url (or without) through the CLI's own entry point."""
    monkeypatch.setenv("RAG_COLLECTION", collection_name)
    where = ["--knowledge", str(small_knowledge), "--db", str(tmp_path / "db")]
    if backend:
        where += ["--chroma-url", backend]

    def run(*argv: str) -> dict:
        out = io.StringIO()
        assert main([*argv, *where, "--json"], stdout=out) == 0
        return json.loads(out.getvalue())

    assert run("index")["added"] == 3
    answer = run("ask", "what does GloVe learn from?", "-k", "2")
    assert set(answer) >= {"question", "confident", "hits"}
    assert answer["hits"][0]["source"] == "glove.md"
    status = run("status")
    assert status["notes"] == 3 and status["db"] == (backend or str(tmp_path / "db"))
    if backend is None:
        assert (tmp_path / "db" / "chroma.sqlite3").exists()
    else:
        # The server holds everything: nothing was written to the local db folder.
        assert not (tmp_path / "db" / "chroma.sqlite3").exists()


def test_server_sync_lock_is_keyed_by_url_and_collection(tmp_path: Path) -> None:
    base = Config(db_dir=tmp_path / "db", chroma_url="http://127.0.0.1:8000", collection="notes")
    same = sync_lock_path(base.replace(chroma_url="http://127.0.0.1:8000/"))[0]
    assert sync_lock_path(base)[0] == same
    assert sync_lock_path(base.replace(chroma_url="http://LOCALHOST:8000"))[0] != same  # another name, another key
    assert sync_lock_path(base.replace(collection="other"))[0] != same
    assert sync_lock_path(base.replace(chroma_url="http://127.0.0.1:8001"))[0] != same
    assert sync_lock_path(Config(db_dir=tmp_path / "db"))[0] == tmp_path / "db" / "sync.lock"
