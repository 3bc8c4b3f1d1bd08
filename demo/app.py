"""The web chat as a Gradio Blocks app: ask the notes, read the sources with their scores, add notes.

`build_app` returns the Blocks and starts nothing; `demo.server.create_server` mounts it beside the JSON API and
`python -m demo` serves it. The formatting it shows is pure and lives in `demo.format` (re-exported here).
Answers come from `KnowledgeBase.answerer` (`rag.answer`): quoted sentences by default, or written by a local
GGUF model or an OpenAI-compatible server, every [n] checked against its source; a model's answer streams in.
"""

from __future__ import annotations

import html
import os
import threading
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

from demo.format import (
    LEGEND,
    answer_note,
    compose_answer,
    format_notice,
    format_sources,
    format_status,
    plain_html,
    render_markdown,
)
from demo.maps import map_html, score_html
from demo.watch import FolderWatcher
from rag.answer import Answer, BusyError
from rag.errors import NoteWriteError, RagError
from rag.filters import SearchFilter
from rag.knowledge import KnowledgeBase
from rag.load import parse_tags
from rag.write import NewNote

__all__ = [
    "APP_CSS",
    "LEGEND",
    "MAX_K",
    "Answer",
    "ChatEvents",
    "ChatLayout",
    "ChatService",
    "add_named_endpoints",
    "answer_note",
    "bounded_k",
    "build_app",
    "build_layout",
    "check_note_fields",
    "compose_answer",
    "format_sources",
    "format_status",
    "index_status",
    "render_markdown",
    "theme",
    "wire_events",
]

TITLE = "Knowledge chat"

# Bounds every front end of the chat applies (the page, the Gradio API, the JSON API).
MAX_K = 50
MAX_TITLE_CHARS = 200
MAX_TAGS = 20
MAX_TAG_CHARS = 50

# Example questions for the bundled notes, shown only when the note they ask about is in the folder.
EXAMPLES = [
    ("What does a cosine similarity of 0.8 mean?", "cosine-similarity.md"),
    ("How does hybrid search combine BM25 and embeddings?", "hybrid-search-bm25.md"),
    ("How big should chunks be?", "chunking.md"),
    ("What is retrieval-augmented generation?", "retrieval-augmented-generation.md"),
]


class ChatService:
    """What the UI and the APIs do, without Gradio: ask, add notes, save answers, report status."""

    def __init__(self, kb: KnowledgeBase, *, read_only: bool = False, watcher: FolderWatcher | None = None) -> None:
        self.kb = kb
        self.read_only = read_only or kb.config.read_only
        self.watcher = watcher or FolderWatcher(kb)

    def ask(
        self,
        question: str,
        *,
        history: Sequence[dict[str, str]] = (),
        k: int = 5,
        min_score: float | None = None,
        only: SearchFilter | None = None,
    ) -> Answer:
        """The checked answer to `question`, given the conversation before it (see `rag.answer.Answerer`).

        Raises:
            EmptyQuestionError: the question is blank.
            BusyError: too many answers are being written.
        """
        return self.kb.answerer.answer(question, history=history, k=k, min_score=min_score, only=only)

    def stream(
        self,
        question: str,
        *,
        history: Sequence[dict[str, str]] = (),
        k: int = 5,
        min_score: float | None = None,
        stop: threading.Event | None = None,
        only: SearchFilter | None = None,
    ) -> Iterator[Answer]:
        """Drafts of the answer while a model writes it, then the checked answer."""
        return self.kb.answerer.stream(question, history=history, k=k, min_score=min_score, stop=stop, only=only)

    def add_note(self, title: str, body: str, tags: Sequence[str] = (), *, name: str | None = None) -> NewNote:
        """Write a note and index it before returning, so the next question finds it.

        Raises:
            NoteWriteError: read-only, bad or long title, too many or long tags, name taken, too large or empty.
        """
        if self.read_only:
            raise NoteWriteError("this chat is read-only; restart it without --read-only to add notes")
        check_note_fields(title, tags)
        note = self.kb.add_note(title, body, tags=tags, name=name, sync=False)
        self.watcher.sync()
        return note

    def save_answer(self, answer: Answer) -> NewNote:
        """Store a question, its answer and its sources as a new note with a unique, dated name."""
        from slugify import slugify

        title, body = answer_note(answer)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        slug = slugify(answer.question, max_length=60, word_boundary=True) or "answer"
        return self.add_note(title, body, ["saved-answer"], name=f"answer-{slug}-{stamp}.md")

    def status(self) -> dict[str, Any]:
        return index_status(self.kb, self.watcher, read_only=self.read_only)


def parse_filter(tags: str | None, paths: str | None) -> SearchFilter | None:
    """The chat's filter fields (comma separated) as a search filter; None when both are empty.

    Raises:
        ConfigError: an absolute path pattern.
    """
    return SearchFilter.of(tags or "", [p for p in (paths or "").split(",") if p.strip()]) or None


def bounded_k(k: Any) -> int:
    """`k` (how many sources) as a whole number from 1 to `MAX_K`.

    Raises:
        ValueError: anything else, with a message naming the range.
    """
    try:
        number = float(k)
    except (TypeError, ValueError, OverflowError):
        number = float("nan")
    if isinstance(k, bool) or not number.is_integer() or not 1 <= number <= MAX_K:
        raise ValueError(f"k={k!r} is out of range; ask for 1 to {MAX_K} sources")
    return int(number)


def check_note_fields(title: str, tags: Sequence[str]) -> None:
    """Refuse a title or tags past the chat's bounds (the body is bounded by `Config.max_note_bytes`).

    Raises:
        NoteWriteError: the title is too long, or there are too many tags, or one is too long.
    """
    length = len(" ".join((title or "").split()))
    if length > MAX_TITLE_CHARS:
        raise NoteWriteError(f"the title has {length} characters; shorten it to {MAX_TITLE_CHARS} or fewer")
    tags = [t.strip() for t in tags if t and t.strip()]
    if len(tags) > MAX_TAGS:
        raise NoteWriteError(f"the note has {len(tags)} tags; keep it to {MAX_TAGS} or fewer")
    for tag in tags:
        if len(tag) > MAX_TAG_CHARS:
            raise NoteWriteError(f"the tag {tag[:30]!r}... is over {MAX_TAG_CHARS} characters; shorten it")


def index_status(kb: KnowledgeBase, watcher: FolderWatcher, *, read_only: bool = False) -> dict[str, Any]:
    """The index at a glance, as JSON-ready data: totals, last sync, skipped files with reasons, every file."""
    status = kb.status()
    # The folder check reads files but never chunks them, so a note the last sync refused (say, empty) still
    # looks "new" there; the sync report knows why it was skipped.
    reported = {s.path: s.reason for s in (watcher.last_report.skipped if watcher.last_report else [])}
    skipped = [
        {"path": f.path, "reason": f.reason if f.state == "skipped" else reported[f.path]}
        for f in status.files
        if f.state == "skipped" or (f.state in ("new", "stale") and f.path in reported)
    ]
    return {
        "notes": status.notes,
        "chunks": status.chunks,
        "model": status.model,
        "db": status.db,
        "knowledge": status.knowledge,
        "last_sync": watcher.last_sync.isoformat() if watcher.last_sync else None,
        "watching": watcher.watching,
        "read_only": read_only,
        "error": watcher.last_error,
        "skipped": skipped,
        "files": [asdict(f) for f in status.files],
        "last_report": asdict(watcher.last_report) if watcher.last_report else None,
        "mismatch": status.mismatch,
        "rebuild": asdict(status.rebuild) if status.rebuild else None,
        "rebuilding": str(status.rebuild) if status.rebuild else None,
    }


APP_CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto; }
#rag-header h1 { font-size: 1.6rem; margin: 0.2rem 0 0.1rem; }
#rag-header p { margin: 0; color: var(--body-text-color-subdued); }
#rag-ask-row { align-items: stretch; }
.rag-sources { display: flex; flex-direction: column; gap: 10px; }
.rag-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px 12px;
  background: var(--background-fill-primary); }
.rag-card.rag-weak { border-style: dashed; opacity: 0.92; }
.rag-card-head { display: flex; align-items: center; gap: 8px; }
.rag-num { display: inline-flex; justify-content: center; align-items: center; width: 22px; height: 22px;
  border-radius: 50%; background: var(--color-accent-soft); color: var(--color-accent); font-weight: 600;
  font-size: 0.8rem; }
.rag-score { font-variant-numeric: tabular-nums; font-weight: 700; font-size: 0.95rem; white-space: nowrap; }
.rag-relevance { font-variant-numeric: tabular-nums; font-size: 0.85rem; color: var(--body-text-color-subdued);
  white-space: nowrap; }
.rag-cited { border-left: 3px solid var(--color-accent); }
.rag-rank { font-variant-numeric: tabular-nums; color: #6b7280; font-size: 0.85rem; min-width: 3.2em; }
.rag-bar { flex: 1; height: 8px; border-radius: 4px; background: var(--neutral-200); overflow: hidden; }
.rag-bar > span { display: block; height: 100%; border-radius: 4px; background: #16a34a; }
.rag-weak .rag-bar > span { background: #d97706; }
.rag-badge { font-size: 0.72rem; text-transform: uppercase; letter-spacing: 0.04em; color: #b45309;
  border: 1px solid #f59e0b; border-radius: 999px; padding: 0 6px; }
.rag-title { font-weight: 600; margin-top: 6px; }
.rag-heading { color: var(--body-text-color-subdued); font-size: 0.9rem; }
.rag-meta { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin-top: 4px; font-size: 0.82rem; }
.rag-loc { font-size: 0.8rem; }
.rag-tag { background: var(--neutral-100); border-radius: 999px; padding: 0 7px; color: var(--neutral-600); }
.rag-chunk { margin-top: 6px; }
.rag-chunk summary { cursor: pointer; color: var(--color-accent); font-size: 0.85rem; }
.rag-chunk-body { font-size: 0.9rem; border-left: 3px solid var(--border-color-primary); padding-left: 10px;
  margin-top: 6px; overflow-x: auto; }
.rag-chunk-body table { border-collapse: collapse; font-size: 0.85rem; }
.rag-chunk-body th, .rag-chunk-body td { border: 1px solid var(--border-color-primary); padding: 2px 6px; }
.rag-chunk-body pre { background: var(--neutral-100); padding: 6px; border-radius: 6px; overflow-x: auto; }
.rag-legend { font-size: 0.8rem; color: var(--body-text-color-subdued); margin: 4px 2px 0; }
.rag-empty { color: var(--body-text-color-subdued); }
.rag-status table { width: 100%; font-size: 0.9rem; }
.rag-status th { text-align: left; font-weight: 600; padding-right: 12px; white-space: nowrap; }
.rag-status td { word-break: break-all; }
.rag-ok { color: #15803d; margin: 6px 0; }
.rag-error { color: #b91c1c; margin: 6px 0; font-weight: 600; }
.rag-watch { font-size: 0.85rem; color: var(--body-text-color-subdued); }
.rag-skipped { font-size: 0.85rem; }
"""


def theme() -> Any:
    """A calm theme on the system's own fonts (the default theme fetches web fonts, and we run offline)."""
    import gradio as gr

    return gr.themes.Soft(
        primary_hue="indigo",
        neutral_hue="slate",
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )


def build_app(
    kb: KnowledgeBase, *, read_only: bool = False, watcher: FolderWatcher | None = None
) -> Any:  # gr.Blocks; gradio is imported lazily so importing this module stays cheap
    """The chat as a Gradio Blocks app.

    Args:
        kb: the knowledge base to answer from (its folder is synced by the caller or the watcher).
        read_only: hide and refuse every way of writing notes.
        watcher: the folder watcher whose last sync the status panel shows; one is made (not started) if None.

    Returns:
        gr.Blocks, not launched. Mount it with `demo.server.create_server` or call `.launch()`.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    service = ChatService(kb, read_only=read_only, watcher=watcher)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        layout = build_layout(service)
        wire_events(app, layout, ChatEvents(service))
        add_named_endpoints(service)
    # Two events at a time, and a bounded line behind them: past it Gradio answers "queue full" at once. A model
    # writes one answer at a time behind its own queue (`rag.answer`), which answers "busy" past its bound.
    app.queue(default_concurrency_limit=2, max_size=16)
    return app


@dataclass(frozen=True)
class NoteForm:
    """The "Add a note" tab's fields (absent in a read-only chat)."""

    title: Any
    tags: Any
    body: Any
    save: Any
    notice: Any


@dataclass(frozen=True)
class ChatLayout:
    """The components the events read and write, as `build_layout` placed them (Gradio components, typed Any
    because gradio is imported lazily)."""

    chatbot: Any
    question: Any
    ask: Any
    clear: Any
    save_answer: Any | None  # None when read-only
    save_notice: Any
    top_k: Any
    min_score: Any
    only_tags: Any  # search filters: tags (all of them) and path globs (any of them), comma separated
    only_paths: Any
    sources: Any
    note_form: NoteForm | None  # None when read-only
    status: Any
    timer: Any
    score: Any  # the best score against the corpus background, under the sources
    map_tab: Any
    map: Any
    last_answer: Any  # gr.State holding the last Answer, for "Save answer as note"
    conversation: Any  # gr.State: the turns so far as {"role", "content"} messages, for follow-ups
    stop: Any  # stops an answer a model is writing


def build_layout(service: ChatService) -> ChatLayout:
    """Place the header, the chat column and the side tabs inside the current Blocks; wires nothing."""
    import gradio as gr

    knowledge = Path(service.kb.config.knowledge_dir)
    gr.HTML(
        f"<h1>{TITLE}</h1><p>Answers from the Markdown notes in <code>{html.escape(str(knowledge))}</code>, every "
        "sentence cited [n] and checked against its source. Every source shows its relevance and its cosine "
        "similarity to your question.</p>",
        elem_id="rag-header",
    )
    last_answer = gr.State(None)
    conversation = gr.State([])
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            chat = _chat_column(service, [q for q, note in EXAMPLES if (knowledge / note).exists()])
        with gr.Column(scale=2, min_width=340):
            side = _side_column(service)
    return ChatLayout(**chat, **side, last_answer=last_answer, conversation=conversation)


def _chat_column(service: ChatService, examples: list[str]) -> dict[str, Any]:
    """The conversation, the question box, the chat's buttons and the search settings."""
    import gradio as gr

    chatbot = gr.Chatbot(
        label="Chat",
        height=600,
        sanitize_html=True,
        latex_delimiters=[],
        feedback_options=None,
        buttons=["copy"],
        placeholder="Ask a question about your notes. The answer cites them, numbered [1], [2] "
        "by source, and marks any sentence its source does not support; the sources and their scores appear on "
        "the right. Follow-up questions keep the thread.",
        elem_id="rag-chat",
    )
    with gr.Row(elem_id="rag-ask-row"):
        question = gr.Textbox(
            show_label=False,
            placeholder="Ask your notes, e.g. what does a similarity of 0.8 mean?",
            scale=6,
            lines=1,
            max_lines=4,
            autofocus=True,
            elem_id="rag-question",
        )
        ask = gr.Button("Ask", variant="primary", scale=1, min_width=90, elem_id="rag-ask")
        stop = gr.Button("Stop", variant="stop", scale=1, min_width=70, elem_id="rag-stop", visible=False)
    if examples:
        gr.Examples(examples=[[q] for q in examples], inputs=[question], label="Try")
    save_answer = None
    with gr.Row():
        clear = gr.Button("New chat", size="sm", variant="secondary")
        if not service.read_only:
            save_answer = gr.Button("Save answer as note", size="sm", elem_id="rag-save-answer")
    save_notice = gr.HTML("", elem_id="rag-save-notice")
    with gr.Accordion("Search settings", open=False):
        top_k = gr.Slider(1, 20, value=5, step=1, label="Sources (top-k)", elem_id="rag-topk")
        min_score = gr.Slider(
            0.0,
            1.0,
            value=0.0,
            step=0.05,
            label="Minimum score",
            info="Hide sources whose cosine similarity is below this (0 = show all).",
            elem_id="rag-minscore",
        )
        with gr.Row():
            only_tags = gr.Textbox(
                label="Only notes tagged",
                placeholder="e.g. nlp, embeddings (all of them)",
                max_lines=1,
                elem_id="rag-only-tags",
            )
            only_paths = gr.Textbox(
                label="Only paths",
                placeholder="e.g. recipes/*, glove.md (any of them)",
                max_lines=1,
                elem_id="rag-only-paths",
            )
    return {
        "chatbot": chatbot,
        "question": question,
        "ask": ask,
        "stop": stop,
        "clear": clear,
        "save_answer": save_answer,
        "save_notice": save_notice,
        "top_k": top_k,
        "min_score": min_score,
        "only_tags": only_tags,
        "only_paths": only_paths,
    }


def _side_column(service: ChatService) -> dict[str, Any]:
    """The tabs beside the chat: the scored sources, the note form (unless read-only) and the index status."""
    import gradio as gr

    note_form = None
    with gr.Tabs():
        with gr.Tab("Sources", id="sources"):
            sources = gr.HTML(format_sources(None), elem_id="rag-sources")
            score = gr.HTML("", elem_id="rag-score-picture")
        with gr.Tab("Map", id="map") as map_tab:
            map_picture = gr.HTML("", elem_id="rag-map")
        if not service.read_only:
            with gr.Tab("Add a note", id="add-note"):
                note_form = NoteForm(
                    title=gr.Textbox(label="Title", elem_id="rag-note-title"),
                    tags=gr.Textbox(label="Tags", placeholder="comma separated", elem_id="rag-note-tags"),
                    body=gr.Textbox(label="Body (Markdown)", lines=8, max_lines=20, elem_id="rag-note-body"),
                    save=gr.Button("Save note", variant="primary", elem_id="rag-note-save"),
                    notice=gr.HTML("", elem_id="rag-note-notice"),
                )
        with gr.Tab("Index", id="index"):
            status = gr.HTML("", elem_id="rag-status")
            timer = gr.Timer(2.0)
    return {
        "sources": sources,
        "note_form": note_form,
        "status": status,
        "timer": timer,
        "score": score,
        "map_tab": map_tab,
        "map": map_picture,
    }


class ChatEvents:
    """What the page's buttons, box and timer do: each method takes and returns component values.

    Gradio names each event after its function, and names must not collide with the named endpoints (`/ask`,
    `/status`, `/add_note`), hence the `on_` prefix.
    """

    def __init__(self, service: ChatService) -> None:
        self.service = service

    def on_ask(
        self,
        question: str,
        history: list[dict[str, Any]],
        k: float,
        min_score: float,
        turns: list[dict[str, str]],
        tags: str = "",
        paths: str = "",
    ) -> Iterator[tuple[Any, ...]]:
        """Chat history, sources, question box (cleared), the answer kept for saving, the conversation, and the
        Stop button's visibility; a model's answer streams in, draft by draft."""
        import gradio as gr

        question = (question or "").strip()
        if not question:
            yield history, gr.skip(), "", gr.skip(), gr.skip(), gr.skip()
            return
        history = list(history or []) + [{"role": "user", "content": plain_html(question)}]
        stop = threading.Event()
        answer = drafts = None
        try:
            drafts = self.service.stream(
                question,
                history=turns or [],
                k=bounded_k(k),
                min_score=min_score if min_score and min_score > 0 else None,
                stop=stop,
                only=parse_filter(tags, paths),
            )
            for answer in drafts:
                shown = history + [{"role": "assistant", "content": render_markdown(compose_answer(answer))}]
                if answer.final:
                    break
                yield shown, gr.skip(), "", gr.skip(), gr.skip(), gr.update(visible=True)
        except BusyError as exc:
            history.append({"role": "assistant", "content": plain_html(f"Busy: {exc}")})
            yield history, gr.skip(), "", None, gr.skip(), gr.update(visible=False)
            return
        except (RagError, ValueError) as exc:
            history.append({"role": "assistant", "content": plain_html("Could not answer: " + str(exc))})
            yield history, gr.skip(), "", None, gr.skip(), gr.update(visible=False)
            return
        finally:
            # A click on Stop cancels this generator; the model then stops at its next token.
            stop.set()
            if drafts is not None:
                drafts.close()
        assert answer is not None
        turns = list(turns or []) + [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer.text},
        ]
        history.append({"role": "assistant", "content": render_markdown(compose_answer(answer))})
        yield history, format_sources(answer), "", answer, turns, gr.update(visible=False)

    def on_save_answer(self, answer: Answer | None) -> str:
        if answer is None:
            return format_notice("Ask a question first; then this saves the question, answer and sources.", ok=False)
        try:
            note = self.service.save_answer(answer)
        except RagError as exc:
            return format_notice(str(exc), ok=False)
        return format_notice(f"Saved as {note.path} and indexed.", ok=True)

    def on_add_note(self, title: str, tags: str, body: str) -> tuple[Any, ...]:
        """The notice, then the form's fields: emptied after a save, kept as typed after a refusal."""
        import gradio as gr

        try:
            note = self.service.add_note(title, body, parse_tags(tags))
        except RagError as exc:
            return format_notice(str(exc), ok=False), gr.skip(), gr.skip(), gr.skip()
        message = f"Saved {note.path} and indexed it: ask about it now."
        return format_notice(message, ok=True), "", "", ""

    def on_status(self) -> str:
        try:
            return format_status(self.service.status())
        except RagError as exc:
            return format_notice(str(exc), ok=False)

    def on_stop(self) -> Any:
        import gradio as gr

        return gr.update(visible=False)

    def on_pictures(self, answer: Answer | None) -> tuple[str, str]:
        """The map (the answer's question on it, its sources ringed) and the best score against the background."""
        result = answer.result if answer is not None else None
        return map_html(self.service.kb, result), score_html(self.service.kb, result)

    def on_map(self, answer: Answer | None) -> str:
        return map_html(self.service.kb, answer.result if answer is not None else None)

    def on_clear(self) -> tuple[Any, ...]:
        return [], format_sources(None), None, "", []


def wire_events(app: Any, ui: ChatLayout, events: ChatEvents) -> None:
    """Connect the layout's components to the events. Every event is private: scripts use the named endpoints."""
    ask_args: dict[str, Any] = {
        "fn": events.on_ask,
        "inputs": [ui.question, ui.chatbot, ui.top_k, ui.min_score, ui.conversation, ui.only_tags, ui.only_paths],
        "outputs": [ui.chatbot, ui.sources, ui.question, ui.last_answer, ui.conversation, ui.stop],
        "api_visibility": "private",
    }
    pictures: dict[str, Any] = {
        "fn": events.on_pictures,
        "inputs": [ui.last_answer],
        "outputs": [ui.map, ui.score],
        "show_progress": "hidden",
        "api_visibility": "private",
    }
    clicked = ui.ask.click(**ask_args)
    submitted = ui.question.submit(**ask_args)
    clicked.then(**pictures)
    submitted.then(**pictures)
    ui.stop.click(events.on_stop, outputs=[ui.stop], cancels=[clicked, submitted], api_visibility="private")
    ui.map_tab.select(events.on_map, inputs=[ui.last_answer], outputs=[ui.map], api_visibility="private")
    ui.clear.click(
        events.on_clear,
        outputs=[ui.chatbot, ui.sources, ui.last_answer, ui.save_notice, ui.conversation],
        api_visibility="private",
    ).then(**pictures)
    if ui.save_answer is not None:
        ui.save_answer.click(
            events.on_save_answer, inputs=[ui.last_answer], outputs=[ui.save_notice], api_visibility="private"
        )
    if ui.note_form is not None:
        form = ui.note_form
        form.save.click(
            events.on_add_note,
            inputs=[form.title, form.tags, form.body],
            outputs=[form.notice, form.title, form.tags, form.body],
            api_visibility="private",
        )
    ui.timer.tick(events.on_status, outputs=[ui.status], show_progress="hidden", api_visibility="private")
    app.load(events.on_status, outputs=[ui.status], show_progress="hidden", api_visibility="private")


def add_named_endpoints(service: ChatService) -> None:
    """The API for scripts and gradio_client, inside the current Blocks: `/ask`, `/status` and, unless read-only,
    `/add_note`. Their names are a contract (README, gradio_client users)."""
    import gradio as gr

    def ask_api(
        question: str, k: int = 5, min_score: float | None = None, tags: str = "", paths: str = ""
    ) -> dict[str, Any]:
        """Answer a question from the notes: the JSON of `python -m rag ask --json` (hits, sources, `answer`)
        plus `markdown`, the answer as the chat shows it. `tags` (all of them) and `paths` (globs, any of them)
        are comma separated and keep the search to those notes."""
        try:
            answer = service.ask(question, k=bounded_k(k), min_score=min_score, only=parse_filter(tags, paths))
        except (RagError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        return {**answer.result_dict(), "markdown": compose_answer(answer)}

    def status_api() -> dict[str, Any]:
        """Index status: notes, chunks, last sync, skipped files (key `file`) with reasons."""
        return _file_keys(service.status())

    gr.api(ask_api, api_name="ask")
    gr.api(status_api, api_name="status")
    if service.read_only:
        return

    def add_note_api(title: str, body: str, tags: str = "") -> dict[str, str]:
        """Write a note (tags comma separated) and index it; returns its file (relative path) and id."""
        try:
            note = service.add_note(title, body, parse_tags(tags))
            return {"file": note.path, "id": note.id}
        except RagError as exc:
            raise gr.Error(str(exc)) from exc

    gr.api(add_note_api, api_name="add_note")


def _file_keys(value: Any) -> Any:
    """`value` with every "path" key renamed "file": gradio_client takes any {"path": str} object in a result for
    a file to download (and fails), so the Gradio API never returns that key."""
    if isinstance(value, dict):
        return {("file" if k == "path" else k): _file_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_file_keys(v) for v in value]
    return value
