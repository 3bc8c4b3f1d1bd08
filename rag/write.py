"""Writing new notes into the knowledge folder: safe names, front matter, atomic and never overwriting.

It writes files only; indexing them is the sync's job.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import frontmatter
from slugify import slugify

from rag.errors import NoteWriteError
from rag.load import NOTE_SUFFIXES, parse_tags

# Names Windows refuses for files, whatever the extension; a shared folder must open everywhere.
_RESERVED = {"con", "prn", "aux", "nul"} | {f"{p}{n}" for p in ("com", "lpt") for n in range(1, 10)}


@dataclass(frozen=True)
class NewNote:
    """Where a new note was written and the id in its front matter."""

    path: str  # relative to the knowledge folder
    id: str


def note_name(title: str, name: str | None = None) -> str:
    """The relative file name for a note: `name` if given (checked), else a slug of the title plus `.md`.

    Raises:
        NoteWriteError: the title is empty, or the name is absolute, escapes the folder, is hidden or reserved.
    """
    if name is None:
        slug = slugify(title, max_length=80, word_boundary=True)
        if not slug:
            raise NoteWriteError(f"cannot make a file name from the title {title!r}; use letters or digits")
        name = slug + ".md"
    if "\\" in name or name.startswith("/") or Path(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise NoteWriteError(f"note name {name!r} must be a relative path inside the knowledge folder")
    parts = PurePosixPath(name).parts
    if not parts or any(p in ("..", ".") for p in parts):
        raise NoteWriteError(f"note name {name!r} escapes the knowledge folder; use a plain file name")
    if any(p.startswith(".") for p in parts):
        raise NoteWriteError(f"note name {name!r} is hidden (starts with a dot); hidden files are never indexed")
    if not name.lower().endswith(NOTE_SUFFIXES):
        name += ".md"
    stem = PurePosixPath(name).name.split(".")[0].lower()
    if stem in _RESERVED or not stem:
        raise NoteWriteError(f"note name {name!r} is reserved on some systems; choose another title")
    return name


def write_note(
    folder: Path,
    *,
    title: str,
    body: str,
    tags: Sequence[str] = (),
    name: str | None = None,
    max_bytes: int = 200_000,
) -> NewNote:
    """Write a new note with front matter (id, title, tags) into `folder`.

    The file appears whole or not at all (written aside, then linked into place), and an existing note is
    never replaced.

    Raises:
        NoteWriteError: bad title or name, body too large, or a note of that name exists.
    """
    title = " ".join((title or "").split())
    if not title:
        raise NoteWriteError("the note needs a title")
    body = (body or "").replace("\r\n", "\n").strip()
    if not body:
        raise NoteWriteError("the note is empty; write some text in its body")
    size = len(body.encode("utf-8"))
    if size > max_bytes:
        raise NoteWriteError(
            f"the note is {size:,} bytes, over the limit of {max_bytes:,}; split it into smaller notes"
        )
    rel = note_name(title, name)
    folder = Path(folder)
    target = folder / rel
    if not target.resolve().is_relative_to(folder.resolve()):
        raise NoteWriteError(f"note name {rel!r} escapes the knowledge folder; use a plain file name")
    note_id = PurePosixPath(rel).with_suffix("").as_posix().replace("/", "-")
    clean_tags = list(parse_tags(tags))
    post = frontmatter.Post(body if body.lstrip().startswith("#") else f"# {title}\n\n{body}")
    post.metadata.update({"id": note_id, "title": title, "tags": clean_tags})
    text = frontmatter.dumps(post, sort_keys=False) + "\n"
    if target.exists():
        raise NoteWriteError(f"a note named {rel} already exists; choose another title")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".new-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            # link() fails if the name exists, so two writers can never overwrite each other.
            os.link(tmp, target)
        except FileExistsError:
            raise NoteWriteError(f"a note named {rel} already exists; choose another title") from None
    finally:
        os.unlink(tmp)
    return NewNote(path=rel, id=note_id)
