"""The keyword index rebuilt after a sync from the one before it: the same index as a build from scratch, while it
reads and tokenises only the new chunks; filter rows as Chroma's `where` selects them; a damaged or old saved index
rebuilt. A real Chroma store on disk with random unit vectors (no model: BM25 reads only texts)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from rag.chunk import Chunk, chunk_id
from rag.filters import SearchFilter
from rag.keyword import KeywordCache, KeywordIndex, fingerprint, store_pairs
from rag.store import Build, NoteWrite, Store

WORDS = (
    "cosine similarity embedding vector keyword search index chunk note model token sparse dense score rank "
    "whale oil blade forge quench brine river stone garden tomato basil pepper recipe oven bread yeast flour"
).split()
QUESTIONS = ["cosine similarity", "whale oil blade", "tomato basil recipe", "the of and", "sparse dense rank bread"]
SETTINGS = "test-chunker"


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12))).capitalize() + "."


class Notes:
    """Notes written straight into a store: each a few chunks of random words, with tags and a random vector each."""

    def __init__(self, store: Store, seed: int) -> None:
        self.store = store
        self.rng = random.Random(seed)
        self.held: dict[str, frozenset[str]] = {}
        self.versions: dict[str, int] = {}

    def write(self, source: str, texts: list[str], tags: tuple[str, ...]) -> None:
        version = self.versions.get(source, 0) + 1
        self.versions[source] = version
        note_hash = f"{source}-{version}"
        chunks = []
        for index, text in enumerate(texts):
            chunk = Chunk(
                id="",
                source=source,
                note_id=source.removesuffix(".md"),
                title=source.removesuffix(".md").title(),
                tags=tags,
                heading=("Part",),
                text=text,
                start_line=index + 1,
                end_line=index + 1,
                index=index,
                note_hash=note_hash,
            )
            occurrence = sum(1 for c in chunks if c.embedding_text == chunk.embedding_text)
            cid = chunk_id(source, chunk.embedding_text, settings=SETTINGS, occurrence=occurrence)
            chunks.append(Chunk(**{**chunk.__dict__, "id": cid}))
        held = self.held.get(source, frozenset())
        new = {}
        for c in chunks:
            if c.id not in held:
                v = np.asarray([self.rng.gauss(0, 1) for _ in range(8)], dtype=np.float32)
                new[c.id] = v / np.linalg.norm(v)
        self.store.write_notes([NoteWrite(source, chunks, new, held)])
        self.held[source] = frozenset(c.id for c in chunks)

    def add(self, source: str) -> None:
        texts = [sentence(self.rng) for _ in range(self.rng.randint(1, 5))]
        self.write(source, texts, self.tags())

    def tags(self) -> tuple[str, ...]:
        return tuple(sorted(self.rng.sample(["ml", "food", "craft"], self.rng.randint(0, 2))))

    def texts(self, source: str) -> list[str]:
        return [c.text for c in sorted(self.store.get(sorted(self.held[source])), key=lambda c: c.index)]

    def edit(self, source: str) -> None:
        """Change one chunk, keep the rest (their ids stay), maybe drop or add one."""
        texts = self.texts(source)
        texts[self.rng.randrange(len(texts))] = sentence(self.rng)
        if len(texts) > 1 and self.rng.random() < 0.3:
            texts.pop(self.rng.randrange(len(texts)))
        if self.rng.random() < 0.3:
            texts.append(sentence(self.rng))
        self.write(source, texts, self.tags())

    def retag(self, source: str) -> None:
        """Only the tags change: the same chunk ids under a new note hash."""
        self.write(source, self.texts(source), self.tags())

    def delete(self, source: str) -> None:
        self.store.delete_notes([source])
        del self.held[source]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.for_build(db_dir=tmp_path / "db", build=Build("fake-model", SETTINGS))


def from_scratch(store: Store) -> KeywordIndex:
    pairs = store_pairs(store)
    return KeywordIndex.build(store, fingerprint(pairs.items(), build=str(store.build)))


def assert_same_index(index: KeywordIndex, full: KeywordIndex) -> None:
    assert index.ids == full.ids
    assert index.fingerprint == full.fingerprint
    assert index.note_hashes == full.note_hashes
    np.testing.assert_array_equal(np.asarray(index.vectors), np.asarray(full.vectors))
    assert index.tokens is not None and full.tokens is not None
    words = [[index.tokens.vocab[t] for t in row] for row in index.tokens.lists()]
    assert words == [[full.tokens.vocab[t] for t in row] for row in full.tokens.lists()]
    for question in QUESTIONS:
        assert index.scores(question) == full.scores(question)
        assert index.scores(question, top=3) == full.scores(question, top=3)


def test_a_rebuild_from_the_previous_index_equals_a_build_from_scratch(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = Notes(store, seed=7)
    for n in range(12):
        notes.add(f"n{n:02d}.md")
    folder = tmp_path / "bm25"
    index, rebuilt = KeywordIndex.open(store, folder)
    assert rebuilt
    assert_same_index(index, from_scratch(store))

    read: list[str] = []
    real_get = Store.get
    monkeypatch.setattr(Store, "get", lambda self, ids: read.extend(ids) or real_get(self, ids))
    rng = random.Random(3)
    added = 12
    for step in range(25):
        before = set(store_pairs(store))
        for _ in range(rng.randint(1, 3)):
            action = rng.choice(["add", "edit", "edit", "retag", "delete"])
            sources = sorted(notes.held)
            if action == "add" or len(sources) < 3:
                notes.add(f"new{added:02d}.md")
                added += 1
            else:
                getattr(notes, action)(rng.choice(sources))
        pairs = store_pairs(store)
        read.clear()
        # Half the steps pass the pairs as a caller that has them would; the others let the index read them.
        if step % 2:
            index, rebuilt = KeywordIndex.open(store, folder, pairs=pairs, previous=index)
        else:
            index, rebuilt = KeywordIndex.open(store, folder, previous=index)
        assert rebuilt
        assert sorted(read) == sorted(set(pairs) - before)  # only the new chunks' texts were read
        monkeypatch.setattr(Store, "get", real_get)
        assert_same_index(index, from_scratch(store))
        monkeypatch.setattr(Store, "get", lambda self, ids: read.extend(ids) or real_get(self, ids))
        # The saved index loads as the same index.
        loaded, rebuilt = KeywordIndex.open(store, folder, pairs=pairs)
        assert not rebuilt
        assert_same_index(loaded, index)


def test_a_new_process_rebuilds_from_the_stale_saved_index(store: Store, tmp_path: Path, monkeypatch) -> None:
    notes = Notes(store, seed=11)
    for n in range(6):
        notes.add(f"n{n}.md")
    folder = tmp_path / "bm25"
    KeywordIndex.open(store, folder)
    notes.edit("n2.md")
    notes.add("n9.md")
    read: list[str] = []
    real_get = Store.get
    monkeypatch.setattr(Store, "get", lambda self, ids: read.extend(ids) or real_get(self, ids))
    cache = KeywordCache(folder)  # as a fresh process: nothing in memory, an index on disk from before the edit
    index = cache.refresh(store, store_pairs(store))
    assert 0 < len(read) < len(index)
    monkeypatch.setattr(Store, "get", real_get)
    assert_same_index(index, from_scratch(store))


@pytest.mark.parametrize(
    "damage",
    ["old format", "truncated tokens", "missing offsets", "garbage vectors", "bm25 files gone", "not json"],
)
def test_a_damaged_or_old_saved_index_is_rebuilt(store: Store, tmp_path: Path, damage: str) -> None:
    notes = Notes(store, seed=5)
    for n in range(5):
        notes.add(f"n{n}.md")
    folder = tmp_path / "bm25"
    KeywordIndex.open(store, folder)
    meta = json.loads((folder / "chunks.json").read_text())
    if damage == "old format":
        (folder / "chunks.json").write_text(json.dumps({**meta, "format": 3}))
    elif damage == "truncated tokens":
        data = (folder / "tokens.npy").read_bytes()
        (folder / "tokens.npy").write_bytes(data[: len(data) // 2])
    elif damage == "missing offsets":
        (folder / "offsets.npy").unlink()
    elif damage == "garbage vectors":
        (folder / "vectors.npy").write_bytes(b"\x00" * 100)
    elif damage == "bm25 files gone":
        for path in folder.glob("*.index.*"):
            path.unlink()
    else:
        (folder / "chunks.json").write_text("{not json")
    index, rebuilt = KeywordIndex.open(store, folder)
    assert rebuilt
    assert_same_index(index, from_scratch(store))
    notes.edit("n1.md")  # and the next rebuild, from the repaired one, is right as well
    index, _ = KeywordIndex.open(store, folder, previous=index)
    assert_same_index(index, from_scratch(store))


def test_filter_rows_are_the_chunks_chroma_selects(store: Store, tmp_path: Path) -> None:
    notes = Notes(store, seed=2)
    for n in range(20):
        notes.add(f"{'a' if n % 2 else 'b'}/n{n:02d}.md")
    notes.add("a.md")  # its chunk ids ("a.md#...") sort among, not inside, the runs of other notes
    index, _ = KeywordIndex.open(store, tmp_path / "bm25")
    filters = [
        SearchFilter(paths=("a/*",)),
        SearchFilter(paths=("b/n0*.md", "a.md")),
        SearchFilter(tags=("ml",)),
        SearchFilter(tags=("ml", "food")),
        SearchFilter(tags=("craft",), paths=("a/*",)),
    ]
    for only in filters:
        resolved = only.resolve(store, index)
        assert resolved.where is not None and resolved.rows is not None, only
        assert {index.ids[n] for n in resolved.rows} == set(store.matching_ids(resolved.where)), only
        assert only.resolve(store, index) is resolved  # kept with the index
        assert only.resolve(store, None).where == resolved.where
    nothing = SearchFilter(paths=("c/*",)).resolve(store, index)
    assert nothing.where is None and nothing.rows is not None and len(nothing.rows) == 0
    assert SearchFilter(tags=("no-such-tag",)).resolve(store, index).where is None
    assert SearchFilter(tags=("no-such-tag",)).resolve(store, None).where is None

    # BM25 scores only the allowed rows, and picks the best among them.
    allowed = SearchFilter(paths=("a/*",)).resolve(store, index).rows
    everything = index.scores("cosine similarity whale bread")
    inside = {i: s for i, s in everything.items() if i.startswith("a/")}
    assert index.scores("cosine similarity whale bread", allowed=allowed) == inside
    best = sorted(inside, key=inside.__getitem__, reverse=True)[:2]
    assert set(index.scores("cosine similarity whale bread", top=2, allowed=allowed)) == set(best)


def test_an_empty_store_and_chunks_without_words(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "bm25"
    index, _ = KeywordIndex.open(store, folder)
    assert len(index) == 0 and index.scores("anything") == {}
    notes = Notes(store, seed=1)
    notes.write("stop.md", ["The of and.", "A an the."], ())  # only stop words: no tokens at all
    index, _ = KeywordIndex.open(store, folder, previous=index)
    assert len(index) == 2 and index.scores("the") == {}
    loaded, rebuilt = KeywordIndex.open(store, folder)
    assert not rebuilt and len(loaded) == 2
    notes.add("words.md")
    index, _ = KeywordIndex.open(store, folder, previous=loaded)
    assert_same_index(index, from_scratch(store))
