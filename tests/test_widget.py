"""The in-kernel chat widget: its answer text, and its request handling against a real index."""

from __future__ import annotations

import dataclasses
import re

import pytest

from demo.widget import EXCERPT_CHARS, ChatWidget, compose_answer
from rag.config import Config
from rag.knowledge import KnowledgeBase
from rag.render import excerpt, prose
from rag.retrieve import Hit, SearchResult, judge

from .factories import make_hit


def hit(score: float, text: str = "# T\n\nProse here.", heading: str = "T > Part") -> Hit:
    return make_hit(score, text=text, source="t.md", title="T", heading=heading, start_line=1, end_line=3)


def test_answer_quotes_the_best_chunk_when_confident_without_its_heading_lines() -> None:
    answer = compose_answer(SearchResult("q", True, [hit(0.71), hit(0.5)]))
    assert answer == "T > Part (score 0.71): Prose here."


def test_answer_gives_advice_when_no_match_is_confident_or_nothing_matches() -> None:
    hits = [dataclasses.replace(hit(0.55), percentile=71.4)]
    verdict = judge(hits, calibrated=True, score_bar=0.4, percentile_bar=95.0)
    unsure = compose_answer(dataclasses.replace(verdict, question="q", hits=hits))
    assert unsure == (
        "No confident match: the best score, 0.55, beats only 71.4% of pairs of unrelated chunks in these notes; "
        "a confident match beats 95%. The nearest sources are below; if none answers the question, add a note."
    )
    assert "Add one below" in compose_answer(SearchResult("q", False, []))


def test_front_end_never_writes_note_content_as_html() -> None:
    esm = ChatWidget._esm
    assert "innerHTML" not in esm and "insertAdjacentHTML" not in esm and "outerHTML" not in esm
    assert "textContent" in esm
    # Nothing is fetched: no URL, no import from a CDN.
    assert not re.search(r"https?://|\bimport\s", esm)


@pytest.fixture
def kb(indexed_config: Config, embedder) -> KnowledgeBase:  # type: ignore[no-untyped-def]
    return KnowledgeBase(indexed_config, embedder=embedder)


@pytest.mark.slow
def test_ask_message_sets_the_result_json_and_the_answer(kb: KnowledgeBase) -> None:
    widget = ChatWidget(kb, k=3)
    widget._on_message(widget, {"type": "ask", "question": "what is cosine similarity?"}, [])
    searched = kb.search("what is cosine similarity?", k=3)
    expected = searched.to_dict()
    assert [row.pop("excerpt") for row in widget.result["hits"]] == [
        excerpt(prose(h.chunk.text), EXCERPT_CHARS) for h in searched.hits
    ]
    assert widget.result == expected
    assert [row["weak"] for row in expected["hits"]][0] is False
    assert set(expected["hits"][0]) >= {"score", "text", "source", "title", "heading", "start_line", "end_line"}
    assert widget.result["hits"][0]["source"] == "cosine-similarity.md"
    assert widget.answer.startswith("Cosine Similarity") and "(score 0." in widget.answer
    assert (widget.busy, widget.error, widget.question) == ("", "", "what is cosine similarity?")


@pytest.mark.slow
def test_a_note_added_through_the_widget_is_found_by_the_next_question(kb: KnowledgeBase) -> None:
    widget = ChatWidget(kb)
    body = "Quokkas on Rottnest Island drink little water and get moisture from the leaves they eat."
    widget._on_message(widget, {"type": "add_note", "title": "Quokka water", "body": body, "tags": "animals, test"}, [])
    assert widget.error == "" and "quokka-water.md" in widget.notice
    assert (kb.config.knowledge_dir / "quokka-water.md").read_text(encoding="utf-8").count("Rottnest") == 1
    widget._on_message(widget, {"type": "ask", "question": "where do quokkas get their water?"}, [])
    best = widget.result["hits"][0]
    assert best["source"] == "quokka-water.md" and best["tags"] == ["animals", "test"]
    assert widget.result["confident"] and best["weak"] is False and best["percentile"] >= 95.0
    assert widget.result["confident_by"] == "percentile" and "beats" in widget.result["reason"]


@pytest.mark.slow
def test_library_errors_show_in_the_widget_and_do_not_escape_the_handler(indexed_config: Config, embedder) -> None:  # type: ignore[no-untyped-def]
    widget = ChatWidget(KnowledgeBase(indexed_config.replace(read_only=True), embedder=embedder))
    assert widget.read_only
    widget._on_message(widget, {"type": "ask", "question": "   "}, [])
    assert "question is empty" in widget.error and widget.busy == ""
    widget._on_message(widget, {"type": "add_note", "title": "X", "body": "y"}, [])
    assert "read-only" in widget.error and not (indexed_config.knowledge_dir / "x.md").exists()
    widget._on_message(widget, {"type": "ask", "question": "embeddings"}, [])
    assert widget.error == "" and widget.result["hits"]


def test_k_must_be_positive(config: Config) -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        ChatWidget(KnowledgeBase(config), k=0)
