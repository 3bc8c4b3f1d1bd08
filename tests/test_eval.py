"""`python -m rag eval`: each search mode scored on a question file, run as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.config import Config
from rag.errors import EvalInputError
from rag.evaluate import evaluate, load_questions
from rag.knowledge import KnowledgeBase

from .conftest import ROOT
from .test_cli import run  # noqa: F401 - the fixture

QUESTIONS = ROOT / "bench" / "questions" / "knowledge.jsonl"


@pytest.mark.slow
def test_eval_scores_every_mode_on_the_shipped_questions(indexed_config: Config, run) -> None:  # noqa: F811
    out = run(indexed_config, "eval", str(QUESTIONS), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["questions"] == len(load_questions(QUESTIONS)) >= 30 and report["k"] == 5
    assert set(report["modes"]) >= {"dense", "bm25", "hybrid"}
    for mode, figures in report["modes"].items():
        for key in ("recall@5", "mrr@10", "ndcg@10", "answer_found@5"):
            assert 0.0 <= figures[key] <= 1.0, (mode, key, figures[key])
        # The starter notes answer these questions: a mode that finds less than most of them is broken.
        assert figures["recall@5"] >= 0.8 and figures["mrr@10"] >= 0.7, (mode, figures)
        assert figures["mrr@10"] <= figures["recall@5"] + 1e-9 or figures["recall@5"] == 1.0
    text = run(indexed_config, "eval", str(QUESTIONS), "--mode", "dense", "-k", "1")
    assert text.returncode == 0, text.stderr
    assert "Recall@1" in text.stdout and text.stdout.count("\ndense ") == 1
    # With k=1 some expected notes come second: they are listed with what came first.
    assert "expected notes not in the first 1" in text.stdout and ", got " in text.stdout


@pytest.mark.slow
def test_a_question_whose_note_is_not_found_is_a_miss(indexed_config: Config, embedder, tmp_path: Path) -> None:
    rows = [
        {"question": "What does GloVe factorise?", "source": "glove.md", "answer": "GloVe"},
        {"question": "What does GloVe factorise?", "source": "chunking.md"},
        {"question": "What does GloVe factorise?", "source": "glove.md", "answer": "zebra unicorn phrase"},
    ]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    kb = KnowledgeBase(indexed_config, embedder=embedder)
    (dense,) = evaluate(kb, load_questions(path), k=1, modes=["dense"]).modes
    # Two of three expected notes come first; of the two rows with an answer phrase, one phrase is shown.
    assert dense.recall == pytest.approx(2 / 3, abs=1e-4) and dense.answer_found == pytest.approx(0.5)
    assert [m["expected"] for m in dense.misses] == ["chunking.md"] and dense.misses[0]["got"][0] == "glove.md"
    path.write_text(json.dumps({"question": "x", "source": "no-such-note.md"}) + "\n")
    with pytest.raises(EvalInputError, match="no-such-note.md"):
        evaluate(kb, load_questions(path), modes=["dense"])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("q.jsonl", '{"question": "a?", "source": "a.md"}\nnot json\n', "q.jsonl, line 2: not JSON"),
        ("q.jsonl", '{"question": "a?"}\n', "line 1: the field 'source' is missing or empty"),
        ("q.jsonl", '["a?", "a.md"]\n', "line 1: expected an object"),
        ("q.csv", "question,source\nwhat?,\n", "q.csv, row 2: the field 'source' is missing or empty"),
        ("q.jsonl", "\n\n", "holds no questions"),
    ],
)
def test_a_bad_question_file_names_the_row_and_field(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(EvalInputError, match=message.replace("(", r"\(").replace("?", r"\?")):
        load_questions(path)


def test_csv_rows_are_read(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("question,source,answer\nWhat is GloVe?,glove.md,co-occurrence\n")
    (q,) = load_questions(path)
    assert (q.question, q.source, q.answer, q.follow_up_of, q.row) == (
        "What is GloVe?",
        "glove.md",
        "co-occurrence",
        None,
        2,
    )


def test_a_missing_question_file_is_a_usage_error(tmp_path: Path) -> None:
    from rag.cli import main

    assert main(["eval", str(tmp_path / "none.jsonl"), "--db", str(tmp_path / "db")]) == 2
