"""Projection: the stored vectors flattened onto two axes, so the knowledge base can be drawn as a map.

The axes are the first two principal components of the chunk vectors (PCA, deterministic: no random start, and
each axis's sign is fixed). They are fitted once per index build and kept as a small JSON file in the generation's
derived folder, with every chunk's coordinates; a sync that changed the store places new chunks on the same axes
and refits only when the corpus changed noticeably (`ProjectionCache` decides). Placing a question is one matrix
product. This module measures and samples; `rag.figure` draws.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from rag.chunk import Chunk
from rag.store import Store

# The axes are fitted on at most this many chunks (a random sample beyond it); every chunk is then placed.
FIT_CHUNKS = 20_000
# Up to this many chunks, any change refits the axes (cheap); above it, only a change of more than 10 % does.
REFIT_ALWAYS = 2_000
_FORMAT = 1


@dataclass(frozen=True)
class Point:
    """One chunk on the map."""

    id: str
    source: str
    title: str
    heading: tuple[str, ...]
    x: float
    y: float


@dataclass(frozen=True)
class Projection:
    """Two principal axes of one store's vectors and every chunk placed on them."""

    mean: list[float]
    axes: list[list[float]]  # two unit rows, each as long as a vector
    explained: tuple[float, float]  # share (0-1) of the vectors' variance along each axis
    points: list[Point]
    fitted_on: int  # chunks the store held when the axes were fitted
    build: str = ""
    format: int = _FORMAT

    def place(self, vectors: np.ndarray) -> np.ndarray:
        """(x, y) rows for the given vectors (one vector or a matrix of rows): one matrix product."""
        matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        return (matrix - np.asarray(self.mean)) @ np.asarray(self.axes).T

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class MapView:
    """What one map shows: the chunks drawn (all, or a sample), the question's place and the sources it found."""

    points: list[Point]
    total: int  # chunks in the knowledge base; more than len(points) when sampled
    explained: tuple[float, float]
    question: str | None = None
    question_xy: tuple[float, float] | None = None
    sources: list[Point] = field(default_factory=list)  # the hits, best first

    @property
    def sampled(self) -> bool:
        return len(self.points) < self.total


def fit(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Mean, the two principal axes (rows) and their shares of the variance, of the rows of `vectors`.

    The axes are the top eigenvectors of the covariance matrix (d x d, cheap for any number of rows); each axis
    is signed so that its largest loading is positive, so the same vectors always give the same picture.
    """
    matrix = np.asarray(vectors, dtype=np.float64)
    dim = matrix.shape[1]
    mean = matrix.mean(axis=0)
    centred = matrix - mean
    covariance = centred.T @ centred / max(len(matrix) - 1, 1)
    values, vecs = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(values)[::-1][:2]
    axes = vecs[:, order].T
    if axes.shape[0] < 2:  # a one-dimensional space: a flat second axis
        axes = np.vstack([axes, np.zeros(dim)])
    for row in axes:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    total = float(np.trace(covariance))
    top = np.clip(values[order], 0.0, None)
    shares = [float(v / total) if total > 0 else 0.0 for v in top] + [0.0, 0.0]
    return mean, axes, (round(shares[0], 4), round(shares[1], 4))


def _points(chunks: Sequence[Chunk], xy: np.ndarray) -> list[Point]:
    return [
        Point(c.id, c.source, c.title, tuple(c.heading), round(float(x), 5), round(float(y), 5))
        for c, (x, y) in zip(chunks, xy, strict=True)
    ]


def compute(store: Store, *, previous: Projection | None = None, seed: int = 0) -> Projection | None:
    """The projection of every chunk of `store`; None when it holds none.

    With a `previous` projection of the same build whose axes still fit (see `REFIT_ALWAYS`), only chunks it
    does not hold are fetched and placed on its axes; otherwise the axes are fitted anew.
    """
    chunks = list(store.iter_chunks())
    if not chunks:
        return None
    build = str(store.build)
    n = len(chunks)
    keep = (
        previous is not None
        and previous.build == build
        and previous.fitted_on > REFIT_ALWAYS
        and abs(n - previous.fitted_on) <= 0.1 * previous.fitted_on
    )
    if keep and previous is not None:
        known = {p.id: p for p in previous.points}
        new = [c for c in chunks if c.id not in known]
        found = store.vectors([c.id for c in new])
        new = [c for c in new if c.id in found]
        placed = {p.id: p for p in _points(new, previous.place(np.stack([found[c.id] for c in new])))} if new else {}
        points = [known.get(c.id) or placed[c.id] for c in chunks if c.id in known or c.id in placed]
        return Projection(previous.mean, previous.axes, previous.explained, points, previous.fitted_on, build)
    found = store.vectors([c.id for c in chunks])
    chunks = [c for c in chunks if c.id in found]
    matrix = np.stack([found[c.id] for c in chunks])
    sample = matrix
    if len(matrix) > FIT_CHUNKS:
        rng = np.random.default_rng(seed)
        sample = matrix[np.sort(rng.choice(len(matrix), size=FIT_CHUNKS, replace=False))]
    mean, axes, explained = fit(sample)
    projection = Projection(mean.tolist(), axes.tolist(), explained, [], len(chunks), build)
    return Projection(
        projection.mean, projection.axes, explained, _points(chunks, projection.place(matrix)), len(chunks), build
    )


def view(
    projection: Projection,
    *,
    question: str | None = None,
    vector: np.ndarray | None = None,
    sources: Sequence[str] = (),
    limit: int = 2_500,
    seed: int = 0,
) -> MapView:
    """The map to draw: every point, or a random `limit` of them (the sources are always drawn), the question
    placed by its `vector`, and the `sources` (chunk ids, best first) that are on the map."""
    points = projection.points
    by_id = {p.id: p for p in points}
    ringed = [by_id[i] for i in sources if i in by_id]
    if len(points) > limit:
        rng = np.random.default_rng(seed)
        chosen = set(int(i) for i in rng.choice(len(points), size=limit, replace=False))
        wanted = {p.id for p in ringed}
        points = [p for i, p in enumerate(points) if i in chosen or p.id in wanted]
    xy = None
    if vector is not None:
        x, y = projection.place(vector)[0]
        xy = (float(x), float(y))
    return MapView(points, len(projection.points), projection.explained, question, xy, ringed)


def load(path: Path) -> Projection | None:
    """A saved projection, or None when missing or unreadable (then it is computed again)."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get("format") != _FORMAT:
            return None
        points = [Point(p["id"], p["source"], p["title"], tuple(p["heading"]), p["x"], p["y"]) for p in data["points"]]
        return Projection(
            data["mean"], data["axes"], tuple(data["explained"]), points, data["fitted_on"], data["build"]
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None


def save(projection: Projection, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(projection.to_dict(), separators=(",", ":")))
    staging.replace(path)


class ProjectionCache:
    """The projection of one store, kept in memory and in a file. On first use a saved one is taken when it was
    made for the same build and number of chunks; `current(recheck=True)`, which a sync that changed the store
    asks for, brings it up to date."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._projection: Projection | None = None
        self._loaded = False

    @property
    def in_use(self) -> bool:
        """Whether a map was drawn from it, in this process or (a file is saved) in another."""
        return self._loaded or self.path.exists()

    def current(self, store: Store, *, recheck: bool = False) -> Projection | None:
        if self._loaded and not recheck:
            return self._projection
        if not self._loaded:
            self._projection = load(self.path)
            saved = self._projection
            if saved is not None and not recheck:
                if saved.build == str(store.build) and len(saved.points) == store.count():
                    self._loaded = True
                    return saved
        self._projection = compute(store, previous=self._projection)
        if self._projection is not None:
            save(self._projection, self.path)
        else:
            self.path.unlink(missing_ok=True)
        self._loaded = True
        return self._projection
