"""Chunking: cut a `Note` into `Chunk`s that follow the document and fit the model.

Sections start at headings and carry their heading path. Blocks (paragraphs, lists, tables, code) stay whole
unless one alone exceeds the budget, which is measured in the embedding model's own tokens with the title and
heading context included, so the model never truncates a chunk. Long sections are split with a small overlap.

`Chunk` is the one row type from chunking to retrieval: the store keeps and returns it, a hit wraps it. Its id
comes from its content and the settings that cut it, so an edit re-embeds only the chunks whose text changed.
The functions that show a chunk's fields (`section`, `location`) live here, beside the row, and every interface
calls them. This module does not embed or store; it only needs a token counter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

from markdown_it import MarkdownIt

from rag.load import Note

# Bump when chunk boundaries or embedded text change: stored collections built with another version are rebuilt.
CHUNKER_VERSION = "3"


def chunking_id(chunk_tokens: int, overlap_tokens: int) -> str:
    """What a store records about how its chunks were cut; a store that recorded another one is rebuilt, so a
    changed chunk size never leaves old and new chunks side by side."""
    return f"v{CHUNKER_VERSION}, {chunk_tokens} tokens, overlap {overlap_tokens}"


TokenCounter = Callable[[Sequence[str]], list[int]]

_MARKDOWN = MarkdownIt("commonmark").enable("table")


@dataclass(frozen=True)
class Chunk:
    """A piece of a note, ready to embed; lines are 1-based and inclusive, in the note's file.

    `id` is `"{source}#{digest}"`, the digest taken over the embedded text, the settings that cut it and how
    many identical pieces came before it in the note: the same text cut the same way keeps its id wherever it
    moves in the note, so it is never embedded twice nor deleted and re-added.
    """

    id: str
    source: str
    note_id: str
    title: str
    tags: tuple[str, ...]
    heading: tuple[str, ...]  # heading path, outermost first
    text: str
    start_line: int
    end_line: int
    index: int
    note_hash: str
    # Set only when the title and heading path were too long for the budget: the shortened line embedded instead.
    context: str | None = None

    @property
    def embedding_text(self) -> str:
        """What the model embeds (and BM25 indexes): the title and heading path, then the chunk's text."""
        line = context_line(self.title, self.heading) if self.context is None else self.context
        return line + "\n\n" + self.text

    @property
    def section(self) -> tuple[str, ...]:
        """The heading path below the note's title (a heading that repeats the title is left out)."""
        return section(self.title, self.heading)

    @property
    def location(self) -> str:
        """`path:start-end` (`path:start` for one line): the lines of the note this chunk came from."""
        return line_range(self.source, self.start_line, self.end_line)


def line_range(source: str, start: int, end: int) -> str:
    """`path:start-end`, or `path:start` for one line: how a place in a note is written everywhere."""
    return f"{source}:{start}-{end}" if end and end != start else f"{source}:{start}"


# How a heading path is written wherever a person reads it: CLI, chat, widget, notebook tables.
HEADING_SEPARATOR = " > "


def _bare(text: str) -> str:
    return text.strip().strip(" ?!.").lower()


def section(title: str, heading: Sequence[str]) -> tuple[str, ...]:
    """The headings of `heading` without blanks and without one that only repeats `title`."""
    return tuple(h for h in heading if h.strip() and _bare(h) != _bare(title))


def heading_text(heading: Sequence[str]) -> str:
    """A heading path as one line of text, `Top > Sub`."""
    return HEADING_SEPARATOR.join(heading)


def context_line(title: str, heading: Sequence[str]) -> str:
    """Title and heading path on one line, without repeating a heading that equals the title."""
    return heading_text((title, *section(title, heading)))


def chunk_id(source: str, embedded: str, *, settings: str, occurrence: int = 0) -> str:
    """The content address of a chunk: its note, what is embedded, how it was cut, and which repeat it is."""
    digest = hashlib.sha256(f"{settings}\0{embedded}\0{occurrence}".encode()).hexdigest()[:20]
    return f"{source}#{digest}"


@dataclass(frozen=True)
class _Unit:
    """Consecutive body lines [start, end) that must stay together, or a slice of one long line."""

    start: int
    end: int
    text: str
    heading: bool = False  # the section's own heading line(s)


def chunk_note(
    note: Note,
    *,
    count_tokens: TokenCounter,
    max_tokens: int,
    overlap_tokens: int = 32,
    model: str = "",
) -> list[Chunk]:
    """Split `note` into chunks whose embedding text is at most `max_tokens` tokens.

    Args:
        note: the loaded note.
        count_tokens: the model's token counter (special tokens included).
        max_tokens: budget per chunk, context included; at most the model's own limit.
        overlap_tokens: how much of a split section's previous chunk the next one repeats.
        model: the embedding model's name, part of each chunk's content address.

    Returns:
        Chunks in document order, ids `"{path}#{digest}"` (see `Chunk`).
    """
    lines = note.body.split("\n")
    chunks: list[Chunk] = []
    settings = f"{model} | {chunking_id(max_tokens, overlap_tokens)}"
    seen: dict[str, int] = {}
    for heading, blocks, headed in _sections(note.body, lines):
        context = context_line(note.title, heading) + "\n\n"
        short: str | None = None
        if max_tokens - count_tokens([context])[0] < 8:
            # A title or heading path so long that it leaves no room: embed as much of the title as leaves some.
            short = _fitting_prefix(note.title[:200], lambda t: max_tokens - count_tokens([t + "\n\n"])[0] >= 8)
            if max_tokens - count_tokens([short + "\n\n"])[0] < 8:
                short = ""
            context = short + "\n\n"

        def fits(text: str, context: str = context) -> bool:
            return count_tokens([context + text])[0] <= max_tokens

        units: list[_Unit] = []
        for n, (start, end) in enumerate(blocks):
            text = "\n".join(lines[start:end]).rstrip()
            if fits(text):
                units.append(_Unit(start, end, text, heading=headed and n == 0))
            else:
                units.extend(_split_block(lines, start, end, fits))
        groups = _pack(units, fits, count_tokens, overlap_tokens)
        for g, group in enumerate(groups):
            if all(u.heading for u in group) and g + 1 < len(groups):
                # A heading that does not fit with the text under it would be a chunk of one line, which matches
                # any question about its title and answers none. Its words are already in the heading path that
                # every chunk of the section carries and is embedded with.
                continue
            text = _join(group)
            first, last = group[0].start, max(u.end for u in group) - 1
            embedded = context + text
            occurrence = seen.get(embedded, 0)
            seen[embedded] = occurrence + 1
            chunks.append(
                Chunk(
                    id=chunk_id(note.path, embedded, settings=settings, occurrence=occurrence),
                    source=note.path,
                    note_id=note.id,
                    title=note.title,
                    tags=note.tags,
                    heading=heading,
                    text=text,
                    start_line=note.body_line + first,
                    end_line=note.body_line + last,
                    index=len(chunks),
                    note_hash=note.content_hash,
                    context=short,
                )
            )
    return chunks


def _sections(body: str, lines: list[str]) -> list[tuple[tuple[str, ...], list[tuple[int, int]], bool]]:
    """Blocks of the body grouped under their heading path, and whether the first block is the section's heading;
    every non-blank line is in exactly one block."""
    starts: list[tuple[int, str | None, int]] = []  # (line, heading text or None, heading level)
    tokens = _MARKDOWN.parse(body)
    for i, token in enumerate(tokens):
        if token.level != 0 or token.map is None or token.nesting == -1:
            continue
        if token.type == "heading_open":
            starts.append((token.map[0], tokens[i + 1].content.strip(), int(token.tag[1])))
        else:
            starts.append((token.map[0], None, 0))
    # Lines markdown-it emits no token for (link definitions, trailing text) join the block before them.
    if not starts or starts[0][0] != 0:
        starts.insert(0, (0, None, 0))
    sections: list[tuple[tuple[str, ...], list[tuple[int, int]], bool]] = []
    path: list[tuple[int, str]] = []
    current: list[tuple[int, int]] = []
    current_heading: tuple[str, ...] = ()
    headed = False
    for n, (start, heading, level) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        while end > start and not lines[end - 1].strip():
            end -= 1
        if heading is not None:
            if current:
                sections.append((current_heading, current, headed))
            path = [(lvl, text) for lvl, text in path if lvl < level] + [(level, heading)]
            current_heading = tuple(text for _, text in path if text)
            current = []
            headed = end > start
        if end > start:
            current.append((start, end))
    if current:
        sections.append((current_heading, current, headed))
    return sections


def _split_block(lines: list[str], start: int, end: int, fits: Callable[[str], bool]) -> list[_Unit]:
    """A block too large for one chunk, as line units; a single line too large, as word slices."""
    units: list[_Unit] = []
    for n in range(start, end):
        line = lines[n]
        if not line.strip():
            continue
        if fits(line):
            units.append(_Unit(n, n + 1, line))
            continue
        words = line.split(" ")
        i = 0
        while i < len(words):
            # Binary search for the longest run of words from i that fits.
            lo, hi = 1, len(words) - i
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if fits(" ".join(words[i : i + mid])):
                    lo = mid
                else:
                    hi = mid - 1
            piece = " ".join(words[i : i + lo])
            if not piece.strip():
                i += lo  # only the empty words between runs of spaces: nothing to keep
                continue
            if not fits(piece):
                piece = _fitting_prefix(piece, fits)
                words[i] = words[i][len(piece) :]
                units.append(_Unit(n, n + 1, piece))
                continue
            units.append(_Unit(n, n + 1, piece))
            i += lo
    return units


def _fitting_prefix(word: str, fits: Callable[[str], bool]) -> str:
    """The longest prefix of one enormous word that fits (a base64 blob, a URL)."""
    lo, hi = 1, len(word)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(word[:mid]):
            lo = mid
        else:
            hi = mid - 1
    return word[:lo]


def _pack(
    units: list[_Unit], fits: Callable[[str], bool], count_tokens: TokenCounter, overlap_tokens: int
) -> list[list[_Unit]]:
    """Greedy packing of units into groups that fit, each split group repeating the previous one's tail."""
    groups: list[list[_Unit]] = []
    group: list[_Unit] = []
    for unit in units:
        if group and not fits(_join(group + [unit])):
            groups.append(group)
            group = _overlap(group, count_tokens, overlap_tokens)
            if group and not fits(_join(group + [unit])):
                group = []
        group.append(unit)
    if group:
        groups.append(group)
    return groups


def _overlap(group: list[_Unit], count_tokens: TokenCounter, overlap_tokens: int) -> list[_Unit]:
    """The longest tail of `group` (not all of it) within `overlap_tokens`."""
    tail: list[_Unit] = []
    for unit in reversed(group[1:]):
        if count_tokens([_join([unit] + tail)])[0] > overlap_tokens:
            break
        tail.insert(0, unit)
    return tail


def _join(units: list[_Unit]) -> str:
    """Units as text: slices of one line join with a space; lines keep the blank lines that stood between them."""
    parts: list[str] = []
    for i, unit in enumerate(units):
        if i:
            prev = units[i - 1]
            same_line = prev.start == unit.start and unit.end - unit.start == 1
            parts.append(" " if same_line else "\n" * (1 + max(0, unit.start - prev.end)))
        parts.append(unit.text)
    return "".join(parts)
