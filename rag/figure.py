"""Pictures of the knowledge base: the map of meaning and a score set against the corpus background.

Pure functions from `rag.project.MapView` and `rag.calibrate.Calibration` to self-contained SVG: no script, no
font or style sheet from anywhere (the browser's own sans-serif), every value taken from a note escaped, hover
text as SVG `<title>` elements. A `Figure` displays itself in a notebook and saves as .svg or .html. Classes on
the marks (`rag-point`, `rag-question`, `rag-source`, `rag-background`, `rag-best`, `rag-bar`) are hooks for
tests; the look is in presentation attributes, so a sanitiser that drops classes changes nothing visible.
`map` is the one-call version for notebooks, like `rag.ask`.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.chunk import context_line
from rag.project import MapView
from rag.render import score_svg

if TYPE_CHECKING:
    from rag.calibrate import Calibration
    from rag.config import Config
    from rag.retrieve import SearchResult

# Colour-blind-safe palette (Okabe-Ito, then Tableau); notes beyond it reuse colours, and the legend says so.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#4E79A7",
    "#59A14F",
    "#B07AA1",
    "#9C755F",
    "#76B7B2",
)
_FONT = 'font-family="sans-serif"'


@dataclass(frozen=True)
class Figure:
    """An SVG picture that displays itself in a notebook cell and saves as .svg or .html."""

    svg: str
    title: str = ""

    def _repr_svg_(self) -> str:
        return self.svg

    def html(self) -> str:
        """A standalone HTML page holding the picture (nothing loaded from elsewhere)."""
        return (
            f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(self.title)}</title></head>'
            f'<body style="margin:16px;background:#fff">{self.svg}</body></html>\n'
        )

    def save(self, path: str | Path) -> Path:
        """Write the picture as .svg, or as an HTML page for any other suffix (.html)."""
        path = Path(path)
        path.write_text(self.svg if path.suffix.lower() == ".svg" else self.html(), encoding="utf-8")
        return path


def note_colours(sources: list[str]) -> dict[str, str]:
    """A colour per note, in sorted order of the note paths, so a note keeps its colour from picture to picture."""
    return {source: PALETTE[i % len(PALETTE)] for i, source in enumerate(sorted(set(sources)))}


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def map_svg(view: MapView, *, width: int = 640, height: int = 480) -> str:
    """The map as SVG: a dot per chunk coloured by note, the question as a star, its sources ringed and numbered."""
    left, right, top, bottom = 52, 16, 40, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [p.x for p in view.points] + [p.x for p in view.sources]
    ys = [p.y for p in view.points] + [p.y for p in view.sources]
    if view.question_xy is not None:
        xs.append(view.question_xy[0])
        ys.append(view.question_xy[1])
    x0, x1 = (min(xs), max(xs)) if xs else (-1.0, 1.0)
    y0, y1 = (min(ys), max(ys)) if ys else (-1.0, 1.0)
    pad_x, pad_y = (x1 - x0) * 0.05 or 1.0, (y1 - y0) * 0.05 or 1.0
    x0, x1, y0, y1 = x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y

    def sx(x: float) -> float:
        return round(left + (x - x0) / (x1 - x0) * plot_w, 1)

    def sy(y: float) -> float:
        return round(top + (1 - (y - y0) / (y1 - y0)) * plot_h, 1)

    colours = note_colours([p.source for p in view.points])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="rag-map" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Map of the knowledge base" {_FONT} font-size="12">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    notes = len(colours)
    shown = (
        f"{len(view.points):,} of {view.total:,} chunks, a random sample" if view.sampled else f"{view.total:,} chunks"
    )
    headline = f"Map of meaning: {shown}, {notes:,} note{'s' if notes != 1 else ''}"
    if view.sampled and view.sources:
        headline += " (sources always drawn)"
    parts.append(f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(headline)}</text>')
    parts.append(
        f'<text x="{left}" y="32" fill="#555" font-size="11">Each dot is a chunk, coloured by note; '
        "near dots have similar vectors (a flat shadow: some true neighbours land apart)</text>"
    )
    for p in view.points:
        label = context_line(p.title, p.heading) + f" ({p.source})"
        parts.append(
            f'<circle class="rag-point" cx="{sx(p.x)}" cy="{sy(p.y)}" r="3.2" fill="{colours.get(p.source, "#888")}" '
            f'fill-opacity="0.75"><title>{escape(label)}</title></circle>'
        )
    if view.question_xy is not None:
        qx, qy = sx(view.question_xy[0]), sy(view.question_xy[1])
        for p in view.sources:
            parts.append(
                f'<line x1="{qx}" y1="{qy}" x2="{sx(p.x)}" y2="{sy(p.y)}" stroke="#333" stroke-width="0.8" '
                'stroke-dasharray="3 3"/>'
            )
    for rank, p in enumerate(view.sources, 1):
        label = f"[{rank}] " + context_line(p.title, p.heading) + f" ({p.source})"
        cx, cy = sx(p.x), sy(p.y)
        parts.append(
            f'<g class="rag-source" data-rank="{rank}"><circle cx="{cx}" cy="{cy}" r="8" fill="none" stroke="#000" '
            f'stroke-width="2"/><text x="{cx + 9}" y="{cy - 7}" font-size="11" font-weight="bold">{rank}</text>'
            f"<title>{escape(label)}</title></g>"
        )
    if view.question_xy is not None:
        qx, qy = sx(view.question_xy[0]), sy(view.question_xy[1])
        star = " ".join(
            f"{round(qx + r * np.sin(a), 1)},{round(qy - r * np.cos(a), 1)}"
            for i, a in enumerate(np.linspace(0, 2 * np.pi, 10, endpoint=False))
            for r in [9 if i % 2 == 0 else 4]
        )
        parts.append(
            f'<polygon class="rag-question" points="{star}" fill="#d62728" stroke="#000" stroke-width="1">'
            f"<title>{escape('Your question: ' + (view.question or ''))}</title></polygon>"
        )
    ex, ey = view.explained
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{top + plot_h + 20}" text-anchor="middle">'
        f"PC1: first principal component ({_pct(ex)} of variance)</text>"
    )
    parts.append(
        f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" transform="rotate(-90 14 {top + plot_h / 2})">'
        f"PC2: second principal component ({_pct(ey)} of variance)</text>"
    )
    legend = sorted(colours.items())[:6] if notes > len(PALETTE) or notes > 6 else sorted(colours.items())
    x: float = left
    for source, colour in legend:
        name = Path(source).stem[:22]
        parts.append(
            f'<circle cx="{x + 5}" cy="{height - 24}" r="4" fill="{colour}"/>'
            f'<text x="{x + 12}" y="{height - 20}" font-size="11">{escape(name)}</text>'
        )
        x += 18 + 6.5 * len(name)
        if x > width - 120:
            break
    if len(legend) < notes:
        reuse = "; colours repeat" if notes > len(PALETTE) else ""
        parts.append(
            f'<text x="{left}" y="{height - 6}" fill="#555" font-size="11">'
            f"and {notes - len(legend):,} more notes{reuse}: hover a dot for its note</text>"
        )
    if view.question_xy is not None:
        parts.append(
            f'<text x="{width - right}" y="{height - 6}" text-anchor="end" font-size="11">'
            "red star: your question; rings: its sources, numbered</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def score_picture(calibration: Calibration | None, result: SearchResult, *, confident_percentile: float = 95.0) -> str:
    """`score_svg` for a search result's best hit; empty when it found nothing."""
    if not result.hits:
        return ""
    best = result.hits[0]
    return score_svg(calibration, best.score, percentile=best.percentile, confident_percentile=confident_percentile)


def side_by_side(left: str, right: str, *, gap: int = 12, right_top: int = 40) -> str:
    """Two SVG pictures as one: `right` beside `left`, `right_top` pixels down (`left` alone if `right` is empty)."""
    if not right:
        return left

    def size(svg: str) -> tuple[int, int]:
        head = svg[: svg.index(">")]
        return int(head.split(' width="')[1].split('"')[0]), int(head.split(' height="')[1].split('"')[0])

    (lw, lh), (rw, rh) = size(left), size(right)
    width, height = lw + gap + rw, max(lh, right_top + rh)
    placed = right.replace("<svg ", f'<svg x="{lw + gap}" y="{right_top}" ', 1)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>{left}{placed}</svg>'
    )


def map(  # noqa: A001 - `rag.map` mirrors `rag.ask`
    question: str | None = None, *, k: int = 5, config: Config | None = None, sync: bool = True
) -> Figure:
    """The map of the knowledge base that the `RAG_*` settings describe, in one call; with a question, the
    question placed on it, its sources ringed and its best score set against the corpus background.

    Args:
        question: free text, or None for the map alone.
        k: how many sources to ring.
        config: settings; defaults to `Config.from_env()`.
        sync: bring the index in line with the folder first.
    """
    from rag.knowledge import shared_knowledge_base

    kb = shared_knowledge_base(config)
    if sync:
        kb.sync(rebuild=False)
    return kb.map(question, k=k)
