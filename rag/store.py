"""Storage: chunks and their vectors in a Chroma collection (embedded on disk, or a Chroma server).

This is the one place where Chroma's cosine distances become cosine similarities (1 - distance). The
collection records the model and chunker version it was built with, so a change of either is noticed.
Chroma never embeds anything here: it gets our vectors and `embedding_function=None`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from rag.chunk import Chunk
from rag.errors import StoreError

_PAGE = 5000


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as read back from the store, with its cosine similarity to a query when there was one."""

    id: str
    text: str
    source: str
    title: str
    heading: str
    start_line: int
    end_line: int
    tags: tuple[str, ...]
    note_hash: str
    similarity: float = 0.0


@dataclass(frozen=True)
class NoteState:
    """What the store holds of one note: its hash and chunk ids, and whether that set is whole."""

    note_hash: str
    chunk_ids: frozenset[str]
    complete: bool


def _client(*, db_dir: Path, chroma_url: str | None) -> Any:
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if chroma_url:
        from urllib.parse import urlparse

        url = urlparse(chroma_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise StoreError(f"--chroma-url {chroma_url!r} is not an http(s)://HOST:PORT address")
        try:
            return chromadb.HttpClient(
                host=url.hostname,
                port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https",
                settings=settings,
            )
        except Exception as exc:  # noqa: BLE001 - connection failures come in many types
            raise StoreError(
                f"cannot reach the Chroma server at {chroma_url} ({exc}); start it with "
                "`chroma run --path DIR --host 127.0.0.1 --port PORT` or drop --chroma-url"
            ) from exc
    return chromadb.PersistentClient(path=str(db_dir), settings=settings)


class Store:
    """One Chroma collection of chunks, built with one model and chunker version.

    Use `Store.open` rather than the constructor.
    """

    def __init__(self, client: Any, collection: Any, *, location: str) -> None:
        self.client = client
        self.collection = collection
        self.location = location

    @classmethod
    def open(
        cls,
        *,
        db_dir: Path,
        chroma_url: str | None = None,
        name: str = "knowledge",
        model: str,
        chunker: str,
        create: bool = True,
    ) -> tuple[Store, str | None]:
        """Open (or create) the collection.

        Returns:
            The store and, when an existing collection was built with another model or chunker and has just been
            emptied for a rebuild, the reason; otherwise None.

        Raises:
            StoreError: no collection exists and `create` is False, or the server cannot be reached.
        """
        location = chroma_url or str(db_dir)
        if not chroma_url and not create and not Path(db_dir).exists():
            raise StoreError(f"no index at {db_dir}; run `python -m rag index`")
        client = _client(db_dir=Path(db_dir), chroma_url=chroma_url)
        wanted = {"model": model, "chunker": chunker}
        try:
            existing = {c.name if hasattr(c, "name") else c for c in client.list_collections()}
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"cannot read the Chroma store at {location} ({exc})") from exc
        reason = None
        if name in existing:
            collection = client.get_collection(name, embedding_function=None)
            meta = collection.metadata or {}
            if meta.get("model") != model:
                reason = f"the model changed from {meta.get('model')!r} to {model!r}"
            elif meta.get("chunker") != chunker:
                reason = f"the chunking changed from {meta.get('chunker')!r} to {chunker!r}"
            if reason is None:
                return cls(client, collection, location=location), None
            if not create:
                raise StoreError(f"the index at {location} is out of date: {reason}; run `python -m rag index`")
            client.delete_collection(name)
        elif not create:
            raise StoreError(f"no index at {location}; run `python -m rag index`")
        collection = client.create_collection(
            name,
            configuration={"hnsw": {"space": "cosine"}},
            metadata=wanted,
            embedding_function=None,
        )
        return cls(client, collection, location=location), reason

    @property
    def build(self) -> str:
        """The model and chunking this collection was built with; data derived from it must match."""
        meta = self.collection.metadata or {}
        return f"{meta.get('model')} | {meta.get('chunker')}"

    def count(self) -> int:
        return int(self.collection.count())

    def iter_chunks(self, *, with_text: bool = False) -> Iterator[StoredChunk]:
        """Every stored chunk, page by page."""
        include = ["metadatas", "documents"] if with_text else ["metadatas"]
        offset = 0
        while True:
            page = self.collection.get(limit=_PAGE, offset=offset, include=include)
            ids = page["ids"]
            if not ids:
                return
            documents = page.get("documents") or [""] * len(ids)
            for chunk_id, meta, text in zip(ids, page["metadatas"], documents, strict=True):
                yield _stored(chunk_id, meta or {}, text or "")
            offset += len(ids)

    def note_states(self) -> dict[str, NoteState]:
        """Per source file: the stored hash and chunk ids, and whether they form one whole, current set."""
        ids: dict[str, set[str]] = {}
        hashes: dict[str, set[str]] = {}
        counts: dict[str, set[int]] = {}
        offset = 0
        while True:
            page = self.collection.get(limit=_PAGE, offset=offset, include=["metadatas"])
            if not page["ids"]:
                break
            for chunk_id, meta in zip(page["ids"], page["metadatas"], strict=True):
                meta = meta or {}
                source = str(meta.get("source", ""))
                ids.setdefault(source, set()).add(chunk_id)
                hashes.setdefault(source, set()).add(str(meta.get("note_hash", "")))
                counts.setdefault(source, set()).add(int(meta.get("chunk_count", -1)))
            offset += len(page["ids"])
        states = {}
        for source, chunk_ids in ids.items():
            (count,) = counts[source] if len(counts[source]) == 1 else (-1,)
            expected = {f"{source}#{i}" for i in range(count)}
            complete = len(hashes[source]) == 1 and chunk_ids == expected
            states[source] = NoteState(next(iter(hashes[source])), frozenset(chunk_ids), complete)
        return states

    def replace_note(self, source: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Put a note's chunks in place of whatever the store held for it.

        Old chunks go first; a crash between the two steps leaves the note missing or partial, which the next
        sync sees (`NoteState.complete`) and repairs.
        """
        self.collection.delete(where={"source": source})
        if not chunks:
            return
        self.collection.upsert(
            ids=[c.id for c in chunks],
            embeddings=np.asarray(vectors, dtype=np.float32),
            documents=[c.text for c in chunks],
            metadatas=[_metadata(c, len(chunks)) for c in chunks],
        )

    def delete_notes(self, sources: Sequence[str]) -> None:
        for start in range(0, len(sources), 500):
            self.collection.delete(where={"source": {"$in": list(sources[start : start + 500])}})

    def query(self, vector: np.ndarray, *, k: int) -> list[StoredChunk]:
        """The `k` nearest chunks, best first, each with its cosine similarity."""
        # No count() first: Chroma returns fewer than `k` when it holds fewer, and the round trip costs ~1 ms.
        if k <= 0:
            return []
        result = self.collection.query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)],
            n_results=k,
            include=["documents", "metadatas", "distances"],
        )
        hits = []
        for chunk_id, text, meta, distance in zip(
            result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0], strict=True
        ):
            # Chroma's cosine space stores distance = 1 - cosine similarity; this is the only conversion.
            hits.append(_stored(chunk_id, meta or {}, text or "", similarity=1.0 - float(distance)))
        return hits

    def nearest(self, vector: np.ndarray, *, k: int) -> dict[str, float]:
        """Ids of the `k` nearest chunks and their cosine similarities, best first, without texts (cheaper)."""
        if k <= 0:
            return {}
        result = self.collection.query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=k, include=["distances"]
        )
        return {i: 1.0 - float(d) for i, d in zip(result["ids"][0], result["distances"][0], strict=True)}

    def similarities(self, vector: np.ndarray, ids: Sequence[str]) -> dict[str, float]:
        """Cosine similarity of `vector` to each stored chunk in `ids` (stored vectors are unit length)."""
        found = self.vectors(ids)
        if not found:
            return {}
        values = np.stack(list(found.values())) @ np.asarray(vector, dtype=np.float32)
        return {i: float(v) for i, v in zip(found, values, strict=True)}

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors by chunk id, fetched 1,000 at a time; ids the store does not hold are left out."""
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), 1000):
            page = self.collection.get(ids=list(ids[start : start + 1000]), include=["embeddings"])
            matrix = np.asarray(page["embeddings"], dtype=np.float32)
            found.update(zip(page["ids"], matrix, strict=True))
        return found

    def sample_vectors(self, n: int, *, seed: int = 0) -> tuple[list[str], np.ndarray]:
        """Up to `n` stored chunks drawn at random: their sources and their vectors."""
        ids = self.collection.get(include=[])["ids"]
        if not ids:
            return [], np.zeros((0, 0), dtype=np.float32)
        rng = np.random.default_rng(seed)
        chosen = [ids[i] for i in sorted(rng.choice(len(ids), size=min(n, len(ids)), replace=False))]
        sources: list[str] = []
        vectors: list[Any] = []
        for start in range(0, len(chosen), 1000):
            page = self.collection.get(ids=chosen[start : start + 1000], include=["embeddings", "metadatas"])
            sources.extend(str((m or {}).get("source", "")) for m in page["metadatas"])
            vectors.extend(page["embeddings"])
        return sources, np.asarray(vectors, dtype=np.float32)

    def get(self, ids: Sequence[str]) -> list[StoredChunk]:
        """Chunks by id, in the order asked, skipping ids the store does not hold."""
        if not ids:
            return []
        page = self.collection.get(ids=list(ids), include=["metadatas", "documents"])
        found = {
            i: _stored(i, m or {}, d or "")
            for i, m, d in zip(page["ids"], page["metadatas"], page["documents"], strict=True)
        }
        return [found[i] for i in ids if i in found]


def _metadata(chunk: Chunk, chunk_count: int) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "source": chunk.source,
        "note_id": chunk.note_id,
        "title": chunk.title,
        "heading": chunk.heading,
        "start_line": chunk.start_line,
        "end_line": chunk.end_line,
        "chunk_index": chunk.index,
        "chunk_count": chunk_count,
        "note_hash": chunk.note_hash,
    }
    if chunk.tags:
        meta["tags"] = list(chunk.tags)
    return meta


def _stored(chunk_id: str, meta: dict[str, Any], text: str, *, similarity: float = 0.0) -> StoredChunk:
    tags = meta.get("tags") or ()
    return StoredChunk(
        id=chunk_id,
        text=text,
        source=str(meta.get("source", "")),
        title=str(meta.get("title", "")),
        heading=str(meta.get("heading", "")),
        start_line=int(meta.get("start_line", 0)),
        end_line=int(meta.get("end_line", 0)),
        tags=tuple(tags) if isinstance(tags, list) else (str(tags),),
        note_hash=str(meta.get("note_hash", "")),
        similarity=similarity,
    )
