"""bench/answers.py end to end on three questions with the extractive writer (real model, store in a temp folder),
and its rough phrase match on its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.answers import contains, main, percentile, read_questions

QUESTIONS = Path(__file__).resolve().parent.parent / "bench" / "questions"


@pytest.mark.parametrize(
    ("text", "phrase", "found"),
    [
        ("Around 10–20% of the chunk size is common.", "10-20%", True),
        ("It lies between −1 and 1.", "between -1 and 1", True),
        ("they usually have a fairly *high* cosine", "high cosine", True),
        ("Global Vectors for Word Representation", "global vectors for word representation", True),
        ("Global Vectors for Words", "Global Vectors for Word Representation", False),
        ("", "15%", False),
    ],
)
def test_phrase_match_ignores_case_dashes_and_emphasis_only(text: str, phrase: str, found: bool) -> None:
    assert contains(text, phrase) is found


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([0.1 * i for i in range(11)], 0.9) == pytest.approx(0.9)


def test_question_sets_are_well_formed() -> None:
    answerable = read_questions(QUESTIONS / "knowledge.jsonl")
    notes = {p.name for p in (QUESTIONS.parent.parent / "knowledge").glob("*.md")}
    asked = [q["question"] for q in answerable]
    assert len(answerable) >= 25 and len(set(asked)) == len(asked)
    for i, q in enumerate(answerable):
        assert q["source"] in notes and q["answer"]
        # The expected phrase is in its note, as the bench reads it.
        assert contains((QUESTIONS.parent.parent / "knowledge" / q["source"]).read_text(), q["answer"]), q
        if "follow_up_of" in q:
            assert q["follow_up_of"] == asked[i - 1]
    unanswerable = read_questions(QUESTIONS / "knowledge-unanswerable.jsonl")
    assert {q["kind"] for q in unanswerable} == {"in-domain", "off-topic"} and len(unanswerable) >= 15


@pytest.mark.slow
def test_bench_answers_three_questions_extractive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    answerable = tmp_path / "answerable.jsonl"
    answerable.write_text(
        json.dumps(
            {
                "question": "What does the acronym GloVe stand for?",
                "source": "glove.md",
                "answer": "Global Vectors for Word Representation",
            }
        )
        + "\n"
        + json.dumps({"question": "Who published word2vec?", "source": "word2vec.md", "answer": "Tomas Mikolov"})
        + "\n"
    )
    unanswerable = tmp_path / "unanswerable.jsonl"
    unanswerable.write_text(json.dumps({"question": "Who won the 2018 FIFA World Cup?", "kind": "off-topic"}) + "\n")
    out = tmp_path / "result.json"
    args = ["--writers", "extractive", "--questions", str(answerable), "--unanswerable", str(unanswerable)]
    assert main([*args, "--json-out", str(out)]) == 0

    printed = capsys.readouterr().out
    assert printed.startswith("threads: torch 1, llama.cpp 1")
    assert "| writer | answered | contains |" in printed and "| extractive | 2/2 |" in printed
    result = json.loads(out.read_text())
    assert result["threads"]["torch"] == 1 and result["questions"] == {
        "answerable": 2,
        "follow_ups": 0,
        "in-domain": 0,
        "off-topic": 1,
    }
    assert result["index"]["notes"] == 14 and result["index"]["chunks"] > 14
    (run,) = result["writers"]
    assert run["writer"] == "extractive" and run["model"] is None and run["load_s"] == 0.0
    summary = run["summary"]
    assert summary["refused"] == {"answerable": 0.0, "in-domain": None, "off-topic": 1.0}
    assert summary["contains"] == 1.0 and summary["cites_note"] == 1.0 and summary["in_sources"] == 1.0
    # Quoted sentences support themselves.
    assert summary["unsupported_share"] == 0.0 and summary["support"]["p10"] == pytest.approx(1.0, abs=0.01)
    assert 0 < summary["first_p50_ms"] <= summary["answer_p95_ms"] < 30_000
    glove, word2vec, off_topic = run["answers"]
    assert glove["mode"] == "extractive" and glove["citations"] and "glove.md" in glove["cited_notes"]
    assert glove["first_ms"] == glove["answer_ms"]  # an extractive answer has only its final draft
    assert "Tomas Mikolov" in word2vec["text"] and word2vec["expected_source"] == "word2vec.md"
    assert off_topic["mode"] == "refused" and off_topic["citations"] == [] and "contains" not in off_topic


def test_long_note_questions_name_the_section_that_states_their_phrase() -> None:
    notes = QUESTIONS / "long-notes"
    questions = read_questions(QUESTIONS / "long.jsonl")
    assert len(questions) >= 20 and len(list(notes.glob("*.md"))) == 4
    for q in questions:
        sections = (notes / q["source"]).read_text().split("\n## ")
        (section,) = [s for s in sections if s.startswith(q["section"] + "\n")]
        assert contains(section, q["answer"]), q


def test_overlapping_counts_sources_that_repeat_lines_of_an_earlier_one() -> None:
    from types import SimpleNamespace as Source

    from bench.passages import overlapping

    sources = [Source(source="a.md", start_line=10, end_line=20), Source(source="a.md", start_line=21, end_line=30)]
    assert overlapping(sources) == 0
    sources += [Source(source="b.md", start_line=10, end_line=20), Source(source="a.md", start_line=15, end_line=16)]
    assert overlapping(sources) == 1
