"""bench/scale.py: the notes it makes, and one real run on a tiny corpus of the starter notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import scale


def test_notes_differ_and_depend_only_on_their_number() -> None:
    texts, questions = scale.source_texts(None)
    notes = [scale.make_note(n, texts) for n in range(50)]
    assert questions and len(set(notes)) == 50
    assert len({note.splitlines()[0] for note in notes}) == 50  # every title its own
    assert scale.make_note(7, texts) == notes[7]


def test_single_source_notes_are_short_and_distinct() -> None:
    texts, _ = scale.source_texts(None)
    notes = [scale.make_note(n, texts, "single") for n in range(50)]
    assert len(set(notes)) == 50 and all(note.count("\n## ") == 0 for note in notes)
    assert scale.make_note(7, texts, "single") == notes[7] != scale.make_note(7, texts)


def test_percentile_picks_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert scale.percentile(values, 50) == pytest.approx(50.0, abs=1)
    assert scale.percentile(values, 95) == pytest.approx(95.0, abs=1)
    assert scale.percentile([3.0], 95) == 3.0


@pytest.mark.slow
def test_tiny_run_prints_and_saves_sane_figures(
    tmp_path: Path, rag_cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAG_CACHE_DIR", str(rag_cache_dir))
    out = tmp_path / "scale.json"
    argv = ["--sizes", "300", "--reuse", str(tmp_path / "work"), "--queries", "5", "--rerank-queries", "2"]
    rows = scale.main([*argv, "--json-out", str(out)])
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["sizes"] == json.loads(json.dumps(rows))
    (row,) = rows
    index, serve = row["index"], row["serve"]
    assert 300 <= serve["chunks"] == index["chunks"] == row["corpus"]["chunks"] < 400
    assert index["embedded"] == serve["chunks"] and index["chunks_per_s"] > 1 and not index["reused"]
    assert serve["notes"] == row["corpus"]["notes"] > 1
    for mode in ("dense", "hybrid", "rerank"):
        assert 0 < serve[f"{mode}_p50_ms"] <= serve[f"{mode}_p95_ms"] < 30_000
    assert 0 < serve["resync_fresh_s"] < 60 and 0 < serve["resync_warm_s"] < 60
    assert 100 < serve["rss_mb"] < 4096 and serve["keyword_rows"] == serve["chunks"]
    assert serve["vector_copy_mb"] == pytest.approx(serve["chunks"] * 384 * 4 / 2**20, abs=0.1)
    assert row["disk"]["chroma_mb"] > 0 and row["disk"]["derived_mb"] > 0
    assert "| hybrid |" in printed and "chunks/s" in printed and "## goals" in printed
    assert len(saved["goals"]) == 4

    # A second run reuses the store: nothing embedded, the first run's index figures kept and marked.
    (again,) = scale.main(argv)
    assert again["index"]["reused"] and again["index"]["index_s"] == index["index_s"]
    assert again["serve"]["chunks"] == serve["chunks"]

    # A smaller corpus of single-source notes built from a larger one's stored vectors: nothing embedded twice.
    copying = ["--sizes", "60,150", "--shape", "single", "--copy-vectors", "--modes", "hybrid", "--queries", "3"]
    large, small = scale.main([*copying, "--reuse", str(tmp_path / "work")])
    assert (large["size"], small["size"]) == (150, 60)
    assert large["index"]["embedded"] == large["serve"]["chunks"] and not large["index"]["copied"]
    assert small["index"]["copied"] == small["serve"]["chunks"] and small["index"]["embedded"] == 0
    assert small["serve"]["notes"] < large["serve"]["notes"] and small["serve"]["hybrid_p50_ms"] > 0
