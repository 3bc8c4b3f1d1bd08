"""Loading: find the Markdown notes under a folder and read each into a `Note`.

Repairs double-encoded UTF-8 (mojibake) with ftfy and reads YAML front matter with python-frontmatter.
It does not chunk, embed or store anything; a file that cannot be read raises `SkipNote` naming the reason.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import frontmatter
import ftfy
import yaml

from rag.errors import SkipNote

NOTE_SUFFIXES = (".md", ".markdown")

# Repair mojibake only: keep curly quotes, ligatures, widths and line breaks exactly as the author wrote them.
_FTFY = ftfy.TextFixerConfig(
    uncurl_quotes=False,
    fix_latin_ligatures=False,
    fix_character_width=False,
    fix_line_breaks=False,
    normalization=None,
)
# Windows-1252 has no character for byte 0x9D, so double-encoding drops it from a closing quote (U+201D),
# leaving a bare "â€" before a space or punctuation; putting the byte back lets ftfy decode the quote.
_LOST_CLOSING_QUOTE = re.compile(r"â€(?=[\s.,;:!?)\]]|$)")


@dataclass(frozen=True)
class Note:
    """One Markdown file, its front matter resolved and its text repaired."""

    path: str  # relative to the knowledge folder, with forward slashes
    id: str
    title: str
    tags: tuple[str, ...]
    body: str
    body_line: int  # line of the file (1-based) on which `body` starts
    content_hash: str
    warnings: tuple[str, ...] = field(default=())


def content_hash(raw: bytes) -> str:
    """Hash of a file's bytes: equal hashes mean the note needs no work."""
    return hashlib.sha256(raw).hexdigest()


def find_notes(root: Path) -> Iterator[Path]:
    """Every note file under `root`, recursively, skipping hidden files and folders; sorted for stable order."""
    root = Path(root)
    found: list[str] = []
    # os.walk does not follow symlinked folders, so a symlink loop cannot trap it. Paths are sorted as strings
    # and made Path objects last: pathlib's comparisons cost 1 s of a 50k-note sync.
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and name.lower().endswith(NOTE_SUFFIXES):
                found.append(os.path.join(folder, name))
    return map(Path, sorted(found, key=lambda p: Path(p).parts if os.sep != "/" else p.split("/")))


def relative_name(root: Path, path: Path) -> str:
    """The note's path as stored in the index: relative to the knowledge folder, forward slashes."""
    prefix = os.path.join(os.fspath(root), "")
    text = os.fspath(path)
    if text.startswith(prefix):
        return text[len(prefix) :].replace(os.sep, "/")
    return Path(path).relative_to(root).as_posix()


def read_bytes(path: Path, rel: str, *, max_bytes: int) -> bytes:
    """The file's bytes, or `SkipNote` when it is unreadable, too large or empty."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            # A named pipe would block the read forever, a device never ends; neither is a note.
            raise SkipNote(
                rel, "is not a regular file (a folder, pipe or device named like a note); rename or remove it"
            )
        size = info.st_size
        if size > max_bytes:
            raise SkipNote(
                rel, f"file is {size:,} bytes, over the limit of {max_bytes:,}; split it or raise RAG_MAX_FILE_BYTES"
            )
        raw = path.read_bytes()
    except SkipNote:
        raise
    except OSError as exc:
        raise SkipNote(rel, f"cannot be read ({exc.strerror or exc}); check its permissions or link target") from None
    if not raw.strip():
        raise SkipNote(rel, "file is empty; write some text in it or delete it")
    return raw


def parse_note(rel: str, raw: bytes) -> Note:
    """Decode, repair and split one file's bytes into a `Note`.

    Raises:
        SkipNote: binary content or invalid UTF-8.
    """
    if b"\x00" in raw:
        raise SkipNote(rel, "looks binary (contains NUL bytes), not a Markdown note; remove it or rename it")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipNote(rel, f"is not valid UTF-8 (byte {exc.start}); re-save it as UTF-8") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = ftfy.fix_text(_LOST_CLOSING_QUOTE.sub("â€\x9d", text), _FTFY)
    if not text.strip():
        raise SkipNote(rel, "file is empty; write some text in it or delete it")

    warnings: list[str] = []
    meta, body = _split_front_matter(rel, text, warnings)
    body_line = text[: len(text) - len(body)].count("\n") + 1
    stem = Path(rel).with_suffix("").as_posix()
    title = _text_field(meta, "title", rel, warnings) or _first_heading(body) or Path(rel).stem
    note_id = _text_field(meta, "id", rel, warnings) or stem
    return Note(
        path=rel,
        id=note_id,
        title=title,
        tags=_tags(meta.get("tags"), rel, warnings),
        body=body,
        body_line=body_line,
        content_hash=content_hash(raw),
        warnings=tuple(warnings),
    )


def load_note(root: Path, path: Path, *, max_bytes: int = 2_000_000) -> Note:
    """Read one note file under `root`."""
    rel = relative_name(root, path)
    return parse_note(rel, read_bytes(path, rel, max_bytes=max_bytes))


def _split_front_matter(rel: str, text: str, warnings: list[str]) -> tuple[dict, str]:
    """Front matter as a dict and the body after it; broken front matter falls back to indexing the body."""
    handler = frontmatter.YAMLHandler()
    if not handler.detect(text):
        return {}, text
    try:
        fm, body = handler.split(text)
    except ValueError:
        # An opening `---` with no closing one: a horizontal rule, not front matter.
        return {}, text
    try:
        meta = yaml.safe_load(fm)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        warnings.append(
            f"malformed front matter{where}; indexed the body without it (fix the YAML between the --- lines)"
        )
        return {}, body
    if meta is None:
        return {}, body
    if not isinstance(meta, dict):
        warnings.append("front matter is not a key: value mapping; indexed the body without it")
        return {}, body
    return meta, body


def _text_field(meta: dict, key: str, rel: str, warnings: list[str]) -> str:
    value = meta.get(key)
    if value is None:
        return ""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value).strip()
    warnings.append(f"front matter field {key!r} should be text, got {type(value).__name__}; ignored it")
    return ""


def parse_tags(value: str | Iterable[str]) -> tuple[str, ...]:
    """Tags from text (`"a, b, #c"`) or from a list of such texts: split at commas, `#` and blanks stripped,
    repeats dropped, order kept. Every entry point (front matter, CLI, chat, widget, API) reads tags with this."""
    parts = value.split(",") if isinstance(value, str) else [p for item in value for p in str(item).split(",")]
    return tuple(dict.fromkeys(tag for part in parts if (tag := part.strip().lstrip("#").strip())))


def _tags(value: object, rel: str, warnings: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return parse_tags(value)
    if isinstance(value, list):
        return parse_tags(str(t) for t in value if t is not None)
    warnings.append(f"front matter field 'tags' should be a list, got {type(value).__name__}; ignored it")
    return ()


def _first_heading(body: str) -> str:
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            heading = stripped.lstrip("#").strip()
            if heading:
                return heading
    return ""
