"""`KnowledgeBase`: the library's front door, shared by the CLI, the web chat and the notebook.

It ties one `Config` to a lazily loaded embedder and the index's active generation, serialises syncs across
processes with a lock file, and exposes sync, search, add-note and status. The keyword index and the calibration
keep their own files and decide their own freshness; this class only tells them when a sync changed the store.
Reads never write: a search or a status on an index built with other settings reports the mismatch and what to
run, and answers from the index as it is; `sync()` builds the new generation beside it. `ask` is the one-call
version for notebooks and scripts, backed by one shared `KnowledgeBase` per configuration. It holds no UI code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from rag.calibrate import Calibration, CalibrationCache
from rag.chunk import chunking_id
from rag.config import Config
from rag.embed import Embedder, embed_query, make_embedder
from rag.errors import IndexLockedError, NoteWriteError, StoreError, StoreInUseError
from rag.figure import Figure, map_svg, score_picture, side_by_side
from rag.keyword import KeywordCache, KeywordIndex
from rag.load import find_notes
from rag.project import MapView, Projection, ProjectionCache, view
from rag.retrieve import SearchResult, search
from rag.store import Build, NoteLedger, Store
from rag.sync import FileStatus, SyncReport, folder_status, sync_folder
from rag.write import NewNote, write_note

if TYPE_CHECKING:
    from rag.answer import Answerer
    from rag.filters import SearchFilter
    from rag.rerank import Reranker

# The file in a generation's derived folder that names the notes a sync is writing (see `rag.sync.sync_folder`).
SYNC_JOURNAL = "sync-journal.json"


@dataclass(frozen=True)
class Rebuild:
    """A new generation of the index being built beside the one that answers."""

    reason: str
    done: int  # notes the new generation holds whole
    total: int  # notes in the folder

    def __str__(self) -> str:
        return f"rebuilding: {self.done} of {self.total} notes ({self.reason})"


@dataclass(frozen=True)
class Verification:
    """A self-check of vector search: stored chunks asked for by their own vectors, and those it never returned."""

    checked: int
    total: int
    unreachable: list[str]
    # Whether a random sample was checked rather than every chunk (the index held more than the sample size).
    sampled: bool
    # After `--repair`: the check of the repaired index (None when no repair ran).
    after: Verification | None = None

    def __str__(self) -> str:
        what = f"a random sample of {self.checked} of {self.total}" if self.sampled else f"all {self.total}"
        text = f"verified {what} chunks by their own vectors: {len(self.unreachable)} unreachable"
        if self.after is not None:
            text += f"; after repair: {len(self.after.unreachable)} unreachable of {self.after.checked} checked"
        return text


@dataclass(frozen=True)
class Status:
    """The index at a glance: per-file standing, totals, the model and where the store lives."""

    files: list[FileStatus]
    notes: int
    chunks: int
    model: str
    db: str
    knowledge: str
    # Why the index does not fit the settings, and what to run; None when it does.
    mismatch: str | None = None
    rebuild: Rebuild | None = None


class KnowledgeBase:
    """A knowledge folder and its index.

    Args:
        config: settings; defaults to `Config.from_env()`.
        embedder: a ready embedder (tests pass a fake for pure logic); defaults to the configured model.
    """

    def __init__(self, config: Config | None = None, *, embedder: Embedder | None = None) -> None:
        self.config = config or Config.from_env()
        self._embedders: dict[str, Embedder] = {}
        if embedder is not None:
            self._embedders[embedder.name] = embedder
        self._embedder = embedder
        self._serving: Store | None = None
        self._answerer: Answerer | None = None
        self._reranker: Reranker | None = None
        self._keyword: dict[str, KeywordCache] = {}
        self._calibration: dict[str, CalibrationCache] = {}
        self._projection: dict[str, ProjectionCache] = {}
        self._ledgers: dict[str, NoteLedger] = {}
        # Guards this object's state (the open generation, the caches); held only briefly, so searches go on while
        # a sync, even a long rebuild, runs under `_syncing` in another thread.
        self._lock = threading.RLock()
        self._syncing = threading.Lock()

    @property
    def embedder(self) -> Embedder:
        """The embedder of the configured model (the one a sync builds with)."""
        if self._embedder is None:
            self._embedder = make_embedder(self.config)
            self._embedders.setdefault(self._embedder.name, self._embedder)
        return self._embedder

    @property
    def build(self) -> Build:
        """The model and chunking the settings ask for."""
        return Build(self.embedder.name, chunking_id(self.config.chunk_tokens, self.config.overlap_tokens))

    @property
    def store(self) -> Store:
        """The generation of the index that answers questions.

        Raises:
            StoreError: nothing was indexed yet.
        """
        with self._lock:
            if self._serving is None:
                self._serving = Store.active(
                    db_dir=self.config.db_dir, chroma_url=self.config.chroma_url, name=self.config.collection
                )
            if self._serving is None:
                where = self.config.chroma_url or self.config.db_dir
                raise StoreError(f"no index at {where}; run `python -m rag index`")
            return self._serving

    def mismatch(self) -> str | None:
        """Why the index that answers was built differently from what the settings ask for, with what to run."""
        try:
            difference = self.store.build.difference(self.build)
        except StoreError:
            return None
        if difference is None:
            return None
        return (
            f"the index was built for other settings ({difference}); run `python -m rag index` to rebuild it "
            "beside the current one, which answers until the new one is complete"
        )

    def claim(self) -> None:
        """Hold the embedded store for this process for as long as it lives (the chat and the notebook do).

        Chroma's embedded store is not process-safe: measured with chromadb 1.5.9, a process that keeps it open
        does not see another process's new vectors, returns deleted chunks as ghosts, and alternating writers lose
        records from the search graph. So one long-running process holds it, and any other process's write is
        refused with a pointer to server mode (`--chroma-url`). A Chroma server needs no claim.

        Raises:
            StoreInUseError: another live process holds it.
        """
        if self.config.chroma_url:
            return
        key = str(Path(self.config.db_dir).resolve())
        if key in _claims:
            return
        from filelock import FileLock, Timeout

        Path(key).mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(Path(key) / "owner.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise self._in_use() from None
        (Path(key) / "owner.json").write_text(json.dumps({"pid": os.getpid(), "argv": sys.argv[:4]}))
        _claims[key] = lock

    def _check_owner(self) -> None:
        """Refuse a write to an embedded store that another live process holds (see `claim`)."""
        if self.config.chroma_url:
            return
        key = str(Path(self.config.db_dir).resolve())
        if key in _claims or not (Path(key) / "owner.lock").exists():
            return
        from filelock import FileLock, Timeout

        probe = FileLock(str(Path(key) / "owner.lock"))
        try:
            probe.acquire(timeout=0)
        except Timeout:
            raise self._in_use() from None
        probe.release()

    def _in_use(self) -> StoreInUseError:
        try:
            owner = json.loads((Path(self.config.db_dir) / "owner.json").read_text())
            who = f"process {owner.get('pid')} ({' '.join(map(str, owner.get('argv', [])))})"
        except (OSError, ValueError):
            who = "another process"
        return StoreInUseError(
            f"the embedded store at {self.config.db_dir} is open in {who}, and Chroma's embedded store serves one "
            "process at a time; stop that process, or run `chroma run --path DIR --host 127.0.0.1 --port 8000` "
            "and give every process --chroma-url http://127.0.0.1:8000 (RAG_CHROMA_URL)"
        )

    def sync(self, *, progress: bool = False, wait: float | None = None, rebuild: bool = True) -> SyncReport:
        """Bring the index in line with the folder (see `rag.sync.sync_folder`).

        Args:
            progress: show a progress bar on stderr while embedding.
            wait: seconds to wait for another process's sync (default `config.lock_wait`).
            rebuild: when the index was built with another model or chunking, build a new generation beside it
                and switch to it once complete. With False (the read paths: `ask`, the notebook) such an index is
                left alone and the report says why (`rebuild_needed`).

        Raises:
            IndexLockedError: another process kept the store locked for `wait` seconds.
        """
        wait = self.config.lock_wait if wait is None else wait
        self._check_owner()
        if not rebuild and (needed := self.mismatch()):
            store = self.store
            notes = len(self._ledger(store).states(store))
            return SyncReport(notes=notes, chunks=store.count(), rebuild_needed=needed)
        with self._syncing, self._process_lock(wait):
            with self._lock:
                self._serving = None  # another process may have switched generations since
            active = Store.active(
                db_dir=self.config.db_dir, chroma_url=self.config.chroma_url, name=self.config.collection
            )
            target = Store.for_build(
                db_dir=self.config.db_dir,
                chroma_url=self.config.chroma_url,
                name=self.config.collection,
                build=self.build,
            )
            reason = active.build.difference(target.build) if active is not None and not target.ready else None
            report = sync_folder(
                self.config.knowledge_dir,
                target,
                self.embedder,
                chunk_tokens=self.config.chunk_tokens,
                overlap_tokens=self.config.overlap_tokens,
                max_file_bytes=self.config.max_file_bytes,
                progress=progress,
                journal=self.derived_dir(target) / SYNC_JOURNAL,
                ledger=self._ledger(target),
            )
            if not target.ready:
                # Every note is in the new generation: switch to it, then drop the old one and its derived data.
                for dropped in target.activate():
                    shutil.rmtree(self._derived_dir(dropped), ignore_errors=True)
                report = replace(report, rebuilt=reason)
            else:
                # A switch cut short (killed after its metadata write) leaves the old generation beside this one.
                for dropped in target.drop_superseded():
                    shutil.rmtree(self._derived_dir(dropped), ignore_errors=True)
            with self._lock:
                self._serving = target
            if report.added or report.updated or report.removed or report.rebuilt:
                # torch is loaded by now; export the query encoder while it is cheap, not in the next `ask`.
                prepare = getattr(self.embedder, "prepare", None)
                if prepare is not None and report.embedded:
                    prepare()
                with self._lock:
                    self._derived_changed(target)
            return report

    def _derived_changed(self, store: Store) -> None:
        """Keep the keyword index and calibration in step now, so the next process finds them current on disk."""
        keyword = self._keyword_cache(store)
        if self.config.search_mode != "dense" or store.name in self._keyword_used:
            keyword.refresh(store, self._pairs(store))
        else:
            # This process does not search by keywords: drop the saved index, so that a process that does (a chat
            # beside this CLI run) sees the file change and rebuilds instead of keeping old texts.
            keyword.discard()
        self._calibration_cache(store).current(store, recheck=True)
        projection = self._projection_cache(store)
        if projection.in_use:
            # Only a knowledge base whose map was drawn (here or by another process) pays for keeping it current.
            projection.current(store, recheck=True)

    @property
    def cache_dir(self) -> Path:
        """Local folder of the answering generation's keyword index and calibration."""
        return self.derived_dir(self.store)

    def derived_dir(self, store: Store) -> Path:
        """The local folder of one generation's derived data (keyword index, calibration, sync journal)."""
        return self._derived_dir(store.name)

    def _derived_dir(self, name: str) -> Path:
        # Beside an embedded store; for a Chroma server, under the local db folder, one folder per server.
        if self.config.chroma_url:
            server = re.sub(r"[^A-Za-z0-9]+", "-", self.config.chroma_url).strip("-")
            return Path(self.config.db_dir) / "derived" / f"{server}--{name}"
        return Path(self.config.db_dir) / "derived" / name

    @property
    def _keyword_used(self) -> set[str]:
        return {name for name, cache in self._keyword.items() if cache.loaded}

    def _keyword_cache(self, store: Store) -> KeywordCache:
        if store.name not in self._keyword:
            self._keyword[store.name] = KeywordCache(self.derived_dir(store) / "bm25")
        return self._keyword[store.name]

    def _calibration_cache(self, store: Store) -> CalibrationCache:
        if store.name not in self._calibration:
            self._calibration[store.name] = CalibrationCache(self.derived_dir(store) / "calibration.json")
        return self._calibration[store.name]

    def _ledger(self, store: Store) -> NoteLedger:
        if store.name not in self._ledgers:
            self._ledgers[store.name] = NoteLedger(self.derived_dir(store) / "notes.json")
        return self._ledgers[store.name]

    def _pairs(self, store: Store) -> dict[str, str]:
        """Chunk id -> note hash of every chunk `store` holds, from its note ledger (the store is read only when
        the ledger is stale)."""
        return {i: state.note_hash for state in self._ledger(store).states(store).values() for i in state.chunk_ids}

    def _projection_cache(self, store: Store) -> ProjectionCache:
        if store.name not in self._projection:
            self._projection[store.name] = ProjectionCache(self.derived_dir(store) / "projection.json")
        return self._projection[store.name]

    def projection(self) -> Projection | None:
        """Every chunk placed on the first two principal axes of the vectors (None for an empty index); fitted
        once per build and kept beside the calibration (see `rag.project`)."""
        with self._lock:
            return self._projection_cache(self.store).current(self.store)

    def map_view(self, result: SearchResult | None = None, *, limit: int = 2_500) -> MapView | None:
        """What the map shows (None for an empty index): a dot per chunk, a random `limit` of them in a larger
        index; with a search `result`, its question placed (one encode, one matrix product) and its hits ringed."""
        projection = self.projection()
        if projection is None:
            return None
        if result is None:
            return view(projection, limit=limit)
        vector = embed_query(self._embedder_for(self.store.build.model), result.question)
        hits = [hit.chunk.id for hit in result.hits]
        return view(projection, question=result.question, vector=vector, sources=hits, limit=limit)

    def map(self, question: str | None = None, *, k: int = 5, limit: int = 2_500) -> Figure:
        """The map of meaning as a picture (see `map_view`); with a question, its best hit's cosine is set against
        the corpus background beside the map.

        Raises:
            EmptyQuestionError: the question is blank.
            StoreError: nothing was indexed yet, or the index holds no chunks.
        """
        result = None if question is None else self.search(question, k=k)
        shown = self.map_view(result, limit=limit)
        if shown is None:
            raise StoreError("the index holds no chunks to draw; add notes and run `python -m rag index`")
        if result is None:
            return Figure(map_svg(shown), "Map of the knowledge base")
        score = score_picture(self.calibration(), result, confident_percentile=self.config.confident_percentile)
        return Figure(side_by_side(map_svg(shown), score), f"Map: {result.question}")

    def keyword_index(self) -> KeywordIndex:
        """The BM25 index (and vector copy) of the answering generation's current chunks."""
        with self._lock:
            store = self.store
            cache = self._keyword_cache(store)
            # A first load needs the store's chunk ids to match the saved index: the ledger has them, no scan.
            return cache.current(store, None if cache.loaded else self._pairs(store))

    def calibration(self) -> Calibration | None:
        """The corpus's background similarities (None for a corpus of fewer than two notes)."""
        with self._lock:
            return self._calibration_cache(self.store).current(self.store)

    @property
    def reranker(self) -> Reranker:
        """The cross-encoder of search mode "rerank", made on first use and shared; its files are checked and
        loaded at its first question."""
        from rag.rerank import make_reranker

        with self._lock:
            if self._reranker is None:
                self._reranker = make_reranker(threads=self.config.rerank_threads)
            return self._reranker

    @property
    def answerer(self) -> Answerer:
        """The answer writer of this knowledge base (`config.llm` / `llm_url`, else extractive), made on first
        use and shared, so a model loads once per process."""
        from rag.answer import Answerer

        with self._lock:
            if self._answerer is None:
                self._answerer = Answerer(self)
            return self._answerer

    def search(
        self,
        question: str,
        *,
        k: int = 5,
        min_score: float | None = None,
        mode: str | None = None,
        only: SearchFilter | None = None,
    ) -> SearchResult:
        """Hits for `question`, best first (see `rag.retrieve.search`); `mode` defaults to `config.search_mode`,
        and `only` keeps the search to notes with given tags or under given paths.

        It answers from the generation that answers now, with the model that generation was built with, even
        while a rebuild for other settings runs beside it.
        """
        mode = mode or self.config.search_mode
        try:
            return self._search(question, k=k, min_score=min_score, mode=mode, only=only)
        except StoreError:
            raise
        except Exception:
            # Another process may have switched generations and dropped the one this process was reading.
            with self._lock:
                before = self._serving.name if self._serving is not None else None
                self._serving = None
                if before == self.store.name:
                    raise
            return self._search(question, k=k, min_score=min_score, mode=mode, only=only)

    def _search(
        self, question: str, *, k: int, min_score: float | None, mode: str, only: SearchFilter | None
    ) -> SearchResult:
        store = self.store
        return search(
            store,
            self._embedder_for(store.build.model),
            question,
            k=k,
            min_score=min_score,
            confident_score=self.config.confident_score,
            mode=mode,
            keyword=None if mode == "dense" and not only else self.keyword_index(),
            calibration=self.calibration(),
            confident_percentile=self.config.confident_percentile,
            reranker=self.reranker if mode == "rerank" else None,
            rerank_candidates=self.config.rerank_candidates,
            rerank_weight=self.config.rerank_weight,
            rerank_confident_logit=self.config.rerank_confident_logit,
            only=only,
        )

    def _embedder_for(self, model: str) -> Embedder:
        """The embedder of `model`: the configured one, or (while a rebuild for a new model runs) the old one."""
        if model == self.embedder.name:
            return self.embedder
        with self._lock:
            if model not in self._embedders:
                self._embedders[model] = make_embedder(replace(self.config, model=model))
            return self._embedders[model]

    def add_note(
        self, title: str, body: str, *, tags: Sequence[str] = (), name: str | None = None, sync: bool = True
    ) -> NewNote:
        """Write a new note into the knowledge folder and, by default, index it at once (never rebuilding: an
        index built for other settings takes the note in when `sync()` rebuilds it)."""
        if self.config.read_only:
            raise NoteWriteError("this knowledge base is read-only; restart without --read-only to add notes")
        if sync:
            self._check_owner()  # refused before the file is written, so a refused note leaves nothing behind
        note = write_note(
            self.config.knowledge_dir,
            title=title,
            body=body,
            tags=tags,
            name=name,
            max_bytes=self.config.max_note_bytes,
        )
        if sync:
            self.sync(rebuild=False)
        return note

    def status(self) -> Status:
        """Each file's standing against the answering index, totals, and any mismatch or rebuild in progress.
        Creates, deletes and rebuilds nothing."""
        knowledge = str(self.config.knowledge_dir)
        try:
            store = self.store
        except StoreError as exc:
            files = folder_status(self.config.knowledge_dir, None, max_file_bytes=self.config.max_file_bytes)
            where = self.config.chroma_url or str(self.config.db_dir)
            return Status(files, 0, 0, self.config.model, where, knowledge, mismatch=str(exc))
        files = folder_status(
            self.config.knowledge_dir, store, max_file_bytes=self.config.max_file_bytes, ledger=self._ledger(store)
        )
        return Status(
            files=files,
            notes=sum(1 for f in files if f.chunks),
            chunks=store.count(),
            model=store.build.model,
            db=store.location,
            knowledge=knowledge,
            mismatch=self.mismatch(),
            rebuild=self._rebuild_progress(store),
        )

    def verify(self, *, sample: int = 5000, seed: int = 0) -> Verification:
        """Ask vector search for every stored chunk (a random `sample` of them in a larger index) by its own vector
        and report the ones it does not return. Reads only."""
        import random

        store = self.store
        ids = [c.id for c in store.iter_chunks()]
        chosen = ids if len(ids) <= sample else random.Random(seed).sample(ids, sample)
        return Verification(len(chosen), len(ids), store.unreachable(chosen), len(chosen) < len(ids))

    def repair(self, *, sample: int = 5000, wait: float | None = None) -> Verification:
        """Verify, and when some chunks are unreachable, copy the index into a new generation (stored vectors, no
        model call) whose search graph is built afresh, switch to it, and verify again.

        Raises:
            IndexLockedError: another process kept the store locked for `wait` seconds.
        """
        found = self.verify(sample=sample)
        if not found.unreachable:
            return found
        with self._syncing, self._process_lock(self.config.lock_wait if wait is None else wait):
            old = self.store
            copy = old.copy_to_new_generation()
            with self._lock:
                self._serving = copy
            shutil.rmtree(self._derived_dir(old.name), ignore_errors=True)
        after = self.verify(sample=sample)
        return replace(found, after=after)

    def _rebuild_progress(self, store: Store) -> Rebuild | None:
        building = store.pending_rebuild()
        if building is None:
            return None
        done = sum(1 for state in building.note_states().values() if state.complete)
        total = sum(1 for _ in find_notes(Path(self.config.knowledge_dir)))
        reason = store.build.difference(building.build) or "a rebuild was started"
        return Rebuild(reason, done, total)

    @contextmanager
    def _process_lock(self, wait: float) -> Iterator[None]:
        """A lock file, so two processes on this machine never sync the same store at once.

        An embedded store is locked by a file beside it. A Chroma server offers no lock of its own, so its
        store is locked by a file in the temporary folder named after the URL and collection: that serialises
        every process on this machine, but not processes on other machines syncing the same server.
        """
        from filelock import FileLock, Timeout

        path, what = sync_lock_path(self.config)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=max(wait, 0.0))
        except Timeout:
            raise IndexLockedError(
                f"another process has been syncing {what} for over {wait:g} s; wait for it to finish or stop it, "
                "then try again (RAG_LOCK_WAIT sets how long to wait)"
            ) from None
        try:
            yield
        finally:
            lock.release()


# Embedded stores this process holds (`KnowledgeBase.claim`), by resolved folder: released when the process ends.
_claims: dict[str, object] = {}

_shared: dict[Config, KnowledgeBase] = {}
_shared_lock = threading.Lock()


def shared_knowledge_base(config: Config | None = None) -> KnowledgeBase:
    """One `KnowledgeBase` per configuration (default: `Config.from_env()`), reused by every caller in the process.

    The notebook widget, the `%ask` magic, the inline chat and `ask` all use it, so the model loads once.
    """
    config = config or Config.from_env()
    with _shared_lock:
        if config not in _shared:
            kb = KnowledgeBase(config)
            kb.claim()
            _shared[config] = kb
        return _shared[config]


def ask(
    question: str,
    *,
    k: int = 5,
    min_score: float | None = None,
    config: Config | None = None,
    sync: bool = True,
    tags: Sequence[str] | str | None = None,
    paths: Sequence[str] | str | None = None,
) -> SearchResult:
    """Search the knowledge base that the `RAG_*` settings describe, in one call.

    In a notebook the result displays itself as a table of scored sources.

    Args:
        question: free text; must not be empty.
        k: how many hits at most.
        min_score: drop hits whose cosine similarity is below this.
        config: settings; defaults to `Config.from_env()` (knowledge/ and .chroma in the working directory).
        sync: bring the index in line with the folder first, so edited notes are found.
        tags: only notes with every one of these tags.
        paths: only notes whose path (relative to the knowledge folder) matches one of these globs.

    Raises:
        EmptyQuestionError: the question is empty.
        ModelError, StoreError: the model or the index cannot be opened.
    """
    kb = shared_knowledge_base(config)
    if sync:
        kb.sync(rebuild=False)
    from rag.filters import SearchFilter

    return kb.search(question, k=k, min_score=min_score, only=SearchFilter.of(tags, paths) or None)


def sync_lock_path(config: Config) -> tuple[Path, str]:
    """The lock file that serialises syncs of `config`'s store, and the store's name for messages."""
    if not config.chroma_url:
        return Path(config.db_dir) / "sync.lock", str(config.db_dir)
    from urllib.parse import urlparse

    url = urlparse(config.chroma_url.strip())
    port = url.port or (443 if url.scheme == "https" else 8000)
    key = f"{url.scheme}://{(url.hostname or '').lower()}:{port}/{config.collection}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    path = Path(tempfile.gettempdir()) / "rag-sync-locks" / f"{digest}.lock"
    return path, f"collection {config.collection!r} at {key}"
