"""Retrieval: a question in, ranked `Hit`s out, each scored by cosine similarity in [-1, 1].

Four ways to rank: `dense` (the store's nearest neighbours of the embedded question), `bm25` (keyword search,
`rag.keyword`), `hybrid` (both candidate lists fused) and `rerank` (the best hybrid candidates read again by a
cross-encoder, `rag.rerank`, its score fused with the hybrid one). Whatever ranks the hits, the score shown is the
cosine similarity; the BM25 score, the cross-encoder's score and the ranking score ride along, and a corpus calibration
(`rag.calibrate`) turns the similarity into a percentile. It does not compose answers; the web chat and the
notebook do that from the hits.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rag.chunk import Chunk, heading_text
from rag.embed import Embedder, embed_query
from rag.errors import ConfigError, EmptyQuestionError
from rag.render import hits_table, result_html, score_svg
from rag.store import Store

if TYPE_CHECKING:
    import numpy as np

    from rag.calibrate import Calibration
    from rag.filters import SearchFilter
    from rag.keyword import KeywordIndex
    from rag.rerank import Reranker

SEARCH_MODES: tuple[str, ...] = ("dense", "bm25", "hybrid", "rerank")
# Hybrid search fuses at least this many candidates from each side (at least k). On SciFact train with 128-token
# chunks (`bench/tune_fusion.py`, bench/results-fusion-train.json) nDCG@10 was 0.7430 with 20 and 0.7432 with 50
# candidates, 0.7416 with 200: a deeper pool does not change the first ten, and each candidate costs a vector fetch.
CANDIDATES = 20
# Weight of the dense side in the fused score; the keyword side gets the rest (best of 0.0-1.0 on the same run;
# reciprocal rank fusion scored 0.7323).
DENSE_WEIGHT = 0.6
# A filter that keeps at most this many chunks ranks them exactly from the keyword index's vector copy instead of
# asking Chroma: its `where`-filtered HNSW search took 49-73 ms at 100k chunks (bench/scale.py), a matrix product
# over 20,000 rows about 3 ms.
EXACT_FILTER_ROWS = 20_000
# Rerank mode: how many of the best hybrid candidates the cross-encoder reads, and the weight of its min-max scaled
# score against the min-max scaled hybrid score (1.0 replaces the hybrid order). On 100 SciFact train queries
# (`bench/tune_rerank.py`, bench/results-rerank-train.json; hybrid 0.711) nDCG@10 was best at 20 candidates
# (0.725 / 0.742 / 0.733 for 10 / 20 / 30 at 128 tokens); weights 0.5-0.7 scored 0.733-0.742 at 20, 0.6 was the best
# at 256 tokens for 20 and 30, and 1.0 (the cross-encoder alone) only 0.710: fusing beats replacing.
RERANK_CANDIDATES = 20
RERANK_WEIGHT = 0.6

# Longer questions are cut here: the model reads at most a few hundred tokens anyway.
MAX_QUESTION_CHARS = 4000


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk and its scores. `score` is the cosine similarity between question and chunk."""

    chunk: Chunk
    score: float
    # What ordered the hits: the similarity (dense), the BM25 score (bm25) or the fused score (hybrid).
    rank_score: float = 0.0
    # BM25 score of the chunk for the question (None: no shared term, or keyword search not used).
    keyword_score: float | None = None
    # Where `score` falls among similarities of unrelated chunk pairs of this corpus (None: not calibrated).
    percentile: float | None = None
    # The cross-encoder's raw score (a logit) for question and chunk (None: not reranked).
    rerank_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The hit as `python -m rag ask --json` prints it: the chunk's fields, flat, beside the scores."""
        chunk = self.chunk
        return {
            "score": self.score,
            "text": chunk.text,
            "source": chunk.source,
            "title": chunk.title,
            "heading": heading_text(chunk.heading),
            "heading_path": list(chunk.heading),
            "section": heading_text(chunk.section),
            "start_line": chunk.start_line,
            "end_line": chunk.end_line,
            "location": chunk.location,
            "tags": list(chunk.tags),
            "id": chunk.id,
            "note_id": chunk.note_id,
            "keyword_score": self.keyword_score,
            "rank_score": self.rank_score,
            "percentile": self.percentile,
            "rerank_score": self.rerank_score,
        }

    def _repr_html_(self) -> str:
        """A one-row score table, so a hit displays itself in a notebook."""
        return hits_table([self.to_dict()])


@dataclass(frozen=True)
class SearchResult:
    """The hits for one question, best first, and whether the best is a confident match, and why.

    `confident_by` says which bar decided it: "percentile" (the corpus is calibrated: the best hit's percentile
    must reach `confident_at`), "score" (too few notes to calibrate: its cosine similarity must reach it) or
    "rerank" (search mode "rerank": the best cross-encoder logit must reach it).
    """

    question: str
    confident: bool
    hits: list[Hit] = field(default_factory=list)
    # One sentence on the verdict, e.g. "the best score, 0.31, beats only 62.0% of ...; a confident match beats 95%".
    reason: str = ""
    confident_by: str = "score"
    confident_at: float = 0.4
    # The corpus background the percentiles came from, for the score picture; not part of the JSON.
    calibration: Calibration | None = field(default=None, repr=False, compare=False)

    def weak(self, hit: Hit) -> bool:
        """Whether `hit` falls below the bar a confident match must reach (the UIs mark such hits)."""
        if self.confident_by == "percentile" and hit.percentile is not None:
            return hit.percentile < self.confident_at
        if self.confident_by == "rerank":
            return hit.rerank_score is None or hit.rerank_score < self.confident_at
        return hit.score < self.confident_at

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `python -m rag ask --json`, the API and the widget; each hit also says whether it is weak."""
        return {
            "question": self.question,
            "confident": self.confident,
            "hits": [{**hit.to_dict(), "weak": self.weak(hit)} for hit in self.hits],
            "reason": self.reason,
            "confident_by": self.confident_by,
            "confident_at": self.confident_at,
        }

    def _repr_html_(self) -> str:
        """The question, a table of scored sources and, for a calibrated corpus, the best score against its
        background, so a result displays itself in a notebook."""
        html = result_html(self.to_dict())
        if self.calibration is None or not self.hits:
            return html
        best = self.hits[0]
        bar = self.confident_at if self.confident_by == "percentile" else 95.0
        picture = score_svg(self.calibration, best.score, percentile=best.percentile, confident_percentile=bar)
        return f'<div>{html}<div style="margin-top:8px">{picture}</div></div>'


def clean_question(question: str) -> str:
    """The question stripped and capped; an empty one is an error."""
    text = (question or "").strip()
    if not text:
        raise EmptyQuestionError("the question is empty; type a question, e.g. `what are embeddings?`")
    return text[:MAX_QUESTION_CHARS]


def search(
    store: Store,
    embedder: Embedder,
    question: str,
    *,
    k: int = 5,
    min_score: float | None = None,
    confident_score: float = 0.4,
    mode: str = "dense",
    keyword: KeywordIndex | None = None,
    calibration: Calibration | None = None,
    confident_percentile: float = 95.0,
    reranker: Reranker | None = None,
    rerank_candidates: int = RERANK_CANDIDATES,
    rerank_weight: float = RERANK_WEIGHT,
    rerank_confident_logit: float | None = None,
    only: SearchFilter | None = None,
) -> SearchResult:
    """The `k` chunks that best answer `question`.

    Args:
        store: the open store.
        embedder: the model the store was built with.
        question: free text; must not be empty.
        k: how many hits at most.
        min_score: drop hits whose cosine similarity is below this.
        confident_score: without a calibration, the best hit must reach this similarity for `confident`.
        mode: "dense", "bm25", "hybrid" or "rerank"; all but the first need `keyword`, the last `reranker`.
        keyword: the BM25 index of the same store.
        calibration: the corpus's background similarities; gives each hit a percentile.
        confident_percentile: with a calibration, the best hit's percentile must reach this for `confident`.
        reranker: the cross-encoder of mode "rerank".
        rerank_candidates: how many of the best hybrid candidates it reads; the rest follow in hybrid order.
        rerank_weight: the weight of its scaled score in the fused one (the scaled hybrid score gets the rest).
        rerank_confident_logit: in mode "rerank", the best raw cross-encoder logit must reach this for `confident`
            (None: the cosine verdict, as in the other modes).
        only: search only the chunks of notes this filter keeps (tags, path patterns); dense search filters inside
            Chroma and BM25 scores only them, so `k` hits come back when `k` chunks match.

    The verdict `confident` comes from the cosine similarity of the best hits (its percentile with a calibration),
    except in mode "rerank" with `rerank_confident_logit`, where the cross-encoder has read the question beside
    each candidate and its logit separates answerable from unanswerable questions far better.

    Raises:
        EmptyQuestionError: the question is empty or white space.
        ConfigError: an unknown mode, a keyword mode without a keyword index, or "rerank" without a reranker.
    """
    text = clean_question(question)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if mode not in SEARCH_MODES:
        raise ConfigError(f"unknown search mode {mode!r}; choose one of {', '.join(SEARCH_MODES)}")
    if mode != "dense" and keyword is None:
        raise ConfigError(f"search mode {mode!r} needs the keyword index; open the store through KnowledgeBase")
    if mode == "rerank" and reranker is None:
        raise ConfigError("search mode 'rerank' needs a reranker; open the store through KnowledgeBase")
    if rerank_candidates < 1 or not 0.0 <= rerank_weight <= 1.0:
        raise ConfigError(
            f"rerank_candidates must be at least 1 and rerank_weight within 0-1, got {rerank_candidates} "
            f"and {rerank_weight}; fix RAG_RERANK_CANDIDATES / RAG_RERANK_WEIGHT"
        )
    scope = _Scope()
    if only:
        resolved = only.resolve(store, keyword)
        if resolved.where is None:
            verdict = judge(
                [], calibrated=calibration is not None, score_bar=confident_score, percentile_bar=confident_percentile
            )
            reason = f"no note matches the filter {only.describe()}"
            return SearchResult(
                question.strip(), False, [], reason, verdict.confident_by, verdict.confident_at, calibration=calibration
            )
        scope = _Scope(resolved.where, resolved.rows)
    vector = embed_query(embedder, text)
    if mode == "dense":
        ranked = _dense(store, vector, k, scope, keyword)
    elif mode == "rerank":
        assert keyword is not None and reranker is not None
        ranked = _rerank(
            store,
            keyword,
            vector,
            text,
            k,
            reranker=reranker,
            candidates=rerank_candidates,
            weight=rerank_weight,
            scope=scope,
        )
    else:
        assert keyword is not None
        ranked = (_bm25 if mode == "bm25" else _hybrid)(store, keyword, vector, text, k, scope)
    hits = ranked.hits(store, k, calibration)
    if mode == "rerank" and rerank_confident_logit is not None:
        verdict = judge_logit(hits, bar=rerank_confident_logit)
    else:
        verdict = judge(
            hits, calibrated=calibration is not None, score_bar=confident_score, percentile_bar=confident_percentile
        )
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    return SearchResult(
        question.strip(),
        verdict.confident,
        hits,
        verdict.reason,
        verdict.confident_by,
        verdict.confident_at,
        calibration=calibration,
    )


@dataclass
class _Ranking:
    """Candidates of one search: their cosine similarities, the score that orders them, their BM25 scores, and the
    chunks already read with their texts (dense search gets them in its one query to the store)."""

    similarity: dict[str, float]
    order: dict[str, float]
    keyword: dict[str, float] = field(default_factory=dict)
    fetched: dict[str, Chunk] = field(default_factory=dict)
    rerank: dict[str, float] = field(default_factory=dict)

    def hits(self, store: Store, k: int, calibration: Calibration | None) -> list[Hit]:
        """The best `k` candidates as hits, texts read from the store for those not fetched yet."""
        best = [i for i, _ in _top(self.order, k) if i in self.similarity]
        self.fetched.update((c.id, c) for c in store.get([i for i in best if i not in self.fetched]))
        hits = []
        for chunk in (self.fetched[i] for i in best if i in self.fetched):
            score = round(self.similarity[chunk.id], 6)
            bm25 = self.keyword.get(chunk.id)
            logit = self.rerank.get(chunk.id)
            hits.append(
                Hit(
                    chunk,
                    score,
                    rank_score=round(self.order[chunk.id], 6),
                    keyword_score=None if bm25 is None else round(bm25, 4),
                    percentile=None if calibration is None else calibration.percentile(score),
                    rerank_score=None if logit is None else round(logit, 4),
                )
            )
        return hits


@dataclass(frozen=True)
class _Scope:
    """Where a search looks: everywhere, or (a filter) the keyword index's `rows`, the chunks Chroma's `where`
    also selects."""

    where: dict[str, Any] | None = None
    rows: np.ndarray | None = None


def _dense(
    store: Store, vector: np.ndarray, k: int, scope: _Scope = _Scope(), keyword: KeywordIndex | None = None
) -> _Ranking:
    exact = _exact_nearest(keyword, vector, k, scope)
    if exact is not None:
        return _Ranking(exact, dict(exact))
    found = store.query(vector, k=k, where=scope.where)
    similarity = {chunk.id: score for chunk, score in found}
    return _Ranking(similarity, dict(similarity), fetched={chunk.id: chunk for chunk, _ in found})


def _nearest(store: Store, keyword: KeywordIndex | None, vector: np.ndarray, k: int, scope: _Scope) -> dict[str, float]:
    """The `k` nearest chunks within `scope` and their cosine similarities, best first."""
    exact = _exact_nearest(keyword, vector, k, scope)
    return exact if exact is not None else store.nearest(vector, k=k, where=scope.where)


def _exact_nearest(keyword: KeywordIndex | None, vector: np.ndarray, k: int, scope: _Scope) -> dict[str, float] | None:
    """For a filter that keeps few chunks, their exact nearest from the vector copy; else None (ask Chroma)."""
    if keyword is None or scope.rows is None or len(scope.rows) > EXACT_FILTER_ROWS:
        return None
    return keyword.nearest(vector, scope.rows, k)


def _bm25(
    store: Store, keyword: KeywordIndex, vector: np.ndarray, text: str, k: int, scope: _Scope = _Scope()
) -> _Ranking:
    scores = keyword.scores(text, top=k, allowed=scope.rows)
    order = dict(_top(scores, k))
    return _Ranking(_similarities(store, keyword, vector, list(order)), order, scores)


def _hybrid(
    store: Store, keyword: KeywordIndex, vector: np.ndarray, text: str, k: int, scope: _Scope = _Scope()
) -> _Ranking:
    depth = max(k, CANDIDATES)
    similarity = _nearest(store, keyword, vector, depth, scope)
    scores = keyword.scores(text, top=depth, among=similarity, allowed=scope.rows)
    lexical = dict(_top(scores, depth))
    similarity.update(_similarities(store, keyword, vector, [i for i in lexical if i not in similarity]))
    order = fuse(similarity, {i: scores.get(i, 0.0) for i in similarity}, dense_weight=DENSE_WEIGHT)
    return _Ranking(similarity, order, scores)


def _rerank(
    store: Store,
    keyword: KeywordIndex,
    vector: np.ndarray,
    text: str,
    k: int,
    *,
    reranker: Reranker,
    candidates: int,
    weight: float,
    scope: _Scope = _Scope(),
) -> _Ranking:
    """Hybrid search, then the best `candidates` read by the cross-encoder and ordered by
    `weight` x its min-max scaled score + (1 - weight) x the min-max scaled hybrid score. Candidates it did not
    read keep their hybrid order below those it did: their rank score is their hybrid score scaled the same way,
    at most 0, while a fused score lies in 0-1."""
    ranking = _hybrid(store, keyword, vector, text, max(k, candidates), scope)
    pool = [i for i, _ in _top(ranking.order, candidates)]
    ranking.fetched.update((c.id, c) for c in store.get(pool))
    pool = [i for i in pool if i in ranking.fetched]
    if not pool:
        return ranking
    logits = reranker.score_batch([(text, ranking.fetched[i].embedding_text) for i in pool])
    ranking.rerank = {i: float(v) for i, v in zip(pool, logits, strict=True)}
    ranking.order = fuse_rerank(ranking.order, ranking.rerank, weight=weight)
    return ranking


def fuse_rerank(order: dict[str, float], logits: dict[str, float], *, weight: float) -> dict[str, float]:
    """The rerank order: for the ids of `logits`, `weight` x their min-max scaled logit + (1 - weight) x their
    min-max scaled score in `order` (0-1); every other id of `order` keeps its score scaled the same way, capped
    at 0, so it stays below them in its old order."""
    if not logits:
        return dict(order)
    before = {i: order[i] for i in logits}
    fused = fuse(logits, before, dense_weight=weight)
    low, high = min(before.values()), max(before.values())
    span = high - low
    rest = {i: min((v - low) / span, 0.0) if span > 0 else -1.0 for i, v in order.items() if i not in fused}
    # The reranked ids first, so a tie at 0 keeps them above the others (`_top` is stable).
    return {**fused, **rest}


def judge(hits: list[Hit], *, calibrated: bool, score_bar: float, percentile_bar: float) -> SearchResult:
    """Whether the best of `hits` is a confident match, with the reason in words (question and hits left empty).

    With a calibration, the bar is the best hit's percentile among unrelated chunk pairs of the corpus; without
    one (a corpus of one note), it is the raw cosine similarity. The CLI, the web chat and the notebook widget all
    show this one verdict, so they never disagree about it.
    """
    by, bar = ("percentile", percentile_bar) if calibrated else ("score", score_bar)
    if not hits:
        return SearchResult("", False, [], "nothing in the index matched the question", by, bar)
    if calibrated:
        best = max(hits, key=lambda h: (h.percentile or 0.0, h.score))
        rank = best.percentile or 0.0
        confident = rank >= bar
        if confident:
            reason = (
                f"the best score, {best.score:.2f}, beats {rank:.1f}% of pairs of unrelated chunks in these notes "
                f"(a confident match beats {bar:g}%)"
            )
        else:
            reason = (
                f"the best score, {best.score:.2f}, beats only {rank:.1f}% of pairs of unrelated chunks in these "
                f"notes; a confident match beats {bar:g}%"
            )
    else:
        best = max(hits, key=lambda h: h.score)
        confident = best.score >= bar
        word = "reaches" if confident else "is under"
        reason = f"the best score, {best.score:.2f}, {word} {bar:.2f} (too few notes to calibrate the scores yet)"
    return SearchResult("", confident, [], reason, by, bar)


def judge_logit(hits: list[Hit], *, bar: float) -> SearchResult:
    """The verdict of search mode "rerank": whether the best cross-encoder logit among `hits` reaches `bar`."""
    logits = [h.rerank_score for h in hits if h.rerank_score is not None]
    if not logits:
        return SearchResult("", False, [], "nothing in the index matched the question", "rerank", bar)
    best = max(logits)
    confident = best >= bar
    word = "reaches" if confident else "is under"
    reason = (
        f"the cross-encoder's best score, {best:.2f}, {word} {bar:.2f}, the bar of a confident match "
        "(it read the question beside each candidate)"
    )
    return SearchResult("", confident, [], reason, "rerank", bar)


def fuse(dense: dict[str, float], lexical: dict[str, float], *, dense_weight: float) -> dict[str, float]:
    """A weighted sum of both scores, each min-max scaled to [0, 1] over the candidates (ids of `dense`)."""

    def scaled(values: dict[str, float]) -> dict[str, float]:
        low, high = min(values.values()), max(values.values())
        span = high - low
        return {i: (v - low) / span if span > 0 else 0.0 for i, v in values.items()}

    if not dense:
        return {}
    d, s = scaled(dense), scaled(lexical)
    return {i: dense_weight * d[i] + (1 - dense_weight) * s.get(i, 0.0) for i in dense}


def _similarities(store: Store, keyword: KeywordIndex, vector: np.ndarray, ids: list[str]) -> dict[str, float]:
    """Cosine similarity of `vector` to each chunk of `ids`: from the keyword index's copy of the stored vectors
    (no round trip), and from the store for any chunk the copy lacks (changed since it was built)."""
    found = keyword.similarities(vector, ids)
    found.update(store.similarities(vector, [i for i in ids if i not in found]))
    return found


def _top(scores: dict[str, float], k: int) -> list[tuple[str, float]]:
    return heapq.nlargest(k, scores.items(), key=lambda item: item[1])
