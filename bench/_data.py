"""Texts for the speed benchmarks: the starter notes' chunks, or documents of a BEIR folder (e.g. SciFact)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def starter_chunks(embedder, *, repeat: int = 1) -> list[str]:  # type: ignore[no-untyped-def]
    """The embedded text of every chunk of the starter notes, `repeat` times over."""
    from rag.chunk import chunk_note
    from rag.config import Config
    from rag.load import find_notes, load_note

    root = ROOT / "knowledge"
    texts = []
    for path in find_notes(root):
        note = load_note(root, path)
        for chunk in chunk_note(
            note,
            count_tokens=embedder.count_tokens,
            max_tokens=Config.chunk_tokens,
            overlap_tokens=Config.overlap_tokens,
        ):
            texts.append(chunk.embedding_text)
    return texts * repeat


def beir_documents(folder: Path, *, limit: int | None) -> list[tuple[str, str, str]]:
    """(id, title, text) of the first `limit` documents of a BEIR corpus.jsonl."""
    rows = []
    with open(Path(folder) / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            rows.append((str(doc["_id"]), doc.get("title") or str(doc["_id"]), doc.get("text") or ""))
            if limit and len(rows) >= limit:
                break
    return rows


def write_notes(folder: Path, documents: list[tuple[str, str, str]]) -> None:
    """One Markdown note per document."""
    folder.mkdir(parents=True, exist_ok=True)
    for doc_id, title, text in documents:
        (folder / f"{doc_id}.md").write_text(f"# {title}\n\n{text}\n", encoding="utf-8")
