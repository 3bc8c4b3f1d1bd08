"""Calibration: what a cosine similarity means in this corpus.

A raw similarity of 0.45 is a strong match among unrelated abstracts and a weak one among notes that all talk
about the same subject. So each corpus gets a background: the similarities of random pairs of its chunks taken
from different notes. A hit's percentile is the share of that background below its score, and "confident"
means the best hit stands out from the background. The background is saved as a small JSON file in the local
cache folder of the collection and recomputed when the corpus changes noticeably (`CalibrationCache` decides
when). This module only measures; `rag.retrieve` applies it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from rag.store import Store

# Chunks sampled for the background; all pairs among them from different notes are scored.
SAMPLE_CHUNKS = 800
# The background is kept as this many quantiles (0 %, 0.1 %, ..., 100 %).
QUANTILES = 1001
_FORMAT = 1


@dataclass(frozen=True)
class Calibration:
    """The background similarity distribution of one corpus, as evenly spaced quantiles."""

    quantiles: list[float]
    pairs: int
    chunks: int
    # The store build (model, chunking) measured; another build means other similarities, so it is measured anew.
    build: str = ""
    format: int = _FORMAT

    def percentile(self, score: float) -> float:
        """Share (0-100) of background pairs less similar than `score`, to one decimal."""
        quantiles, grid = self._curve
        return round(float(np.interp(score, quantiles, grid, left=0.0, right=100.0)), 1)

    @cached_property
    def _curve(self) -> tuple[np.ndarray, np.ndarray]:
        # Built once per calibration: converting 1,001 floats on every hit cost more than the lookup.
        return np.asarray(self.quantiles, dtype=np.float64), np.linspace(0.0, 100.0, len(self.quantiles))

    def stale(self, chunks: int, build: str) -> bool:
        """Whether a corpus now holding `chunks` chunks, built as `build` (model, chunking), has changed noticeably
        since this was computed."""
        if build != self.build:
            return True
        if self.chunks <= SAMPLE_CHUNKS:
            # The sample was the whole corpus: any change changes it.
            return chunks != self.chunks
        return abs(chunks - self.chunks) > 0.1 * self.chunks


def background(sources: list[str], vectors: np.ndarray) -> np.ndarray:
    """Cosine similarities of every pair of the given unit vectors that come from different notes."""
    if len(vectors) < 2:
        return np.zeros(0, dtype=np.float32)
    similarity = vectors @ vectors.T
    labels = np.asarray(sources)
    upper = np.triu(np.ones(similarity.shape, dtype=bool), k=1)
    return similarity[upper & (labels[:, None] != labels[None, :])]


def compute(store: Store, *, sample: int = SAMPLE_CHUNKS, seed: int = 0) -> Calibration | None:
    """The background of `store`'s corpus; None when it has fewer than two notes (nothing to compare)."""
    sources, vectors = store.sample_vectors(sample, seed=seed)
    values = background(sources, vectors)
    if len(values) == 0:
        return None
    quantiles = np.quantile(values, np.linspace(0.0, 1.0, QUANTILES))
    return Calibration(
        quantiles=[round(float(q), 5) for q in quantiles],
        pairs=int(len(values)),
        chunks=store.count(),
        build=str(store.build),
    )


def load(path: Path) -> Calibration | None:
    """A saved calibration, or None when missing or unreadable (then it is recomputed)."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get("format") != _FORMAT:
            return None
        return Calibration(**data)
    except (OSError, ValueError, TypeError):
        return None


def save(calibration: Calibration, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(asdict(calibration)))
    staging.replace(path)


class CalibrationCache:
    """The calibration of one store, kept in memory and in a file, measured anew when the corpus changed noticeably
    (checked on first use and on `current(recheck=True)`, which a sync that changed the store asks for)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._calibration: Calibration | None = None
        self._loaded = False

    def current(self, store: Store, *, recheck: bool = False) -> Calibration | None:
        if self._loaded and not recheck:
            return self._calibration
        if not self._loaded:
            self._calibration = load(self.path)
        if self._calibration is None or self._calibration.stale(store.count(), str(store.build)):
            self._calibration = compute(store)
            if self._calibration is not None:
                save(self._calibration, self.path)
        self._loaded = True
        return self._calibration
