"""Storage: chunks and their vectors in a Chroma collection (embedded on disk, or a Chroma server).

This is the one place where Chroma's cosine distances become cosine similarities (1 - distance). Chroma never
embeds anything here: it gets our vectors and `embedding_function=None`.

An index is a line of generations, one Chroma collection each (`knowledge`, `knowledge--2`, ...), every one built
with one model and one chunking (its `build`). Readers open the active generation and never change it. A change of
model or chunking builds the next generation beside the active one, which keeps answering; once the new one holds
every note, `activate` switches to it in one metadata write and drops the old ones. A rebuild cut short leaves the
active generation serving and its half-built successor to resume.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from rag.chunk import Chunk
from rag.errors import StoreError

_PAGE = 5000
_READY = "ready"
_BUILDING = "building"
# Collection metadata key of the token that changes before any write to the generation's chunks.
_REVISION = "revision"


@dataclass(frozen=True)
class Build:
    """What shaped a collection's vectors: the model and the chunking. Data derived from it must match."""

    model: str
    chunker: str

    def __str__(self) -> str:
        return f"{self.model} | {self.chunker}"

    def difference(self, other: Build) -> str | None:
        """Why an index built as `self` does not fit settings that ask for `other`, or None when it does."""
        if self.model != other.model:
            return f"the model changed from {self.model!r} to {other.model!r}"
        if self.chunker != other.chunker:
            return f"the chunking changed from {self.chunker!r} to {other.chunker!r}"
        return None


@dataclass(frozen=True)
class NoteState:
    """What the store holds of one note: its hash and chunk ids, and whether that set is whole."""

    note_hash: str
    chunk_ids: frozenset[str]
    complete: bool


@dataclass(frozen=True)
class NoteWrite:
    """One note to write (`Store.write_notes`): all its chunks now, the vectors of those to add (or write again),
    and the chunk ids the store holds for it; every chunk not in `new` must be among `held` and keeps its vector,
    getting its new metadata (lines, order, hash) only."""

    source: str
    chunks: Sequence[Chunk]
    new: dict[str, np.ndarray]
    held: frozenset[str] = frozenset()


def connect(*, db_dir: Path, chroma_url: str | None) -> Any:
    """A Chroma client for the embedded folder, or for the server at `chroma_url`."""
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


@dataclass(frozen=True)
class _Generation:
    name: str
    number: int
    ready: bool
    build: Build


class Store:
    """One generation of an index: a Chroma collection of chunks built with one `Build`.

    Use `Store.active` (to read) or `Store.for_build` (to write) rather than the constructor.
    """

    def __init__(self, client: Any, collection: Any, *, location: str, index: str) -> None:
        self.client = client
        self.collection = collection
        self.location = location
        # The index this generation belongs to (the configured collection name).
        self.index = index
        # Whether the revision was changed since the last checkpoint (the first write after it changes it).
        self._revised = False

    @property
    def name(self) -> str:
        """This generation's collection name; derived data (keyword index, calibration) is kept under it."""
        return str(self.collection.name)

    @property
    def build(self) -> Build:
        meta = self.collection.metadata or {}
        return Build(str(meta.get("model")), str(meta.get("chunker")))

    @property
    def ready(self) -> bool:
        """Whether this generation is the one that answers (a rebuild in progress is not, until activated)."""
        return (self.collection.metadata or {}).get("state", _READY) == _READY

    @classmethod
    def active(cls, *, db_dir: Path, chroma_url: str | None = None, name: str = "knowledge") -> Store | None:
        """The generation that answers questions, or None when nothing was ever indexed. Creates nothing.

        Raises:
            StoreError: the server cannot be reached or the store cannot be read.
        """
        if not chroma_url and not Path(db_dir).exists():
            return None
        client = connect(db_dir=Path(db_dir), chroma_url=chroma_url)
        ready = [g for g in _generations(client, name, chroma_url or str(db_dir)) if g.ready]
        if not ready:
            return None
        return cls._wrap(client, max(ready, key=lambda g: g.number), chroma_url or str(db_dir), name)

    @classmethod
    def for_build(cls, *, db_dir: Path, chroma_url: str | None = None, name: str = "knowledge", build: Build) -> Store:
        """The generation to write for `build`: the active one when it matches, else the rebuild in progress for
        `build` (to resume it), else a new generation. A new generation is created ready when there is no active
        one (a first index answers as it fills) and building otherwise (the active one answers until `activate`)."""
        location = chroma_url or str(db_dir)
        client = connect(db_dir=Path(db_dir), chroma_url=chroma_url)
        generations = _generations(client, name, location)
        ready = [g for g in generations if g.ready]
        active = max(ready, key=lambda g: g.number) if ready else None
        if active is not None and active.build == build:
            return cls._wrap(client, active, location, name)
        resumable = [g for g in generations if not g.ready and g.build == build]
        if resumable:
            return cls._wrap(client, max(resumable, key=lambda g: g.number), location, name)
        number = max((g.number for g in generations), default=0) + 1
        collection = client.create_collection(
            name if number == 1 else f"{name}--{number}",
            configuration={"hnsw": {"space": "cosine"}},
            metadata=_generation_meta(build, number, ready=active is None),
            embedding_function=None,
        )
        return cls(client, collection, location=location, index=name)

    @classmethod
    def _wrap(cls, client: Any, generation: _Generation, location: str, name: str) -> Store:
        collection = client.get_collection(generation.name, embedding_function=None)
        return cls(client, collection, location=location, index=name)

    def activate(self) -> list[str]:
        """Make this generation the one that answers, in one metadata write, then drop every other generation of
        the index. Returns the names dropped.

        It was created with the highest generation number, so from the moment it is marked ready it is the one
        `Store.active` opens, even if the process dies before the old ones are dropped (the next call drops them).
        """
        if not self.ready:
            self._set_metadata("state", _READY)
        return self._drop(lambda g: g.name != self.name)

    def drop_superseded(self) -> list[str]:
        """Drop the ready generations older than this one, left behind when a switch was cut short between its
        metadata write and the drops (`activate`); a rebuild in progress is kept. Returns the names dropped."""
        number = int((self.collection.metadata or {}).get("generation", 1))
        return self._drop(lambda g: g.ready and g.name != self.name and g.number < number)

    def _drop(self, doomed: Callable[[_Generation], bool]) -> list[str]:
        """Delete the generations of this index that `doomed` picks; returns their names."""
        dropped = [g.name for g in _generations(self.client, self.index, self.location) if doomed(g)]
        for other in dropped:
            self.client.delete_collection(other)
        return dropped

    def _set_metadata(self, key: str, value: Any) -> None:
        """One key of this generation's collection metadata, the others kept (Chroma replaces the whole mapping)."""
        self.collection.modify(metadata={**(self.collection.metadata or {}), key: value})

    def revision(self, *, fresh: bool = False) -> str | None:
        """The token naming this generation's chunks as they are: it changes before any write through `Store`, so
        a copy of what the store held, saved with its revision, is current exactly while the revision is the same.
        None for a generation never checkpointed. With `fresh`, read from the store rather than this handle."""
        meta = (
            self.client.get_collection(self.name, embedding_function=None).metadata
            if fresh
            else self.collection.metadata
        )
        value = (meta or {}).get(_REVISION)
        return None if value is None else str(value)

    def checkpoint(self) -> str:
        """The current revision, made if there is none; the next write changes it again."""
        current = self.revision()
        if current is None:
            current = self._revise()
        self._revised = False
        return current

    def _before_write(self) -> None:
        if not self._revised:
            self._revise()
            self._revised = True

    def _revise(self) -> str:
        token = uuid.uuid4().hex
        self._set_metadata(_REVISION, token)
        return token

    def unreachable(self, ids: Sequence[str], *, batch: int = 200) -> list[str]:
        """Those of `ids` that vector search does not return even for their own stored vector.

        Chroma can keep a record that `get` returns while its nearest-neighbour graph never reaches it (seen after
        many deletes and re-adds, chroma-core/chroma#7758); such a chunk is invisible to dense search.
        """
        missing: list[str] = []
        depth = min(10, self.count())
        for start in range(0, len(ids), batch):
            page = self.collection.get(ids=list(ids[start : start + batch]), include=["embeddings"])
            if not page["ids"]:
                continue
            found = self.collection.query(
                query_embeddings=np.asarray(page["embeddings"], dtype=np.float32), n_results=depth, include=[]
            )
            missing.extend(i for i, near in zip(page["ids"], found["ids"], strict=True) if i not in near)
        return missing

    def copy_to_new_generation(self) -> Store:
        """A new generation holding exactly this one's records (ids, vectors, texts, metadata), made active; its
        nearest-neighbour graph is built afresh, which makes every record reachable again. No model is needed."""
        generations = _generations(self.client, self.index, self.location)
        number = max(g.number for g in generations) + 1
        collection = self.client.create_collection(
            f"{self.index}--{number}",
            configuration={"hnsw": {"space": "cosine"}},
            metadata=_generation_meta(self.build, number, ready=False),
            embedding_function=None,
        )
        offset = 0
        while True:
            page = self.collection.get(limit=_PAGE, offset=offset, include=["embeddings", "documents", "metadatas"])
            if not page["ids"]:
                break
            collection.add(
                ids=page["ids"],
                embeddings=np.asarray(page["embeddings"], dtype=np.float32),
                documents=page["documents"],
                metadatas=page["metadatas"],
            )
            offset += len(page["ids"])
        copy = Store(self.client, collection, location=self.location, index=self.index)
        copy.activate()
        return copy

    def pending_rebuild(self) -> Store | None:
        """A generation of this index being built beside this one (the newest), or None."""
        building = [g for g in _generations(self.client, self.index, self.location) if not g.ready]
        if not building:
            return None
        return self._wrap(self.client, max(building, key=lambda g: g.number), self.location, self.index)

    def count(self) -> int:
        return int(self.collection.count())

    def iter_chunks(self, *, with_text: bool = False) -> Iterator[Chunk]:
        """Every stored chunk, page by page (texts empty unless `with_text`)."""
        include = ["metadatas", "documents"] if with_text else ["metadatas"]
        offset = 0
        while True:
            page = self.collection.get(limit=_PAGE, offset=offset, include=include)
            ids = page["ids"]
            if not ids:
                return
            documents = page.get("documents") or [""] * len(ids)
            for chunk_id, meta, text in zip(ids, page["metadatas"], documents, strict=True):
                yield _chunk(chunk_id, meta or {}, text or "")
            offset += len(ids)

    def note_states(self) -> dict[str, NoteState]:
        """Per source file: the stored hash and chunk ids, and whether they form one whole, current set."""
        ids: dict[str, set[str]] = {}
        hashes: dict[str, set[str]] = {}
        counts: dict[str, set[int]] = {}
        positions: dict[str, list[int]] = {}
        for chunk, count in self._chunk_counts():
            ids.setdefault(chunk.source, set()).add(chunk.id)
            hashes.setdefault(chunk.source, set()).add(chunk.note_hash)
            counts.setdefault(chunk.source, set()).add(count)
            positions.setdefault(chunk.source, []).append(chunk.index)
        states = {}
        for source, chunk_ids in ids.items():
            (count,) = counts[source] if len(counts[source]) == 1 else (-1,)
            whole = sorted(positions[source]) == list(range(count))
            complete = len(hashes[source]) == 1 and whole
            states[source] = NoteState(next(iter(hashes[source])), frozenset(chunk_ids), complete)
        return states

    def _chunk_counts(self) -> Iterator[tuple[Chunk, int]]:
        offset = 0
        while True:
            page = self.collection.get(limit=_PAGE, offset=offset, include=["metadatas"])
            if not page["ids"]:
                return
            for chunk_id, meta in zip(page["ids"], page["metadatas"], strict=True):
                meta = meta or {}
                yield _chunk(chunk_id, meta, ""), int(meta.get("chunk_count", -1))
            offset += len(page["ids"])

    def write_notes(self, notes: Sequence[NoteWrite]) -> None:
        """Make the store hold exactly each note's `chunks`, in one upsert, one update and one delete for them all
        (a Chroma call costs about 17 ms whatever its size, which made one call per note most of an index's time).

        New chunks are written first and the ones the notes lost are deleted last, so a crash in between leaves
        notes with mixed hashes or extra positions, which `note_states` reports as incomplete for the next sync.

        Raises:
            ValueError: a chunk to keep that the store does not hold (it has no vector to keep).
        """
        added: list[tuple[Chunk, np.ndarray, int]] = []
        kept: list[tuple[Chunk, int]] = []
        gone: list[str] = []
        for note in notes:
            count = len(note.chunks)
            for chunk in note.chunks:
                if chunk.id in note.new:
                    added.append((chunk, note.new[chunk.id], count))
                elif chunk.id in note.held:
                    kept.append((chunk, count))
                else:
                    raise ValueError(f"no vector for chunk {chunk.id} of {note.source}, which the store does not hold")
            gone.extend(sorted(note.held - {c.id for c in note.chunks}))
        if not (added or kept or gone):
            return
        self._before_write()
        if added:
            self.collection.upsert(
                ids=[c.id for c, _, _ in added],
                embeddings=np.stack([np.asarray(v, dtype=np.float32) for _, v, _ in added]),
                documents=[c.text for c, _, _ in added],
                metadatas=[_metadata(c, count) for c, _, count in added],
            )
        if kept:
            self.collection.update(
                ids=[c.id for c, _ in kept], metadatas=[_metadata(c, count, clear=True) for c, count in kept]
            )
        if gone:
            self.collection.delete(ids=gone)

    def delete_notes(self, sources: Sequence[str]) -> None:
        if sources:
            self._before_write()
        for start in range(0, len(sources), 500):
            self.collection.delete(where={"source": {"$in": list(sources[start : start + 500])}})

    def query(self, vector: np.ndarray, *, k: int, where: dict[str, Any] | None = None) -> list[tuple[Chunk, float]]:
        """The `k` nearest chunks, best first, each with its cosine similarity; with `where`, among the chunks
        whose metadata match it (Chroma filters before it ranks, so `k` come back when `k` match)."""
        # No count() first: Chroma returns fewer than `k` when it holds fewer, and the round trip costs ~1 ms.
        if k <= 0:
            return []
        result = self.collection.query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)],
            n_results=k,
            where=where,
            include=["documents", "metadatas", "distances"],
        )
        return [
            (_chunk(chunk_id, meta or {}, text or ""), similarity(distance))
            for chunk_id, text, meta, distance in zip(
                result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0], strict=True
            )
        ]

    def nearest(self, vector: np.ndarray, *, k: int, where: dict[str, Any] | None = None) -> dict[str, float]:
        """Ids of the `k` nearest chunks (matching `where`, if given) and their cosine similarities, best first,
        without texts (cheaper)."""
        if k <= 0:
            return {}
        result = self.collection.query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=k, where=where, include=["distances"]
        )
        return {i: similarity(d) for i, d in zip(result["ids"][0], result["distances"][0], strict=True)}

    def matching_ids(self, where: dict[str, Any]) -> list[str]:
        """Ids of every chunk whose metadata match the Chroma clause `where`."""
        ids: list[str] = []
        offset = 0
        while True:
            page = self.collection.get(where=where, limit=_PAGE, offset=offset, include=[])
            if not page["ids"]:
                return ids
            ids.extend(page["ids"])
            offset += len(page["ids"])

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

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        """Chunks by id, in the order asked, skipping ids the store does not hold."""
        if not ids:
            return []
        page = self.collection.get(ids=list(ids), include=["metadatas", "documents"])
        found = {
            i: _chunk(i, m or {}, d or "")
            for i, m, d in zip(page["ids"], page["metadatas"], page["documents"], strict=True)
        }
        return [found[i] for i in ids if i in found]


# A file's size and modification time in nanoseconds, as the ledger last saw it.
Stamp = tuple[int, int]


class NoteLedger:
    """What one generation holds of each note (`NoteState`), kept in a local file so that a sync of an unchanged
    folder need not read every chunk's metadata back from Chroma (5.6 s at 100k chunks, linear in the chunks),
    with each note file's stamp (size, modification time) when its bytes were last read and found indexed, so that
    such a sync need not read the file either.

    The file names the collection, its revision and its chunk count; it is used only while all three are the
    store's, and the revision changes before any write (`Store.checkpoint`), so a write by another process, or one
    cut short by a crash, makes it stale and the store is read instead (with no stamps: every file is read). Only a
    sync, which holds the store's sync lock, records it; readers use it or read the store, and never save what
    they read. That lock is per machine: the processes that write one store (the chat, a kernel, the CLI) share a
    knowledge folder there, and so this file. Two machines syncing two folders into one Chroma server are not
    supported anyway, since each sync removes the notes its own folder lacks.
    """

    FORMAT = 2

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._key: tuple[str, str, int] | None = None
        self._states: dict[str, NoteState] = {}
        self._stamps: dict[str, Stamp] = {}

    def states(self, store: Store) -> dict[str, NoteState]:
        """The store's note states: from memory or the file while current, else read from the store."""
        return self.read(store)[0]

    def read(self, store: Store) -> tuple[dict[str, NoteState], dict[str, Stamp], bool]:
        """The store's note states, the files' stamps, and whether both came from a current ledger (when not,
        the states were read from the store and there are no stamps)."""
        revision = store.revision(fresh=True)
        if revision is not None:
            key = (str(store.collection.id), revision, store.count())
            if self._key != key:
                loaded = self._load(key)
                if loaded is not None:
                    self._key, (self._states, self._stamps) = key, loaded
            if self._key == key:
                return dict(self._states), dict(self._stamps), True
        return store.note_states(), {}, False

    def record(self, store: Store, states: dict[str, NoteState], stamps: dict[str, Stamp] | None = None) -> None:
        """Save `states` as what `store` holds now, and the `stamps` of files whose bytes are indexed as read (the
        caller has just written them and holds the sync lock)."""
        stamps = stamps or {}
        key = (str(store.collection.id), store.checkpoint(), store.count())
        notes = {
            source: [s.note_hash, sorted(s.chunk_ids), s.complete, *stamps.get(source, ())]
            for source, s in sorted(states.items())
        }
        body = {"format": self.FORMAT, "collection": key[0], "revision": key[1], "count": key[2], "notes": notes}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(body), encoding="utf-8")
        os.replace(tmp, self.path)
        self._key, self._states = key, dict(states)
        self._stamps = {source: stamp for source, stamp in stamps.items() if source in states}

    def _load(self, key: tuple[str, str, int]) -> tuple[dict[str, NoteState], dict[str, Stamp]] | None:
        try:
            body = json.loads(self.path.read_text(encoding="utf-8"))
            if body.get("format") != self.FORMAT or (body["collection"], body["revision"], body["count"]) != key:
                return None
            states, stamps = {}, {}
            for source, (note_hash, ids, complete, *stamp) in body["notes"].items():
                states[source] = NoteState(str(note_hash), frozenset(ids), bool(complete))
                if len(stamp) == 2:
                    stamps[source] = (int(stamp[0]), int(stamp[1]))
            return states, stamps
        except (OSError, ValueError, KeyError, TypeError):
            # Missing, cut short or from another version: the store itself is read instead.
            return None


def similarity(distance: float) -> float:
    """Chroma's cosine space stores distance = 1 - cosine similarity; this is the only conversion."""
    return 1.0 - float(distance)


def _generations(client: Any, name: str, location: str) -> list[_Generation]:
    """Every generation of the index `name`: the collection `name` itself and `name--N`."""
    try:
        collections = list(client.list_collections())
    except Exception as exc:  # noqa: BLE001
        raise StoreError(f"cannot read the Chroma store at {location} ({exc})") from exc
    found = []
    for collection in collections:
        cname = collection.name
        number = 1 if cname == name else _suffix_number(cname, name)
        if number is None:
            continue
        meta = collection.metadata or {}
        found.append(
            _Generation(
                cname,
                int(meta.get("generation", number)),
                meta.get("state", _READY) == _READY,
                Build(str(meta.get("model")), str(meta.get("chunker"))),
            )
        )
    return found


def _suffix_number(cname: str, name: str) -> int | None:
    prefix = f"{name}--"
    if cname.startswith(prefix) and cname[len(prefix) :].isdigit():
        return int(cname[len(prefix) :])
    return None


def _generation_meta(build: Build, number: int, *, ready: bool) -> dict[str, Any]:
    return {
        "model": build.model,
        "chunker": build.chunker,
        "generation": number,
        "state": _READY if ready else _BUILDING,
    }


def _metadata(chunk: Chunk, chunk_count: int, *, clear: bool = False) -> dict[str, Any]:
    """A chunk's metadata row; with `clear`, optional fields it lacks are set to None, which removes them in an
    update (an update merges into the stored row)."""
    meta: dict[str, Any] = {
        "source": chunk.source,
        "note_id": chunk.note_id,
        "title": chunk.title,
        "start_line": chunk.start_line,
        "end_line": chunk.end_line,
        "chunk_index": chunk.index,
        "chunk_count": chunk_count,
        "note_hash": chunk.note_hash,
    }
    # Chroma refuses empty lists; a missing key reads back as an empty tuple.
    optional = {
        "heading": list(chunk.heading) or None,
        "tags": list(chunk.tags) or None,
        "context": chunk.context,
    }
    meta.update({k: v for k, v in optional.items() if v is not None or clear})
    return meta


def _chunk(chunk_id: str, meta: dict[str, Any], text: str) -> Chunk:
    tags = meta.get("tags") or ()
    heading = meta.get("heading") or ()
    return Chunk(
        id=chunk_id,
        source=str(meta.get("source", "")),
        note_id=str(meta.get("note_id", "")),
        title=str(meta.get("title", "")),
        tags=tuple(tags) if isinstance(tags, list) else (str(tags),),
        heading=tuple(heading) if isinstance(heading, list) else (str(heading),),
        text=text,
        start_line=int(meta.get("start_line", 0)),
        end_line=int(meta.get("end_line", 0)),
        index=int(meta.get("chunk_index", 0)),
        note_hash=str(meta.get("note_hash", "")),
        context=meta.get("context"),
    )
