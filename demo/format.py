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
from datetime import datetime
from typing import Any

from markdown_it import MarkdownIt

from rag.answer import Answer
from rag.chunk import context_line, heading_text
from rag.passage import Source
from rag.render import PERCENTILE_HELP, percentile_label

LEGEND = (
    "Sources are listed by relevance, the score search ranks by (in hybrid search it mixes meaning and keywords, "
    "0.6 to 0.4, each scaled from 0 to 1 among the candidates). The cosine is the similarity between your question "
    "and the passage, both embedded by the same model: 1 means the same direction (same meaning), around 0 means "
    "unrelated; so a source below another may have the higher cosine. The percentile beside it (p97.3) is the "
    "share of pairs of unrelated chunks in these notes that score lower: a confident match beats nearly all of them."
)

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


def compose_answer(answer: Answer) -> str:
    """The chat answer as Markdown: what was searched (for a follow-up), the answer with each [n] and its
    unsupported sentences marked, then the numbered sources with both their scores, named.

    All note and model text in it is escaped, so it is safe for a Markdown renderer that allows HTML.
    """
    lines: list[str] = []
    if answer.searched != answer.question:
        lines += [f"_Searched for:_ {escape_markdown_html(_one_line(answer.searched))}", ""]
    if answer.mode == "refused":
        text = f"**Not in your notes.** {escape_markdown_html(_one_line(answer.text))}"
        reason = answer.result.reason if answer.result is not None else ""
        if reason and answer.sources:
            text += " " + escape_markdown_html(_one_line(reason[:1].upper() + reason[1:])) + "."
        lines.append(text)
    elif not answer.final or not answer.sentences:
        lines.append(escape_markdown_html(_one_line(answer.text)) + ("" if answer.final else " …"))
    else:
        lines.append(" ".join(_sentence(s) for s in answer.sentences))
        if answer.mode == "generated":
            total = len(answer.sentences)
            lines += [
                "",
                f"_Written by {escape_markdown_html(_one_line(answer.model or 'a model'))} from the "
                f"sources below; {answer.unsupported} of {total} sentences not supported by a cited source._",
            ]
        if answer.dropped:
            numbers = ", ".join(str(n) for n in answer.dropped)
            lines += ["", f"_Citations of sources that do not exist were removed: {numbers}._"]
        if answer.stopped:
            lines += ["", "_Stopped before the end._"]
    if answer.final and answer.sources:
        weak = all(s.weak for s in answer.sources)
        lines += ["", "**Sources**, by relevance" + (" (weak matches)" if weak else ""), ""]
        lines.extend(_source_line(source) for source in answer.sources)
    return "\n".join(lines)


def _sentence(sentence: Any) -> str:
    marks = "".join(f" [{n}]" for n in sentence.citations)
    text = escape_markdown_html(_one_line(sentence.text)) + marks
    if not sentence.supported:
        text += " _(not supported by a cited source)_" if sentence.citations else " _(cites no source)_"
    return text


def _source_line(source: Source) -> str:
    rank = percentile_label(source.percentile)
    title = escape_markdown_html(_one_line(context_line(source.title or source.source, source.heading)))
    # Inside a code span Markdown shows characters literally; only a backtick or a blank line could end it early.
    where = _one_line(source.location).replace("`", "'")
    scores = f"relevance `{source.rank_score:.2f}` · cosine `{source.score:.2f}`" + (f" {rank}" if rank else "")
    return f"{source.number}. {scores} **{title}** — `{where}`"


RELEVANCE_HELP = "the score search ranked the sources by (fused meaning and keywords in hybrid search)"


def score_bar_width(score: float) -> int:
    """Percent width of a score's bar: the cosine similarity clamped to 0..1."""
    return round(max(0.0, min(1.0, score)) * 100)


def format_sources(answer: Answer | None) -> str:
    """The source cards as HTML, in the order of relevance: number, relevance and cosine similarity (named, with
    a bar and its percentile in the corpus), title, heading path, `path:start-end`, tags, and the passage (rendered
    Markdown) behind a disclosure. Sources under the bar of a confident match are marked weak."""
    legend = f'<p class="rag-legend">{html.escape(LEGEND)}</p>'
    if answer is None:
        return (
            '<div class="rag-sources"><p class="rag-empty">Ask a question: the sources of the answer appear here, '
            f"each with its similarity score.</p>{legend}</div>"
        )
    if not answer.sources:
        return (
            '<div class="rag-sources"><p class="rag-empty">No chunk reached the minimum score. Lower it in '
            f"<em>Search settings</em> or add a note.</p>{legend}</div>"
        )
    cited = set(answer.citations)
    cards = []
    for source in answer.sources:
        rank = percentile_label(source.percentile)
        sub = heading_text(source.section)
        tags = "".join(f'<span class="rag-tag">{html.escape(t)}</span>' for t in source.tags)
        classes = "rag-card" + (" rag-weak" if source.weak else "") + (" rag-cited" if source.number in cited else "")
        cards.append(
            f'<article class="{classes}" data-source="{html.escape(source.source)}">'
            '<div class="rag-card-head">'
            f'<span class="rag-num">{source.number}</span>'
            f'<span class="rag-relevance" title="{html.escape(RELEVANCE_HELP)}">relevance '
            f"{source.rank_score:.2f}</span>"
            f'<span class="rag-score" title="cosine similarity between the question and this passage">'
            f"cosine {source.score:.2f}</span>"
            + (f'<span class="rag-rank" title="{html.escape(PERCENTILE_HELP)}">{rank}</span>' if rank else "")
            + '<span class="rag-bar" aria-hidden="true">'
            + f'<span style="width:{score_bar_width(source.score)}%"></span></span>'
            + ('<span class="rag-badge">weak match</span>' if source.weak else "")
            + "</div>"
            f'<div class="rag-title">{html.escape(source.title or source.source)}</div>'
            + (f'<div class="rag-heading">{html.escape(sub)}</div>' if sub else "")
            + f'<div class="rag-meta"><code class="rag-loc">{html.escape(source.location)}</code>{tags}</div>'
            f'<details class="rag-chunk"><summary>Show the passage</summary>'
            f'<div class="rag-chunk-body">{render_markdown(source.text)}</div></details>'
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


def answer_note(answer: Answer) -> tuple[str, str]:
    """Title and Markdown body of a note that keeps a question, its answer and the cited sources."""
    question = " ".join(answer.question.split())
    title = "Answer: " + (question if len(question) <= 90 else question[:87].rstrip() + "...")
    body = ["## Question", "", question, "", "## Answer", ""]
    if answer.mode == "refused" or not answer.sentences:
        body.append("The notes did not answer this question." if answer.mode == "refused" else answer.text)
    else:
        body.extend(
            f"- {s.text}" + "".join(f" [{n}]" for n in s.citations) + ("" if s.supported else " (unsupported)")
            for s in answer.sentences
        )
    if answer.model:
        body += ["", f"Written by {answer.model}."]
    body.extend(["", "## Sources", ""])
    for source in answer.sources:
        body.append(
            f"{source.number}. {context_line(source.title or source.source, source.heading)} — `{source.location}` "
            f"(similarity {source.score:.2f})"
        )
    return title, "\n".join(body)
