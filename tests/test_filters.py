"""Tag and path filters through every entry point, on the starter notes with the real model and Chroma on disk.

A filtered search returns k hits when k matching chunks exist: dense search filters inside Chroma (`where`), BM25
scores only the matching chunks, and hybrid search does both.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from gradio_client import Client

from demo.widget import ChatWidget
from rag.config import Config
from rag.errors import ConfigError
from rag.filters import SearchFilter
from rag.knowledge import KnowledgeBase
from rag.load import load_note

from .test_cli import run  # noqa: F401 - the fixture
from .web_fixtures import LiveChat

NLP = {"bert-contextual-embeddings.md", "glove.md", "word2vec.md"}  # the starter notes tagged nlp
QUESTION = "What does cosine similarity measure?"  # answered by cosine-similarity.md, which is not tagged nlp


def test_filters_are_parsed_as_everywhere() -> None:
    assert SearchFilter.of("nlp, #embeddings, nlp", ["./notes/*", " "]) == SearchFilter(
        ("nlp", "embeddings"), ("notes/*",)
    )
    assert not SearchFilter.of(None, None) and not SearchFilter.of("", [])
    assert SearchFilter.of("a", "b/*").describe() == "tag 'a' and path 'b/*'"
    with pytest.raises(ConfigError, match="relative to the knowledge folder"):
        SearchFilter.of(None, ["/etc/*"])
    assert SearchFilter(paths=("g*",)).matches_path("glove.md") and not SearchFilter(paths=("g*",)).matches_path(
        "a/g.md"
    )


@pytest.fixture
def kb(indexed_config: Config, embedder) -> KnowledgeBase:
    return KnowledgeBase(indexed_config, embedder=embedder)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_a_filtered_search_returns_k_hits_from_matching_notes_only(kb: KnowledgeBase, mode: str) -> None:
    unfiltered = kb.search(QUESTION, k=8, mode=mode)
    assert unfiltered.hits[0].chunk.source == "cosine-similarity.md"
    result = kb.search(QUESTION, k=8, mode=mode, only=SearchFilter(tags=("nlp",)))
    # The three nlp notes hold far more than 8 chunks: a post-filter would have come back short.
    assert len(result.hits) == 8, [h.chunk.source for h in result.hits]
    assert {h.chunk.source for h in result.hits} <= NLP
    assert all("nlp" in h.chunk.tags for h in result.hits)
    both = kb.search(QUESTION, k=5, mode=mode, only=SearchFilter(tags=("nlp", "glove")))
    assert both.hits and {h.chunk.source for h in both.hits} == {"glove.md"}
    by_path = kb.search(QUESTION, k=5, mode=mode, only=SearchFilter(paths=("w*.md", "glove.md")))
    assert len(by_path.hits) == 5
    assert {h.chunk.source for h in by_path.hits} <= {"word2vec.md", "what-are-embeddings.md", "glove.md"}


@pytest.mark.slow
@pytest.mark.parametrize("only", [SearchFilter.of("nlp", None), SearchFilter.of(None, ["g*", "c*"])])
def test_a_small_filter_ranks_exactly_what_chromas_filtered_search_ranks(
    kb: KnowledgeBase, only: SearchFilter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag import retrieve

    exact = kb.search(QUESTION, k=6, mode="hybrid", only=only)
    monkeypatch.setattr(retrieve, "EXACT_FILTER_ROWS", -1)  # every filter through Chroma's `where`
    through_chroma = kb.search(QUESTION, k=6, mode="hybrid", only=only)
    assert [h.chunk.id for h in exact.hits] == [h.chunk.id for h in through_chroma.hits]
    assert [h.score for h in exact.hits] == pytest.approx([h.score for h in through_chroma.hits], abs=1e-5)
    dense = kb.search(QUESTION, k=6, mode="dense", only=only)
    monkeypatch.undo()
    assert [h.chunk.id for h in kb.search(QUESTION, k=6, mode="dense", only=only).hits] == [
        h.chunk.id for h in dense.hits
    ]


@pytest.mark.slow
def test_a_filter_nothing_matches_says_so(kb: KnowledgeBase) -> None:
    result = kb.search(QUESTION, only=SearchFilter(tags=("no-such-tag",)))
    assert result.hits == [] and not result.confident
    assert result.reason == "no note matches the filter tag 'no-such-tag'"
    answer = kb.answerer.answer(QUESTION, only=SearchFilter(paths=("recipes/*",)))
    assert answer.mode == "refused" and "No note matches path 'recipes/*'" in answer.text


@pytest.mark.slow
def test_the_cli_filters_by_tag_and_path(indexed_config: Config, run) -> None:  # noqa: F811
    out = run(indexed_config, "ask", QUESTION, "--tag", "nlp", "--path", "g*", "--path", "w*", "--json", "-k", "4")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert len(result["hits"]) == 4 and {h["source"] for h in result["hits"]} <= {"glove.md", "word2vec.md"}
    assert {s["source"] for s in result["sources"]} <= {"glove.md", "word2vec.md"}
    bad = run(indexed_config, "ask", QUESTION, "--path", "/etc/*")
    assert bad.returncode == 2 and "relative to the knowledge folder" in bad.stderr


@pytest.mark.slow
def test_the_api_the_gradio_endpoint_and_the_openai_endpoint_filter(live_chat: LiveChat) -> None:
    search = httpx.get(
        f"{live_chat.url}/api/search", params=[("q", QUESTION), ("k", "6"), ("tag", "nlp")], timeout=60
    ).json()
    assert len(search["hits"]) == 6 and {h["source"] for h in search["hits"]} <= NLP
    bad = httpx.get(f"{live_chat.url}/api/search", params={"q": QUESTION, "path": "/x"}, timeout=60)
    assert bad.status_code == 400 and "relative to the knowledge folder" in bad.json()["error"]

    asked = Client(live_chat.url, verbose=False).predict(QUESTION, 4, None, "nlp", "glove.md", api_name="/ask")
    assert asked["hits"] and {h["source"] for h in asked["hits"]} == {"glove.md"}

    client = openai.OpenAI(base_url=f"{live_chat.url}/v1", api_key="not-needed", max_retries=0, timeout=300)
    completion = client.chat.completions.create(
        model="rag-notes", messages=[{"role": "user", "content": QUESTION}], extra_body={"tags": ["nlp"], "k": 4}
    )
    assert {h["source"] for h in completion.model_extra["sources"]} <= NLP


@pytest.mark.slow
def test_the_magic_and_the_widget_filter(indexed_config: Config, embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from rag.knowledge import shared_knowledge_base

    monkeypatch.setenv("RAG_KNOWLEDGE_DIR", str(indexed_config.knowledge_dir))
    monkeypatch.setenv("RAG_DB_DIR", str(indexed_config.db_dir))
    shared_knowledge_base()._embedder = embedder
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "demo")
    result = shell.run_cell(f"%ask --new --tag nlp --path 'glove*' -k 3 {QUESTION}").result
    assert result.hits and {h.chunk.source for h in result.hits} == {"glove.md"}

    widget = ChatWidget(KnowledgeBase(indexed_config, embedder=embedder), k=4)
    widget._on_message(widget, {"type": "ask", "question": QUESTION, "tags": "nlp", "paths": ""}, [])
    widget.wait()
    assert widget.tags == ["nlp"] and widget.result["hits"]
    assert {h["source"] for h in widget.result["hits"]} <= NLP
    # The note files name these tags in their front matter: the filter reads what the notes say.
    for source in NLP:
        assert "nlp" in load_note(indexed_config.knowledge_dir, indexed_config.knowledge_dir / source).tags
