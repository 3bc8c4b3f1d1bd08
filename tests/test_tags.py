"""One tag parser everywhere: the same typed tags give the same note tags through every entry point."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from demo.app import ChatEvents, ChatService
from demo.widget import ChatWidget
from rag.cli import main
from rag.config import Config
from rag.knowledge import KnowledgeBase
from rag.load import load_note, parse_tags

TYPED = "machine learning, #ai, ai,  , #machine learning"
WANTED = ("machine learning", "ai")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a, b, #c, a", ("a", "b", "c")),
        ("machine learning", ("machine learning",)),
        (" #x ,, # y", ("x", "y")),
        (["a, b", "#b", "c"], ("a", "b", "c")),
        ("", ()),
    ],
)
def test_parse_tags(value: object, expected: tuple[str, ...]) -> None:
    assert parse_tags(value) == expected  # type: ignore[arg-type]


def note_tags(folder: Path, name: str) -> tuple[str, ...]:
    return load_note(folder, folder / name).tags


@pytest.mark.slow
def test_every_entry_point_reads_tags_the_same_way(
    tmp_path: Path, embedder, live_chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "knowledge"
    folder.mkdir()
    kb = KnowledgeBase(Config(knowledge_dir=folder, db_dir=tmp_path / "db"), embedder=embedder)

    # The command line, in this process, on its own folder.
    monkeypatch.setenv("RAG_ENCODER", "fp32")
    out = io.StringIO()
    argv = ["add-note", "--title", "From the CLI", "--tags", TYPED, "--text", "Body one."]
    assert main([*argv, "--knowledge", str(folder), "--db", str(tmp_path / "cli-db")], stdout=out) == 0
    # The notebook widget's form and the chat's form, as their pages send them (one text box).
    ChatWidget(kb)._on_message(
        None, {"type": "add_note", "title": "From the widget", "tags": TYPED, "body": "Two."}, []
    )
    ChatEvents(ChatService(kb)).on_add_note("From the chat", TYPED, "Body three.")
    for name in ("from-the-cli.md", "from-the-widget.md", "from-the-chat.md"):
        assert note_tags(folder, name) == WANTED, name

    # The JSON API takes a list; commas and # inside its items mean the same.
    note = {"title": "Tags through the API", "body": "Body four.", "tags": [t for t in TYPED.split(",")]}
    response = httpx.post(f"{live_chat.url}/api/notes", json=note, timeout=120)
    assert response.status_code == 201, response.text
    written = live_chat.knowledge / response.json()["path"]
    try:
        assert note_tags(live_chat.knowledge, response.json()["path"]) == WANTED
    finally:
        written.unlink()
        live_chat.watcher.sync()
