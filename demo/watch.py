"""Live folder sync: watch the knowledge folder with `watchdog` and re-sync the index shortly after it changes.

Events are debounced (an editor's save or a `git pull` fires a burst of them) and one background thread runs
`KnowledgeBase.sync()`, which touches only the notes whose bytes changed. The watcher also keeps the time and
outcome of the last sync for the status panel. It does not decide what a note is; the sync does.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from rag.errors import RagError
from rag.knowledge import KnowledgeBase
from rag.load import NOTE_SUFFIXES
from rag.sync import SyncReport

log = logging.getLogger(__name__)

# Quiet time after the last event before syncing; short enough that a change shows within about two seconds.
DEBOUNCE_SECONDS = 0.4
# After a failed sync (e.g. another process holds the lock), try again this much later.
RETRY_SECONDS = 2.0


class FolderWatcher:
    """Keeps a `KnowledgeBase` in step with its folder.

    `sync()` works without `start()`: the app calls it after writing a note, so the status always shows the
    last sync whoever triggered it.

    Args:
        kb: the knowledge base whose `config.knowledge_dir` is watched.
        debounce: seconds of quiet after the last event before a sync starts.
    """

    def __init__(self, kb: KnowledgeBase, *, debounce: float = DEBOUNCE_SECONDS) -> None:
        self.kb = kb
        self.debounce = debounce
        self.last_sync: datetime | None = None
        self.last_report: SyncReport | None = None
        self.last_error: str | None = None
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._observer: Any = None
        self._worker: threading.Thread | None = None
        self._root = Path(kb.config.knowledge_dir).resolve()
        self._db = Path(kb.config.db_dir).resolve()

    @property
    def watching(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def sync(self, *, progress: bool = False) -> SyncReport:
        """Sync now and record the outcome; library errors are recorded and raised."""
        try:
            report = self.kb.sync(progress=progress)
        except RagError as exc:
            self.last_error = str(exc)
            raise
        self.last_report = report
        self.last_error = None
        self.last_sync = datetime.now().astimezone()
        return report

    def start(self) -> FolderWatcher:
        """Start watching in background threads; returns self."""
        if self._observer is not None:
            return self
        self._stopping.clear()
        observer = Observer()
        observer.schedule(_Handler(self), str(self._root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._worker = threading.Thread(target=self._run, name="knowledge-sync", daemon=True)
        self._worker.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None

    def __enter__(self) -> FolderWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def relevant(self, path: str) -> bool:
        """Whether a change at `path` can change the index: notes and folders, not hidden or temporary files."""
        try:
            rel = Path(path).resolve().relative_to(self._root)
        except ValueError:
            return False
        if Path(path).resolve().is_relative_to(self._db):
            return False
        if any(part.startswith(".") for part in rel.parts):
            return False
        return rel.suffix.lower() in NOTE_SUFFIXES or rel.suffix == ""

    def notify(self) -> None:
        """Mark the folder as changed; the worker syncs after the debounce."""
        self._dirty.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._dirty.wait()
            if self._stopping.is_set():
                return
            # Wait until events stop arriving for `debounce` seconds.
            while True:
                self._dirty.clear()
                if self._stopping.wait(self.debounce):
                    return
                if not self._dirty.is_set():
                    break
            try:
                report = self.sync()
                if report.added or report.updated or report.removed:
                    log.info("synced: %s added, %s updated, %s removed", report.added, report.updated, report.removed)
            except RagError as exc:
                log.warning("sync failed, retrying in %.0f s: %s", RETRY_SECONDS, exc)
                if not self._stopping.wait(RETRY_SECONDS):
                    self._dirty.set()
            except Exception:  # noqa: BLE001 - the watcher must outlive one bad sync
                log.exception("sync failed")
                self.last_error = "unexpected error during sync; see the server log"


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.is_directory and event.event_type == "modified":
            return
        paths = [event.src_path, getattr(event, "dest_path", "") or ""]
        if any(p and self.watcher.relevant(str(p)) for p in paths):
            self.watcher.notify()
