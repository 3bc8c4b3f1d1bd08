"""Adding a note: no way out of the knowledge folder, no hidden or reserved names, no huge bodies, no overwrites."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Config
from rag.errors import NoteWriteError
from rag.knowledge import KnowledgeBase
from rag.write import write_note


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "knowledge"
    target.mkdir()
    return target


def files_outside(tmp_path: Path, folder: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.is_file() and folder not in p.parents]


@pytest.mark.parametrize(
    "name, why",
    [
        ("../escape.md", "escapes"),
        ("sub/../../escape.md", "escapes"),
        ("..", "escapes"),
        ("/etc/passwd", "relative path"),
        ("/tmp/x.md", "relative path"),
        ("C:/Windows/x.md", "relative path"),
        ("..\\escape.md", "relative path"),
        (".hidden.md", "hidden"),
        ("sub/.git/config.md", "hidden"),
        ("CON.md", "reserved"),
        ("nul", "reserved"),
        ("sub/com1.txt.md", "reserved"),
        ("lpt9.md", "reserved"),
    ],
)
def test_bad_names_are_refused(tmp_path: Path, folder: Path, name: str, why: str) -> None:
    with pytest.raises(NoteWriteError, match=why):
        write_note(folder, title="A note", body="text", name=name)
    assert list(folder.rglob("*")) == []
    assert files_outside(tmp_path, folder) == []


@pytest.mark.parametrize("title", ["../../etc/passwd", "/etc/shadow", "..", ". hidden", "CON", "a/../../b"])
def test_titles_become_safe_names(tmp_path: Path, folder: Path, title: str) -> None:
    """A title is slugified, so whatever it says the note lands inside the folder under a plain name."""
    try:
        note = write_note(folder, title=title, body="text")
    except NoteWriteError as exc:
        assert "title" in str(exc) or "reserved" in str(exc)
        return
    written = folder / note.path
    assert written.is_file() and written.parent == folder and not note.path.startswith(".")
    assert files_outside(tmp_path, folder) == []


def test_symlinked_subfolder_cannot_lead_outside(tmp_path: Path, folder: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "link").symlink_to(outside)
    with pytest.raises(NoteWriteError, match="escapes"):
        write_note(folder, title="x", body="text", name="link/x.md")
    assert list(outside.iterdir()) == []


def test_oversized_and_empty_bodies_are_refused(folder: Path) -> None:
    with pytest.raises(NoteWriteError, match="over the limit of 1,000"):
        write_note(folder, title="Big", body="x" * 1001, max_bytes=1000)
    with pytest.raises(NoteWriteError, match="over the limit"):
        write_note(folder, title="Wide", body="é" * 600, max_bytes=1000)  # bytes, not characters
    with pytest.raises(NoteWriteError, match="empty"):
        write_note(folder, title="Blank", body=" \n\t ")
    with pytest.raises(NoteWriteError, match="title"):
        write_note(folder, title="  ", body="text")
    assert list(folder.iterdir()) == []
    assert write_note(folder, title="Just fits", body="x" * 1000, max_bytes=1000).path == "just-fits.md"


def test_never_overwrites(folder: Path) -> None:
    write_note(folder, title="Kept", body="the original")
    for attempt in (dict(title="Kept"), dict(title="Other", name="kept.md"), dict(title="x", name="kept")):
        with pytest.raises(NoteWriteError, match="already exists"):
            write_note(folder, body="a replacement", **attempt)
    assert "the original" in (folder / "kept.md").read_text()
    # A file that is not a note (no front matter, written by hand) is protected the same way.
    (folder / "hand.md").write_text("mine")
    with pytest.raises(NoteWriteError, match="already exists"):
        write_note(folder, title="Hand", body="theirs")
    assert (folder / "hand.md").read_text() == "mine"


def test_read_only_knowledge_base_refuses_to_add(tmp_path: Path, folder: Path) -> None:
    kb = KnowledgeBase(Config(knowledge_dir=folder, db_dir=tmp_path / "db", read_only=True))
    with pytest.raises(NoteWriteError, match="read-only"):
        kb.add_note("Title", "body", sync=False)
    assert list(folder.iterdir()) == []


def test_read_only_from_the_environment_blocks_the_cli(tmp_path: Path, folder: Path, monkeypatch, capsys) -> None:
    from rag.cli import main

    monkeypatch.setenv("RAG_READ_ONLY", "1")
    code = main(
        ["add-note", "--title", "T", "--text", "body", "--knowledge", str(folder), "--db", str(tmp_path / "db")]
    )
    assert code == 1
    assert "read-only" in capsys.readouterr().err
    assert list(folder.iterdir()) == []
