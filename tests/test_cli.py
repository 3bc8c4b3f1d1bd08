"""The command line, run as a user runs it: exit codes, messages and JSON shapes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from bench._process import child_env
from rag.config import Config
from rag.errors import SkipNote
from rag.load import parse_note

from .conftest import ROOT

HIT_KEYS = {"score", "text", "source", "title", "heading", "start_line", "end_line", "tags"}


@pytest.fixture
def run(rag_cache_dir: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run `python -m rag ARGS` on a config's folders, as a user would; returns the finished process."""

    def run_cli(
        config: Config, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        where = {"RAG_KNOWLEDGE_DIR": str(config.knowledge_dir), "RAG_DB_DIR": str(config.db_dir), **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "rag", *args],
            cwd=ROOT,
            input=stdin,
            capture_output=True,
            text=True,
            env=child_env(where, cache_dir=rag_cache_dir),
            timeout=600,
        )

    return run_cli


@pytest.mark.slow
def test_index_json_shape(indexed_config: Config, run) -> None:
    raw = b"\x00\x01binary"
    (indexed_config.knowledge_dir / "broken.md").write_bytes(raw)
    out = run(indexed_config, "index", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {k: report[k] for k in ("added", "updated", "removed", "unchanged", "notes")} == {
        "added": 0,
        "updated": 0,
        "removed": 0,
        "unchanged": 14,
        "notes": 14,
    }
    assert isinstance(report["chunks"], int) and report["chunks"] > 14
    # The CLI reports the loader's own reason for refusing the file, word for word.
    with pytest.raises(SkipNote) as refused:
        parse_note("broken.md", raw)
    assert "binary" in refused.value.reason
    assert report["skipped"] == [{"path": "broken.md", "reason": refused.value.reason}]


@pytest.mark.slow
def test_ask_json_answers_from_the_starter_notes(indexed_config: Config, run) -> None:
    out = run(indexed_config, "ask", "what are embeddings?", "--json", "-k", "3")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) >= {"question", "confident", "hits"} and result["question"] == "what are embeddings?"
    assert len(result["hits"]) == 3 and all(set(h) >= HIT_KEYS for h in result["hits"])
    assert all(isinstance(h["score"], float) for h in result["hits"])
    assert result["hits"][0]["source"] == "what-are-embeddings.md"


@pytest.mark.slow
def test_ask_text_shows_score_title_heading_and_location(indexed_config: Config, run) -> None:
    out = run(indexed_config, "ask", "cosine similarity formula", "-k", "2", "--min-score", "0.2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # The answer comes first: quoted sentences, each with the number of a source listed below it.
    assert re.search(r"\. \[[12]\]", lines[0]), lines[0]
    first = next(i for i, line in enumerate(lines) if line.startswith("[1] "))
    assert re.match(r"\[1\] relevance [01]\.\d\d, cosine 0\.\d\d", lines[first]), lines[first]
    assert "Cosine Similarity and Other Distances" in lines[first]
    assert lines[first + 1].strip().startswith("cosine-similarity.md:")
    assert any(line.startswith("Sources, in order of relevance (relevance is") for line in lines)


@pytest.mark.slow
def test_ask_json_has_a_checked_answer_and_readable_sources(indexed_config: Config, run) -> None:
    out = run(indexed_config, "ask", "How is GloVe different from word2vec?", "--json", "-k", "4")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    answer = result["answer"]
    assert set(answer) >= {"mode", "text", "citations", "unsupported", "model"}
    assert answer["mode"] == "extractive" and answer["model"] is None
    numbers = [s["number"] for s in result["sources"]]
    assert answer["citations"] and set(answer["citations"]) <= set(numbers)
    # Quoted sentences are the sources' own words, so every one is supported.
    assert answer["unsupported"] == 0 and all(s["supported"] for s in answer["sentences"])
    for n in re.findall(r"\[(\d+)\]", answer["text"]):
        assert int(n) in numbers
    # Sources are passages: the hits of one note that touch are one source, and each names its lines.
    first = result["sources"][0]
    assert first["source"] == "glove.md" and first["location"].startswith("glove.md:")
    assert first["hit_ids"] and set(first["hit_ids"]) <= {h["id"] for h in result["hits"]}
    assert len(first["text"]) >= len(result["hits"][0]["text"]) * 0.5


@pytest.mark.slow
def test_ask_refuses_what_the_notes_do_not_cover(indexed_config: Config, run) -> None:
    out = run(indexed_config, "ask", "What is the capital of Peru?", "--json")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)["answer"]
    assert answer["mode"] == "refused" and answer["citations"] == [] and answer["model"] is None
    assert "not" in answer["text"].lower() and "notes" in answer["text"].lower()


@pytest.mark.slow
def test_batch_prints_one_json_line_per_question(indexed_config: Config, run) -> None:
    out = run(indexed_config, "ask", "--batch", "-", "-k", "2", stdin="what is GloVe?\n\nwhat is BM25?\n")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["question"] for r in lines] == ["what is GloVe?", "what is BM25?"]
    assert lines[0]["hits"][0]["source"] == "glove.md" and lines[1]["hits"][0]["source"] == "hybrid-search-bm25.md"
    assert all(line["answer"]["mode"] in ("extractive", "refused") and line["sources"] for line in lines)


@pytest.mark.slow
def test_add_note_writes_indexes_and_never_overwrites(indexed_config: Config, run) -> None:
    body = "Zanzibar vectors are a made-up kind of embedding used only in this test."
    out = run(indexed_config, "add-note", "--title", "Zanzibar Vectors", "--tags", "test,made-up", "--json", stdin=body)
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created == {"path": "zanzibar-vectors.md", "id": "zanzibar-vectors"}
    text = (indexed_config.knowledge_dir / created["path"]).read_text()
    assert text.startswith("---\nid: zanzibar-vectors\ntitle: Zanzibar Vectors\ntags:")
    status = json.loads(run(indexed_config, "status", "--json").stdout)
    assert {"path": "zanzibar-vectors.md", "state": "indexed"}.items() <= next(
        f for f in status["files"] if f["path"] == "zanzibar-vectors.md"
    ).items()

    again = run(indexed_config, "add-note", "--title", "Zanzibar Vectors", "--text", "other")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert (indexed_config.knowledge_dir / created["path"]).read_text() == text


@pytest.mark.slow
def test_status_lists_files_totals_model_and_db(indexed_config: Config, run) -> None:
    out = run(indexed_config, "status")
    assert out.returncode == 0, out.stderr
    assert "indexed  cosine-similarity.md" in out.stdout
    assert "14 notes" in out.stdout and "model: all-MiniLM-L6-v2" in out.stdout
    assert f"database: {indexed_config.db_dir}" in out.stdout


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        ((), {}, 2, "required: COMMAND"),
        (("ask", "x", "-k", "many"), {}, 2, "invalid int value"),
        (
            (
                "ask",
                "   ",
            ),
            {},
            1,
            "question is empty",
        ),
        (("index",), {"RAG_KNOWLEDGE_DIR": "/nonexistent/notes"}, 1, "does not exist; create it or pass --knowledge"),
        (("index",), {"RAG_MODLE": "x"}, 2, "unknown setting RAG_MODLE"),
        (("add-note", "--title", "...", "--text", "x"), {}, 1, "cannot make a file name"),
    ],
)
def test_errors_exit_with_a_code_and_a_message(config: Config, run, args, env, code: int, message: str) -> None:
    # None of these gets as far as the model or the store, so an empty, unindexed folder will do.
    out = run(config, *args, env=env)
    assert out.returncode == code
    assert message in out.stderr
    assert "Traceback" not in out.stderr
