"""The map of meaning and the score picture: the projection's maths and freshness, the SVG they draw (escaped,
self-contained, honest axes), and the real model's map of the starter notes through the library and the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.calibrate import Calibration
from rag.config import Config
from rag.figure import Figure, map_svg, score_svg
from rag.knowledge import KnowledgeBase
from rag.project import Point, Projection, ProjectionCache, fit, view

ROOT = Path(__file__).resolve().parent.parent


def _projection(n: int = 30) -> Projection:
    points = [Point(f"n{i % 3}.md#{i}", f"n{i % 3}.md", f"Note {i % 3}", ("H",), float(i), float(-i)) for i in range(n)]
    return Projection([0.0, 0.0, 0.0], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], (0.5, 0.25), points, n)


def test_fit_finds_the_axes_of_most_variance_with_fixed_signs() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(500, 3)) * np.array([5.0, 2.0, 0.5])
    mean, axes, shares = fit(data)
    assert np.allclose(np.abs(axes), [[1, 0, 0], [0, 1, 0]], atol=0.05)
    assert axes[0][np.argmax(np.abs(axes[0]))] > 0 and axes[1][np.argmax(np.abs(axes[1]))] > 0
    assert shares[0] == pytest.approx(25 / 29.25, abs=0.03) and shares[0] > shares[1]
    again = fit(-data + 0.0)  # a mirrored cloud gives the same signed axes
    assert np.allclose(again[1], axes)


def test_a_question_is_placed_by_one_matrix_product() -> None:
    projection = _projection()
    assert projection.place(np.array([2.0, 3.0, 9.0])).tolist() == [[2.0, 3.0]]


def test_a_large_map_is_sampled_but_its_sources_are_always_drawn() -> None:
    projection = _projection(100)
    shown = view(projection, question="q", vector=np.zeros(3), sources=["n1.md#97", "missing"], limit=10)
    assert shown.sampled and shown.total == 100
    assert [p.id for p in shown.sources] == ["n1.md#97"]
    assert "n1.md#97" in {p.id for p in shown.points} and len(shown.points) <= 11
    svg = map_svg(shown)
    assert "of 100 chunks, a random sample" in svg and "sources always drawn" in svg


def test_the_map_says_what_its_axes_are_and_escapes_hover_text() -> None:
    hostile = Point("x.md#1", "x.md", "<script>alert(1)</script>", ("a & b",), 0.0, 0.0)
    projection = Projection([0.0], [[1.0], [0.0]], (0.123, 0.045), [hostile, _projection().points[1]], 2)
    svg = map_svg(view(projection, question="<img src=x onerror=alert(2)>", vector=np.ones(1), sources=["x.md#1"]))
    assert "PC1: first principal component (12.3% of variance)" in svg
    assert "PC2: second principal component (4.5% of variance)" in svg
    assert "<script" not in svg and "<img" not in svg and "&lt;script&gt;" in svg and "a &amp; b" in svg
    assert svg.count('class="rag-question"') == 1 and svg.count('class="rag-source"') == 1
    # Nothing is fetched: no script, no external href or font.
    assert not re.search(r"\s(href|src)=\"|@import|url\(", svg)
    assert Figure(svg, "t<")._repr_svg_() == svg and "<title>t&lt;</title>" in Figure(svg, "t<").html()


def test_the_score_picture_marks_the_best_hit_and_the_confident_bar_at_its_quantile() -> None:
    quantiles = list(np.linspace(0.0, 0.5, 1001))
    svg = score_svg(Calibration(quantiles, pairs=1234, chunks=50), 0.6, percentile=100.0, confident_percentile=90)
    assert "confident bar p90 = 0.45" in svg and "best hit 0.60 (p100.0)" in svg and "1,234 random chunk pairs" in svg
    assert svg.count('class="rag-best"') == 1 and svg.count('class="rag-bar"') == 1
    bar_x = float(re.search(r'class="rag-bar"><line x1="([\d.]+)"', svg).group(1))  # type: ignore[union-attr]
    best_x = float(re.search(r'class="rag-best"><line x1="([\d.]+)"', svg).group(1))  # type: ignore[union-attr]
    assert bar_x < best_x
    assert "not calibrated" in score_svg(None, 0.5)


@pytest.mark.slow
def test_the_starter_map_rings_the_sources_of_a_question_and_stays_with_the_index(
    indexed_config: Config, embedder, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    kb = KnowledgeBase(indexed_config, embedder=embedder)
    question = "What does a cosine similarity of 0.8 mean?"
    result = kb.search(question, k=3)
    shown = kb.map_view(result)
    assert shown is not None and not shown.sampled and shown.total == kb.store.count()
    assert [p.id for p in shown.sources] == [h.chunk.id for h in result.hits]
    # The question lands nearer its best source than the average chunk does.
    qx, qy = shown.question_xy  # type: ignore[misc]
    best = shown.sources[0]
    distances = [np.hypot(p.x - qx, p.y - qy) for p in shown.points]
    assert np.hypot(best.x - qx, best.y - qy) < np.median(distances)
    assert 0 < shown.explained[1] <= shown.explained[0] < 1
    saved = kb.derived_dir(kb.store) / "projection.json"
    assert saved.exists()
    # A sync that changes the store refreshes the saved projection; a new process reads it without refitting.
    (Path(indexed_config.knowledge_dir) / "new-map-note.md").write_text("# Lighthouses\n\nA lighthouse guides ships.\n")
    before = saved.stat().st_mtime_ns
    kb.sync()
    assert saved.stat().st_mtime_ns != before
    fresh = ProjectionCache(saved).current(kb.store)
    assert fresh is not None and len(fresh.points) == kb.store.count()
    assert any(p.source == "new-map-note.md" for p in fresh.points)
    figure = kb.map(question)
    assert figure.svg.count('class="rag-source"') == 5 and 'class="rag-best"' in figure.svg

    out = tmp_path / "map.html"
    args = ["map", question, "--out", str(out), "--knowledge", str(indexed_config.knowledge_dir)]
    run = subprocess.run(
        [sys.executable, "-m", "rag", *args, "--db", str(indexed_config.db_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.count('class="rag-source"') == 5
    assert 'class="rag-question"' in page and "PC1: first principal component" in page
