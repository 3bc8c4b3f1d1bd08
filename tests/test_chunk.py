"""Chunking: budgets in real model tokens, every line kept, heading paths, blocks kept whole."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from rag.chunk import Chunk, chunk_note
from rag.embed import SentenceTransformerEmbedder
from rag.load import Note, find_notes, load_note, parse_note

from .conftest import FIXTURES, KNOWLEDGE

BUDGETS = [256, 200, 96, 48]


def chunks_for(note: Note, embedder: SentenceTransformerEmbedder, budget: int, overlap: int = 16) -> list[Chunk]:
    return chunk_note(note, count_tokens=embedder.count_tokens, max_tokens=budget, overlap_tokens=overlap)


def nasty_notes() -> list[Note]:
    long_line = " ".join(f"word{i}" for i in range(3000))
    blob = "A" * 5000
    table = "| a | b |\n| --- | --- |\n" + "\n".join(f"| row {i} | value {i * i} |" for i in range(400))
    code = "```\n" + "\n".join(f"line_{i} = {i}" for i in range(300)) + "\n```"
    deep = "\n".join("  " * i + f"- level {i}" for i in range(50))
    headings = "\n\n".join(f"{'#' * (1 + i % 6)} Heading {i}\n\ntext {i}" for i in range(30))
    texts = {
        "long-line.md": f"# Long\n\n{long_line}\n",
        "blob.md": f"# Blob\n\n{blob}\n",
        "table.md": f"# Table\n\n{table}\n",
        "code.md": f"# Code\n\n{code}\n",
        "deep.md": f"# Deep\n\n{deep}\n",
        "headings.md": headings,
        "no-heading.md": "plain text only\n\nsecond paragraph",
    }
    notes = [parse_note(name, text.encode()) for name, text in texts.items()]
    return notes + [load_note(FIXTURES, FIXTURES / "nasty.md")]


def all_notes() -> list[Note]:
    return [load_note(KNOWLEDGE, p) for p in find_notes(KNOWLEDGE)] + nasty_notes()


@pytest.mark.parametrize("budget", BUDGETS)
def test_no_chunk_exceeds_the_budget_in_model_tokens(embedder: SentenceTransformerEmbedder, budget: int) -> None:
    for note in all_notes():
        chunks = chunks_for(note, embedder, budget)
        assert chunks, note.path
        sizes = embedder.count_tokens([c.embedding_text for c in chunks])
        assert max(sizes) <= budget, (note.path, max(sizes))


@pytest.mark.parametrize("budget", [256, 64])
def test_every_body_line_lands_in_some_chunk(embedder: SentenceTransformerEmbedder, budget: int) -> None:
    for note in all_notes():
        chunks = chunks_for(note, embedder, budget)
        covered = {n for c in chunks for n in range(c.start_line, c.end_line + 1)}
        # A heading that could not share a chunk with its text lives on in the heading path each chunk of its
        # section carries and is embedded with.
        paths = {c.heading[-1] for c in chunks if c.heading}
        text = "\n".join(c.text + "\n" + " ".join(c.heading) for c in chunks)
        squeezed = "".join(text.split())
        for offset, line in enumerate(note.body.split("\n")):
            if line.strip():
                in_path = line.startswith("#") and line.lstrip("#").strip() in paths
                assert note.body_line + offset in covered or in_path, (note.path, line)
                # A line split into word slices still has every word in some chunk; a word too long for one
                # chunk (a blob, a long table rule) is cut into pieces, so look for its start.
                words = line.lstrip("#").split()
                assert all(word[:20] in squeezed for word in words), (note.path, line[:60])


@pytest.mark.parametrize("budget", [256, 128, 64])
def test_no_chunk_is_only_a_heading_when_its_section_has_text(
    embedder: SentenceTransformerEmbedder, budget: int
) -> None:
    for note in all_notes():
        chunks = chunks_for(note, embedder, budget)
        lone = [c for c in chunks if c.text.lstrip().startswith("#") and "\n" not in c.text.strip()]
        # A lone heading may stay only as the last chunk of a section that has nothing under it.
        for chunk in lone:
            later = [c for c in chunks if c.index > chunk.index and c.heading == chunk.heading]
            assert not later, (note.path, chunk.text, budget)


def test_chunk_lines_point_at_the_file(embedder: SentenceTransformerEmbedder) -> None:
    path = FIXTURES / "nasty.md"
    file_lines = path.read_text().split("\n")
    for chunk in chunks_for(load_note(FIXTURES, path), embedder, 256):
        first = chunk.text.split("\n")[0]
        assert file_lines[chunk.start_line - 1] == first
        assert file_lines[chunk.end_line - 1] == chunk.text.split("\n")[-1]


def test_heading_paths_follow_the_document(embedder: SentenceTransformerEmbedder) -> None:
    note = load_note(FIXTURES, FIXTURES / "nasty.md")
    chunks = chunks_for(note, embedder, 256)
    by_heading = {c.heading: c for c in chunks}
    assert list(by_heading) == [
        (),
        ("Top",),
        ("Top", "Code"),
        ("Top", "Table"),
        ("Top", "Table", "Deeper"),
        ("Second Top",),
    ]
    assert by_heading[()].text.startswith("Text before any heading")
    # The link definition (no markdown-it token) stays with the block before it.
    assert "a-link-definition" in by_heading[("Top",)].text
    assert all(c.title == "Nasty Note" and c.tags == ("fixture",) and c.note_id == "nasty" for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(c.id.startswith("nasty.md#") for c in chunks) and len({c.id for c in chunks}) == len(chunks)


def test_code_blocks_and_tables_stay_whole_when_they_fit(embedder: SentenceTransformerEmbedder) -> None:
    chunks = chunks_for(load_note(FIXTURES, FIXTURES / "nasty.md"), embedder, 256)
    code = next(c for c in chunks if c.heading == ("Top", "Code"))
    assert "```python" in code.text and code.text.rstrip().endswith("```")
    table = next(c for c in chunks if c.heading == ("Top", "Table"))
    assert "| king |" in table.text and "| queen |" in table.text


def test_a_long_section_is_split_with_overlap(embedder: SentenceTransformerEmbedder) -> None:
    text = "# Long\n\n" + "\n\n".join(f"Paragraph {i} says something about vectors number {i}." for i in range(60))
    chunks = chunks_for(parse_note("l.md", text.encode()), embedder, 96, overlap=24)
    assert len(chunks) > 3
    for before, after in itertools.pairwise(chunks):
        assert after.start_line <= before.end_line, "consecutive pieces of one section share some lines"
        assert after.start_line > before.start_line


def test_embedding_text_carries_title_and_heading_once(embedder: SentenceTransformerEmbedder) -> None:
    note = parse_note("e.md", b"---\ntitle: Embeddings\n---\n# Embeddings\n\n## In Practice\n\nText.")
    chunk = chunks_for(note, embedder, 256)[-1]
    assert chunk.heading == ("Embeddings", "In Practice") and chunk.section == ("In Practice",)
    assert chunk.embedding_text.startswith("Embeddings > In Practice\n\n## In Practice")


def test_seed_style_note_chunks_cleanly(embedder: SentenceTransformerEmbedder, tmp_path: Path) -> None:
    body = "---\nid: x\ntitle: T\n---\n" + "\n\n".join(f"## Part {i}\n\nSome words here." for i in range(5))
    note = parse_note("seed.md", body.encode())
    chunks = chunks_for(note, embedder, 256)
    assert [c.heading for c in chunks] == [(f"Part {i}",) for i in range(5)]
    assert chunks[0].start_line == 5  # front matter is lines 1-4


def test_chunk_ids_are_content_addresses(embedder: SentenceTransformerEmbedder) -> None:
    """The same text cut the same way keeps its id wherever it moves; other settings or text give other ids, and
    two identical pieces of one note stay distinct."""
    body = "# Doc\n\n" + "\n\n".join(f"## Part {i}\n\nParagraph {i} is about vectors." for i in range(4))
    before = chunks_for(parse_note("d.md", body.encode()), embedder, 64)
    moved = "# Doc\n\nA new first paragraph.\n\n" + body.split("\n\n", 1)[1]
    after = chunks_for(parse_note("d.md", moved.encode()), embedder, 64)
    same_text = [c for c in before if any((a.heading, a.text) == (c.heading, c.text) for a in after)]
    kept = {c.id for c in before} & {c.id for c in after}
    assert len(same_text) >= 4 and kept == {c.id for c in same_text}
    moved_lines = {c.id: c.start_line for c in after}
    assert all(moved_lines[c.id] > c.start_line for c in same_text)
    other = chunks_for(parse_note("d.md", body.encode()), embedder, 96)
    assert not {c.id for c in other} & {c.id for c in before}
    twice = parse_note("t.md", b"## Same\n\nSame words.\n\n## Same\n\nSame words.")
    ids = [c.id for c in chunks_for(twice, embedder, 64)]
    assert len(ids) == 2 and len(set(ids)) == 2
