"""HTML views of search results, for notebooks and anything else that displays HTML.

Pure functions from the JSON form of a result (`SearchResult.to_dict()`, the same rows `ask --json` prints) to
strings, so this module depends on no other part of the library. Every value taken from a note is escaped, and
the markup uses inline styles only (no scripts, no classes), so it survives the sanitisers of JupyterLab, VS Code
and GitHub. It leaves out interaction; `demo/` builds the interactive chat.
"""

from __future__ import annotations

from html import escape
from typing import Any, Mapping, Sequence

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
