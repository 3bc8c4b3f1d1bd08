"""The chat's pictures: the map of meaning (its own tab) and the best score against the corpus background (under
the sources). Thin wiring over `KnowledgeBase.map_view` and the pure SVG builders of `rag.figure`; the SVG holds
no script and loads nothing, so it shows offline and inside Gradio's HTML component as it is.
"""

from __future__ import annotations

from html import escape

from rag.errors import RagError
from rag.figure import map_svg, score_picture
from rag.knowledge import KnowledgeBase
from rag.retrieve import SearchResult

# Chunks drawn at most; a larger index is sampled and the picture says so.
MAP_LIMIT = 2_500


def _note(text: str) -> str:
    return f'<p class="rag-map-note">{escape(text)}</p>'


def map_html(kb: KnowledgeBase, result: SearchResult | None = None) -> str:
    """The map; with a search result, its question placed on it and its sources ringed."""
    try:
        shown = kb.map_view(result, limit=MAP_LIMIT)
    except RagError as exc:
        return _note(str(exc))
    if shown is None:
        return _note("The index holds no chunks yet: add a note and the map appears.")
    return map_svg(shown)


def score_html(kb: KnowledgeBase, result: SearchResult | None) -> str:
    """The corpus background with the best hit's cosine marked and the confident bar drawn; empty before a question."""
    if result is None or not result.hits:
        return ""
    try:
        calibration = kb.calibration()
    except RagError as exc:
        return _note(str(exc))
    return score_picture(calibration, result, confident_percentile=kb.config.confident_percentile)
