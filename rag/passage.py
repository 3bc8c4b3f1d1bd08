"""Passages: the readable sources an answer is written from, built around the small chunks search ranks.

Search stays on small chunks, which rank well; a person (and a model) reads better from the section around them.
`gather_sources` merges the hits of one note that touch or overlap into one `Source` with its whole line range,
grows each to its section (or to the paragraphs beside it, within a budget), and lets one note fill at most a few
source slots while other notes have hits. Text comes from the note file itself when it still matches the index,
so chunk overlaps never show twice; otherwise from the stored chunks. It does not search and does not write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rag.chunk import Chunk, heading_text, line_range, section
from rag.load import content_hash, parse_note
from rag.retrieve import Hit, SearchResult

# A passage grows to its section while it stays under this many words (about 350 model tokens), else by whole
# paragraphs beside its hits up to the same budget.
PASSAGE_WORDS = 260
# One note fills at most this many source slots while another note has a hit.
PER_NOTE = 2

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:\s|$)")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


@dataclass(frozen=True)
class NoteLines:
    """A note file as it is now: the hash indexing records, and its lines (index 0 is line 1)."""

    content_hash: str
    lines: list[str]


ReadNote = Callable[[str], "NoteLines | None"]


@dataclass(frozen=True)
class Source:
    """One numbered source of an answer: a passage of one note and the hits it holds.

    `score` is the best cosine similarity of its hits, `rank_score` the best score that ordered them (fused in
    hybrid search); sources keep the order of their best hit.
    """

    number: int
    source: str
    title: str
    heading: tuple[str, ...]
    start_line: int
    end_line: int
    text: str
    score: float
    rank_score: float
    percentile: float | None
    hit_ids: tuple[str, ...]
    note_id: str = ""
    tags: tuple[str, ...] = field(default=())
    weak: bool = False

    @property
    def section(self) -> tuple[str, ...]:
        return section(self.title, self.heading)

    @property
    def location(self) -> str:
        return line_range(self.source, self.start_line, self.end_line)

    def to_dict(self) -> dict[str, Any]:
        """The source as `ask --json` and the APIs print it, with the field names of a hit where they mean the
        same."""
        return {
            "number": self.number,
            "source": self.source,
            "title": self.title,
            "heading": heading_text(self.heading),
            "heading_path": list(self.heading),
            "section": heading_text(self.section),
            "start_line": self.start_line,
            "end_line": self.end_line,
            "location": self.location,
            "text": self.text,
            "score": self.score,
            "rank_score": self.rank_score,
            "percentile": self.percentile,
            "hit_ids": list(self.hit_ids),
            "note_id": self.note_id,
            "tags": list(self.tags),
            "weak": self.weak,
        }


def file_reader(knowledge_dir: Path, *, max_bytes: int = 2_000_000) -> ReadNote:
    """Reads a note's lines from the folder, repaired as indexing repairs them; None when the file is gone,
    too large or unreadable. Front matter lines read as blank, so they never join a passage."""
    root = Path(knowledge_dir)
    cache: dict[str, NoteLines | None] = {}

    def read(source: str) -> NoteLines | None:
        if source not in cache:
            cache[source] = _read_lines(root / source, source, max_bytes)
        return cache[source]

    return read


def _read_lines(path: Path, source: str, max_bytes: int) -> NoteLines | None:
    try:
        if path.stat().st_size > max_bytes:
            return None
        raw = path.read_bytes()
        note = parse_note(source, raw)
    except Exception:  # noqa: BLE001 - an unreadable note falls back to the stored chunks
        return None
    return NoteLines(content_hash(raw), [""] * (note.body_line - 1) + note.body.split("\n"))


def gather_sources(
    result: SearchResult,
    read: ReadNote | None = None,
    *,
    limit: int | None = None,
    words: int = PASSAGE_WORDS,
    per_note: int = PER_NOTE,
) -> list[Source]:
    """The hits of `result` as numbered passages, in the order of their best hit.

    Args:
        result: a search result; its hits are read best first.
        read: gives a note's current lines (see `file_reader`); without it, or when the file changed since it
            was indexed, a passage is the merged text of its chunks.
        limit: how many sources at most (default: as many as there are hits).
        words: the word budget a passage grows to.
        per_note: source slots one note may fill while other notes have hits.
    """
    hits = list(result.hits)
    if not hits:
        return []
    limit = limit or len(hits)
    notes_with_hits = len({h.chunk.source for h in hits})
    spans: list[_Span] = []
    for hit in hits:
        chunk = hit.chunk
        same = [s for s in spans if s.source == chunk.source]
        joined = next((s for s in same if s.touches(chunk)), None)
        if joined is not None:
            joined.add(hit)
            continue
        if len(same) >= per_note and notes_with_hits > 1:
            continue
        if len(spans) >= limit:
            continue
        spans.append(_Span(hit))
    # Grow each span; a span that grows into lines an earlier span of its note already shows joins it (two hits
    # of one section that did not touch as chunks would otherwise show the same section twice).
    grown: list[tuple[_Span, int, int, str]] = []
    for span in spans:
        lines = _current_lines(read, span)
        start, end, text = span.passage(lines, words)
        earlier = next(
            (
                i
                for i, (g, a, b, _) in enumerate(grown)
                if g.source == span.source and g.heading == span.heading and start <= b + 1 and end >= a - 1
            ),
            None,
        )
        if earlier is None:
            grown.append((span, start, end, text))
            continue
        first, a, b, _ = grown[earlier]
        for hit in span.hits:
            first.add(hit)
        start, end = min(a, start), max(b, end)
        text = "\n".join(lines[start - 1 : end]).strip("\n") if lines is not None else first.passage(None, words)[2]
        grown[earlier] = (first, start, end, text)
    sources = []
    for number, (span, start, end, text) in enumerate(grown, 1):
        best = span.best
        sources.append(
            Source(
                number=number,
                source=span.source,
                title=best.chunk.title,
                heading=span.heading,
                start_line=start,
                end_line=end,
                text=text,
                score=max(h.score for h in span.hits),
                rank_score=max(h.rank_score for h in span.hits),
                percentile=best.percentile,
                hit_ids=tuple(h.chunk.id for h in span.hits),
                note_id=best.chunk.note_id,
                tags=best.chunk.tags,
                weak=result.weak(best),
            )
        )
    return sources


def _current_lines(read: ReadNote | None, span: _Span) -> list[str] | None:
    """The note file's lines when it is the version the hits were cut from, else None."""
    note = read(span.source) if read is not None else None
    if note is None or note.content_hash != span.best.chunk.note_hash:
        return None
    return note.lines


class _Span:
    """Hits of one note that touch or overlap, while they are gathered."""

    def __init__(self, hit: Hit) -> None:
        self.hits = [hit]
        self.source = hit.chunk.source
        self.start = hit.chunk.start_line
        self.end = hit.chunk.end_line

    @property
    def best(self) -> Hit:
        return self.hits[0]

    @property
    def heading(self) -> tuple[str, ...]:
        """The heading path all its hits share (the deepest common one)."""
        paths = [h.chunk.heading for h in self.hits]
        common: list[str] = []
        for parts in zip(*paths, strict=False):
            if len(set(parts)) != 1:
                break
            common.append(parts[0])
        return tuple(common)

    def touches(self, chunk: Chunk) -> bool:
        """Whether `chunk` lies in this span's section and overlaps it or lies next to it (a line apart at most).
        Hits of two sections stay two sources, each under its own heading."""
        return (
            chunk.heading == self.best.chunk.heading
            and chunk.start_line <= self.end + 2
            and chunk.end_line >= self.start - 2
        )

    def add(self, hit: Hit) -> None:
        self.hits.append(hit)
        self.start = min(self.start, hit.chunk.start_line)
        self.end = max(self.end, hit.chunk.end_line)

    def passage(self, lines: list[str] | None, words: int) -> tuple[int, int, str]:
        """Start line, end line and text of the passage: grown within the file when it can be read."""
        if lines is None:
            ordered = sorted(self.hits, key=lambda h: (h.chunk.start_line, h.chunk.index))
            return self.start, self.end, _join_chunks([h.chunk for h in ordered])
        start, end = _grow(lines, self.start, self.end, words)
        return start, end, "\n".join(lines[start - 1 : end]).strip("\n")


def _grow(lines: list[str], start: int, end: int, words: int) -> tuple[int, int]:
    """The whole section around lines `start`-`end` when it fits `words`, else whole paragraphs beside them,
    one at a time on either side, while they fit. Lines are 1-based and inclusive."""
    end = min(end, len(lines))
    top, bottom = _section_bounds(lines, start, end)

    def count(a: int, b: int) -> int:
        return sum(len(line.split()) for line in lines[a - 1 : b])

    if count(top, bottom) <= words:
        return _trim(lines, top, bottom)
    while True:
        grown = False
        above = _paragraph_above(lines, start, top)
        if above is not None and count(above, end) <= words:
            start, grown = above, True
        below = _paragraph_below(lines, end, bottom)
        if below is not None and count(start, below) <= words:
            end, grown = below, True
        if not grown:
            return _trim(lines, start, end)


def _section_bounds(lines: list[str], start: int, end: int) -> tuple[int, int]:
    """First and last line of the section holding lines `start`-`end`: after the heading above, up to the next
    heading (headings inside code fences do not count)."""
    headings = []
    fenced = False
    for number, line in enumerate(lines, 1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and _HEADING.match(line):
            headings.append(number)
    above = [h for h in headings if h < start]
    below = [h for h in headings if h > end]
    top = above[-1] + 1 if above else 1
    bottom = below[0] - 1 if below else len(lines)
    # A span that itself begins on a heading keeps it.
    if start in headings:
        top = start
    return top, max(bottom, end)


def _paragraph_above(lines: list[str], start: int, top: int) -> int | None:
    """First line of the paragraph before line `start`, not above `top`; None when there is none."""
    line = start - 1
    while line >= top and not lines[line - 1].strip():
        line -= 1
    if line < top:
        return None
    while line - 1 >= top and lines[line - 2].strip():
        line -= 1
    return line


def _paragraph_below(lines: list[str], end: int, bottom: int) -> int | None:
    """Last line of the paragraph after line `end`, not below `bottom`; None when there is none."""
    line = end + 1
    while line <= bottom and not lines[line - 1].strip():
        line += 1
    if line > bottom:
        return None
    while line + 1 <= bottom and lines[line].strip():
        line += 1
    return line


def _trim(lines: list[str], start: int, end: int) -> tuple[int, int]:
    """Blank lines cut off both ends."""
    while start < end and not lines[start - 1].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return start, end


def _join_chunks(chunks: Sequence[Chunk]) -> str:
    """Texts of neighbouring chunks joined; where one begins with the end of the one before (the overlap), that
    part is shown once."""
    text = ""
    for chunk in chunks:
        piece = chunk.text.strip("\n")
        if not text:
            text = piece
            continue
        overlap = _overlap(text, piece)
        text = text + piece[overlap:] if overlap else text + "\n\n" + piece
    return text


def _overlap(before: str, after: str) -> int:
    """Length of the longest end of `before` that `after` starts with (at least 20 characters to count)."""
    for size in range(min(len(before), len(after)), 19, -1):
        if before.endswith(after[:size]):
            return size
    return 0
