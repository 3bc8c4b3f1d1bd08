"""`%ask` / `%%ask`: option parsing, and the magic run in a real IPython shell against a real index: the answer
above its numbered sources."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError

from demo.magic import parse_options
from demo.widget import AskResult
from rag.config import Config
from rag.knowledge import KnowledgeBase, shared_knowledge_base
from rag.retrieve import SearchResult


@pytest.mark.parametrize(
    ("line", "k", "min_score", "question"),
    [
        ("what's the point of embeddings?", 5, None, "what's the point of embeddings?"),
        ('-k 3 a "quoted" word', 3, None, 'a "quoted" word'),
        ("--min-score 0.25 -k 2 chunk size", 2, 0.25, "chunk size"),
        ("-k 2 -- -dashed question", 2, None, "-dashed question"),
        ("   spaced   out  ", 5, None, "spaced   out"),
    ],
)
def test_options_are_split_from_the_question_which_stays_as_typed(
    line: str, k: int, min_score: float | None, question: str
) -> None:
    options, rest = parse_options(line)
    assert (options["k"], options["min_score"], rest) == (k, min_score, question)
    assert options["sync"] and options["answer"]


def test_no_sync_and_no_answer_are_flags() -> None:
    options, rest = parse_options("--no-answer --no-sync -k 2 what?")
    assert (options["sync"], options["answer"], options["k"], rest) == (False, False, 2, "what?")
    options, rest = parse_options("--new what is GloVe?")
    assert options["new"] and rest == "what is GloVe?"


@pytest.mark.parametrize("line", ["--top 3 q", "-k three q", "-k", "-k 0 q", "--min-score x q", "--kb"])
def test_bad_options_are_usage_errors_that_show_the_usage(line: str) -> None:
    with pytest.raises(UsageError, match=r"-k|usage"):
        parse_options(line)


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch, indexed_config: Config, embedder):  # type: ignore[no-untyped-def]
    """A real IPython shell with the extension loaded; the default knowledge base is the test's copy."""
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("RAG_KNOWLEDGE_DIR", str(indexed_config.knowledge_dir))
    monkeypatch.setenv("RAG_DB_DIR", str(indexed_config.db_dir))
    # Hand the session's loaded model to the shared knowledge base, so the test does not load it again.
    shared = shared_knowledge_base()
    shared._embedder = embedder
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "demo")
    return ip


@pytest.mark.slow
def test_line_magic_shows_the_answer_above_its_numbered_sources(shell) -> None:  # type: ignore[no-untyped-def]
    result = shell.run_cell("%ask -k 3 what's the cosine of the angle between two vectors?").result
    # Still the search result (its hits, as before), now with the answer written from it.
    assert isinstance(result, AskResult) and isinstance(result, SearchResult) and len(result.hits) == 3
    assert result.hits[0].chunk.source == "cosine-similarity.md"
    # Hybrid ranking orders by the fused rank score; the score shown stays the cosine similarity.
    assert [h.rank_score for h in result.hits] == sorted((h.rank_score for h in result.hits), reverse=True)
    assert all(-1 <= h.score <= 1 for h in result.hits)
    answer = result.answer
    assert answer is not None and answer.mode == "extractive" and answer.citations
    assert set(answer.citations) <= {s.number for s in answer.sources}
    assert result.to_dict() == answer.result_dict() and result.to_dict()["answer"]["text"] == answer.text
    html = result._repr_html_()
    first = answer.sources[0]
    assert first.location in html and f"<code>{first.score:.3f}</code>" in html and f"{first.rank_score:.2f}" in html
    assert "relevance" in html and "cosine" in html
    # The answer, each [n] naming a listed source, comes before the table of sources.
    for n in answer.citations:
        assert f'data-source="{n}"' in html and f">[{n}]</span>" in html
    assert html.index("ragchat-sentences") < html.index("<table")
    plain = shell.display_formatter.format(result)[0]["text/plain"]
    assert plain.startswith(answer.text.split(" [")[0][:40]) and first.location in plain


@pytest.mark.slow
def test_no_answer_returns_the_plain_search_result(shell) -> None:  # type: ignore[no-untyped-def]
    result = shell.run_cell("%ask --no-answer -k 2 what is GloVe?").result
    assert type(result) is SearchResult and result.hits[0].chunk.source == "glove.md"
    html = result._repr_html_()
    assert "glove.md:" in html and f"{result.hits[0].score:.3f}" in html


@pytest.mark.slow
def test_a_question_the_notes_do_not_cover_is_refused_with_the_weak_sources(shell) -> None:  # type: ignore[no-untyped-def]
    result = shell.run_cell("%ask What is the capital of Peru?").result
    assert result.answer.mode == "refused" and not result.confident
    html = result._repr_html_()
    assert "Not in your notes." in html and "weak" in html and "<table" in html


@pytest.mark.slow
def test_a_follow_up_keeps_the_thread_until_a_new_conversation(shell) -> None:  # type: ignore[no-untyped-def]
    first = shell.run_cell("%ask --new What is word2vec?").result
    assert first.answer.searched == "What is word2vec?"
    follow = shell.run_cell("%ask How is it different from GloVe?").result
    assert follow.answer.searched == "What is word2vec? How is it different from GloVe?"
    assert "glove.md" in {s.source for s in follow.answer.sources}
    fresh = shell.run_cell("%ask --new How is it different from GloVe?").result
    assert fresh.answer.searched == fresh.question


@pytest.mark.slow
def test_cell_magic_asks_the_whole_cell(shell) -> None:  # type: ignore[no-untyped-def]
    result = shell.run_cell("%%ask -k 2\nWhen does keyword search like BM25\nbeat dense embeddings?").result
    assert result.question.startswith("When does keyword search like BM25\nbeat")
    # Both lines reached the search: the note on BM25 and dense vectors is among the two sources.
    assert "hybrid-search-bm25.md" in {h.chunk.source for h in result.hits} and len(result.hits) == 2
    assert result.answer.question == result.question and result.answer.sources


@pytest.mark.slow
def test_kb_option_uses_a_notebook_variable(shell, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other"
    other.mkdir()
    (other / "owls.md").write_text("# Owls\n\nBarn owls hunt voles at night by sound alone.\n", encoding="utf-8")
    shell.user_ns["owls_kb"] = KnowledgeBase(Config(knowledge_dir=other, db_dir=tmp_path / "db2"), embedder=embedder)
    result = shell.run_cell("%ask --kb owls_kb how do owls find prey in the dark?").result
    assert [h.chunk.source for h in result.hits] == ["owls.md"]
    failed = shell.run_cell("%ask --kb missing_kb anything")
    assert failed.result is None and isinstance(failed.error_in_exec, UsageError)


@pytest.mark.slow
def test_an_empty_question_prints_the_library_error(shell, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert shell.run_cell("%ask   ").result is None
    assert "error: the question is empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("%ask what is a vector?\n", "get_ipython().run_line_magic('ask', 'what is a vector?')\n"),
        ("r = %ask -k 2 why?\n", "r = get_ipython().run_line_magic('ask', '-k 2 why?')\n"),
        ("x = 1\n  %ask what's 'this'??\n", "x = 1\n  get_ipython().run_line_magic('ask', \"what's 'this'??\")\n"),
        ("%%ask\n%ask inside a cell magic?\n", "%%ask\n%ask inside a cell magic?\n"),
        ("%asking?\n", "%asking?\n"),
    ],
)
def test_ask_lines_keep_their_question_marks(cell: str, expected: str) -> None:
    from demo.magic import keep_question_marks

    assert "".join(keep_question_marks(cell.splitlines(keepends=True))) == expected
