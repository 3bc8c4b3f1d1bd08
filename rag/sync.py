"""Sync: make the store match the knowledge folder, touching only what changed.

Each note is compared by the hash of its bytes with what the store holds: new notes are added, deleted notes'
chunks removed, unchanged notes left alone with no model call. A changed note is chunked again and, since chunk
ids are content addresses, only chunks whose text changed are embedded; the others keep their vectors and get
their new line ranges and order. A sync cut short at any point leaves notes the next sync sees as incomplete and
redoes. It does not lock; `KnowledgeBase` does.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from rag.chunk import Chunk, chunk_note
from rag.embed import Embedder
from rag.errors import RagError, SkipNote
from rag.load import content_hash, find_notes, parse_note, read_bytes, relative_name
from rag.store import NoteLedger, NoteState, NoteWrite, Stamp, Store

_BATCH_CHUNKS = 64
# A file stamp is kept only for a file last modified at least this long before the sync began.
_STAMP_SETTLE_NS = 2_000_000_000


@dataclass(frozen=True)
class Skipped:
    """A file left out of the index, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class SyncReport:
    """What one sync did; `notes` and `chunks` count what the index holds afterwards."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    notes: int = 0
    chunks: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[Skipped] = field(default_factory=list)
    # Why this sync built the index anew beside the old one (model or chunking changed), if it did.
    rebuilt: str | None = None
    seconds: float = 0.0
    # Chunks sent to the model (an edit embeds only the chunks whose text changed).
    embedded: int = 0
    # Why the index does not match the settings and was left as it is (a read-only sync), if so.
    rebuild_needed: str | None = None


@dataclass(frozen=True)
class FileStatus:
    """One file's standing: indexed, stale (changed since the last sync), new, deleted or skipped."""

    path: str
    state: Literal["indexed", "stale", "new", "deleted", "skipped"]
    reason: str = ""
    chunks: int = 0


def check_folder(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise RagError(f"knowledge folder {root} does not exist; create it or pass --knowledge DIR")
    return root


def sync_folder(
    root: Path,
    store: Store,
    embedder: Embedder,
    *,
    chunk_tokens: int,
    overlap_tokens: int,
    max_file_bytes: int,
    progress: bool = False,
    journal: Path | None = None,
    ledger: NoteLedger | None = None,
) -> SyncReport:
    """Bring `store` in line with the notes under `root`.

    Args:
        root: the knowledge folder.
        store: the open store.
        embedder: used only for notes that are new or changed.
        chunk_tokens: chunk budget in model tokens (capped at the model's own limit).
        overlap_tokens: overlap between the pieces of a split section.
        max_file_bytes: larger files are skipped.
        progress: show a progress bar on stderr while embedding.
        journal: a file naming the notes this sync is writing at the moment (one batch, or the deletions), removed
            when it finishes; a journal left by
            a sync that was killed makes this one rewrite those notes, even where the store looks whole (Chroma
            can keep a record whose vector never reached its nearest-neighbour index), embedding all their chunks.
        ledger: the store's note states saved locally: read instead of the store's metadata while current, and
            recorded again after the sync, so the next unchanged sync reads no chunk metadata.
    """
    started = time.perf_counter()
    root = check_folder(root)
    budget = min(chunk_tokens, embedder.max_tokens)
    states, stamps, trusted = ledger.read(store) if ledger is not None else (store.note_states(), {}, False)
    interrupted = _read_journal(journal)
    present: set[str] = set()
    skipped: list[Skipped] = []
    warnings: list[Skipped] = []
    pending: list[_Pending] = []
    unchanged = 0
    # Stamps of files whose indexed bytes this sync saw; a file changed within the last seconds gets none, since
    # another write in the same clock tick could keep its size and time (git's "racy" case).
    seen: dict[str, Stamp] = {}
    settled = time.time_ns() - _STAMP_SETTLE_NS
    for path in find_notes(root):
        rel = relative_name(root, path)
        present.add(rel)
        state = states.get(rel)
        known = stamps.get(rel)
        stamp = _stamp(path)
        if known is not None and known == stamp and rel not in interrupted and state is not None and state.complete:
            unchanged += 1
            seen[rel] = known
            continue
        try:
            raw = read_bytes(path, rel, max_bytes=max_file_bytes)
            if stamp is not None and stamp[1] < settled:
                # Taken before the read: a write after it changes the stamp, so the next sync reads the file.
                seen[rel] = stamp
            if rel not in interrupted and _is_current(state, content_hash(raw)):
                unchanged += 1
                continue
            note = parse_note(rel, raw)
            chunks = chunk_note(
                note,
                count_tokens=embedder.count_tokens,
                max_tokens=budget,
                overlap_tokens=overlap_tokens,
                model=embedder.name,
            )
            if not chunks:
                raise SkipNote(rel, "has no text besides its front matter; write a body or delete it")
        except SkipNote as exc:
            seen.pop(rel, None)  # its bytes are not what the store holds: read it again next time
            kept = " (the version indexed before is kept)" if state is not None else ""
            skipped.append(Skipped(rel, exc.reason + kept))
            continue
        warnings.extend(Skipped(rel, w) for w in note.warnings)
        held = state.chunk_ids if state is not None else frozenset()
        embed = [c for c in chunks if rel in interrupted or c.id not in held]
        pending.append(_Pending(rel, chunks, embed, held, existed=state is not None))

    removed = sorted(set(states) - present)
    # A note named by the journal stays named until it is written again, so a second kill cannot lose it.
    unwritten = set(interrupted)

    def writing(sources: set[str]) -> None:
        _write_journal(journal, unwritten | sources)
        unwritten.difference_update(sources)

    _embed_and_write(pending, store, embedder, progress=progress, writing=writing)
    writing(set(removed))
    store.delete_notes(removed)
    if journal is not None:
        journal.unlink(missing_ok=True)
    if ledger is not None and (pending or removed or not trusted or seen != stamps):
        after = _states_after(states, pending, removed)
        indexed = {rel: stamp for rel, stamp in seen.items() if rel in after and after[rel].complete}
        ledger.record(store, after, indexed)
    updated = sum(1 for p in pending if p.existed)
    return SyncReport(
        added=len(pending) - updated,
        updated=updated,
        removed=len(removed),
        unchanged=unchanged,
        notes=len(states.keys() - set(removed) | {p.source for p in pending}),
        chunks=store.count(),
        skipped=skipped,
        warnings=warnings,
        seconds=round(time.perf_counter() - started, 3),
        embedded=sum(len(p.embed) for p in pending),
    )


def folder_status(
    root: Path, store: Store | None, *, max_file_bytes: int, ledger: NoteLedger | None = None
) -> list[FileStatus]:
    """Each file's standing against the store (None: nothing indexed yet), computed without embedding anything;
    the store's note states come from `ledger` while it is current."""
    root = check_folder(root)
    if store is None:
        states = {}
    else:
        states = ledger.states(store) if ledger is not None else store.note_states()
    result: list[FileStatus] = []
    seen: set[str] = set()
    for path in find_notes(root):
        rel = relative_name(root, path)
        seen.add(rel)
        state = states.get(rel)
        try:
            raw = read_bytes(path, rel, max_bytes=max_file_bytes)
            if _is_current(state, content_hash(raw)):
                assert state is not None
                result.append(FileStatus(rel, "indexed", chunks=len(state.chunk_ids)))
                continue
            parse_note(rel, raw)
        except SkipNote as exc:
            result.append(FileStatus(rel, "skipped", exc.reason, len(state.chunk_ids) if state else 0))
            continue
        if state is None:
            result.append(FileStatus(rel, "new", "not indexed yet; run `python -m rag index`"))
        else:
            result.append(
                FileStatus(rel, "stale", "changed since the last sync; run `python -m rag index`", len(state.chunk_ids))
            )
    for rel in sorted(set(states) - seen):
        result.append(
            FileStatus(rel, "deleted", "file is gone; the next sync removes its chunks", len(states[rel].chunk_ids))
        )
    return result


def _read_journal(journal: Path | None) -> set[str]:
    if journal is None or not journal.exists():
        return set()
    try:
        return set(json.loads(journal.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        # A journal cut short by the crash itself: nothing to trust in it, and the hashes still catch most damage.
        return set()


def _write_journal(journal: Path | None, sources: set[str]) -> None:
    if journal is None:
        return
    if not sources:
        journal.unlink(missing_ok=True)
        return
    journal.parent.mkdir(parents=True, exist_ok=True)
    tmp = journal.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(sources)), encoding="utf-8")
    os.replace(tmp, journal)


def _stamp(path: Path) -> Stamp | None:
    """The file's size and modification time (ns), or None when it is not a regular file that can be read."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns) if stat.S_ISREG(info.st_mode) else None


def _states_after(before: dict[str, NoteState], written: list[_Pending], removed: list[str]) -> dict[str, NoteState]:
    """What the store holds once `written` notes are written whole and `removed` ones deleted (skipped notes keep
    the state they had)."""
    gone = set(removed)
    after = {source: state for source, state in before.items() if source not in gone}
    for note in written:
        after[note.source] = NoteState(note.chunks[0].note_hash, frozenset(c.id for c in note.chunks), True)
    return after


def _is_current(state: NoteState | None, note_hash: str) -> bool:
    return state is not None and state.complete and state.note_hash == note_hash


@dataclass(frozen=True)
class _Pending:
    """A note to write: all its chunks, the ones the model must embed, and the chunk ids the store holds now."""

    source: str
    chunks: list[Chunk]
    embed: list[Chunk]
    held: frozenset[str]
    existed: bool


def _embed_and_write(
    pending: list[_Pending], store: Store, embedder: Embedder, *, progress: bool, writing: Callable[[set[str]], None]
) -> None:
    """Embed pending chunks in batches across notes and write each batch's notes, so finished work survives a
    crash; `writing` is told which notes each batch is about to write."""
    if not pending:
        return
    from tqdm import tqdm

    total = sum(len(p.embed) for p in pending)
    with tqdm(total=total, unit="chunk", desc="embedding", disable=not progress, file=sys.stderr) as bar:
        batch: list[_Pending] = []
        size = 0
        for note in pending:
            batch.append(note)
            size += len(note.embed)
            if size >= _BATCH_CHUNKS:
                writing({n.source for n in batch})
                _write_batch(batch, store, embedder)
                bar.update(size)
                batch, size = [], 0
        if batch:
            writing({n.source for n in batch})
            _write_batch(batch, store, embedder)
            bar.update(size)


def _write_batch(batch: list[_Pending], store: Store, embedder: Embedder) -> None:
    chunks = [c for note in batch for c in note.embed]
    vectors = embedder.embed_batch([c.embedding_text for c in chunks]) if chunks else np.zeros((0, 0), np.float32)
    by_id = dict(zip((c.id for c in chunks), vectors, strict=True))
    store.write_notes([NoteWrite(n.source, n.chunks, {c.id: by_id[c.id] for c in n.embed}, n.held) for n in batch])
