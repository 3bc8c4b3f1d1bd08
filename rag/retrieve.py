"""Retrieval: a question in, ranked `Hit`s out, each scored by cosine similarity in [-1, 1].

It embeds the question with the same model as the chunks and asks the store for its nearest neighbours.
It does not compose answers; the web chat and the notebook do that from the hits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rag.embed import Embedder, embed_query
from rag.errors import EmptyQuestionError
from rag.render import hits_table, result_html
from rag.store import Store, StoredChunk

# Longer questions are cut here: the model reads at most a few hundred tokens anyway.
MAX_QUESTION_CHARS = 4000


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk. `score` is the cosine similarity between question and chunk (1 = same direction)."""

    score: float
    text: str
    source: str
    title: str
    heading: str
    start_line: int
    end_line: int
    tags: list[str] = field(default_factory=list)
    id: str = ""

    @property
    def location(self) -> str:
        """`path:line` of the chunk's first line, the way editors and terminals link to it."""
        return f"{self.source}:{self.start_line}"

    def _repr_html_(self) -> str:
        """A one-row score table, so a hit displays itself in a notebook."""
        return hits_table([self])


@dataclass(frozen=True)
class SearchResult:
    """The hits for one question, best first, and whether the best is a confident match."""

    question: str
    confident: bool
    hits: list[Hit]

    def _repr_html_(self) -> str:
        """The question and a table of scored sources, so a result displays itself in a notebook."""
        return result_html(self)


def clean_question(question: str) -> str:
    """The question stripped and capped; an empty one is an error."""
    text = (question or "").strip()
    if not text:
        raise EmptyQuestionError("the question is empty; type a question, e.g. `what are embeddings?`")
    return text[:MAX_QUESTION_CHARS]


def search(
    store: Store,
    embedder: Embedder,
    question: str,
    *,
    k: int = 5,
    min_score: float | None = None,
    confident_score: float = 0.4,
) -> SearchResult:
    """The `k` chunks most similar to `question`.

    Args:
        store: the open store.
        embedder: the model the store was built with.
        question: free text; must not be empty.
        k: how many hits at most.
        min_score: drop hits whose cosine similarity is below this.
        confident_score: the best hit must reach this for `confident` to be true.

    Raises:
        EmptyQuestionError: the question is empty or white space.
    """
    text = clean_question(question)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    stored = store.query(embed_query(embedder, text), k=k)
    hits = [to_hit(s) for s in stored]
    confident = bool(hits) and hits[0].score >= confident_score
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    return SearchResult(question=question.strip(), confident=confident, hits=hits)


def to_hit(chunk: StoredChunk) -> Hit:
    return Hit(
        score=round(float(chunk.similarity), 6),
        text=chunk.text,
        source=chunk.source,
        title=chunk.title,
        heading=chunk.heading,
        start_line=chunk.start_line,
        end_line=chunk.end_line,
        tags=list(chunk.tags),
        id=chunk.id,
    )
