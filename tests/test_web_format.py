"""The chat's pure formatting: answers with [n] markers, source cards, legend, weak matches, escaping."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from demo.format import (
    LEGEND,
    answer_note,
    compose_answer,
    escape_markdown_html,
    format_notice,
    format_sources,
    format_status,
    plain_html,
    render_markdown,
    score_bar_width,
)
from rag.generate import ExtractiveWriter, split_sentences
from rag.passage import gather_sources
from rag.retrieve import Hit, SearchResult, judge

from .factories import make_answer, make_hit, word_overlap

PAYLOAD = '<script>window.__xss = 1</script> and <img src=x onerror="window.__xss = 2">'


def hit(
    score: float,
    text: str,
    *,
    source: str = "a.md",
    title: str = "Alpha",
    heading: str = "Alpha",
    percentile: float | None = None,
) -> Hit:
    return make_hit(score, text=text, source=source, title=title, heading=heading, tags=["t1"], percentile=percentile)


def result(*hits: Hit, confident: bool = True, question: str = "how do cats sleep") -> SearchResult:
    """A result judged by the uncalibrated bar of 0.40, or by percentile 95 when the hits carry percentiles."""
    calibrated = any(h.percentile is not None for h in hits)
    verdict = judge(list(hits), calibrated=calibrated, score_bar=0.4, percentile_bar=95.0)
    assert verdict.confident == confident or not hits
    return dataclasses.replace(verdict, question=question, hits=list(hits))


def test_split_sentences_keeps_prose_and_drops_headings_tables_code() -> None:
    text = (
        "# Cats\n\nCats sleep for most of the day in warm places. They wake up at dusk to hunt.\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nprint('cats sleep a lot here')\n```\n\n"
        "- Kittens sleep even longer than adult cats do.\n- x = 1\n\nThe steps are:"
    )
    assert split_sentences(text) == [
        "Cats sleep for most of the day in warm places.",
        "They wake up at dusk to hunt.",
        "Kittens sleep even longer than adult cats do.",
    ]


def test_extractive_writer_prefers_relevant_sentences_and_numbers_their_sources() -> None:
    r = result(
        hit(0.8, "Dogs bark at strangers in the night. Cats sleep sixteen hours every day.", source="a.md"),
        hit(0.6, "Birds migrate south in the winter months. Cats sleep curled up to keep warm.", source="b.md"),
    )
    picked = ExtractiveWriter(word_overlap, limit=2).pick(r.question, gather_sources(r))
    assert picked == [(1, "Cats sleep sixteen hours every day."), (2, "Cats sleep curled up to keep warm.")]


def test_extractive_writer_uses_the_given_scorer_and_quotes_a_leaning_sentence_with_the_one_before() -> None:
    r = result(hit(0.8, "First sentence is long enough here. Second sentence is long enough too."))
    picked = ExtractiveWriter(lambda q, s: [0.1, 0.9], limit=1).pick(r.question, gather_sources(r))
    assert picked == [(1, "Second sentence is long enough too.")]
    r = result(hit(0.8, "Cats are small furry hunters. They sleep sixteen hours every day."))
    picked = ExtractiveWriter(lambda q, s: [0.1, 0.9], limit=1).pick(r.question, gather_sources(r))
    assert picked == [(1, "Cats are small furry hunters."), (1, "They sleep sixteen hours every day.")]


def test_compose_answer_marks_sentences_and_lists_sources_with_both_scores_named() -> None:
    r = result(
        hit(0.812, "Cats sleep sixteen hours every single day."),
        hit(0.55, "Cats nap in the sun often.", source="b.md", title="Beta", heading="Beta > Naps"),
    )
    r = dataclasses.replace(
        r, hits=[dataclasses.replace(h, rank_score=s) for h, s in zip(r.hits, (0.9, 0.4), strict=True)]
    )
    text = compose_answer(make_answer(r))
    assert "Cats sleep sixteen hours every single day. [1]" in text
    assert "**Sources**, by relevance" in text
    assert "1. relevance `0.90` · cosine `0.81` **Alpha** — `a.md:3-9`" in text
    assert "2. relevance `0.40` · cosine `0.55` **Beta &gt; Naps** — `b.md:3-9`" in text
    assert "Not in your notes" not in text


def test_compose_answer_marks_unsupported_sentences_and_says_who_wrote_it() -> None:
    r = result(hit(0.81, "Cats sleep sixteen hours every single day."))
    quoted = [(1, "Cats sleep a lot."), (1, "Dogs fly at night.")]
    text = compose_answer(make_answer(r, quoted, unsupported=[1], mode="generated", model="tiny.gguf"))
    assert "Cats sleep a lot. [1] Dogs fly at night. [1] _(not supported by a cited source)_" in text
    assert "_Written by tiny.gguf from the sources below; 1 of 2 sentences not supported by a cited source._" in text


def test_compose_answer_shows_what_a_follow_up_searched() -> None:
    r = result(hit(0.81, "Cats sleep sixteen hours every single day."), question="and why?")
    text = compose_answer(make_answer(r, searched="how do cats sleep and why?"))
    assert text.startswith("_Searched for:_ how do cats sleep and why?\n\n")


def test_compose_answer_says_plainly_when_no_match_is_confident() -> None:
    r = result(hit(0.21, "Cats sleep sixteen hours every single day."), confident=False)
    text = compose_answer(make_answer(r))
    assert text.startswith(
        "**Not in your notes.** Your notes do not seem to cover this. The best score, 0.21, is "
        "under 0.40 (too few notes to calibrate"
    )
    assert "(weak matches)" in text and "[1]" not in text.split("**Sources**")[0]


def test_compose_answer_gives_the_calibrated_reason_and_percentiles() -> None:
    r = result(hit(0.52, "Cats sleep sixteen hours every single day.", percentile=81.5), confident=False)
    text = compose_answer(make_answer(r))
    assert (
        "The best score, 0.52, beats only 81.5% of pairs of unrelated chunks in these notes; a confident match "
        "beats 95%." in text
    )
    assert "cosine `0.52` p81.5 **Alpha**" in text


def test_compose_answer_without_hits_says_so() -> None:
    text = compose_answer(make_answer(result()))
    assert text.startswith("**Not in your notes.**") and "Sources" not in text


def test_note_html_is_escaped_in_the_answer_markdown() -> None:
    r = result(hit(0.9, f"Cats sleep a lot, says {PAYLOAD} in this note.", title="<b>T</b>"))
    text = compose_answer(make_answer(r))
    assert "<script>" not in text and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;" in text and "&lt;img src=x" in text


def test_escape_markdown_html_leaves_code_spans_alone() -> None:
    assert escape_markdown_html("a < b and `x < y` & <i>") == "a &lt; b and `x < y` &amp; &lt;i&gt;"


def test_plain_html_shows_text_as_typed() -> None:
    assert plain_html("a \\`<img src=x onerror=alert(1)>` b") == "<p>a \\`&lt;img src=x onerror=alert(1)&gt;` b</p>"


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("| a | b |\n|---|---|\n| 1 | 2 |", "<table>"),
        ("```python\nx = 1 < 2\n```", '<pre><code class="language-python">x = 1 &lt; 2'),
        ("## Heading", "<h2>Heading</h2>"),
        (PAYLOAD, "&lt;script&gt;window.__xss = 1&lt;/script&gt;"),
        ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),
    ],
)
def test_render_markdown_renders_markdown_but_never_raw_html(markdown: str, expected: str) -> None:
    rendered = render_markdown(markdown)
    assert expected in rendered
    assert "<script" not in rendered and "<img" not in rendered and 'href="javascript' not in rendered


@pytest.mark.parametrize(("score", "width"), [(0.734, 73), (1.2, 100), (-0.3, 0), (0.0, 0)])
def test_score_bar_width_is_the_clamped_similarity(score: float, width: int) -> None:
    assert score_bar_width(score) == width


def test_source_cards_show_both_scores_bar_title_heading_location_and_passage() -> None:
    r = result(hit(0.7349, "Body **bold**", heading="Alpha > Part > Sub"))
    r = dataclasses.replace(r, hits=[dataclasses.replace(r.hits[0], rank_score=0.91)])
    html_text = format_sources(make_answer(r, [(1, "Body bold is here.")]))
    assert (
        '<span class="rag-score" title="cosine similarity between the question and this passage">cosine 0.73</span>'
        in html_text
    )
    assert '<span class="rag-relevance" title="the score search ranked the sources by' in html_text
    assert ">relevance 0.91</span>" in html_text
    assert 'style="width:73%"' in html_text
    assert '<div class="rag-title">Alpha</div>' in html_text
    assert '<div class="rag-heading">Part &gt; Sub</div>' in html_text
    assert "a.md:3-9" in html_text and "rag-cited" in html_text
    assert "<details" in html_text and "<strong>bold</strong>" in html_text
    assert "rag-weak" not in html_text and "Sources are listed by relevance" in html_text


def test_weak_cards_are_marked() -> None:
    html_text = format_sources(make_answer(result(hit(0.31, "x"), hit(0.52, "y", source="b.md"), confident=True)))
    assert html_text.count("rag-weak") == 1
    assert html_text.count("weak match") == 1


def test_calibrated_cards_show_the_percentile_and_are_weak_by_it_not_by_cosine() -> None:
    # 0.31 is under the raw 0.40 bar but beats 99% of this corpus's unrelated pairs: strong here.
    strong, weak = hit(0.31, "x", percentile=99.0), hit(0.52, "y", source="b.md", percentile=60.2)
    html_text = format_sources(make_answer(result(strong, weak, confident=True)))
    assert '<span class="rag-rank" title="percentile: the share of pairs of unrelated chunks' in html_text
    assert ">p99.0</span>" in html_text and ">p60.2</span>" in html_text
    assert html_text.count("rag-weak") == 1
    assert 'rag-card rag-weak" data-source="b.md"' in html_text


def test_source_cards_escape_every_note_field() -> None:
    evil = hit(0.9, PAYLOAD, title=PAYLOAD, heading="x > " + PAYLOAD, source='"><img src=x onerror=1>.md')
    html_text = format_sources(make_answer(result(evil)))
    assert "<script" not in html_text and "<img" not in html_text


def test_source_panel_before_any_question_and_with_no_hits() -> None:
    assert "Ask a question" in format_sources(None)
    assert "No chunk reached the minimum score" in format_sources(make_answer(result()))
    assert "1 means the same direction" in LEGEND and "around 0 means unrelated" in LEGEND
    assert "share of pairs of unrelated chunks" in LEGEND and "listed by relevance" in LEGEND


def test_status_panel_shows_totals_last_sync_and_skipped_reasons() -> None:
    now = datetime(2025, 1, 1, 12, 0, 30, tzinfo=timezone.utc)
    status = {
        "notes": 14,
        "chunks": 140,
        "knowledge": "knowledge",
        "model": "m",
        "watching": True,
        "last_sync": (now - timedelta(seconds=5)).isoformat(),
        "skipped": [{"path": "big<x>.md", "reason": "is over 2,000,000 bytes"}],
    }
    text = format_status(status, now=now)
    assert "<th>Notes</th><td>14</td>" in text and "<th>Chunks</th><td>140</td>" in text
    assert "12:00:25 (5 s ago)" in text and "watching the folder" in text
    assert "<code>big&lt;x&gt;.md</code> — is over 2,000,000 bytes" in text
    assert "not yet" in format_status({"skipped": []}, now=now)


def test_answer_note_keeps_question_answer_and_sources() -> None:
    r = result(hit(0.81, "Cats sleep sixteen hours every single day."), question="how do   cats sleep")
    title, body = answer_note(make_answer(r))
    assert title == "Answer: how do cats sleep"
    assert "## Question\n\nhow do cats sleep" in body
    assert "- Cats sleep sixteen hours every single day. [1]" in body
    assert "1. Alpha — `a.md:3-9` (similarity 0.81)" in body


def test_notice_escapes_its_message() -> None:
    assert format_notice("bad <x>", ok=False) == '<p class="rag-error" role="alert">bad &lt;x&gt;</p>'
