"""The benchmarks run end to end on a tiny BEIR-format fixture (real model, real Chroma, real ranx)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench._process import child_env
from bench.beir import load_beir, take_slice, write_notes
from rag.load import load_note

ROOT = Path(__file__).resolve().parent.parent
TINY = Path(__file__).resolve().parent / "fixtures" / "beir-tiny"


def test_load_and_slice_keep_only_judged_queries_and_needed_documents() -> None:
    beir = load_beir(TINY, "test")
    assert set(beir.queries) == {"q1", "q2", "q3", "q4", "q5", "q6"}
    part = take_slice(beir, limit=2, distractors=3)
    assert list(part.queries) == ["q1", "q2"]
    assert {"d1", "d13", "d4"} <= set(part.corpus) and len(part.corpus) == 6


def test_documents_become_notes_with_their_title(tmp_path: Path) -> None:
    beir = load_beir(TINY, "test")
    sources = write_notes(beir.corpus, tmp_path)
    assert sources["d4.md"] == "d4"
    note = load_note(tmp_path, tmp_path / "d4.md")
    assert note.title == "Vitamin D and bone health" and note.body.strip().startswith("Vitamin D helps")


def test_missing_qrels_file_is_named() -> None:
    with pytest.raises(SystemExit, match="qrels/dev.tsv"):
        load_beir(TINY, "dev")


@pytest.mark.slow
def test_retrieval_benchmark_smoke_run(tmp_path: Path, rag_cache_dir: Path) -> None:
    out = tmp_path / "result.json"
    args = ["--data", str(TINY), "--limit", "4", "--distractors", "8", "--workdir", str(tmp_path / "work")]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "retrieval.py"), *args, "--json-out", str(out), "--encoders", "fp32"],
        capture_output=True,
        text=True,
        env=child_env(cache_dir=rag_cache_dir),
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["queries"] == 4 and result["documents"] == 13
    assert [r["mode"] for r in result["runs"]] == ["dense", "bm25", "hybrid"]
    for row in result["runs"]:
        for metric in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
            assert 0.0 <= row[metric] <= 1.0
        assert row["p50_ms"] > 0 and row["peak_rss_mb"] > 0
    # These questions are easy: every mode must find the judged notes.
    assert all(r["recall@10"] == 1.0 for r in result["runs"])
    assert result["ingest"]["fp32"]["chunks_per_s"] > 0
    assert "| fp32 | hybrid |" in done.stdout

    # A zero skips the timing (it used to stop with an IndexError); the index built above is reused.
    untimed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "retrieval.py"), *args, "--json-out", str(out), "--encoders", "fp32"]
        + ["--latency-queries", "0"],
        capture_output=True,
        text=True,
        env=child_env(cache_dir=rag_cache_dir),
        timeout=1500,
    )
    assert untimed.returncode == 0, untimed.stderr
    rows = json.loads(out.read_text())["runs"]
    assert len(rows) == 3 and not any("p50_ms" in r for r in rows) and all(r["recall@10"] == 1.0 for r in rows)


@pytest.mark.slow
def test_calibration_benchmark_smoke_run(tmp_path: Path, rag_cache_dir: Path) -> None:
    out = tmp_path / "calibration.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "calibration.py"), "--data", str(TINY), "--json-out", str(out)],
        capture_output=True,
        text=True,
        env=child_env(cache_dir=rag_cache_dir),
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["own_corpus"]["questions"] == 6
    assert result["starter_knowledge"]["accuracy"] == 1.0
