"""The in-kernel chat widget: the HTML of its answers, its front end, and its requests against a real index and
the real answer writers (extractive, and the SmolLM2 test model for streaming and Stop)."""

from __future__ import annotations

import re
import threading
import time
from html.parser import HTMLParser

import pytest

from demo.widget import UNCITED, UNSUPPORTED, ChatWidget, answer_html, source_rows
from rag.answer import WAITING_SLOTS, WRITING_SLOTS, Answer, Sentence
from rag.config import Config
from rag.knowledge import KnowledgeBase
from rag.passage import Source

HOSTILE = '<script>window.__pwned = 1</script> and <img src=x onerror="window.__pwned = 1">'


def make_source(number: int, text: str = "Body.") -> Source:
    return Source(number, "t.md", "T", ("T", "Part"), 1, 3, text, 0.71, 0.9, 97.0, (f"t.md#{number}",))


def test_answer_html_marks_unsupported_sentences_and_names_each_cited_source() -> None:
    sentences = [
        Sentence("Cats sleep *a lot*.", (1,), True, 0.9),
        Sentence(f"Dogs {HOSTILE} bark.", (2,), False, 0.3),
        Sentence("Birds sing.", (), False, None),
    ]
    answer = Answer(
        "q", "q", "generated", "…", [make_source(1), make_source(2)], sentences=sentences, model="tiny.gguf"
    )
    shown = answer_html(answer)
    assert shown.count('class="ragchat-sentence ragchat-unsupported"') == 2
    assert f'title="{UNSUPPORTED}"' in shown and f'title="{UNCITED}"' in shown
    assert 'data-source="1" title="source 1: T (t.md:1-3)">[1]</span>' in shown and ">[2]</span>" in shown
    # Markdown is rendered, raw HTML is not: it shows as text.
    assert "<em>a lot</em>" in shown and "&lt;script&gt;" in shown and "&lt;img" in shown
    assert "<script" not in shown and "<img" not in shown
    assert f"Written by tiny.gguf from the sources below; 2 of 3 sentences {UNSUPPORTED}." in shown


def test_a_draft_shows_its_markdown_safely_and_says_it_is_being_written() -> None:
    draft = Answer("q", "q", "generated", f"Partly written `code` {HOSTILE}\n\n```\n<b>x</b>", final=False)
    shown = answer_html(draft)
    assert "<code>code</code>" in shown and "<pre><code>&lt;b&gt;x&lt;/b&gt;" in shown
    assert "<script" not in shown and "<img" not in shown and "Writing…" in shown


def test_source_rows_are_the_json_sources_with_their_passage_as_html() -> None:
    answer = Answer("q", "q", "extractive", "Body. [2]", [make_source(1), make_source(2, f"# H\n\n{HOSTILE}")])
    answer = Answer(**{**answer.__dict__, "sentences": [Sentence("Body.", (2,), True, 1.0)]})
    rows = source_rows(answer)
    assert [r["cited"] for r in rows] == [False, True]
    assert {k: v for k, v in rows[1].items() if k not in ("html", "cited")} == answer.sources[1].to_dict()
    assert rows[1]["html"].startswith("<h1>H</h1>") and "&lt;script&gt;" in rows[1]["html"]
    assert (rows[1]["score"], rows[1]["rank_score"], rows[1]["section"]) == (0.71, 0.9, "Part")


def test_front_end_inserts_only_the_kernels_html_fields() -> None:
    esm = ChatWidget._esm
    assert esm.count("innerHTML") == 1 and "insertAdjacentHTML" not in esm and "outerHTML" not in esm
    assert re.search(r"function kernelHtml\(el, html\) \{\n  el\.innerHTML = html;", esm)
    calls = re.findall(r"^\s*kernelHtml\((.*)\);$", esm, re.MULTILINE)
    assert sorted(calls) == ['answer, model.get("answer_html")', 'passage, source.html || ""'], calls
    assert len(re.findall(r"kernelHtml\(", esm)) == 1 + len(calls) + 1  # the definition, the calls, a comment
    assert "textContent" in esm
    # Nothing is fetched: no URL, no import from a CDN.
    assert not re.search(r"https?://|\bimport\s", esm)


@pytest.fixture
def kb(indexed_config: Config, embedder) -> KnowledgeBase:  # type: ignore[no-untyped-def]
    return KnowledgeBase(indexed_config, embedder=embedder)


def send(widget: ChatWidget, message: dict, *, timeout: float = 300) -> None:
    """A message as the page sends it; waits for the answer it starts."""
    widget._on_message(widget, message, [])
    assert widget.wait(timeout), "the answer did not finish"


@pytest.mark.slow
def test_a_question_gets_an_answer_whose_citations_name_the_sources_shown(kb: KnowledgeBase) -> None:
    widget = ChatWidget(kb, k=3)
    send(widget, {"type": "ask", "question": "what is cosine similarity?"})
    assert (widget.busy, widget.error, widget.question, widget.mode) == (
        "",
        "",
        "what is cosine similarity?",
        "extractive",
    )
    expected = kb.answerer.answer("what is cosine similarity?", k=3)
    # `result` is what `python -m rag ask --json` prints: the search, the sources and the answer.
    assert widget.result == expected.result_dict() and widget.answer == expected.text
    assert widget.result["hits"][0]["source"] == "cosine-similarity.md"
    shown = {row["number"]: row for row in widget.sources}
    cited = [int(n) for n in re.findall(r"\[(\d+)\]", widget.answer)]
    assert cited and set(cited) <= set(shown)
    for n in cited:
        assert shown[n]["cited"] and f'data-source="{n}"' in widget.answer_html
    assert shown[cited[0]]["source"] == "cosine-similarity.md"
    first = widget.sources[0]
    assert first["location"].startswith("cosine-similarity.md:") and first["html"].startswith("<")
    assert -1 <= first["score"] <= 1 and first["rank_score"] >= widget.sources[-1]["rank_score"]
    assert "ragchat-unsupported" not in widget.answer_html  # quoted sentences are their sources' own words
    assert widget.searched == "" and widget.history == [] and widget.caption.startswith(f"{len(shown)} source")


@pytest.mark.slow
def test_a_follow_up_keeps_the_thread_until_a_new_conversation(kb: KnowledgeBase) -> None:
    widget = ChatWidget(kb)
    send(widget, {"type": "ask", "question": "What is BM25?"})
    first = widget.answer
    send(widget, {"type": "ask", "question": "When does it beat dense embeddings?"})
    assert widget.history == [
        {"role": "user", "content": "What is BM25?"},
        {"role": "assistant", "content": first},
    ]
    assert widget.searched == widget.result["answer"]["searched"] != widget.question
    assert "BM25" in widget.searched and widget.sources[0]["source"] == "hybrid-search-bm25.md"

    send(widget, {"type": "reset"})
    assert (widget.history, widget.answer, widget.sources, widget.result, widget.question) == ([], "", [], {}, "")
    send(widget, {"type": "ask", "question": "When does it beat dense embeddings?"})
    assert widget.searched == "" and widget.result["answer"]["searched"] == "When does it beat dense embeddings?"
    assert widget.sources[0]["source"] != "hybrid-search-bm25.md"


@pytest.mark.slow
def test_a_question_the_notes_do_not_cover_is_refused(kb: KnowledgeBase) -> None:
    widget = ChatWidget(kb)
    send(widget, {"type": "ask", "question": "What is the capital of Peru?"})
    assert widget.mode == "refused" and widget.result["answer"]["mode"] == "refused"
    assert widget.result["answer"]["citations"] == [] and "Not in your notes." in widget.answer_html
    assert "ragchat-cite" not in widget.answer_html and all(row["weak"] for row in widget.sources)
    assert "(weak matches)" in widget.caption


@pytest.mark.slow
def test_markup_in_a_note_shows_as_text_and_its_code_fence_as_code(kb: KnowledgeBase) -> None:
    body = (
        f"Zorblax tuning sets the flux valve to seven units {HOSTILE} before every single run.\n\n"
        '```python\nprint("<b>not bold</b>")\n```\n\n'
        "Zorblax tuning also needs a careful calibration of the flux valve every spring.\n"
    )
    kb.add_note("Zorblax tuning", body)
    widget = ChatWidget(kb)
    send(widget, {"type": "ask", "question": "How is the zorblax flux valve tuned?"})
    assert widget.mode == "extractive" and widget.sources[0]["source"] == "zorblax-tuning.md", widget.answer
    passage = widget.sources[0]["html"]
    assert '<pre><code class="language-python">print(&quot;&lt;b&gt;not bold&lt;/b&gt;&quot;)' in passage
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in passage and "&lt;img src=x" in passage
    assert "&lt;script&gt;" in widget.answer_html and "[1]" in widget.answer
    for shown in [widget.answer_html] + [row["html"] for row in widget.sources]:
        tags = elements(shown)
        assert not {name for name, _ in tags} & {"script", "img", "iframe", "object"}, tags
        assert not [attr for _, attrs in tags for attr in attrs if attr.startswith("on")], tags


def elements(markup: str) -> list[tuple[str, list[str]]]:
    """Every element of an HTML fragment as a browser's parser reads it: its tag and attribute names."""
    found: list[tuple[str, list[str]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, [name for name, _ in attrs]))

    Collect().feed(markup)
    return found


@pytest.mark.slow
def test_a_busy_writer_gives_a_clear_message(kb: KnowledgeBase) -> None:
    widget = ChatWidget(kb)
    queue = kb.answerer._admitted
    for _ in range(WRITING_SLOTS + WAITING_SLOTS):
        queue.acquire()
    try:
        send(widget, {"type": "ask", "question": "what is GloVe?"})
    finally:
        for _ in range(WRITING_SLOTS + WAITING_SLOTS):
            queue.release()
    assert "busy" in widget.error and "try again in a moment" in widget.error and widget.busy == ""
    send(widget, {"type": "ask", "question": "what is GloVe?"})
    assert widget.error == "" and widget.mode == "extractive"


@pytest.mark.slow
def test_a_note_added_through_the_widget_is_found_by_the_next_question(kb: KnowledgeBase) -> None:
    widget = ChatWidget(kb)
    body = "Quokkas on Rottnest Island drink little water and get moisture from the leaves they eat."
    widget._on_message(widget, {"type": "add_note", "title": "Quokka water", "body": body, "tags": "animals, test"}, [])
    assert widget.error == "" and "quokka-water.md" in widget.notice
    assert (kb.config.knowledge_dir / "quokka-water.md").read_text(encoding="utf-8").count("Rottnest") == 1
    send(widget, {"type": "ask", "question": "where do quokkas get their water?"})
    best = widget.sources[0]
    assert best["source"] == "quokka-water.md" and best["tags"] == ["animals", "test"]
    assert widget.result["confident"] and best["weak"] is False and best["percentile"] >= 95.0
    assert widget.result["confident_by"] == "percentile" and "beats" in widget.result["reason"]
    assert "Rottnest" in widget.answer and "[1]" in widget.answer


@pytest.mark.slow
def test_library_errors_show_in_the_widget_and_do_not_escape_the_handler(indexed_config: Config, embedder) -> None:  # type: ignore[no-untyped-def]
    widget = ChatWidget(KnowledgeBase(indexed_config.replace(read_only=True), embedder=embedder))
    assert widget.read_only
    send(widget, {"type": "ask", "question": "   "})
    assert "question is empty" in widget.error and widget.busy == ""
    widget._on_message(widget, {"type": "add_note", "title": "X", "body": "y"}, [])
    assert "read-only" in widget.error and not (indexed_config.knowledge_dir / "x.md").exists()
    send(widget, {"type": "ask", "question": "embeddings"})
    assert widget.error == "" and widget.result["hits"] and widget.sources


@pytest.mark.slow
def test_drafts_stream_into_the_widget_and_stop_ends_the_answer_early(indexed_config: Config, embedder) -> None:  # type: ignore[no-untyped-def]
    kb = KnowledgeBase(indexed_config.replace(llm="smollm2", llm_threads=1), embedder=embedder)
    widget = ChatWidget(kb)
    drafts: list[str] = []
    writing = threading.Event()

    def seen(change) -> None:  # type: ignore[no-untyped-def]
        # `answer` is set just before `answer_html`; a draft's HTML says it is being written.
        if "Writing…" in change["new"] and widget.answer:
            drafts.append(widget.answer)
            if len(drafts) >= 3:
                writing.set()

    widget.observe(seen, names="answer_html")
    started = time.monotonic()
    widget._on_message(widget, {"type": "ask", "question": "What is GloVe and how is it trained?"}, [])
    # The answer runs in a thread: the handler returns at once, so the page's Stop can reach the kernel.
    assert time.monotonic() - started < 1 and not widget.wait(0)
    assert writing.wait(300), (widget.error, widget.answer)
    assert "Writing…" in widget.answer_html and widget.busy.startswith("Writing")
    widget._on_message(widget, {"type": "stop"}, [])
    assert widget.wait(60)
    answer = widget.result["answer"]
    assert answer["mode"] == "generated" and answer["stopped"] is True and answer["model"].endswith(".gguf")
    assert "Stopped before the end." in widget.answer_html and widget.writing is False and widget.error == ""
    # Each draft grew the one before; the stop came within a few tokens, far below the answer's 320-token cap.
    assert all(b.startswith(a) for a, b in zip(drafts, drafts[1:], strict=False)) and len(drafts) >= 3
    assert len(drafts) < 40 and len(answer["text"].split()) < 60
    assert widget.history == [] and widget.sources


def test_k_must_be_positive(config: Config) -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        ChatWidget(KnowledgeBase(config), k=0)
