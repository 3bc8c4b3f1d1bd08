"""HTML views of search results, for notebooks and anything else that displays HTML.

Pure functions from the JSON form of a result (`SearchResult.to_dict()`, the same rows `ask --json` prints) to
strings, so this module depends on no other part of the library. Every value taken from a note is escaped, and
the markup uses inline styles only (no scripts, no classes), so it survives the sanitisers of JupyterLab, VS Code
and GitHub. It leaves out interaction; `demo/` builds the interactive chat.
"""

from __future__ import annotations

from html import escape
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

# Hit texts longer than this are cut in the table; the full text stays in the hit.
EXCERPT_CHARS = 400

_CELL = "padding:4px 8px;vertical-align:top;text-align:left;border-bottom:1px solid #ddd"


def prose(text: str) -> str:
    """The chunk's text without its leading heading lines, which repeat the title and heading path."""
    lines = text.strip().splitlines()
    while len(lines) > 1 and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The text cut at a word boundary near `limit` characters, with an ellipsis when cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(None, 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip() + " …"


def percentile_label(percentile: float | None) -> str:
    """`p97.3`: the share of unrelated chunk pairs of the corpus that score lower; empty when not calibrated."""
    return "" if percentile is None else f"p{percentile:.1f}"


PERCENTILE_HELP = "percentile: the share of pairs of unrelated chunks in these notes that score lower than this one"


def score_bar(score: float, percentile: float | None = None) -> str:
    """A bar as wide as the cosine similarity (negative scores draw empty), the number beside it, and the
    score's percentile in the corpus when it is calibrated."""
    width = max(0.0, min(1.0, float(score))) * 100
    rank = percentile_label(percentile)
    rank_html = f' <span title="{escape(PERCENTILE_HELP)}" style="color:#555">{rank}</span>' if rank else ""
    return (
        '<div style="display:flex;align-items:center;gap:6px;white-space:nowrap">'
        '<div style="width:80px;height:10px;background:#e5e7eb;border-radius:3px;overflow:hidden">'
        f'<div style="width:{width:.0f}%;height:100%;background:#2563eb"></div></div>'
        f"<code>{float(score):.3f}</code>{rank_html}</div>"
    )


def hits_table(hits: Sequence[Mapping[str, Any]]) -> str:
    """A table of hit rows: rank, score bar, title with heading path and location, and an excerpt."""
    head = "".join(f'<th style="{_CELL}">{name}</th>' for name in ("#", "score", "source", "text"))
    rows = []
    for rank, hit in enumerate(hits, 1):
        path = hit.get("section", "")
        heading = f'<div style="color:#555">{escape(path)}</div>' if path else ""
        weak = ' <span style="color:#b45309">weak</span>' if hit.get("weak") else ""
        source = f"<b>{escape(hit['title'])}</b>{heading}<div><code>{escape(hit['location'])}</code>{weak}</div>"
        text = f'<div style="white-space:pre-wrap">{escape(excerpt(prose(hit["text"])))}</div>'
        cells = (str(rank), score_bar(hit["score"], hit.get("percentile")), source, text)
        rows.append("<tr>" + "".join(f'<td style="{_CELL}">{cell}</td>' for cell in cells) + "</tr>")
    body = "".join(rows)
    return f'<table style="border-collapse:collapse"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def result_html(result: Mapping[str, Any]) -> str:
    """The question, whether the best hit is a confident match, and the table of hits."""
    question = f"<div><b>Q:</b> {escape(result['question'])}</div>"
    hits = result["hits"]
    if not hits:
        return f"<div>{question}<div>No matching chunks. Add notes to the knowledge folder.</div></div>"
    count = f"{len(hits)} source{'s' if len(hits) != 1 else ''}"
    if result["confident"]:
        verdict = f"{count}, best first; a confident match: {result['reason']}."
    else:
        verdict = f"No confident match: {result['reason']}. The nearest {count}:"
    summary = f'<div style="color:#555">{escape(verdict)}</div>'
    return f"<div>{question}{summary}{hits_table(hits)}</div>"


class Background(Protocol):
    """What the score picture needs of a calibration (`rag.calibrate.Calibration`): its quantiles and pair count."""

    @property
    def quantiles(self) -> list[float]: ...

    @property
    def pairs(self) -> int: ...


def score_svg(
    calibration: Background | None,
    best: float | None,
    *,
    percentile: float | None = None,
    confident_percentile: float = 95.0,
    width: int = 360,
    height: int = 150,
    bins: int = 40,
) -> str:
    """The corpus background (similarities of random chunk pairs from different notes) as a histogram, the best
    hit's cosine marked and the confident bar (the background's `confident_percentile` quantile) drawn."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="rag-background" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Best score against the corpus background" '
        f'font-family="sans-serif" font-size="11"><rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>'
    ]
    if calibration is None or not calibration.quantiles:
        parts.append(
            '<text x="8" y="20">No background yet: a corpus of fewer than two notes is not calibrated,</text>'
            '<text x="8" y="36">so the confident bar is a fixed cosine similarity.</text></svg>'
        )
        return "".join(parts)
    quantiles = np.asarray(calibration.quantiles, dtype=np.float64)
    grid = np.linspace(0.0, 100.0, len(quantiles))
    bar = float(np.interp(confident_percentile, grid, quantiles))
    lo = min(float(quantiles[0]), best if best is not None else 1.0, bar)
    hi = max(float(quantiles[-1]), best if best is not None else -1.0, bar)
    span = (hi - lo) or 1.0
    lo, hi = lo - 0.03 * span, hi + 0.03 * span
    # Each saved quantile stands for an equal share of the pairs, so counting them per bin gives the histogram.
    counts, edges = np.histogram(quantiles, bins=bins, range=(lo, hi))
    left, right, top, bottom = 10, 10, 30, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(int(counts.max()), 1)

    def sx(x: float) -> float:
        return round(left + (x - lo) / (hi - lo) * plot_w, 1)

    step = plot_w / bins
    for i, count in enumerate(counts):
        h = round(count / peak * plot_h, 1)
        parts.append(
            f'<rect x="{round(left + i * step, 1)}" y="{round(top + plot_h - h, 1)}" width="{round(step - 1, 1)}" '
            f'height="{h}" fill="#9bb7d4"/>'
        )
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#666"/>'
        f'<text x="{left}" y="{top + plot_h + 13}">{lo:.2f}</text>'
        f'<text x="{left + plot_w}" y="{top + plot_h + 13}" text-anchor="end">{hi:.2f}</text>'
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" fill="#555">cosine similarity of '
        f"{calibration.pairs:,} random chunk pairs from different notes</text>"
    )
    bx = sx(bar)
    parts.append(
        f'<g class="rag-bar"><line x1="{bx}" y1="{top - 4}" x2="{bx}" y2="{top + plot_h}" stroke="#444" '
        f'stroke-width="1.5" stroke-dasharray="4 3"/><title>confident bar: {confident_percentile:g}th percentile '
        f"of the background = {bar:.3f}</title></g>"
    )
    headline = f"confident bar p{confident_percentile:g} = {bar:.2f}"
    if best is not None:
        x = sx(best)
        where = f" (p{percentile:.1f})" if percentile is not None else ""
        colour = "#1a7f37" if best >= bar else "#d62728"
        parts.append(
            f'<g class="rag-best"><line x1="{x}" y1="{top - 4}" x2="{x}" y2="{top + plot_h}" stroke="{colour}" '
            f'stroke-width="3"/><title>best hit: cosine {best:.3f}{where}</title></g>'
        )
        headline = f"best hit {best:.2f}{where}; " + headline
    parts.append(f'<text x="{left}" y="14" font-size="12" font-weight="bold">{escape(headline)}</text>')
    parts.append("</svg>")
    return "".join(parts)
