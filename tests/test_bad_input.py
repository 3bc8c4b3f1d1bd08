"""Bad input: random bytes and Markdown into the loader and chunker, a folder of nasty files, odd questions.

Only the hypothesis test of pure chunking logic uses a fake token counter (it runs thousands of cases); the same
property then runs with the model's real tokenizer, and the nasty folder is synced with the real model.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.chunk import Chunk, chunk_note, context_line
from rag.cli import main
from rag.config import Config
from rag.errors import EmptyQuestionError, SkipNote
from rag.knowledge import KnowledgeBase
from rag.load import Note, parse_note

ROOT = Path(__file__).resolve().parent.parent


def fake_count_tokens(texts):
    """Roughly a word piece per four bytes, plus the two special tokens: monotonic, like the real one."""
    return [len(t.encode("utf-8")) // 4 + 2 for t in texts]


def check_chunks(note: Note, chunks: list[Chunk], count_tokens, budget: int) -> None:
    """Invariants every chunking must keep."""
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(c.id.startswith(f"{note.path}#") for c in chunks) and len({c.id for c in chunks}) == len(chunks)
    lines = note.body_line + note.body.count("\n")
    for chunk in chunks:
        assert chunk.text.strip(), "an empty chunk"
        assert count_tokens([chunk.embedding_text])[0] <= budget, f"chunk {chunk.id} is over the budget"
        assert note.body_line <= chunk.start_line <= chunk.end_line <= lines
        assert chunk.note_hash == note.content_hash


def parse_or_skip(raw: bytes) -> Note | None:
    try:
        return parse_note("random.md", raw)
    except SkipNote as exc:
        assert exc.reason and exc.path == "random.md"
        return None


# ---------------------------------------------------------------- property tests

FRAGMENTS = st.sampled_from(
    [
        "# ",
        "## ",
        "###### ",
        "####### ",
        "- ",
        "* ",
        "1. ",
        "> ",
        "    ",
        "\t",
        "```",
        "~~~",
        "---",
        "***",
        "| a | b |",
        "|---|---|",
        "| 1 |",
        "<div>",
        "</div>",
        "<script>alert(1)</script>",
        "[x]: http://e",
        "![i](x.png)",
        "**",
        "_",
        "`",
        "\\",
        "&amp;",
        "\n",
        "\n\n",
        "\r\n",
        "\r",
        " ",
        "title: x",
        "tags: [a, b]",
        "id: 7",
        ":",
        "{",
        "}",
        "[",
        "]",
        "\u200b",
        "\ufeff",
        "é",
        "中文",
        "مرحبا",
        "🙂",
        "\x00",
        "\x7f",
    ]
)
MARKDOWN = st.lists(st.one_of(FRAGMENTS, st.text(max_size=40)), max_size=80).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_only_ever_raise_skip_note(raw: bytes) -> None:
    note = parse_or_skip(raw)
    if note is not None:
        check_chunks(note, chunk_note(note, count_tokens=fake_count_tokens, max_tokens=64), fake_count_tokens, 64)


@settings(max_examples=400, deadline=None)
@given(MARKDOWN, st.integers(min_value=24, max_value=256), st.integers(min_value=0, max_value=48))
def test_random_markdown_chunks_within_budget(text: str, budget: int, overlap: int) -> None:
    note = parse_or_skip(text.encode("utf-8"))
    if note is None:
        return
    chunks = chunk_note(note, count_tokens=fake_count_tokens, max_tokens=budget, overlap_tokens=overlap)
    check_chunks(note, chunks, fake_count_tokens, budget)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(MARKDOWN)
def test_random_markdown_with_the_real_tokenizer(embedder, text: str) -> None:
    note = parse_or_skip(text.encode("utf-8"))
    if note is None:
        return
    chunks = chunk_note(note, count_tokens=embedder.count_tokens, max_tokens=48, overlap_tokens=16)
    check_chunks(note, chunks, embedder.count_tokens, 48)


# ---------------------------------------------------------------- a folder of nasty files


def nested_headings(depth: int) -> str:
    return "\n".join("  " * i + f"- {'#' * min(i + 1, 6)} Level {i + 1} heading" for i in range(depth)) + "\n"


@pytest.fixture
def nasty(tmp_path: Path) -> Path:
    folder = tmp_path / "knowledge"
    folder.mkdir()
    (folder / "fine.md").write_text("# Fine\n\nAn ordinary note about vector search, to show the rest still works.\n")
    (folder / "binary.md").write_bytes(bytes(range(256)) * 8)
    (folder / "empty.md").write_bytes(b"")
    with (folder / "huge.md").open("wb") as huge:
        huge.write(b"# Huge\n\n" + b"word " * (20 * 1024 * 1024 // 5))
    (folder / "latin1.md").write_bytes("# Caf\xe9\n\nDéjà vu in Latin-1.\n".encode("latin-1"))
    (folder / "bom.md").write_bytes("\ufeff# With a BOM\n\nThe byte order mark must not reach the title.\n".encode())
    (folder / "crlf.md").write_bytes(b"# Windows lines\r\n\r\nFirst paragraph.\r\n\r\n## Second\r\n\r\nMore text.\r\n")
    table = "# Big table\n\n| n | square |\n|---|---|\n" + "".join(f"| {i} | {i * i} |\n" for i in range(10_000))
    (folder / "table.md").write_text(table)
    (folder / "deep.md").write_text("# Deep\n\n" + nested_headings(50))
    (folder / "loop-a.md").symlink_to(folder / "loop-b.md")
    (folder / "loop-b.md").symlink_to(folder / "loop-a.md")
    (folder / "dangling.md").symlink_to(folder / "nowhere.md")
    (folder / "loopdir").symlink_to(folder)  # a folder loop: never followed
    (folder / "folder.md").mkdir()
    (folder / "folder.md" / "inside.md").write_text("# Inside\n\nA note in a folder whose name ends in .md.\n")
    os.mkfifo(folder / "pipe.md")
    locked = folder / "locked.md"
    locked.write_text("# Locked\n\nOnly its owner may read this.\n")
    locked.chmod(0)
    return folder


SKIPPED_BECAUSE = {
    "binary.md": "binary",
    "empty.md": "empty",
    "huge.md": "over the limit",
    "latin1.md": "not valid UTF-8",
    "loop-a.md": "cannot be read",
    "loop-b.md": "cannot be read",
    "dangling.md": "cannot be read",
    "pipe.md": "not a regular file",
}
INDEXED = {"fine.md", "bom.md", "crlf.md", "table.md", "deep.md", "folder.md/inside.md"}


@pytest.mark.slow
def test_nasty_folder_is_skipped_with_reasons_or_indexed(tmp_path: Path, nasty: Path, embedder) -> None:
    kb = KnowledgeBase(Config(knowledge_dir=nasty, db_dir=tmp_path / "db"), embedder=embedder)
    report = kb.sync()
    skipped = {s.path: s.reason for s in report.skipped}
    for name, why in SKIPPED_BECAUSE.items():
        assert why in skipped.get(name, ""), f"{name}: {skipped.get(name)!r}"
    indexed = {c.source for c in kb.store.iter_chunks()}
    # Root reads a file whatever its mode, so locked.md is indexed here; test_unreadable_file_is_skipped checks
    # the refusal as an unprivileged user.
    expected = INDEXED | ({"locked.md"} if os.geteuid() == 0 else set())
    if os.geteuid() != 0:
        assert "cannot be read" in skipped["locked.md"]
    assert indexed == expected
    assert set(skipped) == set(SKIPPED_BECAUSE) | ({"locked.md"} if os.geteuid() != 0 else set())

    budget = min(kb.config.chunk_tokens, embedder.max_tokens)
    stored = list(kb.store.iter_chunks(with_text=True))
    for chunk in stored:
        assert chunk.embedding_text.startswith(context_line(chunk.title, chunk.heading) + "\n\n")
        assert embedder.count_tokens([chunk.embedding_text])[0] <= budget, f"{chunk.id} is over {budget} tokens"
    titles = {c.source: c.title for c in stored}
    assert titles["bom.md"] == "With a BOM" and titles["crlf.md"] == "Windows lines"
    assert not any("\r" in c.text for c in stored)
    table_rows = "\n".join(c.text for c in stored if c.source == "table.md")
    assert "| 9999 | 99980001 |" in table_rows and "| 0 | 0 |" in table_rows
    assert "Level 50 heading" in "\n".join(c.text + " > ".join(c.heading) for c in stored if c.source == "deep.md")

    # The status view copes with the same folder, and a second sync has nothing left to do.
    states = {f.path: f.state for f in kb.status().files}
    assert {p for p, s in states.items() if s == "skipped"} == set(skipped)
    again = kb.sync()
    assert (again.added, again.updated, again.removed) == (0, 0, 0)


UNPRIVILEGED = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from rag.errors import SkipNote
    from rag.load import read_bytes
    # Become nobody after the imports (the interpreter lives under /root): permissions now apply.
    os.setgid(65534)
    os.setuid(65534)
    try:
        read_bytes(Path(sys.argv[1]), "locked.md", max_bytes=1000)
    except SkipNote as exc:
        print(exc.reason)
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges to nobody needs root")
def test_unreadable_file_is_skipped_for_an_ordinary_user(tmp_path: Path) -> None:
    """Tests run as root, which reads any file; a child that became `nobody` meets the permission bits."""
    tmp_path.chmod(0o755)
    locked = tmp_path / "locked.md"
    locked.write_text("# Locked\n\nsecret\n")
    locked.chmod(0)
    result = subprocess.run(
        [sys.executable, "-c", UNPRIVILEGED, str(locked)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "cannot be read" in result.stdout and "Permission denied" in result.stdout


# ---------------------------------------------------------------- odd questions

QUESTIONS = {
    "long": "what is cosine similarity " * 4000,  # about 100 KB; the model reads its first 256 tokens
    "emoji": "🙂🚀🔥🤖📚",
    "punctuation": "?!.,;:()[]{}…—",
    "chinese": "什么是词向量？",
    "arabic": "ما هو التضمين الدلالي؟",
    "zero width": "\u200b\u200d",
}
# Only the long question is about something the starter notes explain; for the others no note is a confident match.
CONFIDENT_SOURCE = {"long": "cosine-similarity.md"}


@pytest.mark.slow
def test_odd_questions_get_answers_or_a_clear_error(
    tmp_path: Path, knowledge: Path, embedder, rag_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = KnowledgeBase(Config(knowledge_dir=knowledge, db_dir=tmp_path / "db"), embedder=embedder)
    kb.sync()
    for blank in ("", "   ", "\n\t"):
        with pytest.raises(EmptyQuestionError, match="the question is empty"):
            kb.search(blank)
    assert len(QUESTIONS["long"].encode()) >= 100_000
    for name, question in QUESTIONS.items():
        result = kb.search(question, k=3)
        hits = result.to_dict()["hits"]
        assert len(hits) == 3, name
        assert all(-1.0 <= h["score"] <= 1.0 for h in hits), name
        assert result.confident is (name in CONFIDENT_SOURCE), f"{name}: {result.reason}"
        if name in CONFIDENT_SOURCE:
            assert hits[0]["source"] == CONFIDENT_SOURCE[name]
        assert result.reason, name
    # The CLI loads its own model; its ONNX export goes to the session's temporary cache, not ~/.cache/rag.
    monkeypatch.setenv("RAG_CACHE_DIR", str(rag_cache_dir))
    out = io.StringIO()
    assert (
        main(
            ["ask", QUESTIONS["arabic"], "--json", "--knowledge", str(knowledge), "--db", str(tmp_path / "db")],
            stdout=out,
        )
        == 0
    )
    reply = json.loads(out.getvalue())
    assert reply["question"] == QUESTIONS["arabic"]
    assert reply["confident"] is False and len(reply["hits"]) == 5


def test_empty_question_from_the_cli_is_a_message_not_a_traceback(tmp_path: Path, knowledge: Path, capsys) -> None:
    code = main(["ask", "  ", "--knowledge", str(knowledge), "--db", str(tmp_path / "db")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: the question is empty") and "Traceback" not in err
