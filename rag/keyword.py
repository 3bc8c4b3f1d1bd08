"""Keyword search: a BM25 index (bm25s) over the same chunks the store holds, kept in step with it.

The index is built from the texts already in Chroma (title, heading path and chunk text, as embedded), so it
needs no model. Beside it lies a copy of each chunk's stored vector, so hybrid search can give a chunk that only
the keywords found its cosine similarity without another round trip to the store (~1.2 ms of a ~10 ms search on
18k chunks). Both are saved in a local folder with a fingerprint of the store's build (model, chunking), chunk ids
and note hashes; a process that opens a store whose fingerprint matches loads them from disk instead of
rebuilding. The same holds for a Chroma server: the cache is local, one folder per server and collection.
`KeywordCache` keeps the index in memory between searches and decides when it is stale. This module does not
fuse rankings; `rag.retrieve` does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import AbstractSet, Any, Iterable

import numpy as np

from rag.store import Store

# BM25 parameters of Anserini's BEIR baselines (k1=0.9, b=0.4), which suit short passages.
K1 = 0.9
B = 0.4
_FORMAT = 3
# How often a search asks the store whether another process changed its chunk count (a ~1 ms round trip).
STORE_RECHECK_S = 1.0


def fingerprint(pairs: Iterable[tuple[str, str]], *, build: str = "") -> str:
    """A digest of the store's build and its (chunk id, note hash) pairs: equal exactly when it holds the same
    chunks made by the same model and chunking (a model change keeps ids and hashes but not vectors)."""
    digest = hashlib.sha256(f"{build}\n".encode())
    for chunk_id, note_hash in sorted(pairs):
        digest.update(f"{chunk_id}\t{note_hash}\n".encode())
    return digest.hexdigest()


def store_pairs(store: Store) -> dict[str, str]:
    """chunk id -> note hash for every chunk in the store (metadata only, no texts or vectors)."""
    return {c.id: c.note_hash for c in store.iter_chunks()}


def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: list[str], stemmer: Any) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)


class KeywordIndex:
    """BM25 over a store's chunks. Use `KeywordIndex.open`, which loads or rebuilds as needed."""

    def __init__(
        self,
        retriever: Any,
        ids: list[str],
        note_hashes: list[str],
        digest: str,
        *,
        vectors: np.ndarray,
        store_build: str,
    ) -> None:
        if len(vectors) != len(ids):
            raise ValueError(f"{len(ids)} chunk ids but {len(vectors)} vectors")
        self.retriever = retriever
        self.ids = ids
        self.note_hashes = dict(zip(ids, note_hashes, strict=True))
        # Row n is the stored vector of ids[n] (unit length, float32, as Chroma keeps it).
        self.vectors = vectors
        self._position = {chunk_id: n for n, chunk_id in enumerate(ids)}
        self.fingerprint = digest
        # The store build (model, chunking) the vectors come from.
        self.store_build = store_build
        self._stemmer = _stemmer()

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def open(
        cls,
        store: Store,
        folder: Path,
        *,
        pairs: dict[str, str] | None = None,
        previous: KeywordIndex | None = None,
    ) -> tuple[KeywordIndex, bool]:
        """The index for `store`'s current chunks: loaded from `folder` when its fingerprint matches, else rebuilt.

        Args:
            store: the open store.
            folder: where the index is saved.
            pairs: chunk id -> note hash of the store, when the caller has them already.
            previous: an older index of the same store, whose vectors a rebuild reuses for unchanged chunks.

        Returns:
            The index and whether it was rebuilt.
        """
        pairs = store_pairs(store) if pairs is None else pairs
        digest = fingerprint(pairs.items(), build=str(store.build))
        loaded = cls._load(Path(folder), digest)
        if loaded is not None:
            return loaded, False
        index = cls.build(store, digest, previous=previous)
        index.save(Path(folder))
        return index, True

    @classmethod
    def build(cls, store: Store, digest: str, *, previous: KeywordIndex | None = None) -> KeywordIndex:
        """Tokenise every stored chunk's text and index it, and copy the chunks' vectors; no model is involved.

        Vectors of chunks whose note hash is unchanged since `previous` (same store build) are taken from it, so
        a sync that touched a few notes fetches only their vectors.
        """
        import bm25s

        ids, hashes, texts = [], [], []
        for chunk in store.iter_chunks(with_text=True):
            ids.append(chunk.id)
            hashes.append(chunk.note_hash)
            texts.append(chunk.embedding_text)
        retriever = bm25s.BM25(k1=K1, b=B)
        if texts:
            retriever.index(tokenize(texts, _stemmer()), show_progress=False)
        reusable = previous if previous is not None and previous.store_build == str(store.build) else None
        vectors = _vectors(store, ids, hashes, reusable)
        return cls(retriever, ids, hashes, digest, vectors=vectors, store_build=str(store.build))

    def save(self, folder: Path) -> None:
        """Write the index and its fingerprint; the folder is replaced whole, so readers never see half of it."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        try:
            if self.ids:
                self.retriever.save(str(staging), show_progress=False)
            np.save(staging / "vectors.npy", self.vectors, allow_pickle=False)
            meta = {"format": _FORMAT, "fingerprint": self.fingerprint, "build": self.store_build, "ids": self.ids}
            meta["note_hashes"] = [self.note_hashes[i] for i in self.ids]
            (staging / "chunks.json").write_text(json.dumps(meta))
            if folder.exists():
                shutil.rmtree(folder)
            staging.rename(folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @classmethod
    def _load(cls, folder: Path, digest: str) -> KeywordIndex | None:
        """The saved index if it matches `digest`; None when missing, stale or unreadable (then it is rebuilt)."""
        try:
            meta = json.loads((folder / "chunks.json").read_text())
        except (OSError, ValueError):
            return None
        if meta.get("format") != _FORMAT or meta.get("fingerprint") != digest:
            return None
        import bm25s

        retriever = bm25s.BM25(k1=K1, b=B)
        try:
            if meta["ids"]:
                retriever = bm25s.BM25.load(str(folder), mmap=False, show_progress=False)
            vectors = np.load(folder / "vectors.npy", allow_pickle=False)
            build = str(meta["build"])
            return cls(retriever, meta["ids"], meta["note_hashes"], digest, vectors=vectors, store_build=build)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            return None

    def similarities(self, vector: np.ndarray, ids: Iterable[str]) -> dict[str, float]:
        """Cosine similarity of `vector` to each chunk of `ids` whose vector this index holds (others are left out)."""
        wanted = [(chunk_id, n) for chunk_id in ids if (n := self._position.get(chunk_id)) is not None]
        if not wanted:
            return {}
        values = self.vectors[[n for _, n in wanted]] @ np.asarray(vector, dtype=np.float32)
        return {chunk_id: float(v) for (chunk_id, _), v in zip(wanted, values, strict=True) if not np.isnan(v)}

    def sources(self) -> set[str]:
        """The note paths of the indexed chunks (a chunk id is `path#digest`)."""
        return {chunk_id.rsplit("#", 1)[0] for chunk_id in self.ids}

    def scores(
        self,
        question: str,
        *,
        top: int | None = None,
        among: Iterable[str] = (),
        allowed: AbstractSet[str] | None = None,
    ) -> dict[str, float]:
        """BM25 scores by chunk id for `question`; chunks sharing no term with it are left out.

        Args:
            question: the text searched for.
            top: keep only the `top` best chunks (all when None); picking them stays in numpy, which is what keeps
                a search over tens of thousands of chunks to a fraction of a millisecond.
            among: chunk ids whose scores are wanted as well, whether or not they are among the best.
            allowed: score only these chunk ids (a search filter); the best `top` are picked among them.
        """
        if not self.ids:
            return {}
        vocab = self.retriever.vocab_dict
        tokens = [t for t in tokenize([question], self._stemmer)[0] if t in vocab]
        if not tokens:
            return {}
        values = np.asarray(self.retriever.get_scores(tokens))
        if allowed is not None:
            keep = np.zeros(len(values), dtype=bool)
            keep[[n for i in allowed if (n := self._position.get(i)) is not None]] = True
            values = np.where(keep, values, 0.0)
        (positive,) = np.nonzero(values > 0)
        if top is not None and len(positive) > top:
            positive = positive[np.argpartition(-values[positive], top - 1)[:top]] if top > 0 else positive[:0]
        chosen = {int(i) for i in positive}
        chosen.update(i for i in (self._position.get(c) for c in among) if i is not None and values[i] > 0)
        return {self.ids[i]: float(values[i]) for i in chosen}


def _vectors(store: Store, ids: list[str], hashes: list[str], previous: KeywordIndex | None) -> np.ndarray:
    """The stored vector of each chunk in `ids`, row by row: from `previous` where its note is unchanged, else
    from the store. A chunk deleted meanwhile gets NaN, and searches ask the store for it instead."""
    kept: dict[int, int] = {}  # row here -> row in `previous`
    if previous is not None:
        for n, (chunk_id, note_hash) in enumerate(zip(ids, hashes, strict=True)):
            old = previous._position.get(chunk_id)
            if old is not None and previous.note_hashes[chunk_id] == note_hash:
                kept[n] = old
    fetched = store.vectors([chunk_id for n, chunk_id in enumerate(ids) if n not in kept])
    if previous is not None and kept:
        width = previous.vectors.shape[1]
    else:
        width = len(next(iter(fetched.values()))) if fetched else 0
    vectors = np.full((len(ids), width), np.nan, dtype=np.float32)
    if previous is not None and kept:
        vectors[list(kept)] = previous.vectors[list(kept.values())]
    for n, chunk_id in enumerate(ids):
        if n not in kept and chunk_id in fetched:
            vectors[n] = fetched[chunk_id]
    return vectors


class KeywordCache:
    """The keyword index of one store, kept in memory between searches and in `folder` between processes.

    It decides when the index is stale: after a sync in this process (`refresh`), when another process saved a
    newer index in the folder (its file time, looked at on every search), or when the store's chunk count changed
    (asked at most once a second, for a process that changed the store without saving an index).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._index: KeywordIndex | None = None
        self._checked = 0.0  # when the store's chunk count was last compared
        self._saved = 0  # mtime_ns of the saved index this one matches

    @property
    def loaded(self) -> bool:
        """Whether this process holds the index in memory (it searches by keywords)."""
        return self._index is not None

    def current(self, store: Store) -> KeywordIndex:
        """The index of the store's current chunks, reloaded or rebuilt only when something changed."""
        index = self._index
        saved = _mtime_ns(self.folder / "chunks.json")
        if index is not None and saved == self._saved:
            now = time.monotonic()
            if now - self._checked < STORE_RECHECK_S:
                return index
            self._checked = now
            if len(index) == store.count():
                return index
        return self.refresh(store)

    def refresh(self, store: Store) -> KeywordIndex:
        """Load the saved index when it matches the store, else rebuild it (reusing unchanged chunks' vectors)."""
        self._index, _ = KeywordIndex.open(store, self.folder, previous=self._index)
        self._checked, self._saved = time.monotonic(), _mtime_ns(self.folder / "chunks.json")
        return self._index

    def discard(self) -> None:
        """Forget the index here and on disk, so every process that keeps one rebuilds it on its next search (for a
        process that changed the store but does not search by keywords)."""
        self._index = None
        (self.folder / "chunks.json").unlink(missing_ok=True)


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0
