"""`ChatWidget`: the chat as a Jupyter widget that answers inside the kernel; and the HTML of an answer that the
widget and `%ask` show.

The page and the kernel talk over the notebook's own comm channel (anywidget on ipywidgets), so no port is
opened and it works wherever widgets work: JupyterLab, Notebook 7, VS Code, remote JupyterHub. The page sends
`{"type": "ask", "question"}`, `{"type": "stop"}`, `{"type": "reset"}` and `{"type": "add_note", "title", "body",
"tags"}` messages; the kernel answers by setting synced traits. `result` is `Answer.result_dict()`, the same JSON
as `python -m rag ask --json`; `answer_html` and each of `sources`' `html` are the only HTML the page inserts,
made here by `demo.format.render_markdown` (raw HTML and images off, links to web pages and mail only). The
front end is a small hand-written ES module (no build step, nothing fetched from a CDN) that writes every other
value with `textContent`.

An answer runs in a thread of the kernel, so the comm channel stays free for a Stop while a model writes; each
draft it writes updates the answer in every view. The widget keeps the conversation: a follow-up is asked with
the turns before it (`history`), until "New conversation".

    from demo.widget import ChatWidget
    ChatWidget()

It leaves out the web chat's settings panel and score map (`demo.app`).
"""

from __future__ import annotations

import html
import logging
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import anywidget
import traitlets

from demo.format import render_markdown
from rag.answer import SOURCE_ORDER, Answer, Sentence
from rag.chunk import heading_text
from rag.errors import RagError
from rag.filters import SearchFilter
from rag.knowledge import KnowledgeBase, shared_knowledge_base
from rag.load import parse_tags
from rag.passage import Source
from rag.render import score_bar, score_svg
from rag.retrieve import SearchResult, clean_question
from rag.write import NewNote

log = logging.getLogger(__name__)

_STATIC = Path(__file__).parent / "static"

UNSUPPORTED = "not supported by the cited source"
UNCITED = "cites no source"
# Inline styles as well as classes: `%ask` output is shown without the widget's stylesheet.
_FLAGGED = "text-decoration:underline wavy #d97706;text-underline-offset:3px"
_FLAG = "color:#b45309;font-size:0.75em;margin-left:2px"
_NOTE = "color:#6b7280;font-size:0.9em;margin:4px 0 0"
_CELL = "padding:4px 8px;vertical-align:top;text-align:left;border-bottom:1px solid #ddd"


# ---------------------------------------------------------------- the HTML of an answer


def answer_html(answer: Answer) -> str:
    """The answer as HTML: each sentence rendered from Markdown, followed by its [n] (each naming its source in a
    title), and an unsupported one underlined with a title saying so; then a line on who wrote it, removed
    citations and an early stop. A draft, a refusal or a message is its text rendered whole.

    Every piece of note or model text passes through `render_markdown`, so raw HTML in it shows as text.
    """
    notes = []
    if answer.final and answer.sentences:
        names = {s.number: f"source {s.number}: {s.title or s.source} ({s.location})" for s in answer.sources}
        sentences = " ".join(_sentence_html(s, names) for s in answer.sentences)
        body = f'<div class="ragchat-sentences">{sentences}</div>'
    elif answer.mode == "refused":
        body = "<p><strong>Not in your notes.</strong></p>" + render_markdown(answer.text)
        reason = answer.result.reason if answer.result is not None and answer.sources else ""
        if reason:
            notes.append(reason[:1].upper() + reason[1:] + ".")
    else:
        body = render_markdown(answer.text)
    if answer.final and answer.mode == "generated" and answer.sentences:
        written = f"Written by {answer.model or 'a model'} from the sources below"
        notes.append(f"{written}; {answer.unsupported} of {len(answer.sentences)} sentences {UNSUPPORTED}.")
    if answer.dropped:
        notes.append(f"Citations of sources that do not exist were removed: {', '.join(map(str, answer.dropped))}.")
    if answer.stopped:
        notes.append("Stopped before the end.")
    if not answer.final:
        notes.append("Writing…")
    lines = "".join(f'<p class="ragchat-answer-note" style="{_NOTE}">{html.escape(n)}</p>' for n in notes)
    return f'<div class="ragchat-answer-body ragchat-{answer.mode}">{body}{lines}</div>'


def _sentence_html(sentence: Sentence, names: dict[int, str]) -> str:
    text = _inline(render_markdown(sentence.text))
    marks = "".join(
        f'<span class="ragchat-cite" data-source="{n}" title="{html.escape(names.get(n, f"source {n}"))}">[{n}]</span>'
        for n in sentence.citations
    )
    if sentence.supported:
        return f'<span class="ragchat-sentence">{text} {marks}</span>'
    why = UNSUPPORTED if sentence.citations else UNCITED
    return (
        f'<span class="ragchat-sentence ragchat-unsupported" title="{why}" style="{_FLAGGED}">{text}</span>'
        f"{' ' + marks if marks else ''}"
        f'<sup class="ragchat-flag" title="{why}" style="{_FLAG}">{"unsupported" if sentence.citations else "uncited"}'
        "</sup>"
    )


def _inline(rendered: str) -> str:
    """One paragraph's HTML without its <p>, so sentences flow as one paragraph; other blocks stay blocks."""
    rendered = rendered.strip()
    if rendered.startswith("<p>") and rendered.endswith("</p>") and rendered.count("<p>") == 1:
        return rendered[3:-4]
    return rendered


def source_rows(answer: Answer) -> list[dict[str, Any]]:
    """The sources as the widget lists them: `Source.to_dict()` (number, title, section, location, score, the
    cosine similarity, and rank_score, the relevance that ordered them), plus the passage as HTML and whether the
    answer cites it."""
    cited = set(answer.citations)
    return [{**s.to_dict(), "html": render_markdown(s.text), "cited": s.number in cited} for s in answer.sources]


def sources_table(sources: Sequence[Source], cited: Sequence[int] = ()) -> str:
    """The sources as an HTML table with inline styles (for notebook output): number, relevance, cosine with its
    bar and percentile, title, section and location, and the passage rendered from Markdown."""
    head = "".join(f'<th style="{_CELL}">{name}</th>' for name in ("#", "relevance", "cosine", "source", "passage"))
    rows = []
    for s in sources:
        number = f"<b>{s.number}</b>" if s.number in cited else str(s.number)
        relevance = f'<span title="{html.escape(SOURCE_ORDER)}">{s.rank_score:.2f}</span>'
        section = heading_text(s.section)
        heading = f'<div style="color:#555">{html.escape(section)}</div>' if section else ""
        weak = ' <span style="color:#b45309">weak</span>' if s.weak else ""
        location = f"<div><code>{html.escape(s.location)}</code>{weak}</div>"
        where = f"<b>{html.escape(s.title or s.source)}</b>{heading}{location}"
        passage = f'<div style="max-height:14em;overflow:auto">{render_markdown(s.text)}</div>'
        cells = (number, relevance, score_bar(s.score, s.percentile), where, passage)
        rows.append("<tr>" + "".join(f'<td style="{_CELL}">{cell}</td>' for cell in cells) + "</tr>")
    return (
        f'<table style="border-collapse:collapse"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def sources_caption(answer: Answer) -> str:
    """The line above the sources: how many, in what order, and whether they are weak."""
    count = f"{len(answer.sources)} source{'s' if len(answer.sources) != 1 else ''}"
    weak = " (weak matches)" if answer.sources and all(s.weak for s in answer.sources) else ""
    return f"{count}, by relevance{weak}: {SOURCE_ORDER}."


@dataclass(frozen=True)
class AskResult(SearchResult):
    """What `%ask` and `ChatWidget.ask` return: the search result (its hits, as before) with the answer written
    from it, which a notebook shows above the numbered sources. `to_dict()` is `ask --json`'s."""

    answer: Answer | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, answer: Answer) -> AskResult:
        result = answer.result or SearchResult(answer.question, False)
        return cls(**{f.name: getattr(result, f.name) for f in fields(SearchResult)}, answer=answer)

    def to_dict(self) -> dict[str, Any]:
        return self.answer.result_dict() if self.answer is not None else super().to_dict()

    def _repr_html_(self) -> str:
        if self.answer is None:
            return super()._repr_html_()
        answer = self.answer
        parts = [f"<div><b>Q:</b> {html.escape(answer.question)}</div>"]
        if answer.searched != answer.question:
            parts.append(f'<div style="color:#555">Searched for: {html.escape(answer.searched)}</div>')
        parts.append(f'<div style="margin:6px 0">{answer_html(answer)}</div>')
        if answer.sources:
            parts.append(f'<div style="color:#555">{html.escape(sources_caption(answer))}</div>')
            parts.append(sources_table(answer.sources, answer.citations))
        if self.calibration is not None and self.hits:
            best = self.hits[0]
            bar = self.confident_at if self.confident_by == "percentile" else 95.0
            picture = score_svg(self.calibration, best.score, percentile=best.percentile, confident_percentile=bar)
            parts.append(f'<div style="margin-top:8px">{picture}</div>')
        return "<div>" + "".join(parts) + "</div>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Plain-text frontends (terminal IPython) show what `python -m rag ask` prints."""
        from rag.cli import format_answer

        printer.text("AskResult(...)" if cycle or self.answer is None else format_answer(self.answer))


# ---------------------------------------------------------------- the widget


class ChatWidget(anywidget.AnyWidget):
    """Question box, written answer, numbered sources, the conversation so far, and an add-note form, backed by a
    `KnowledgeBase` in the kernel.

    Args:
        kb: the knowledge base; defaults to the shared one of the `RAG_*` settings (the one `%ask` uses).
        k: how many hits to gather the sources from.
    """

    # Read once as strings: a Path here would make anywidget watch the files for hot reloading.
    _esm = (_STATIC / "chat_widget.js").read_text(encoding="utf-8")
    _css = (_STATIC / "chat_widget.css").read_text(encoding="utf-8")

    question = traitlets.Unicode("").tag(sync=True)
    # What was searched, when it differs from the question (a follow-up made standalone); else "".
    searched = traitlets.Unicode("").tag(sync=True)
    result = traitlets.Dict().tag(sync=True)
    # The answer's text with its [n] markers, its HTML (`answer_html`) and mode ("extractive", "generated",
    # "refused"; "" before the first answer).
    answer = traitlets.Unicode("").tag(sync=True)
    answer_html = traitlets.Unicode("").tag(sync=True)
    mode = traitlets.Unicode("").tag(sync=True)
    sources = traitlets.List(traitlets.Dict()).tag(sync=True)
    # The line above the sources: how many, in what order (`sources_caption`).
    caption = traitlets.Unicode("").tag(sync=True)
    # The turns before the question shown, as the answerer takes them: {"role": "user" | "assistant", "content"}.
    history = traitlets.List(traitlets.Dict()).tag(sync=True)
    # True while a model writes; the page shows Stop.
    writing = traitlets.Bool(False).tag(sync=True)
    busy = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    notice = traitlets.Unicode("").tag(sync=True)
    read_only = traitlets.Bool(False).tag(sync=True)
    k = traitlets.Int(5).tag(sync=True)
    # Search filters: only notes with every one of `tags`, and (if any) under one of the `paths` globs.
    tags = traitlets.List(traitlets.Unicode()).tag(sync=True)
    paths = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(self, kb: KnowledgeBase | None = None, *, k: int = 5, **kwargs: Any) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.kb = kb or shared_knowledge_base()
        super().__init__(k=k, read_only=self.kb.config.read_only, **kwargs)
        self._asking = threading.Lock()
        self._stop = threading.Event()
        self._task: threading.Thread | None = None
        # The question and answer shown: they join `history` when the next question is asked.
        self._shown: list[dict[str, str]] = []
        # Bumped by a new conversation, so an answer still being written for the old one is not shown.
        self._conversation = 0
        self.on_msg(self._on_message)

    def ask(self, question: str) -> AskResult:
        """Answer `question` as a follow-up of the conversation so far, showing each draft while a model writes,
        then the checked answer and its sources, in every view of this widget. Syncs the index first.

        Returns:
            The search result with the answer (`AskResult.answer`), which a notebook displays.

        Raises:
            RagError: empty question, the model is busy (`BusyError`) or failed, or the model or store cannot be
                opened (also shown in the widget).
        """
        with self._asking:
            self._stop = threading.Event()
            conversation = self._conversation
            with self._working("Searching the notes…"):
                question = clean_question(question)
                with self.hold_sync():
                    self.question = question
                    self.history = [*self.history, *self._shown]
                    self._shown = []
                    self._show(None)
                self.kb.sync(rebuild=False)
                answerer = self.kb.answerer
                if answerer.generates:
                    self.writing = True
                    self.busy = "Writing the answer… (Stop ends it early)"
                final = None
                only = SearchFilter.of(self.tags, self.paths) or None
                drafts = answerer.stream(question, history=self.history, k=self.k, stop=self._stop, only=only)
                for final in drafts:
                    if conversation == self._conversation:
                        self._show(final)
                    else:
                        self._stop.set()  # a new conversation began: this answer is not shown
            assert final is not None  # a stream ends with the final answer
            if conversation == self._conversation:
                self._shown = [{"role": "user", "content": question}, {"role": "assistant", "content": final.text}]
            return AskResult.of(final)

    def stop(self) -> None:
        """End the answer being written (a model's); what it wrote so far is checked and shown."""
        self._stop.set()

    def new_conversation(self) -> None:
        """Forget the conversation: the next question is asked on its own. Stops an answer being written."""
        self._stop.set()
        self._conversation += 1
        with self.hold_sync():
            self._shown = []
            self.history = []
            self.question = ""
            self._show(None)
            self.notice = ""
            self.error = ""

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the answer that a question from the page started; False if it still runs after `timeout`."""
        task = self._task
        if task is not None:
            task.join(timeout)
        return task is None or not task.is_alive()

    def add_note(self, title: str, body: str, *, tags: Sequence[str] = ()) -> NewNote:
        """Write a note into the knowledge folder and index it, so the next question can find it.

        Raises:
            NoteWriteError: bad title, empty or oversized body, name taken, or a read-only knowledge base.
        """
        with self._working("Saving and indexing the note…"):
            note = self.kb.add_note(title, body, tags=tags)
        self.notice = f"Saved {note.path} and indexed it; ask again to find it."
        return note

    def _show(self, answer: Answer | None) -> None:
        """Every trait that shows an answer, set together (one message to the page)."""
        with self.hold_sync():
            if answer is None:
                self.searched = self.answer = self.answer_html = self.mode = self.caption = ""
                self.result, self.sources = {}, []
                return
            self.searched = answer.searched if answer.searched != answer.question else ""
            self.answer = answer.text
            self.answer_html = answer_html(answer)
            self.mode = answer.mode
            if not self.sources or answer.final:
                self.sources = source_rows(answer)
                self.caption = sources_caption(answer)
            if answer.final:
                self.result = answer.result_dict()

    def _working(self, what: str) -> _Working:
        return _Working(self, what)

    def _start(self, question: str) -> None:
        """Answer in a thread, so the page's Stop reaches the kernel while the answer is written."""
        if self._task is not None and self._task.is_alive():
            self.notice = "Still answering the last question: wait for it, or press Stop."
            return
        self._task = threading.Thread(target=self._ask_quietly, args=(question,), name="ChatWidget.ask", daemon=True)
        self._task.start()

    def _ask_quietly(self, question: str) -> None:
        try:
            self.ask(question)
        except RagError:
            pass  # already shown by _Working
        except Exception:  # noqa: BLE001 - shown by _Working; the thread must not die with a traceback on stderr
            log.exception("chat widget question failed: %r", question)

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """Requests from the page; errors become the widget's error line instead of tracebacks."""
        if not isinstance(content, dict):
            return
        try:
            kind = content.get("type")
            if kind == "ask":
                if "tags" in content or "paths" in content:
                    with self.hold_sync():
                        self.tags = list(parse_tags(str(content.get("tags", ""))))
                        self.paths = [p.strip() for p in str(content.get("paths", "")).split(",") if p.strip()]
                self._start(str(content.get("question", "")))
            elif kind == "stop":
                self.stop()
            elif kind == "reset":
                self.new_conversation()
            elif kind == "add_note":
                tags = parse_tags(str(content.get("tags", "")))
                self.add_note(str(content.get("title", "")), str(content.get("body", "")), tags=tags)
        except RagError:
            pass  # already shown by _Working
        except Exception:  # noqa: BLE001 - a widget callback must not leave the page waiting forever
            log.exception("chat widget request failed: %r", content)


class _Working:
    """Marks the widget busy for the duration, clears old messages, and shows any error raised inside."""

    def __init__(self, widget: ChatWidget, what: str) -> None:
        self.widget = widget
        self.what = what

    def __enter__(self) -> None:
        self.widget.error = ""
        self.widget.notice = ""
        self.widget.busy = self.what

    def __exit__(self, kind: Any, exc: BaseException | None, _tb: Any) -> None:
        self.widget.busy = ""
        self.widget.writing = False
        if isinstance(exc, RagError):
            self.widget.error = str(exc)
        elif exc is not None and isinstance(exc, Exception):
            self.widget.error = f"unexpected error ({type(exc).__name__}: {exc}); the kernel log has the details"
