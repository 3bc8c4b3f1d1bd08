"""Retrieval on the starter notes with the real model: ranking, scores, thresholds, errors."""

from __future__ import annotations

import pytest

from rag.config import Config
from rag.embed import SentenceTransformerEmbedder
from rag.errors import EmptyQuestionError, StoreError
from rag.knowledge import KnowledgeBase
from rag.store import Store

pytestmark = pytest.mark.slow  # the real model on the starter index


@pytest.fixture
def kb(indexed_config: Config, embedder: SentenceTransformerEmbedder) -> KnowledgeBase:
    return KnowledgeBase(indexed_config, embedder=embedder)


@pytest.mark.parametrize(
    ("question", "source"),
    [
        ("What is cosine similarity and how is it computed?", "cosine-similarity.md"),
        ("How does word2vec learn word vectors with skip-gram?", "word2vec.md"),
        ("How should I split documents into chunks for retrieval?", "chunking.md"),
        ("What does nDCG@10 measure?", "evaluating-retrieval.md"),
        ("How does Chroma store vectors in collections?", "vector-databases-and-chroma.md"),
    ],
)
def test_the_right_note_ranks_first(kb: KnowledgeBase, question: str, source: str) -> None:
    result = kb.search(question, k=5)
    assert result.hits[0].chunk.source == source


def test_scores_are_cosine_similarities_sorted_best_first(
    kb: KnowledgeBase, embedder: SentenceTransformerEmbedder
) -> None:
    question = "cosine similarity versus dot product"
    result = kb.search(question, k=8, mode="dense")
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    hybrid = kb.search(question, k=8, mode="hybrid")
    ranks = [h.rank_score for h in hybrid.hits]
    assert ranks == sorted(ranks, reverse=True) and all(-1 <= h.score <= 1 for h in hybrid.hits)
    # The score is exactly the cosine between the question's and the chunk's embedding texts.
    chunks = {c.id: c for c in kb.store.iter_chunks(with_text=True)}
    top = result.hits[0]
    stored = chunks[top.chunk.id]
    assert stored == top.chunk
    vectors = embedder.embed_batch([question, stored.embedding_text])
    assert top.score == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-3)


def test_hits_carry_their_metadata(kb: KnowledgeBase) -> None:
    hit = kb.search("cosine similarity", k=1).hits[0]
    row = kb.search("cosine similarity", k=1).to_dict()["hits"][0]
    # The JSON contract of `ask --json`: the old fields stay, new ones are added beside them.
    assert set(row) >= {
        "id",
        "keyword_score",
        "rank_score",
        "percentile",
        "location",
        "section",
        "heading_path",
        "weak",
        "score",
        "text",
        "source",
        "title",
        "heading",
        "start_line",
        "end_line",
        "tags",
    }
    chunk = hit.chunk
    assert row["heading"] == " > ".join(chunk.heading) and row["heading_path"] == list(chunk.heading)
    assert (
        row["location"] == f"{chunk.source}:{chunk.start_line}-{chunk.end_line}" or chunk.start_line == chunk.end_line
    )
    lines = (kb.config.knowledge_dir / chunk.source).read_text().split("\n")
    # The first line of the text stands at start_line (whole, or its first words when a long line was cut).
    assert chunk.text.split("\n")[0].strip() in lines[chunk.start_line - 1]
    assert chunk.title == "Cosine Similarity and Other Distances" and "similarity" in chunk.tags


def test_min_score_filters_but_confidence_judges_the_best(kb: KnowledgeBase) -> None:
    result = kb.search("cosine similarity", k=10, min_score=0.5)
    assert result.confident
    assert result.hits and all(h.score >= 0.5 for h in result.hits)
    assert kb.search("cosine similarity", k=3, min_score=1.01).hits == []


def test_an_unrelated_question_is_not_confident(kb: KnowledgeBase) -> None:
    result = kb.search("What is the best recipe for lemon cheesecake?", k=3)
    assert not result.confident and len(result.hits) == 3


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_empty_question_is_a_clear_error(kb: KnowledgeBase, question: str) -> None:
    with pytest.raises(EmptyQuestionError, match="question is empty"):
        kb.search(question)


def test_opening_a_missing_index_says_what_to_run(tmp_path) -> None:
    assert Store.active(db_dir=tmp_path / "none") is None
    kb = KnowledgeBase(Config(knowledge_dir=tmp_path, db_dir=tmp_path / "none"))
    with pytest.raises(StoreError, match="python -m rag index"):
        kb.search("anything")
    assert not (tmp_path / "none").exists(), "a read must not create the store"
