"""`KnowledgeBase`: the library's front door, shared by the CLI, the web chat and the notebook.

It ties one `Config` to a lazily loaded embedder and store, serialises syncs across processes with a lock
file, and exposes sync, search, add-note and status. `ask` is the one-call version for notebooks and scripts,
backed by one shared `KnowledgeBase` per configuration. It holds no UI code.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from rag import calibrate
from rag.calibrate import Calibration
from rag.chunk import chunking_id
from rag.config import Config
from rag.embed import Embedder, make_embedder
from rag.errors import IndexLockedError, NoteWriteError
from rag.keyword import KeywordIndex, cache_dir
from rag.retrieve import SearchResult, search
from rag.store import Store
from rag.sync import FileStatus, SyncReport, folder_status, sync_folder
from rag.write import NewNote, write_note

# How often a search asks the store whether another process changed its chunk count (a ~1 ms round trip).
STORE_RECHECK_S = 1.0


@dataclass(frozen=True)
class Status:
    """The index at a glance: per-file standing, totals, the model and where the store lives."""

    files: list[FileStatus]
    notes: int
    chunks: int
    model: str
    db: str
    knowledge: str


class KnowledgeBase:
    """A knowledge folder and its index.

    Args:
        config: settings; defaults to `Config.from_env()`.
        embedder: a ready embedder (tests pass a fake for pure logic); defaults to the configured model.
    """

    def __init__(self, config: Config | None = None, *, embedder: Embedder | None = None) -> None:
        self.config = config or Config.from_env()
        self._embedder = embedder
        self._store: Store | None = None
        self._rebuilt: str | None = None
        self._keyword: KeywordIndex | None = None
        self._keyword_seen: tuple[float, int] = (0.0, 0)  # (last store check, saved index file's mtime_ns)
        self._calibration: Calibration | None = None
        self._lock = threading.RLock()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.config)
        return self._embedder

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store, self._rebuilt = Store.open(
                db_dir=self.config.db_dir,
                chroma_url=self.config.chroma_url,
                name=self.config.collection,
                model=self.embedder.name,
                chunker=chunking_id(self.config.chunk_tokens, self.config.overlap_tokens),
            )
        return self._store

    def sync(self, *, progress: bool = False, wait: float | None = None) -> SyncReport:
        """Bring the index in line with the folder (see `rag.sync.sync_folder`).

        Raises:
            IndexLockedError: another process kept the store locked for `wait` seconds (default
                `config.lock_wait`).
        """
        wait = self.config.lock_wait if wait is None else wait
        with self._lock, self._process_lock(wait):
            report = sync_folder(
                self.config.knowledge_dir,
                self.store,
                self.embedder,
                chunk_tokens=self.config.chunk_tokens,
                overlap_tokens=self.config.overlap_tokens,
                max_file_bytes=self.config.max_file_bytes,
                rebuilt=self._rebuilt,
                progress=progress,
                journal=self.cache_dir / "sync-journal.json",
            )
            self._rebuilt = None
            if report.added or report.updated:
                # torch is loaded by now; export the query encoder while it is cheap, not in the next `ask`.
                prepare = getattr(self.embedder, "prepare", None)
                if prepare is not None:
                    prepare()
            if report.added or report.updated or report.removed or report.rebuilt:
                # Keep the derived data in step now, so the next process finds it current on disk.
                if self._keyword is not None or self.config.search_mode != "dense":
                    self.keyword_index(changed=True)
                else:
                    # This process does not search by keywords: drop the saved index, so that a process that does
                    # (a chat beside this CLI run) sees the file change and rebuilds instead of keeping old texts.
                    (self.cache_dir / "bm25" / "chunks.json").unlink(missing_ok=True)
                self.calibration(recheck=True)
            return report

    @property
    def cache_dir(self) -> Path:
        """Local folder of this collection's keyword index and calibration."""
        return cache_dir(self.config.db_dir, collection=self.config.collection, chroma_url=self.config.chroma_url)

    def keyword_index(self, *, changed: bool = False) -> KeywordIndex:
        """The BM25 index (and vector copy) of the store's current chunks.

        Kept in memory between searches; on first use (and when `changed`: a sync here changed the store) it is
        loaded from disk when its fingerprint (build, chunk ids and note hashes) matches the store, else rebuilt
        from the store, reusing the vectors of unchanged chunks. Changes made by another process are noticed when
        that process saves a new index here (a file time, checked on every search) or when the store's chunk count
        changes (asked at most once a second).
        """
        with self._lock:
            folder = self.cache_dir / "bm25"
            checked, saved = self._keyword_seen
            now = time.monotonic()
            mtime = _mtime_ns(folder / "chunks.json")
            previous = self._keyword
            index = None if changed else previous
            if index is not None and mtime == saved and now - checked >= STORE_RECHECK_S:
                if len(index) != self.store.count():
                    index = None
                checked = now
            if index is None or mtime != saved:
                index, _ = KeywordIndex.open(self.store, folder, previous=previous)
                checked, mtime = now, _mtime_ns(folder / "chunks.json")  # a rebuild saves the folder anew
            self._keyword, self._keyword_seen = index, (checked, mtime)
            return index

    def calibration(self, *, recheck: bool = False) -> Calibration | None:
        """The corpus's background similarities: kept in memory, else read from disk, and recomputed when the
        corpus changed noticeably since (checked on first use and after each sync that changed the store)."""
        with self._lock:
            if self._calibration is not None and not recheck:
                return self._calibration
            count = self.store.count()
            if self._calibration is None:
                self._calibration = calibrate.load(self.cache_dir / "calibration.json")
            if self._calibration is None or self._calibration.stale(count, self.store.build):
                self._calibration = calibrate.compute(self.store)
                if self._calibration is not None:
                    calibrate.save(self._calibration, self.cache_dir / "calibration.json")
            return self._calibration

    def search(
        self, question: str, *, k: int = 5, min_score: float | None = None, mode: str | None = None
    ) -> SearchResult:
        """Hits for `question`, best first (see `rag.retrieve.search`); `mode` defaults to `config.search_mode`."""
        mode = mode or self.config.search_mode
        return search(
            self.store,
            self.embedder,
            question,
            k=k,
            min_score=min_score,
            confident_score=self.config.confident_score,
            mode=mode,
            keyword=None if mode == "dense" else self.keyword_index(),
            calibration=self.calibration(),
            confident_percentile=self.config.confident_percentile,
        )

    def add_note(
        self, title: str, body: str, *, tags: Sequence[str] = (), name: str | None = None, sync: bool = True
    ) -> NewNote:
        """Write a new note into the knowledge folder and, by default, index it at once."""
        if self.config.read_only:
            raise NoteWriteError("this knowledge base is read-only; restart without --read-only to add notes")
        note = write_note(
            self.config.knowledge_dir,
            title=title,
            body=body,
            tags=tags,
            name=name,
            max_bytes=self.config.max_note_bytes,
        )
        if sync:
            self.sync()
        return note

    def status(self) -> Status:
        files = folder_status(self.config.knowledge_dir, self.store, max_file_bytes=self.config.max_file_bytes)
        return Status(
            files=files,
            notes=sum(1 for f in files if f.chunks),
            chunks=self.store.count(),
            model=self.embedder.name,
            db=self.store.location,
            knowledge=str(self.config.knowledge_dir),
        )

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


_shared: dict[Config, KnowledgeBase] = {}
_shared_lock = threading.Lock()


def shared_knowledge_base(config: Config | None = None) -> KnowledgeBase:
    """One `KnowledgeBase` per configuration (default: `Config.from_env()`), reused by every caller in the process.

    The notebook widget, the `%ask` magic, the inline chat and `ask` all use it, so the model loads once.
    """
    config = config or Config.from_env()
    with _shared_lock:
        if config not in _shared:
            _shared[config] = KnowledgeBase(config)
        return _shared[config]


def ask(
    question: str, *, k: int = 5, min_score: float | None = None, config: Config | None = None, sync: bool = True
) -> SearchResult:
    """Search the knowledge base that the `RAG_*` settings describe, in one call.

    In a notebook the result displays itself as a table of scored sources.

    Args:
        question: free text; must not be empty.
        k: how many hits at most.
        min_score: drop hits whose cosine similarity is below this.
        config: settings; defaults to `Config.from_env()` (knowledge/ and .chroma in the working directory).
        sync: bring the index in line with the folder first, so edited notes are found.

    Raises:
        EmptyQuestionError: the question is empty.
        ModelError, StoreError: the model or the index cannot be opened.
    """
    kb = shared_knowledge_base(config)
    if sync:
        kb.sync()
    return kb.search(question, k=k, min_score=min_score)


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


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0
