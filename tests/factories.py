"""Rows for tests of pure logic: a `Chunk`, a `Hit` wrapping it and an `Answer` from hits, with readable defaults."""

from __future__ import annotations

import re
from typing import Any, Sequence

from rag.answer import Answer, Sentence
from rag.chunk import Chunk
from rag.generate import ExtractiveWriter
from rag.passage import gather_sources
from rag.retrieve import Hit, SearchResult


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


def word_overlap(question: str, sentences: Sequence[str]) -> list[float]:
    """A stand-in sentence scorer for pure formatting tests: the share of the question's words each sentence has."""
    wanted = set(re.findall(r"[a-z0-9]+", question.lower()))
    return [len(wanted & set(re.findall(r"[a-z0-9]+", s.lower()))) / max(1, len(wanted)) for s in sentences]


def make_answer(
    result: SearchResult,
    quoted: Sequence[tuple[int, str]] | None = None,
    *,
    searched: str | None = None,
    unsupported: Sequence[int] = (),
    mode: str | None = None,
    model: str | None = None,
) -> Answer:
    """The answer the pipeline would give for `result` (passages without files, sentences picked by word overlap,
    or the `quoted` (source number, text) pairs), with the sentences at the `unsupported` positions unsupported."""
    sources = gather_sources(result)
    if mode is None:
        mode = "extractive" if result.hits and result.confident else "refused"
    if mode == "refused":
        text = "Your notes do not seem to cover this."
        return Answer(result.question, searched or result.question, mode, text, sources, result)
    if quoted is None:
        quoted = ExtractiveWriter(word_overlap).pick(searched or result.question, sources)
    sentences = [
        Sentence(text, (number,), i not in unsupported, 1.0 if i not in unsupported else 0.2)
        for i, (number, text) in enumerate(quoted)
    ]
    text = " ".join(f"{s.text} [{s.citations[0]}]" for s in sentences)
    return Answer(result.question, searched or result.question, mode, text, sources, result, sentences, model=model)
