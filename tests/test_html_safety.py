"""No note can put an HTML element or a script link into the chat, its source cards, the index panel or the
notebook tables, whatever Gradio's sanitiser does afterwards.

Every output of the real rendering path (`demo.format` for the chat, `rag.render` for notebooks) is parsed with
`html.parser` and held to an allow-list: only the elements and attributes our own markup uses, `class` and
`style` only in the forms our code writes, `href` only to http, https, mailto, relative or `#` targets, no
comment, declaration or CDATA, no raw `<` in text. Hypothesis feeds it note bodies, titles, tags, headings,
paths and questions built from nasty fragments (raw tags, script and event handlers, comments, entities,
backslash-escaped backticks, code spans around tags, autolinks and links to `javascript:` and `data:`, images,
reference links, HTML blocks), with a fixed number of examples and derandomised, so every run tests the same
cases. The answer's Markdown, which the JSON API returns as it is, must also hold no raw HTML for a renderer that
allows it. The named cases also run one by one, and a browser test (slow) serves the real chat to Chromium with
a note holding the nastiest ones.
"""

from __future__ import annotations

import html
import re
import shutil
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from demo.format import (
    compose_answer,
    escape_markdown_html,
    format_sources,
    format_status,
    plain_html,
    render_markdown,
)
from rag.render import result_html
from rag.retrieve import SearchResult

from .factories import make_answer, make_hit

ROOT = Path(__file__).resolve().parent.parent

# Examples per property; the closing note of issue 12 quotes this figure.
EXAMPLES = 300
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- What our markup may contain -------------------------------------------------------------------------------

# What `render_markdown` (markdown-it, CommonMark with tables and strikethrough, raw HTML and images off) writes.
MARKDOWN: dict[str, set[str]] = {
    **{f"h{n}": set() for n in range(1, 7)},
    "p": set(),
    "blockquote": set(),
    "ul": set(),
    "ol": {"start"},
    "li": set(),
    "pre": set(),
    "code": {"class"},
    "strong": set(),
    "em": set(),
    "s": set(),
    "a": {"href", "title"},
    "table": set(),
    "thead": set(),
    "tbody": set(),
    "tr": set(),
    "th": {"style"},
    "td": {"style"},
    "hr": set(),
    "br": set(),
}


def _union(*maps: Mapping[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m in maps:
        for tag, attrs in m.items():
            out.setdefault(tag, set()).update(attrs)
    return out


# `format_sources`: the card markup around each chunk's rendered Markdown.
CARDS = _union(
    MARKDOWN,
    {
        "div": {"class"},
        "p": {"class"},
        "em": set(),
        "article": {"class", "data-source"},
        "span": {"class", "title", "aria-hidden", "style"},
        "code": {"class"},
        "details": {"class"},
        "summary": set(),
    },
)
# `format_status`: the index panel.
STATUS = {
    "div": {"class"},
    "table": set(),
    "tr": set(),
    "th": set(),
    "td": set(),
    "p": {"class"},
    "ul": {"class"},
    "li": set(),
    "code": set(),
}
# `rag.render`: notebook tables, inline styles only.
NOTEBOOK = {
    "div": {"style"},
    "b": set(),
    "span": {"style", "title"},
    "code": set(),
    "table": {"style"},
    "thead": set(),
    "tbody": set(),
    "tr": set(),
    "th": {"style"},
    "td": {"style"},
}
QUESTION = {"p": set()}

VOID = {"br", "hr"}
_CLASS = re.compile(r"rag-[a-z-]+|ragchat-[a-z-]+|language-\S+")
# Declarations our code writes (`width:73%`, `text-align:right`, `border-bottom:1px solid #ddd`): no url(), no
# expression(), no quotes or escapes.
_DECLARATION = r"\s*[a-z-]+\s*:\s*[#a-z0-9 .%,-]+\s*"
_STYLE = re.compile(rf"(?:{_DECLARATION};)*(?:{_DECLARATION})?;?\s*", re.IGNORECASE)
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):", re.IGNORECASE)
SAFE_SCHEMES = {"http", "https", "mailto"}


def safe_href(value: str) -> bool:
    """Whether a browser would follow `value` to an http, https or mailto URL, or a relative one (`#x` too).

    Read as a browser reads it: tabs and newlines anywhere are dropped, leading and trailing control characters
    and spaces stripped, the scheme compared without case.
    """
    url = re.sub(r"[\t\n\r]", "", value).strip("".join(map(chr, range(0x21))))
    scheme = _SCHEME.match(url)
    return scheme is None or scheme.group(1).lower() in SAFE_SCHEMES


class Audit(HTMLParser):
    """Collects every way a piece of HTML breaks the allow-list, and its text as a browser would show it."""

    def __init__(self, allowed: Mapping[str, set[str]], *, check_href: bool = True) -> None:
        super().__init__(convert_charrefs=False)
        self.allowed = allowed
        self.check_href = check_href
        self.problems: list[str] = []
        self.stack: list[str] = []
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            self.problems.append(f"raw < or > in text: {data!r}")
        self.parts.append(data)

    def handle_entityref(self, name: str) -> None:
        self.parts.append(html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.parts.append(html.unescape(f"&#{name};"))

    def handle_comment(self, data: str) -> None:
        self.problems.append(f"comment <!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self.problems.append(f"declaration <!{decl}>")

    def handle_pi(self, data: str) -> None:
        self.problems.append(f"processing instruction <?{data}>")

    def unknown_decl(self, data: str) -> None:
        self.problems.append(f"unknown declaration <![{data}]>")

    def _element(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.allowed:
            self.problems.append(f"element <{tag}>")
            return
        for name, value in attrs:
            if name not in self.allowed[tag]:
                self.problems.append(f"attribute {name}={value!r} on <{tag}>")
            elif value is None:
                self.problems.append(f"attribute {name} without a value on <{tag}>")
            elif name == "class" and not all(_CLASS.fullmatch(c) for c in value.split()):
                self.problems.append(f"class {value!r} on <{tag}>")
            elif name == "style" and not _STYLE.fullmatch(value):
                self.problems.append(f"style {value!r} on <{tag}>")
            elif name == "href" and self.check_href and not safe_href(value):
                self.problems.append(f"href {value!r}")
            elif name == "start" and not value.isdigit():
                self.problems.append(f"start {value!r}")
            elif name == "aria-hidden" and value != "true":
                self.problems.append(f"aria-hidden {value!r}")


def audit(markup: str, allowed: Mapping[str, set[str]], *, check_href: bool = True) -> str:
    """The text of `markup`; fails the test, naming each problem, if it breaks the allow-list."""
    parser = Audit(allowed, check_href=check_href)
    parser.feed(markup)
    parser.close()
    problems = parser.problems + [f"<{tag}> never closed" for tag in parser.stack]
    assert not problems, f"{problems}\nin {markup!r}"
    return "".join(parser.parts)


# A Markdown renderer that allows raw HTML, as a client of the JSON API might use on its `answer`:
# `compose_answer` promises that all note text in it is escaped, so even this one shows no note HTML.
HTML_RENDERER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).disable("image")


def audit_answer_markdown(markdown: str) -> None:
    """The answer's Markdown holds no raw HTML or autolink for a renderer that allows HTML."""
    tokens = HTML_RENDERER.parse(markdown)
    inline = [child for token in tokens for child in (token.children or [])]
    raw = [t.content for t in tokens + inline if t.type in ("html_block", "html_inline")]
    autolinks = [t.attrs.get("href") for t in inline if t.type == "link_open" and t.markup == "autolink"]
    assert not raw and not autolinks, f"raw HTML {raw}, autolinks {autolinks}\nin {markdown!r}"
    # markdown-it's own link check (not ours) decides which hrefs this renderer keeps; HTML is the point here.
    audit(HTML_RENDERER.render(markdown), MARKDOWN, check_href=False)


# --- Nasty inputs ------------------------------------------------------------------------------------------------

NAMED: dict[str, str] = {
    "script": "<script>window.__xss = 'script'; alert(1)</script>",
    "img onerror": "<img src=x onerror=\"window.__xss = 'img'\">",
    "img unquoted": "<img src=x onerror=alert(1)>",
    "svg onload": "<svg onload=alert(1)><circle r=1 /></svg>",
    "svg script": "<svg><script>alert(1)</script></svg>",
    "iframe": '<iframe src="javascript:alert(1)"></iframe>',
    "iframe srcdoc": "<iframe srcdoc=\"<script>parent.__xss = 'iframe'</script>\"></iframe>",
    "style": "<style>body{background:url(javascript:alert(1))}</style>",
    "html comment": "<!-- <script>alert(1)</script> -->",
    "open comment": "a <!-- b",
    "cdata": "<![CDATA[<img src=x onerror=alert(1)>]]>",
    "processing instruction": "<?xml version='1.0'?><x onclick=alert(1)>",
    "doctype": "<!DOCTYPE html><html onload=alert(1)>",
    "entity tags": "&lt;script&gt;alert(1)&lt;/script&gt; &#60;img src=x onerror=alert(1)&#62; &#x3C;b&#x3E;",
    "bare ampersand": "fish & chips &amp; &copy &#0; &#x110000;",
    "backslash backtick": "a \\`<img src=x onerror=alert(1)>` b",
    "two backslash backticks": "\\`x\\` <img src=x onerror=alert(1)> `y`",
    "double backslash backtick": "a \\\\`<img src=x onerror=alert(1)>` b",
    "code span": "`<b>bold</b>` and ``<i>`x`</i>``",
    "unclosed code span": "a ` <img src=x onerror=alert(1)> b",
    "code fence": "```html\n<script>alert(1)</script>\n```",
    "tilde fence": "~~~ <img src=x onerror=alert(1)>\n<iframe></iframe>\n~~~",
    "indented code": "    <script>alert(1)</script>",
    "autolink javascript": "<javascript:alert(1)>",
    "autolink mixed case": "<JaVaScRiPt:alert(1)>",
    "autolink data": "<data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==>",
    "autolink http": "<http://example.com/?q=<img>>",
    "link javascript": "[x](javascript:alert(1))",
    "link mixed case": "[x](JaVaScRiPt:alert(1))",
    "link spaces": "[x](  javascript:alert(1))",
    "link pointy": "[x](<javascript:alert(1)>)",
    "link entity": "[x](&#106;avascript:alert(1)) [y](javascript&colon;alert(1))",
    "link tab": "[x](<java\tscript:alert(1)>)",
    "link data html": "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "link data image": "[x](data:image/png;base64,iVBORw0KGgo=)",
    "link vbscript": "[x](vbscript:msgbox(1))",
    "link file": "[x](file:///etc/passwd)",
    "link title quote": '[x](http://a.b "t\\" onmouseover=\\"alert(1)")',
    "link title backtick": '[a](/u "`") <img src=x onerror=alert(1)> `',
    "link destination backtick": "[a](`) <img src=x onerror=alert(1)> `)",
    "image": "![img](http://127.0.0.1:1/pixel.png)",
    "image javascript": "![x](javascript:alert(1))",
    "reference link": "[ref]\n\n[ref]: javascript:alert(1)",
    "reference data": '[r][d]\n\n[d]: <data:text/html,x> "t"',
    "reference title backtick": 'x\n\n[a]: /u "`"\n<img src=x onerror=alert(1)>`',
    "html block": "<div onclick=alert(1)>\nblock\n</div>",
    "html table": "\n\n<table><tr><td onmouseover=alert(1)>x</td></tr></table>\n\n",
    "anchor tag": '<a href="javascript:alert(1)">x</a>',
    "attribute breakout": '" onmouseover="alert(1)" x=\' onfocus=\'alert(1)',
    "closing tags": "</code></details></article></div><script>alert(1)</script>",
    "details toggle": "<details open ontoggle=alert(1)>",
    "math": '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    "bare javascript": "javascript:alert(1)",
    "markdown table": "| a | <b>b</b> |\n|:-|-:|\n| `<i>` | [x](javascript:alert(1)) |",
    "heading": "# <img src=x onerror=alert(1)>\n\nSetext <b>\n===",
    "emphasis around tag": "**<script>alert(1)</script>** _<i>x</i>_ ~~<s>y</s>~~",
    "null and controls": "a\x00<b>\x0b\x0c\r<i>\u2028<u>",
}

# Short pieces that change how their neighbours parse.
PIECES = [
    " ",
    "\n",
    "\n\n",
    "`",
    "``",
    "```",
    "~~~",
    "\\",
    "\\`",
    "[",
    "]",
    "](",
    "(",
    ")",
    "<",
    ">",
    "&",
    "*",
    "_",
    "!",
    '"',
    "'",
    ":",
    "#",
    "# ",
    "> ",
    "- ",
    "1. ",
    "    ",
    "|",
    "---",
    "=",
    "&#",
    ";",
    "javascript:",
    "data:",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "/>",
    "<img",
    " onerror=",
    "alert(1)",
]

WORDS = "wombat payloads hide inside plain prose sentences about quokka notes and cosine vectors".split()
prose = st.lists(st.sampled_from(WORDS), min_size=5, max_size=9).map(" ".join)
piece = st.one_of(st.sampled_from(list(NAMED.values())), st.sampled_from(PIECES), st.text(max_size=8), prose)
# A one-line-ish field (title, tag, heading, path) and a free text (question, reason).
field_text = st.lists(piece, max_size=5).map("".join)
# A sentence that `split_sentences` keeps as prose, with a nasty piece in the middle, so the answer quotes it.
payload_sentence = st.tuples(prose, piece, prose).map(lambda t: f"{t[0].capitalize()} {t[1]} {t[2]}.")
body = st.lists(
    st.tuples(st.one_of(payload_sentence, piece, prose), st.sampled_from([" ", "\n", "\n\n"])),
    min_size=1,
    max_size=8,
).map(lambda parts: "".join(p + sep for p, sep in parts))


@st.composite
def hits(draw: st.DrawFn) -> Any:
    start = draw(st.integers(1, 500))
    return make_hit(
        draw(st.floats(-1, 1, allow_nan=False)),
        percentile=draw(st.none() | st.floats(0, 100, allow_nan=False)),
        source=draw(field_text) + ".md",
        title=draw(field_text),
        tags=draw(st.lists(field_text, max_size=3)),
        heading=tuple(draw(st.lists(field_text, max_size=3))),
        text=draw(body),
        start_line=start,
        end_line=start + draw(st.integers(0, 40)),
    )


@st.composite
def results(draw: st.DrawFn, *, min_hits: int = 0) -> SearchResult:
    calibrated = draw(st.booleans())
    return SearchResult(
        question=draw(field_text),
        confident=draw(st.booleans()),
        hits=draw(st.lists(hits(), min_size=min_hits, max_size=4)),
        reason=draw(field_text),
        confident_by="percentile" if calibrated else "score",
        confident_at=95.0 if calibrated else 0.4,
    )


def status_with(path: str, reason: str, text: str, *, watching: bool = True) -> dict[str, Any]:
    """An `/api/status` dict whose folder, model, error and skipped file carry note-controlled text."""
    return {
        "notes": 3,
        "chunks": 9,
        "last_sync": "2025-01-01T12:00:00+00:00",
        "knowledge": text,
        "model": text,
        "watching": watching,
        "error": text or None,
        "skipped": [{"path": path, "reason": reason}, {"path": "plain.md", "reason": "not UTF-8"}],
    }


NOW = datetime(2025, 1, 1, 12, 0, 30, tzinfo=timezone.utc)


def nasty_result(payload: str, *, confident: bool = True) -> SearchResult:
    """One named payload in every field of a hit, in its body inside a quotable sentence, and in the question."""
    hit = make_hit(
        0.83,
        percentile=97.5,
        source=f"notes/{payload}.md",
        title=f"Title {payload}",
        tags=[payload, "plain"],
        heading=("Title", f"Part {payload}"),
        text=f"# Part {payload}\n\nWombat payloads hide {payload} inside plain prose sentences.\n\n{payload}\n",
    )
    return SearchResult(question=f"What about {payload}?", confident=confident, hits=[hit], reason=payload)


# --- Properties --------------------------------------------------------------------------------------------------


@FUZZ
@given(results())
def test_source_cards_hold_only_our_markup(result: SearchResult) -> None:
    answer = make_answer(result)
    text = audit(format_sources(answer), CARDS)
    for source in answer.sources:
        # Titles, tags and locations are text, shown exactly as they are.
        assert (source.title or source.source) in text
        assert all(tag in text for tag in source.tags) and source.location in text


@FUZZ
@given(results())
def test_chat_answer_holds_only_markdown_markup(result: SearchResult) -> None:
    markdown = compose_answer(make_answer(result))
    audit(render_markdown(markdown), MARKDOWN)
    audit_answer_markdown(markdown)


@FUZZ
@given(results(min_hits=1), st.lists(st.tuples(field_text, st.integers(1, 4)), min_size=1, max_size=4))
def test_answer_from_any_passages_holds_only_markdown_markup(
    result: SearchResult, quoted: list[tuple[str, int]]
) -> None:
    # Passages are not always sentences that `split_sentences` cut: any text, on any number of lines.
    markdown = compose_answer(make_answer(result, [(number, text) for text, number in quoted], unsupported=[0]))
    audit(render_markdown(markdown), MARKDOWN)
    audit_answer_markdown(markdown)


@FUZZ
@given(
    st.tuples(body | field_text, st.sampled_from(["", " ", "\\", "`", "``", "\\`", "\n", "[x]("])).map("".join),
    st.text(max_size=12) | st.sampled_from(list(NAMED.values())),
)
def test_escaped_note_text_leaves_the_code_span_after_it_alone(text: str, code: str) -> None:
    # Any text, on any number of lines, escaped and followed by our own code span (as a source line is): nothing
    # in it may open a span that swallows ours, escape our backtick, or end a line so ours starts a block.
    code = code.replace("`", "'").replace("\r", " ").replace("\n", " ")
    audit_answer_markdown(escape_markdown_html(text) + f"`{code}`")


@FUZZ
@given(body)
def test_rendered_chunk_holds_only_markdown_markup(text: str) -> None:
    audit(render_markdown(text), MARKDOWN)


@FUZZ
@given(field_text)
def test_question_shows_as_typed(question: str) -> None:
    assert audit(plain_html(question), QUESTION) == question


@FUZZ
@given(field_text, field_text, field_text, st.booleans())
def test_status_panel_holds_only_our_markup(path: str, reason: str, text: str, watching: bool) -> None:
    shown = audit(format_status(status_with(path, reason, text, watching=watching), now=NOW), STATUS)
    assert f"{path} — {reason}" in shown and text in shown


@FUZZ
@given(results())
def test_notebook_table_holds_only_our_markup(result: SearchResult) -> None:
    shown = audit(result_html(result.to_dict()), NOTEBOOK)
    assert result.question in shown
    for hit in result.hits:
        assert hit.chunk.title in shown and hit.chunk.location in shown
    for hit in result.hits:
        audit(hit._repr_html_(), NOTEBOOK)


# --- The named cases, one by one ---------------------------------------------------------------------------------

CASES = pytest.mark.parametrize("payload", list(NAMED.values()), ids=list(NAMED))


@CASES
def test_named_case_in_source_cards(payload: str) -> None:
    shown = audit(format_sources(make_answer(nasty_result(payload))), CARDS)
    assert f"Title {payload}" in shown and f"notes/{payload}.md" in shown


@CASES
@pytest.mark.parametrize("confident", [True, False], ids=["confident", "weak"])
def test_named_case_in_chat_answer(payload: str, confident: bool) -> None:
    result = nasty_result(payload, confident=confident)
    markdown = compose_answer(make_answer(result))
    audit(render_markdown(markdown), MARKDOWN)
    audit_answer_markdown(markdown)
    for passage in (payload, f"Wombat payloads hide {payload} inside plain prose."):
        markdown = compose_answer(make_answer(result, [(1, passage)], searched=passage))
        audit(render_markdown(markdown), MARKDOWN)
        audit_answer_markdown(markdown)


@CASES
def test_named_case_in_question_and_error(payload: str) -> None:
    assert audit(plain_html(payload), QUESTION) == payload
    assert audit(plain_html("Could not answer: " + payload), QUESTION) == "Could not answer: " + payload


@CASES
def test_named_case_in_status_panel(payload: str) -> None:
    shown = audit(format_status(status_with(f"notes/{payload}.md", payload, payload), now=NOW), STATUS)
    assert f"notes/{payload}.md — {payload}" in shown


@CASES
def test_named_case_in_notebook_table(payload: str) -> None:
    result = nasty_result(payload)
    shown = audit(result_html(result.to_dict()), NOTEBOOK)
    assert f"What about {payload}?" in shown and f"Title {payload}" in shown


def test_the_old_backslash_backtick_bug_stays_fixed() -> None:
    # The old regex escaper took "`<img ...>`" for a code span, but the backslash makes the first backtick text.
    sentence = "Wombat payloads hide a \\`<img src=x onerror=alert(1)>` b inside plain prose."
    result = nasty_result("x")
    markdown = compose_answer(make_answer(result, [(1, sentence)]))
    assert "<img" not in markdown
    assert "&lt;img src=x onerror=alert(1)&gt;" in render_markdown(markdown)
    audit_answer_markdown(markdown)


@pytest.mark.parametrize(
    ("href", "safe"),
    [
        ("http://a.b/", True),
        ("HTTPS://a.b/", True),
        ("mailto:a@b.c", True),
        ("#part", True),
        ("notes/a.md", True),
        ("a/b:c", True),
        ("javascript:alert(1)", False),
        ("JaVaScRiPt:alert(1)", False),
        ("  javascript:alert(1)", False),
        ("\x01java\tscript:alert(1)", False),
        ("vbscript:x", False),
        ("data:image/png;base64,AA", False),
        ("file:///etc/passwd", False),
    ],
)
def test_the_href_check_reads_urls_as_a_browser_does(href: str, safe: bool) -> None:
    # The audit itself must be able to fail.
    assert safe_href(href) is safe
    markup = f'<p><a href="{html.escape(href)}">x</a></p>'
    if safe:
        audit(markup, MARKDOWN)
    else:
        with pytest.raises(AssertionError):
            audit(markup, MARKDOWN)


@pytest.mark.parametrize(
    "markup",
    [
        "<p><img src=x></p>",
        '<p onclick="x">a</p>',
        "<p>a</p><!-- c -->",
        "<p>a <![CDATA[x]]></p>",
        "<p>a < b</p>",
        "<p>a</div>",
        "<details open><summary>s</summary></details>",
        '<code class="x y">a</code>',
        '<th style="background:url(http://a.b/x.png)">a</th>',
    ],
)
def test_the_audit_refuses_what_our_markup_never_holds(markup: str) -> None:
    with pytest.raises(AssertionError):
        audit(markup, CARDS)


def test_widget_writes_note_text_only_as_text_or_as_html_made_in_the_kernel() -> None:
    # The notebook widget builds its DOM itself. The one HTML it inserts is what the kernel rendered with
    # `render_markdown` (checked by the fuzz below): `answer_html` and each source's `html`, through kernelHtml().
    script = (ROOT / "demo" / "static" / "chat_widget.js").read_text(encoding="utf-8")
    for sink in (
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "DOMParser",
        "srcdoc",
        "createContextualFragment",
        "eval(",
        "new Function",
    ):
        assert sink not in script, sink
    assert script.count("innerHTML") == 1 and "function kernelHtml(el, html) {\n  el.innerHTML = html;" in script
    calls = re.findall(r"^\s+kernelHtml\((\w+), (.+)\);$", script, flags=re.MULTILINE)
    assert sorted(arg for _, arg in calls) == ['model.get("answer_html")', 'source.html || ""'], calls
    # The only href it touches is a rendered link's, given a new tab.
    assert script.count("href") == 1 and 'querySelectorAll("a[href]")' in script
    assert 'if (key === "text") el.textContent = value;' in script


# What the widget's kernel side wraps around rendered Markdown (demo.widget.answer_html).
WIDGET = _union(
    MARKDOWN,
    {
        "div": {"class"},
        "span": {"class", "title", "style", "data-source"},
        "sup": {"class", "title", "style"},
        "p": {"class", "style"},
    },
)


@FUZZ
@given(results(min_hits=1), st.lists(st.tuples(field_text, st.integers(1, 4)), min_size=1, max_size=4))
def test_widget_answer_and_passages_hold_only_our_markup(result: SearchResult, quoted: list[tuple[str, int]]) -> None:
    from demo.widget import answer_html, source_rows

    answer = make_answer(result, [(number, text) for text, number in quoted], unsupported=[0], mode="generated")
    audit(answer_html(answer), WIDGET)
    for row in source_rows(answer):
        audit(row["html"], MARKDOWN)


# --- In the browser ----------------------------------------------------------------------------------------------

# Each payload sets `window.__xss` (and opens a dialog where it can) if it ever runs.
BROWSER_TITLE = "Wombat <img src=x onerror=\"window.__xss='title'\"> \\`<b>t</b>`"
BROWSER_TAGS = ["<script>window.__xss='tag'</script>", "x\" onmouseover=\"window.__xss='tag'"]
BROWSER_HEADING = "Payloads <svg onload=\"window.__xss='heading'\">"
BROWSER_QUESTION = "How did the backslash backtick <img src=x onerror=\"window.__xss='question'\"> trick fool wombats?"
# Shown as text, verbatim, somewhere in the note's full chunks.
VISIBLE = {
    "script": "<script>window.__xss='script';alert('script')</script>",
    "backtick": "<img src=x onerror=\"window.__xss='backtick';alert('backtick')\">",
    "svg": '<svg onload="window.__xss=\'svg\'"><circle r="9"></circle></svg>',
    "iframe": "<iframe srcdoc=\"<script>parent.__xss='iframe'</script>\"></iframe>",
    "link": "[click](javascript:window.__xss='link')",
    "mixed case link": "[case](  JaVaScRiPt:window.__xss='case')",
    "data link": "[data](data:text/html;base64,PHNjcmlwdD5wYXJlbnQuX194c3M9MTwvc2NyaXB0Pg==)",
    "autolink": "<javascript:window.__xss='autolink'>",
    "comment": "<!-- <script>window.__xss='comment'</script> -->",
    "html block": '<div onmouseover="window.__xss=\'block\'" style="position:fixed;inset:0">an HTML block</div>',
    "fence": "<script>window.__xss='fence'</script>",
}
PIXEL = "http://127.0.0.1:9/pixel.png"
BROWSER_BODY = f"""# Wombat payloads

## {BROWSER_HEADING}

The old escaper was fooled by the backslash backtick trick a \\`{VISIBLE["backtick"]}` b in wombat prose.

Wombat payloads hide a script like {VISIBLE["script"]} inside plain prose sentences.

Wombat payloads also carry {VISIBLE["svg"]} and {VISIBLE["iframe"]} as plain text.

Wombat links such as {VISIBLE["link"]} and {VISIBLE["mixed case link"]} never become links.

Neither do wombat links to {VISIBLE["data link"]} or {VISIBLE["autolink"]} in the notes.

Wombat images like ![pixel]({PIXEL}) are never fetched, and a [wombat reference][evil] goes nowhere.

[evil]: javascript:window.__xss='reference'

{VISIBLE["comment"]}

{VISIBLE["html block"]}

```html
{VISIBLE["fence"]}
```
"""

# Looked for inside the answer, the question and the source cards (Gradio's own buttons and icons live outside).
FIND_INJECTED = """([roots, allowed]) => {
  const banned = [];
  const schemes = /^([a-z][a-z0-9+.-]*):/i;
  for (const root of roots) {
    for (const el of root.querySelectorAll("*")) {
      const tag = el.tagName.toLowerCase();
      if (!allowed.includes(tag)) banned.push(`<${tag}>`);
      for (const attr of el.attributes) {
        const name = attr.name.toLowerCase();
        if (name.startsWith("on") || ["src", "srcdoc", "srcset", "formaction", "xlink:href"].includes(name)) {
          banned.push(`<${tag} ${name}>`);
        }
        const scheme = name === "href" && attr.value.replace(/[\\t\\n\\r]/g, "").trim().match(schemes);
        if (scheme && !["http", "https", "mailto"].includes(scheme[1].toLowerCase())) {
          banned.push(`<${tag} href=${attr.value}>`);
        }
      }
    }
  }
  return banned;
}"""


@pytest.fixture(scope="module")
def nasty_chat(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[str]:
    """The real chat served over HTTP on a folder of two starter notes and one note full of payloads."""
    import yaml

    from demo.server import create_server
    from rag.config import Config
    from rag.knowledge import KnowledgeBase

    from .web_fixtures import ServerThread

    root = tmp_path_factory.mktemp("html-safety")
    knowledge = root / "knowledge"
    knowledge.mkdir()
    for name in ("cosine-similarity.md", "word2vec.md"):
        shutil.copyfile(ROOT / "knowledge" / name, knowledge / name)
    front = yaml.safe_dump({"title": BROWSER_TITLE, "tags": BROWSER_TAGS}, allow_unicode=True)
    (knowledge / "wombat.md").write_text(f"---\n{front}---\n{BROWSER_BODY}", encoding="utf-8")
    # The model's whole window per chunk, so each payload stays whole in one chunk beside the long title.
    config = Config(knowledge_dir=knowledge, db_dir=root / "db", chunk_tokens=256)
    kb = KnowledgeBase(config, embedder=embedder)
    report = kb.sync()
    assert report.notes == 3 and not report.skipped, report
    with ServerThread(create_server(kb)) as server:
        yield server.url


@pytest.mark.slow
@pytest.mark.browser
def test_payloads_in_a_note_show_as_text_in_the_browser_and_never_run(nasty_chat: str) -> None:
    from playwright.sync_api import sync_playwright

    from .web_fixtures import launch_chromium, wait_for

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(nasty_chat)
            page.locator("#rag-question textarea").wait_for()

            page.locator("#rag-question textarea").fill(BROWSER_QUESTION)
            page.locator("#rag-ask").click()
            wait_for(lambda: page.locator("#rag-chat .message-row").count() >= 2, timeout=60)
            page.locator("#rag-sources .rag-card").first.wait_for(timeout=60_000)
            cards = page.locator("#rag-sources .rag-card[data-source='wombat.md']")
            assert page.locator("#rag-sources .rag-card").first.get_attribute("data-source") == "wombat.md"

            def injected() -> list[str]:
                # A closed disclosure still holds its chunk in the DOM, so this sees everything at once.
                roots = page.locator("#rag-chat .message-content, #rag-sources").element_handles()
                assert len(roots) >= 3  # the question, the answer and the cards
                return page.evaluate(FIND_INJECTED, [roots, sorted(CARDS)])

            assert injected() == []
            for summary in cards.locator("details summary").all():
                summary.click()
            page.wait_for_timeout(500)  # time for any handler that got in to fire

            # Everything is there, as text.
            assert page.locator("#rag-chat .message-row").first.inner_text().strip() == BROWSER_QUESTION
            answer = page.locator("#rag-chat .message-row").last.inner_text()
            assert VISIBLE["backtick"] in answer and "wombat.md:" in answer
            assert cards.first.locator(".rag-title").inner_text() == BROWSER_TITLE
            assert cards.first.locator(".rag-tag").all_inner_texts() == BROWSER_TAGS
            assert BROWSER_HEADING in cards.first.locator(".rag-heading").inner_text()
            # HTML shows a run of spaces as one.
            chunks = " ".join(" ".join(cards.locator("details[open] .rag-chunk-body").all_inner_texts()).split())
            missing = [name for name, text in VISIBLE.items() if " ".join(text.split()) not in chunks]
            assert not missing, f"{missing} not shown as text in\n{chunks}"

            # Nothing ran, nothing was injected, nothing was fetched.
            assert injected() == []
            assert page.evaluate("typeof window.__xss") == "undefined"
            assert dialogs == []
            assert PIXEL not in requests and not [url for url in requests if url.startswith("data:")]
        finally:
            browser.close()
