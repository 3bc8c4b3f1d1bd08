"""Loading notes: front matter, fallbacks, mojibake repair and every kind of file that must be skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.errors import SkipNote
from rag.load import find_notes, load_note, parse_note

GOOD = "---\nid: cos\ntitle: Cosine\ntags: [math, vectors]\n---\n# Cosine\n\nText.\n"


def double_encode(text: str) -> bytes:
    """UTF-8 bytes read as Windows-1252 and saved as UTF-8 again: the usual mojibake."""
    return text.encode("utf-8").decode("cp1252", errors="ignore").encode("utf-8")


def test_front_matter_gives_id_title_tags_and_body_line() -> None:
    note = parse_note("a/cos.md", GOOD.encode())
    assert (note.id, note.title, note.tags) == ("cos", "Cosine", ("math", "vectors"))
    lines = GOOD.split("\n")
    body_lines = note.body.split("\n")
    # Line i of the body is line body_line + i of the file.
    assert lines[note.body_line - 1 + 1] == body_lines[1] == "# Cosine"
    assert note.warnings == ()


@pytest.mark.parametrize(
    ("text", "title", "note_id"),
    [
        ("# First Heading\n\nbody", "First Heading", "notes/x"),
        ("just text, no heading", "x", "notes/x"),
        ("---\nid: 42\n---\n## Deep heading\nbody", "Deep heading", "42"),
        ("---\ntitle: From YAML\n---\n# Other\nbody", "From YAML", "notes/x"),
    ],
)
def test_title_and_id_fallbacks(text: str, title: str, note_id: str) -> None:
    note = parse_note("notes/x.md", text.encode())
    assert (note.title, note.id) == (title, note_id)


@pytest.mark.parametrize(("tags", "expected"), [("a, b,a", ("a", "b")), ("[x, 1]", ("x", "1")), ("", ())])
def test_tags_as_list_or_text(tags: str, expected: tuple[str, ...]) -> None:
    note = parse_note("t.md", f"---\ntags: {tags}\n---\nbody".encode())
    assert note.tags == expected


def test_double_encoded_note_is_repaired() -> None:
    original = "---\ntitle: Café — “quotes”\n---\n# 🧠 Embeddings\n\nThey’re vectors — “dense” ones.\n"
    raw = double_encode(original)
    assert "â€" in raw.decode("utf-8")
    note = parse_note("m.md", raw)
    assert note.title == "Café — “quotes”"
    assert "They’re vectors — “dense” ones." in note.body
    assert "🧠 Embeddings" in note.body


def test_bom_and_crlf_are_normalised() -> None:
    note = parse_note("w.md", b"\xef\xbb\xbf---\r\ntitle: Win\r\n---\r\n# Win\r\nline\r\n")
    assert note.title == "Win"
    assert "\r" not in note.body and note.body_line == 3


def test_malformed_front_matter_falls_back_to_the_body_with_a_warning() -> None:
    note = parse_note("bad.md", b"---\ntitle: [unclosed\ntags: x\n---\n# Real Title\n\nbody text\n")
    assert note.title == "Real Title"
    assert "body text" in note.body and "unclosed" not in note.body
    assert any("malformed front matter" in w for w in note.warnings)


def test_front_matter_field_of_wrong_type_is_ignored_with_a_warning() -> None:
    note = parse_note("odd.md", b"---\ntitle: {a: 1}\ntags: 5\n---\n# H\nbody")
    assert note.title == "H" and note.tags == ()
    assert len(note.warnings) == 2 and "'title'" in note.warnings[0]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"  \n\n ", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b"caf\xe9 au lait \xff", "not valid UTF-8"),
    ],
)
def test_bad_files_are_skipped_with_a_reason(tmp_path: Path, raw: bytes, reason: str) -> None:
    path = tmp_path / "bad.md"
    path.write_bytes(raw)
    with pytest.raises(SkipNote) as info:
        load_note(tmp_path, path)
    assert info.value.path == "bad.md"
    assert reason in info.value.reason


def test_oversized_file_is_skipped_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.md"
    path.write_text("x" * 5000)
    with pytest.raises(SkipNote, match="over the limit of 1,000"):
        load_note(tmp_path, path, max_bytes=1000)


def test_find_notes_recurses_and_skips_hidden(tmp_path: Path) -> None:
    for rel in ["a.md", "sub/b.markdown", "sub/deeper/c.MD", ".hidden/d.md", "sub/.e.md", "f.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("# x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_notes(tmp_path)]
    assert found == ["a.md", "sub/b.markdown", "sub/deeper/c.MD"]


def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# a")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "self.md").symlink_to(tmp_path / "self.md")
    found = [p.name for p in find_notes(tmp_path)]
    assert "a.md" in found
    with pytest.raises(SkipNote, match="cannot be read"):
        load_note(tmp_path, tmp_path / "self.md")
