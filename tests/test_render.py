"""The HTML views of results (rag.render) and the `_repr_html_` of `Hit` and `SearchResult`."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from rag.chunk import section
from rag.render import excerpt, hits_table, prose, result_html, score_bar
from rag.retrieve import SearchResult, judge

from .factories import make_chunk, make_hit


@pytest.mark.parametrize(
    ("score", "width"), [(0.5, "50%"), (0.734, "73%"), (1.0, "100%"), (1.2, "100%"), (0.0, "0%"), (-0.3, "0%")]
)
def test_score_bar_is_as_wide_as_the_score_and_shows_the_number(score: float, width: str) -> None:
    html = score_bar(score)
    assert f"width:{width}" in html
    assert f"<code>{score:.3f}</code>" in html


@pytest.mark.parametrize(("start", "end", "expected"), [(3, 9, "a.md:3-9"), (4, 4, "a.md:4"), (1, 0, "a.md:1")])
def test_location_names_the_line_range(start: int, end: int, expected: str) -> None:
    chunk = make_chunk(source="a.md", start_line=start, end_line=end)
    assert chunk.location == expected
    assert make_hit(source="a.md", start_line=start, end_line=end).to_dict()["location"] == expected


def test_excerpt_cuts_long_text_at_a_word_with_an_ellipsis() -> None:
    text = "word " * 200
    cut = excerpt(text, 50)
    assert cut.endswith(" …") and len(cut) <= 52 and "wor …" not in cut
    assert excerpt("short text", 50) == "short text"


def test_everything_from_a_note_is_escaped() -> None:
    hit = make_hit(
        title="<script>alert(1)</script>",
        heading="A & B > <i>x</i>",
        text='<img src=x onerror="alert(2)">',
        source='evil"<u>.md',
    )
    html = result_html(SearchResult(question="<u>why</u>?", confident=True, hits=[hit]).to_dict())
    for raw in ("<script>", "<img", "<i>", "<u>"):
        assert raw not in html
    escaped_forms = ("&lt;script&gt;", "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;", "A &amp; B", "&lt;u&gt;why")
    for escaped in (*escaped_forms, "evil&quot;&lt;u&gt;.md"):
        assert escaped in html


def test_result_html_lists_every_hit_with_score_title_heading_and_location() -> None:
    hits = [make_hit(0.71), make_hit(0.42, title="GloVe", heading="", source="glove.md", start_line=1, end_line=5)]
    html = result_html(SearchResult(question="q", confident=True, hits=hits).to_dict())
    assert re.findall(r"<code>(\d\.\d{3})</code>", html) == ["0.710", "0.420"]
    assert '<div style="color:#555">Definition</div>' in html and "cosine-similarity.md:3-9" in html
    assert "glove.md:1-5" in html and "GloVe" in html
    assert "confident match" in html and "No confident" not in html


def test_result_html_gives_the_reason_and_the_percentiles() -> None:
    hits = [make_hit(0.52, percentile=63.5)]
    verdict = judge(hits, calibrated=True, score_bar=0.4, percentile_bar=95.0)
    html = result_html(dataclasses.replace(verdict, question="q", hits=hits).to_dict())
    assert "weak" in html
    assert "No confident match: the best score, 0.52, beats only 63.5% of pairs of unrelated chunks" in html
    assert re.search(r"<code>0\.520</code> <span title=\"percentile: [^\"]+\" style=\"color:#555\">p63\.5</span>", html)


def test_result_html_says_when_nothing_matches_or_nothing_is_confident() -> None:
    nothing = SearchResult(question="q", confident=False, hits=[])
    assert "No matching chunks" in result_html(nothing.to_dict())
    weak = SearchResult(question="q", confident=False, hits=[make_hit(0.1)])
    assert "No confident match" in result_html(weak.to_dict())


def test_results_and_hits_display_themselves_as_html() -> None:
    hit = make_hit()
    result = SearchResult(question="q", confident=True, hits=[hit])
    assert result._repr_html_() == result_html(result.to_dict())
    assert hit._repr_html_() == hits_table([hit.to_dict()])
    assert "Cosine Similarity" in hit._repr_html_() and "0.500" in hit._repr_html_()


def test_the_library_never_imports_the_ui() -> None:
    code = "import sys, rag, rag.render; assert not {'demo', 'gradio', 'IPython'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("title", "heading", "expected"),
    [
        ("GloVe", "GloVe > Step 1", "Step 1"),
        ("What is it?", "What is it > Part > Sub", "Part > Sub"),
        ("T", "", ""),
        ("T", "Other > Part", "Other > Part"),
    ],
)
def test_section_drops_the_title_from_the_heading_path(title: str, heading: str, expected: str) -> None:
    path = tuple(h for h in heading.split(" > ") if h)
    assert " > ".join(section(title, path)) == expected
    assert make_hit(title=title, heading=heading).to_dict()["section"] == expected


def test_prose_drops_leading_heading_lines_only() -> None:
    assert prose("# T\n\n## Part\nText\n# not leading") == "Text\n# not leading"
    assert prose("# Only a heading") == "# Only a heading"
    html = hits_table([make_hit(text="# Cosine\n\nBody text.").to_dict()])
    assert "Body text." in html and "# Cosine" not in html


def test_a_calibrated_result_shows_its_best_score_against_the_background() -> None:
    from rag.calibrate import Calibration

    background = Calibration(quantiles=[round(-0.1 + 0.0006 * i, 4) for i in range(1001)], pairs=500, chunks=40)
    hits = [make_hit(0.62, percentile=99.0)]
    verdict = judge(hits, calibrated=True, score_bar=0.4, percentile_bar=95.0)
    result = dataclasses.replace(verdict, question="q", hits=hits, calibration=background)
    html = result._repr_html_()
    assert html.startswith("<div>" + result_html(result.to_dict()))
    assert 'class="rag-background"' in html and 'class="rag-best"' in html and 'class="rag-bar"' in html
    assert "best hit 0.62 (p99.0); confident bar p95 = 0.47" in html
    assert "calibration" not in result.to_dict(), "the background stays out of the JSON"
    plain = dataclasses.replace(result, calibration=None)._repr_html_()
    assert plain == result_html(result.to_dict()) and "<svg" not in plain
