"""Pure formatting for the web chat: answers, source cards, the score legend and the index status.

Nothing here imports Gradio or touches the store; every function takes plain values and returns a string, so
the tests check them without a server. Safety lives here too: note text is untrusted, so it only reaches the
browser as HTML made here, by markdown-it with raw HTML and images off (`render_markdown`: the chat's answers and
the cards' chunks) or by `html.escape`. Raw HTML in a note shows as text and never runs, whatever Gradio's own
sanitiser lets through.
"""

from __future__ import annotations

import html
import re
import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Sequence

from markdown_it import MarkdownIt

from rag.chunk import context_line, heading_text
from rag.render import PERCENTILE_HELP, percentile_label
from rag.retrieve import Hit, SearchResult

LEGEND = (
    "Each score is the cosine similarity between your question and the chunk, both embedded by the same model: "
    "1 means the same direction (same meaning), around 0 means unrelated. The percentile beside it (p97.3) is the "
    "share of pairs of unrelated chunks in these notes that score lower: a confident match beats nearly all of them."
)

# How many top chunks feed the composed answer, and how many sentences it quotes at most.
ANSWER_SOURCES = 3
ANSWER_SENTENCES = 3

SentenceScorer = Callable[[str, Sequence[str]], Sequence[float]]


@dataclass(frozen=True)
class Passage:
    """One sentence quoted in an answer, with the number of the source it came from (1-based)."""

    text: str
    source_number: int
    relevance: float


# The schemes a link in a note may lead to; a link without one (`#part`, `notes/a.md`) is relative and fine.
_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*):", re.IGNORECASE)
_URL_IGNORED = re.compile(r"[\t\n\r]")


class _NoteMarkdown(MarkdownIt):
    """markdown-it that keeps a link only to an http, https or mailto URL or a relative one.

    markdown-it's own check refuses javascript:, vbscript:, file: and most data: URLs but keeps data:image ones
    and every scheme it does not know, which a browser may hand to another program.
    """

    def validateLink(self, url: str) -> bool:
        # Read as a browser reads a URL: tabs and newlines dropped, leading controls and spaces stripped.
        bare = _URL_IGNORED.sub("", url).lstrip("".join(map(chr, range(0x21))))
        scheme = _SCHEME.match(bare)
        return scheme is None or scheme.group(1).lower() in _LINK_SCHEMES


# CommonMark without raw HTML: any tag in a note is escaped into visible text; links lead only to web pages, mail
# or elsewhere on the page; images are off, so a note cannot make the page fetch anything.
# Tables and strikethrough as in GitHub Markdown.
_MARKDOWN = (
    _NoteMarkdown("commonmark", {"html": False, "linkify": False, "typographer": False})
    .enable(["table", "strikethrough"])
    .disable("image")
)
_BACKTICKS = re.compile(r"`+")
_LINE_END = re.compile(r"[\r\n]")
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_ASCII_PUNCTUATION = frozenset(string.punctuation)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[*_A-Z0-9])")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how i in is it its of on or that the this to was what when "
    "where which who why with you your".split()
)


def render_markdown(text: str) -> str:
    """Markdown (a chunk, a composed answer) as HTML, with any raw HTML in it shown as text."""
    return _MARKDOWN.render(text)


def plain_html(text: str) -> str:
    """Text shown exactly as typed (a question, an error message) as an HTML paragraph."""
    return f"<p>{html.escape(text)}</p>"


def escape_markdown_html(text: str) -> str:
    """Markdown source with `&`, `<` and `>` made into entities outside code spans, for the Markdown answer that
    the JSON API returns to renderers we do not control. The chat itself never relies on it: it renders that
    Markdown with `render_markdown`.

    A code span is left as it is only where every CommonMark renderer sees the same span, since its `<` stays
    raw: a backslash-escaped backtick opens none, a span never runs past the end of a line (the next line may
    start a block that ends the paragraph), and after a link's `](` or a definition's `]:` no span is kept (a
    destination or title may hold backticks). Every other backtick is escaped, so no span opens here and closes
    in the text placed after it; a backslash that escapes nothing is doubled, so it cannot escape what follows.
    """
    out: list[str] = []
    spans = True
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            following = text[i + 1 : i + 2]
            if following and following in _ASCII_PUNCTUATION:
                # `\<` shows `<`, and so does `&lt;`; any other escape stays as the note wrote it.
                out.append(_ENTITIES.get(following, char + following))
                i += 2
            else:
                out.append("\\\\")
                i += 1
            continue
        if char == "`":
            run = len(_BACKTICKS.match(text, i).group())  # type: ignore[union-attr]
            end = _closing_backticks(text, i + run, run) if spans else None
            if end is None:
                out.append("\\`" * run)
                i += run
            else:
                out.append(text[i:end])
                i = end
            continue
        if char == "]" and text[i + 1 : i + 2] in ("(", ":"):
            spans = False
        out.append(_ENTITIES.get(char, char))
        i += 1
    return "".join(out)


def _closing_backticks(text: str, start: int, length: int) -> int | None:
    """Where the code span opened by `length` backticks before `start` ends, if it closes on the same line."""
    line_end = _LINE_END.search(text, start)
    for run in _BACKTICKS.finditer(text, start, line_end.start() if line_end else len(text)):
        if len(run.group()) == length:
            return run.end()
    return None


def _one_line(text: str) -> str:
    """Text placed inside a line of Markdown (a quote, a title) on one line, so it starts no block of its own."""
    return _LINE_BREAKS.sub(" ", text).strip()


def split_sentences(markdown: str) -> list[str]:
    """The prose sentences of a chunk: headings, tables, code blocks and front matter are left out."""
    paragraphs: list[list[str]] = [[]]
    in_code = False
    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_code = not in_code
            paragraphs.append([])
            continue
        if in_code or not stripped or stripped.startswith(("#", "|", ">", "<!--")) or line.startswith("    "):
            paragraphs.append([])
            continue
        if _LIST_MARKER.match(line):
            # A list item is its own paragraph.
            paragraphs.append([_LIST_MARKER.sub("", line).strip()])
            paragraphs.append([])
            continue
        paragraphs[-1].append(stripped)
    sentences = []
    for lines in paragraphs:
        text = " ".join(lines).strip()
        if text:
            sentences.extend(s.strip() for s in _SENTENCE_END.split(text) if _is_prose(s.strip()))
    return sentences


def _is_prose(sentence: str) -> bool:
    """A sentence worth quoting: a few words, mostly letters, not an introduction to a list (`...:`)."""
    letters = sum(c.isalpha() for c in sentence)
    return len(sentence.split()) >= 5 and letters >= 0.6 * len(sentence.replace(" ", "")) and not sentence.endswith(":")


def word_overlap(question: str, sentences: Sequence[str]) -> list[float]:
    """A cheap relevance: the share of the question's content words each sentence contains."""
    wanted = {w for w in _WORD.findall(question.lower()) if w not in _STOPWORDS}
    if not wanted:
        return [0.0] * len(sentences)
    return [len(wanted & set(_WORD.findall(s.lower()))) / len(wanted) for s in sentences]


def pick_passages(
    result: SearchResult,
    *,
    score: SentenceScorer = word_overlap,
    sources: int = ANSWER_SOURCES,
    limit: int = ANSWER_SENTENCES,
) -> list[Passage]:
    """The sentences of the top chunks that best answer the question, in source order, then text order.

    Args:
        result: the search result; its first `sources` hits are read.
        score: relevance of each sentence to the question, higher is better (the app uses the embedding model).
        sources: how many top hits to quote from.
        limit: how many sentences at most.
    """
    candidates: list[tuple[int, int, str]] = []
    for number, hit in enumerate(result.hits[:sources], 1):
        candidates.extend((number, position, s) for position, s in enumerate(split_sentences(hit.chunk.text)))
    if not candidates:
        return []
    relevance = list(score(result.question, [c[2] for c in candidates]))
    # A small bonus by rank keeps the best chunk's sentences ahead of equally relevant ones further down.
    ranked = sorted(range(len(candidates)), key=lambda i: relevance[i] - 0.02 * candidates[i][0], reverse=True)
    chosen = sorted(ranked[:limit], key=lambda i: (candidates[i][0], candidates[i][1]))
    return [Passage(candidates[i][2], candidates[i][0], round(float(relevance[i]), 4)) for i in chosen]


def compose_answer(result: SearchResult, passages: Sequence[Passage]) -> str:
    """The chat answer as Markdown: quoted passages marked [n], then the numbered sources with their scores.

    All note text in it is escaped, so it is safe for a Markdown renderer that allows HTML.
    """
    if not result.hits:
        return (
            "**Nothing in the notes matches this question.** Lower the minimum score, rephrase, or add a note "
            "about it in the *Add a note* tab."
        )
    lines: list[str] = []
    if not result.confident:
        reason = escape_markdown_html(_one_line(result.reason[:1].upper() + result.reason[1:]))
        lines.append(
            f"**No confident match.** {reason}, so the notes may not answer this. The nearest passages, marked *weak*:"
        )
        lines.append("")
    lines.extend(_passage_paragraphs(passages, weak=not result.confident))
    if not passages:
        lines.append("_The closest chunks have no prose to quote; open the sources to read them._")
    lines.append("")
    lines.append("**Sources**" + ("" if result.confident else " (weak matches)"))
    lines.append("")
    for number, hit in enumerate(result.hits, 1):
        rank = percentile_label(hit.percentile)
        lines.append(f"{number}. `{hit.score:.2f}`" + (f" {rank}" if rank else "") + f" {_source_line(hit)}")
    return "\n".join(lines)


def _passage_paragraphs(passages: Sequence[Passage], *, weak: bool) -> list[str]:
    """Consecutive passages from the same source share a paragraph, closed by its marker."""
    out: list[str] = []
    group: list[str] = []
    current = None
    for passage in list(passages) + [None]:  # type: ignore[list-item]
        number = passage.source_number if passage else None
        if group and number != current:
            text = " ".join(group)
            out.append(("> " if weak else "") + f"{text} [{current}]")
            out.append("")
            group = []
        if passage is not None:
            group.append(escape_markdown_html(_one_line(passage.text)))
            current = number
    return out[:-1] if out else out


def _source_line(hit: Hit) -> str:
    chunk = hit.chunk
    title = escape_markdown_html(_one_line(context_line(chunk.title or chunk.source, chunk.heading)))
    # Inside a code span Markdown shows characters literally; only a backtick or a blank line could end it early.
    where = _one_line(chunk.location).replace("`", "'")
    return f"**{title}** — `{where}`"


def score_bar_width(score: float) -> int:
    """Percent width of a score's bar: the cosine similarity clamped to 0..1."""
    return round(max(0.0, min(1.0, score)) * 100)


def format_sources(result: SearchResult | None) -> str:
    """The source cards as HTML: score to two decimals with a bar and its percentile in the corpus, title, heading
    path, `path:start-end`, and the full chunk (rendered Markdown) behind a disclosure. Hits under the bar of a
    confident match (`SearchResult.weak`) are marked weak."""
    legend = f'<p class="rag-legend">{html.escape(LEGEND)}</p>'
    if result is None:
        return (
            '<div class="rag-sources"><p class="rag-empty">Ask a question: the sources of the answer appear here, '
            f"each with its similarity score.</p>{legend}</div>"
        )
    if not result.hits:
        return (
            '<div class="rag-sources"><p class="rag-empty">No chunk reached the minimum score. Lower it in '
            f"<em>Search settings</em> or add a note.</p>{legend}</div>"
        )
    cards = []
    for number, hit in enumerate(result.hits, 1):
        chunk = hit.chunk
        weak = result.weak(hit)
        rank = percentile_label(hit.percentile)
        sub = heading_text(chunk.section)
        tags = "".join(f'<span class="rag-tag">{html.escape(t)}</span>' for t in chunk.tags)
        cards.append(
            f'<article class="rag-card{" rag-weak" if weak else ""}" data-source="{html.escape(chunk.source)}">'
            '<div class="rag-card-head">'
            f'<span class="rag-num">{number}</span>'
            f'<span class="rag-score" title="cosine similarity between the question and this chunk">'
            f"{hit.score:.2f}</span>"
            + (f'<span class="rag-rank" title="{html.escape(PERCENTILE_HELP)}">{rank}</span>' if rank else "")
            + '<span class="rag-bar" aria-hidden="true">'
            + f'<span style="width:{score_bar_width(hit.score)}%"></span></span>'
            + ('<span class="rag-badge">weak match</span>' if weak else "")
            + "</div>"
            f'<div class="rag-title">{html.escape(chunk.title or chunk.source)}</div>'
            + (f'<div class="rag-heading">{html.escape(sub)}</div>' if sub else "")
            + f'<div class="rag-meta"><code class="rag-loc">{html.escape(chunk.location)}</code>{tags}</div>'
            f'<details class="rag-chunk"><summary>Show the full chunk</summary>'
            f'<div class="rag-chunk-body">{render_markdown(chunk.text)}</div></details>'
            "</article>"
        )
    return f'<div class="rag-sources">{"".join(cards)}{legend}</div>'


def format_status(status: dict[str, Any], *, now: datetime | None = None) -> str:
    """The index status panel as HTML, from the dict that `/api/status` returns."""
    now = now or datetime.now().astimezone()
    last = status.get("last_sync")
    if last:
        when = datetime.fromisoformat(last)
        ago = max(0, int((now - when).total_seconds()))
        last_text = f"{when.strftime('%H:%M:%S')} ({_ago(ago)})"
    else:
        last_text = "not yet"
    watching = "watching the folder for changes" if status.get("watching") else "not watching the folder"
    rows = [
        ("Notes", str(status.get("notes", 0))),
        ("Chunks", str(status.get("chunks", 0))),
        ("Last sync", last_text),
        ("Folder", str(status.get("knowledge", ""))),
        ("Model", str(status.get("model", ""))),
    ]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    parts = [f'<div class="rag-status"><table>{table}</table><p class="rag-watch">{html.escape(watching)}</p>']
    if status.get("rebuilding"):
        parts.append(
            f'<p class="rag-watch" data-role="rebuilding">{html.escape(status["rebuilding"])}; the index above '
            "answers until the new one is complete.</p>"
        )
    elif status.get("mismatch"):
        parts.append(f'<p class="rag-error">{html.escape(status["mismatch"])}</p>')
    if status.get("error"):
        parts.append(f'<p class="rag-error">Last sync failed: {html.escape(str(status["error"]))}</p>')
    skipped = status.get("skipped") or []
    if skipped:
        items = "".join(f"<li><code>{html.escape(s['path'])}</code> — {html.escape(s['reason'])}</li>" for s in skipped)
        parts.append(f'<p class="rag-skipped-title">Skipped files ({len(skipped)})</p>')
        parts.append(f'<ul class="rag-skipped">{items}</ul>')
    else:
        parts.append('<p class="rag-ok">No skipped files.</p>')
    parts.append("</div>")
    return "".join(parts)


def _ago(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def format_notice(message: str, *, ok: bool) -> str:
    """An inline success or error line under a form."""
    kind = "rag-ok" if ok else "rag-error"
    return f'<p class="{kind}" role="{"status" if ok else "alert"}">{html.escape(message)}</p>'


def answer_note(question: str, passages: Sequence[Passage], hits: Sequence[Hit]) -> tuple[str, str]:
    """Title and Markdown body of a note that keeps a question, its answer and the cited sources."""
    question = " ".join(question.split())
    title = "Answer: " + (question if len(question) <= 90 else question[:87].rstrip() + "...")
    body = ["## Question", "", question, "", "## Answer", ""]
    if passages:
        body.extend(f"- {p.text} [{p.source_number}]" for p in passages)
    else:
        body.append("No passage of the notes answered this question.")
    body.extend(["", "## Sources", ""])
    for number, hit in enumerate(hits, 1):
        chunk = hit.chunk
        body.append(
            f"{number}. {context_line(chunk.title or chunk.source, chunk.heading)} — `{chunk.location}` "
            f"(similarity {hit.score:.2f})"
        )
    return title, "\n".join(body)
