"""`ChatWidget`: the chat as a Jupyter widget that runs retrieval inside the kernel.

The page and the kernel talk over the notebook's own comm channel (anywidget on ipywidgets), so no port is
opened and it works wherever widgets work: JupyterLab, Notebook 7, VS Code, remote JupyterHub. The page sends
`{"type": "ask", "question"}` and `{"type": "add_note", "title", "body", "tags"}` messages; the kernel answers by
setting synced traits (`result` is `dataclasses.asdict(SearchResult)`, the same JSON as `python -m rag ask
--json`). The front end is a small hand-written ES module (no build step, nothing fetched from a CDN) that
writes every note-derived value with `textContent`, never as HTML.

    from demo.widget import ChatWidget
    ChatWidget()
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import anywidget
import traitlets

from rag.chunk import context_line
from rag.errors import RagError
from rag.knowledge import KnowledgeBase, shared_knowledge_base
from rag.load import parse_tags
from rag.render import excerpt, prose
from rag.retrieve import SearchResult
from rag.write import NewNote

log = logging.getLogger(__name__)

_STATIC = Path(__file__).parent / "static"
# How much of each source the widget shows; the full text stays in `result`.
EXCERPT_CHARS = 280


def compose_answer(result: SearchResult) -> str:
    """The answer line shown above the sources: the best chunk when it is a confident match, else why not."""
    if not result.hits:
        return "No note matches yet. Add one below, then ask again."
    best = result.hits[0]
    if not result.confident:
        return (
            f"No confident match: {result.reason}. "
            "The nearest sources are below; if none answers the question, add a note."
        )
    where = context_line(best.chunk.title, best.chunk.heading)
    return f"{where} (score {best.score:.2f}): {excerpt(prose(best.chunk.text), 600)}"


class ChatWidget(anywidget.AnyWidget):
    """Question box, answer, scored sources and an add-note form, backed by a `KnowledgeBase` in the kernel.

    Args:
        kb: the knowledge base; defaults to the shared one of the `RAG_*` settings (the one `%ask` uses).
        k: how many sources to show.
    """

    # Read once as strings: a Path here would make anywidget watch the files for hot reloading.
    _esm = (_STATIC / "chat_widget.js").read_text(encoding="utf-8")
    _css = (_STATIC / "chat_widget.css").read_text(encoding="utf-8")

    question = traitlets.Unicode("").tag(sync=True)
    result = traitlets.Dict().tag(sync=True)
    answer = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    notice = traitlets.Unicode("").tag(sync=True)
    read_only = traitlets.Bool(False).tag(sync=True)
    k = traitlets.Int(5).tag(sync=True)

    def __init__(self, kb: KnowledgeBase | None = None, *, k: int = 5, **kwargs: Any) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.kb = kb or shared_knowledge_base()
        super().__init__(k=k, read_only=self.kb.config.read_only, **kwargs)
        self.on_msg(self._on_message)

    def ask(self, question: str) -> SearchResult:
        """Sync the index, search, and show the result in every view of this widget.

        Raises:
            RagError: empty question, or the model or store cannot be opened (also shown in the widget).
        """
        self.question = question
        with self._working("Searching the notes…"):
            self.kb.sync(rebuild=False)
            result = self.kb.search(question, k=self.k)
        shown = result.to_dict()
        for row in shown["hits"]:
            row["excerpt"] = excerpt(prose(row["text"]), EXCERPT_CHARS)
        self.result = shown
        self.answer = compose_answer(result)
        return result

    def add_note(self, title: str, body: str, *, tags: Sequence[str] = ()) -> NewNote:
        """Write a note into the knowledge folder and index it, so the next question can find it.

        Raises:
            NoteWriteError: bad title, empty or oversized body, name taken, or a read-only knowledge base.
        """
        with self._working("Saving and indexing the note…"):
            note = self.kb.add_note(title, body, tags=tags)
        self.notice = f"Saved {note.path} and indexed it; ask again to find it."
        return note

    def _working(self, what: str) -> _Working:
        return _Working(self, what)

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """Requests from the page; errors become the widget's error line instead of tracebacks."""
        if not isinstance(content, dict):
            return
        try:
            if content.get("type") == "ask":
                self.ask(str(content.get("question", "")))
            elif content.get("type") == "add_note":
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
        if isinstance(exc, RagError):
            self.widget.error = str(exc)
        elif exc is not None and isinstance(exc, Exception):
            self.widget.error = f"unexpected error ({type(exc).__name__}: {exc}); the kernel log has the details"
