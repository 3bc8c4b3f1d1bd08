"""Rows for tests of pure logic: a `Chunk` and a `Hit` wrapping it, with readable defaults."""

from __future__ import annotations

from typing import Any

from rag.chunk import Chunk
from rag.retrieve import Hit


def make_chunk(**fields: Any) -> Chunk:
    """A chunk of `cosine-similarity.md`; `heading` may be given as `"A > B"` text or a tuple."""
    values: dict[str, Any] = {
        "id": "cosine-similarity.md#0",
        "source": "cosine-similarity.md",
        "note_id": "cosine-similarity",
        "title": "Cosine Similarity",
        "tags": ("math",),
        "heading": ("Cosine Similarity", "Definition"),
        "text": "Cosine similarity compares directions.",
        "start_line": 3,
        "end_line": 9,
        "index": 0,
        "note_hash": "h",
    }
    values.update(fields)
    if isinstance(values["heading"], str):
        values["heading"] = tuple(h for h in values["heading"].split(" > ") if h)
    values["tags"] = tuple(values["tags"])
    if "id" not in fields:
        values["id"] = f"{values['source']}#{values['index']}"
    return Chunk(**values)


def make_hit(
    score: float = 0.5,
    *,
    percentile: float | None = None,
    keyword_score: float | None = None,
    rank_score: float = 0.0,
    **chunk_fields: Any,
) -> Hit:
    return Hit(
        make_chunk(**chunk_fields),
        score,
        rank_score=rank_score,
        keyword_score=keyword_score,
        percentile=percentile,
    )
