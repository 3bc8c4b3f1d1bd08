"""Keyword search: a BM25 index (bm25s) over the same chunks the store holds, kept in step with it.

The index is built from the texts already in Chroma (title, heading path and chunk text, as embedded), so it
needs no model. Beside it lies a copy of each chunk's stored vector, so hybrid search can give a chunk that only
the keywords found its cosine similarity without another round trip to the store (~1.2 ms of a ~10 ms search on
18k chunks). Both are saved in a local folder with a fingerprint of the store's build (model, chunking), chunk ids
and note hashes; a process that opens a store whose fingerprint matches loads them from disk instead of
rebuilding. The same holds for a Chroma server: the cache is local, one folder per server and collection.

A rebuild after a sync reads and tokenises only the chunks that are new: a chunk id is a content address (the note
path and a digest of the embedded text), so each chunk's token ids, saved beside the index, serve again for the
same id, and BM25 is re-indexed from token ids. Rows are kept in chunk id order, so one note's chunks are one run of
rows, and a path filter's rows come from those runs without asking the store. The saved arrays are memory-mapped:
a search touches only the rows it reads. `KeywordCache` keeps the index in memory between searches and decides when
it is stale. This module does not fuse rankings; `rag.retrieve` does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from rag.store import Store

# BM25 parameters of Anserini's BEIR baselines (k1=0.9, b=0.4), which suit short passages.
K1 = 0.9
B = 0.4
_FORMAT = 4
# Chunk texts are fetched from the store this many ids at a time.
_TEXT_PAGE = 1000
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


@dataclass(frozen=True)
class TokenRows:
    """Each chunk's BM25 tokens as ids into `vocab`, row n being `flat[offsets[n]:offsets[n + 1]]`."""

    vocab: list[str]
    flat: np.ndarray  # int32
    offsets: np.ndarray  # int64, one more than the rows

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def empty(cls) -> TokenRows:
        return cls([], np.zeros(0, dtype=np.int32), np.zeros(1, dtype=np.int64))

    def extended(self, tokens: list[list[str]]) -> TokenRows:
        """These rows followed by `tokens`; new tokens join the end of the vocabulary."""
        if not tokens:
            return self
        vocab = list(self.vocab)
        lookup = {token: n for n, token in enumerate(vocab)}
        ids = [lookup.setdefault(t, len(lookup)) for row in tokens for t in row]
        vocab.extend(list(lookup)[len(vocab) :])
        lengths = np.fromiter((len(row) for row in tokens), dtype=np.int64, count=len(tokens))
        flat = np.concatenate([np.asarray(self.flat, dtype=np.int32), np.asarray(ids, dtype=np.int32)])
        offsets = np.concatenate([np.asarray(self.offsets, dtype=np.int64), self.offsets[-1] + np.cumsum(lengths)])
        return TokenRows(vocab, flat, offsets)

    def take(self, rows: np.ndarray) -> TokenRows:
        """These rows in the order of `rows`, the vocabulary cut to the tokens they use (kept in its order)."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Position j of the result reads flat[starts[row of j] + (j - offsets[row of j])].
        where = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        flat = np.asarray(self.flat[where], dtype=np.int64)
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self.vocab)):
            raise ValueError("token ids outside the vocabulary")
        used = np.zeros(len(self.vocab), dtype=bool)
        used[flat] = True
        renumber = np.cumsum(used) - 1
        vocab = [token for token, keep in zip(self.vocab, used.tolist(), strict=True) if keep]
        return TokenRows(vocab, renumber[flat].astype(np.int32), offsets)

    def lists(self) -> list[list[int]]:
        flat, bounds = self.flat.tolist(), self.offsets.tolist()
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class KeywordIndex:
    """BM25 over a store's chunks, rows in chunk id order. Use `KeywordIndex.open`, which loads or rebuilds."""

    def __init__(
        self,
        retriever: Any,
        ids: list[str],
        note_hashes: list[str],
        digest: str,
        *,
        vectors: np.ndarray,
        store_build: str,
        tokens: TokenRows | None = None,
    ) -> None:
        if len(vectors) != len(ids):
            raise ValueError(f"{len(ids)} chunk ids but {len(vectors)} vectors")
        if tokens is not None and len(tokens) != len(ids):
            raise ValueError(f"{len(ids)} chunk ids but {len(tokens)} token rows")
        self.retriever = retriever
        self.ids = ids
        self.note_hashes = dict(zip(ids, note_hashes, strict=True))
        # Row n is the stored vector of ids[n] (unit length, float32, as Chroma keeps it); read-only.
        self.vectors = vectors
        # Row n holds the tokens of ids[n], which a rebuild reuses for the same id (None: not kept).
        self.tokens = tokens
        self._position = {chunk_id: n for n, chunk_id in enumerate(ids)}
        self.fingerprint = digest
        # The store build (model, chunking) the vectors come from.
        self.store_build = store_build
        self._stemmer = _stemmer()
        self._sources: dict[str, tuple[int, int]] | None = None
        # Search filters resolved against this index (`rag.filters` keeps them here, so they go with the index).
        self.resolved_filters: dict[Any, Any] = {}

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
            pairs: chunk id -> note hash of every chunk in the store, when the caller has them already (else the
                store is read for them, metadata only).
            previous: an older index of the same store, whose tokens and vectors a rebuild reuses for unchanged
                chunks; without it, the index saved in `folder` serves, even when stale.

        Returns:
            The index and whether it was rebuilt.
        """
        folder = Path(folder)
        pairs = store_pairs(store) if pairs is None else pairs
        digest = fingerprint(pairs.items(), build=str(store.build))
        loaded = cls._load(folder, digest)
        if loaded is not None:
            return loaded, False
        if previous is None:
            previous = cls._load(folder, None)
        index = cls.build(store, digest, pairs=pairs, previous=previous)
        index.save(folder)
        return index, True

    @classmethod
    def build(
        cls,
        store: Store,
        digest: str,
        *,
        pairs: dict[str, str] | None = None,
        previous: KeywordIndex | None = None,
    ) -> KeywordIndex:
        """Index the chunks of `pairs` (chunk id -> note hash; all the store holds when None); no model is involved.

        Tokens of chunks `previous` holds are taken from it (a chunk id names its text); only the other chunks'
        texts are read from the store and tokenised. Vectors of chunks whose note hash is unchanged since
        `previous` (same store build) are taken from it too, so a sync that touched a few notes fetches and
        tokenises only theirs. A chunk the store no longer holds is left out, and the fingerprint then says so.
        """
        if pairs is None:
            pairs = store_pairs(store)
        ids = sorted(pairs)
        known = previous if previous is not None and previous.tokens is not None else None
        fresh = [chunk_id for chunk_id in ids if known is None or chunk_id not in known._position]
        texts = _texts(store, fresh)
        if len(texts) < len(fresh):
            gone = set(fresh) - set(texts)
            ids = [chunk_id for chunk_id in ids if chunk_id not in gone]
            digest = fingerprint(((i, pairs[i]) for i in ids), build=str(store.build))
        fresh = [chunk_id for chunk_id in fresh if chunk_id in texts]
        tokens = _token_rows(ids, known, fresh, tokenize([texts[i] for i in fresh], _stemmer()) if fresh else [])
        hashes = [pairs[chunk_id] for chunk_id in ids]
        reusable = previous if previous is not None and previous.store_build == str(store.build) else None
        vectors = _vectors(store, ids, hashes, reusable)
        retriever = _bm25(tokens)
        return cls(retriever, ids, hashes, digest, vectors=vectors, store_build=str(store.build), tokens=tokens)

    def save(self, folder: Path) -> None:
        """Write the index and its fingerprint; the folder is replaced whole, so readers never see half of it.
        Afterwards this index reads its arrays from the saved files (memory-mapped), as a loaded one does."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        tokens = self.tokens if self.tokens is not None else TokenRows.empty()
        try:
            if self.retriever.vocab_dict:
                self.retriever.save(str(staging), show_progress=False)
            np.save(staging / "vectors.npy", self.vectors, allow_pickle=False)
            np.save(staging / "tokens.npy", np.asarray(tokens.flat, dtype=np.int32), allow_pickle=False)
            np.save(staging / "offsets.npy", np.asarray(tokens.offsets, dtype=np.int64), allow_pickle=False)
            meta = {"format": _FORMAT, "fingerprint": self.fingerprint, "build": self.store_build, "ids": self.ids}
            meta["note_hashes"] = [self.note_hashes[i] for i in self.ids]
            meta["vocab"] = tokens.vocab
            (staging / "chunks.json").write_text(json.dumps(meta))
            if folder.exists():
                shutil.rmtree(folder)
            staging.rename(folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.vectors = np.load(folder / "vectors.npy", mmap_mode="r", allow_pickle=False)
        self.tokens = _mapped_tokens(folder, tokens.vocab)
        if self.retriever.vocab_dict:
            self.retriever.load_scores(str(folder), num_docs=len(self.ids), mmap=True)

    @classmethod
    def _load(cls, folder: Path, digest: str | None) -> KeywordIndex | None:
        """The saved index if it matches `digest` (any, when None); None when missing, stale or unreadable (then
        it is rebuilt)."""
        try:
            meta = json.loads((folder / "chunks.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            return None
        if digest is not None and meta.get("fingerprint") != digest:
            return None
        import bm25s

        try:
            ids = list(meta["ids"])
            tokens = _mapped_tokens(folder, list(meta["vocab"]))
            retriever = bm25s.BM25(k1=K1, b=B)
            retriever.vocab_dict = {}
            if tokens.vocab:
                retriever = bm25s.BM25.load(str(folder), mmap=True, show_progress=False)
                if retriever.scores["num_docs"] != len(ids) or len(retriever.scores["indptr"]) != len(tokens.vocab) + 1:
                    return None
            vectors = np.load(folder / "vectors.npy", mmap_mode="r", allow_pickle=False)
            if tokens.offsets[-1] != len(tokens.flat) or vectors.dtype != np.float32:
                return None
            build = str(meta["build"])
            return cls(
                retriever,
                ids,
                meta["note_hashes"],
                str(meta["fingerprint"]),
                vectors=vectors,
                store_build=build,
                tokens=tokens,
            )
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            return None

    def similarities(self, vector: np.ndarray, ids: Iterable[str]) -> dict[str, float]:
        """Cosine similarity of `vector` to each chunk of `ids` whose vector this index holds (others are left out)."""
        wanted = [(chunk_id, n) for chunk_id in ids if (n := self._position.get(chunk_id)) is not None]
        if not wanted:
            return {}
        values = self.vectors[[n for _, n in wanted]] @ np.asarray(vector, dtype=np.float32)
        return {chunk_id: float(v) for (chunk_id, _), v in zip(wanted, values, strict=True) if not np.isnan(v)}

    def nearest(self, vector: np.ndarray, rows: np.ndarray, k: int) -> dict[str, float]:
        """The `k` chunks of `rows` most similar to `vector`, best first, each with its exact cosine similarity,
        from the vector copy (rows whose vector the copy lacks are left out)."""
        rows = np.asarray(rows, dtype=np.int64)
        if k <= 0 or not len(rows):
            return {}
        values = self.vectors[rows] @ np.asarray(vector, dtype=np.float32)
        values = np.where(np.isnan(values), -np.inf, values)
        best = np.argsort(-values, kind="stable")[:k] if len(values) <= k else np.argpartition(-values, k - 1)[:k]
        best = best[np.argsort(-values[best], kind="stable")]
        return {self.ids[int(rows[n])]: float(values[n]) for n in best if np.isfinite(values[n])}

    def _source_rows(self) -> dict[str, tuple[int, int]]:
        """Note path -> its rows `start, end` (rows are in chunk id order, and a chunk id is `path#digest`, so one
        note's chunks are one run of rows); worked out once per index."""
        if self._sources is None:
            runs: dict[str, tuple[int, int]] = {}
            previous, start = None, 0
            for n, chunk_id in enumerate(self.ids):
                source = chunk_id.rsplit("#", 1)[0]
                if source != previous:
                    if previous is not None:
                        runs[previous] = (start, n)
                    previous, start = source, n
            if previous is not None:
                runs[previous] = (start, len(self.ids))
            self._sources = runs
        return self._sources

    def sources(self) -> list[str]:
        """The note paths of the indexed chunks, sorted."""
        return list(self._source_rows())

    def source_rows(self, sources: Iterable[str]) -> np.ndarray:
        """The rows of every chunk of the notes at `sources` (paths it does not hold add none), ascending."""
        runs = self._source_rows()
        spans = sorted(runs[s] for s in set(sources) if s in runs)
        if not spans:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in spans])

    def rows(self, ids: Iterable[str]) -> np.ndarray:
        """The rows of those of `ids` this index holds, ascending."""
        found = [n for chunk_id in ids if (n := self._position.get(chunk_id)) is not None]
        return np.unique(np.asarray(found, dtype=np.int64))

    def scores(
        self,
        question: str,
        *,
        top: int | None = None,
        among: Iterable[str] = (),
        allowed: np.ndarray | None = None,
    ) -> dict[str, float]:
        """BM25 scores by chunk id for `question`; chunks sharing no term with it are left out.

        Args:
            question: the text searched for.
            top: keep only the `top` best chunks (all when None); picking them stays in numpy, which is what keeps
                a search over tens of thousands of chunks to a fraction of a millisecond.
            among: chunk ids whose scores are wanted as well, whether or not they are among the best.
            allowed: score only these rows (a search filter: `rows`, `source_rows`); the best `top` are picked
                among them.
        """
        vocab = self.retriever.vocab_dict
        if not self.ids or not vocab:
            return {}
        tokens = [t for t in tokenize([question], self._stemmer)[0] if t in vocab]
        if not tokens:
            return {}
        values = np.asarray(self.retriever.get_scores(tokens))
        if allowed is not None:
            kept = np.zeros_like(values)
            kept[allowed] = values[allowed]
            values = kept
        (positive,) = np.nonzero(values > 0)
        if top is not None and len(positive) > top:
            positive = positive[np.argpartition(-values[positive], top - 1)[:top]] if top > 0 else positive[:0]
        chosen = {int(i) for i in positive}
        chosen.update(i for i in (self._position.get(c) for c in among) if i is not None and values[i] > 0)
        return {self.ids[i]: float(values[i]) for i in chosen}


def _texts(store: Store, ids: list[str]) -> dict[str, str]:
    """The embedded text of each chunk of `ids` the store holds, read a page at a time."""
    texts: dict[str, str] = {}
    for start in range(0, len(ids), _TEXT_PAGE):
        texts.update((c.id, c.embedding_text) for c in store.get(ids[start : start + _TEXT_PAGE]))
    return texts


def _token_rows(ids: list[str], known: KeywordIndex | None, fresh: list[str], tokens: list[list[str]]) -> TokenRows:
    """Token rows for `ids` in order: from `known` for the ids it holds, else the row of `tokens` at the id's place
    in `fresh`. The vocabulary keeps only the tokens the rows use."""
    old = known.tokens if known is not None and known.tokens is not None else TokenRows.empty()
    pool = old.extended(tokens)
    at_fresh = {chunk_id: len(old) + n for n, chunk_id in enumerate(fresh)}
    where = at_fresh if known is None else {**at_fresh, **{i: known._position[i] for i in ids if i not in at_fresh}}
    return pool.take(np.fromiter((where[i] for i in ids), dtype=np.int64, count=len(ids)))


def _bm25(tokens: TokenRows) -> Any:
    """A bm25s index of the token rows, its vocabulary theirs (bm25s adds the empty token last)."""
    import bm25s

    retriever = bm25s.BM25(k1=K1, b=B)
    retriever.vocab_dict = {}
    if tokens.vocab:
        retriever.index((tokens.lists(), {t: n for n, t in enumerate(tokens.vocab)}), show_progress=False)
    return retriever


def _mapped_tokens(folder: Path, vocab: list[str]) -> TokenRows:
    flat = np.load(folder / "tokens.npy", mmap_mode="r", allow_pickle=False)
    offsets = np.load(folder / "offsets.npy", mmap_mode="r", allow_pickle=False)
    return TokenRows(vocab, flat, offsets)


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

    def current(self, store: Store, pairs: dict[str, str] | None = None) -> KeywordIndex:
        """The index of the store's current chunks, reloaded or rebuilt only when something changed; `pairs`
        (chunk id -> note hash of every stored chunk), when the caller has them, spare a rebuild reading the store
        for them."""
        index = self._index
        saved = _mtime_ns(self.folder / "chunks.json")
        if index is not None and saved == self._saved:
            now = time.monotonic()
            if now - self._checked < STORE_RECHECK_S:
                return index
            self._checked = now
            if len(index) == store.count():
                return index
        return self.refresh(store, pairs)

    def refresh(self, store: Store, pairs: dict[str, str] | None = None) -> KeywordIndex:
        """Load the saved index when it matches the store, else rebuild it, reading and tokenising only new chunks
        (`KeywordIndex.open`). `pairs`: chunk id -> note hash of every stored chunk, when the caller has them."""
        self._index, _ = KeywordIndex.open(store, self.folder, pairs=pairs, previous=self._index)
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
