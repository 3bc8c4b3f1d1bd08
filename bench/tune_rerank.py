"""Tune search mode "rerank" on a BEIR split (use `train`; report on `test` with bench/retrieval.py).

Reuses an index built by `bench/retrieval.py --workdir DIR`. For each query it runs the library's hybrid search
once (k=300, as the retrieval bench asks), has the cross-encoder score the best 30 candidates once per token
budget, then scores every setting offline through `rag.retrieve.fuse_rerank`: how many candidates are reranked,
the weight of the cross-encoder's scaled score, and the token budget. It also times the cross-encoder on real
candidates at each thread count asked for.

    python bench/tune_rerank.py --data ../shared/eval/scifact --split train --workdir /tmp/idx --db db-fast-128-16
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from bench.beir import load_beir, note_name  # noqa: E402
from rag.config import Config  # noqa: E402
from rag.knowledge import KnowledgeBase  # noqa: E402
from rag.rerank import CrossEncoderReranker  # noqa: E402
from rag.retrieve import fuse_rerank  # noqa: E402

CANDIDATES = [10, 20, 30]
WEIGHTS = [round(0.1 * i, 1) for i in range(11)]
DEPTH = 300


def doc_run(ranking: dict[str, float], doc_of: dict[str, str], k: int = 100) -> dict[str, float]:
    """Document scores from chunk scores: a document's is its best chunk's."""
    docs: dict[str, float] = {}
    for chunk_id, value in ranking.items():
        doc = doc_of.get(chunk_id.rsplit("#", 1)[0])
        if doc is not None and value > docs.get(doc, float("-inf")):
            docs[doc] = value
    return dict(heapq.nlargest(k, docs.items(), key=lambda item: item[1])) or {"__none__": 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--workdir", type=Path, required=True, help="the --workdir of a bench/retrieval.py run")
    parser.add_argument("--db", default="db-fast-128-16", help="index folder inside the workdir")
    parser.add_argument("--queries", type=int, default=150, help="the first N queries of the split (0: all)")
    parser.add_argument("--tokens", default="256,128", help="comma list of the cross-encoder's token budgets")
    parser.add_argument("--threads", default="1,2", help="comma list of thread counts to time")
    parser.add_argument("--timed-queries", type=int, default=20, help="queries timed per thread count")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    budgets = [int(t) for t in args.tokens.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]

    from ranx import Qrels, Run, evaluate

    beir = load_beir(args.data, args.split)
    present = {p.name for p in (args.workdir / "knowledge").glob("*.md")}
    doc_of = {note_name(d): d for d in beir.corpus if note_name(d) in present}
    held = set(doc_of.values())
    judged = {q: docs for q, docs in beir.qrels.items() if set(docs) <= held}
    if args.queries:
        judged = dict(list(judged.items())[: args.queries])
    beir = dataclasses.replace(beir, qrels=judged, queries={q: beir.queries[q] for q in judged})
    print(f"{len(judged)} {args.split} queries", file=sys.stderr)
    kb = KnowledgeBase(Config(knowledge_dir=args.workdir / "knowledge", db_dir=args.workdir / args.db))

    gathered: dict[str, tuple[dict[str, float], list[str], dict[int, dict[str, float]]]] = {}
    rerankers = {t: CrossEncoderReranker(max_tokens=t, threads=1) for t in budgets}
    started = time.perf_counter()
    for n, (qid, text) in enumerate(beir.queries.items()):
        hits = kb.search(text, k=DEPTH, mode="hybrid").hits
        order = {h.chunk.id: h.rank_score for h in hits}
        pool = [h.chunk for h in hits[: max(CANDIDATES)]]
        logits = {}
        for tokens, reranker in rerankers.items():
            scores = reranker.score_batch([(text, c.embedding_text) for c in pool])
            logits[tokens] = {c.id: float(s) for c, s in zip(pool, scores, strict=True)}
        gathered[qid] = (order, [c.id for c in pool], logits)
        if n % 25 == 0:
            print(f"scored {n}/{len(beir.queries)} in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    qrels = Qrels(beir.qrels)
    metrics = ["ndcg@10", "recall@10", "recall@100"]

    def score(run: dict[str, dict[str, float]]) -> dict[str, float]:
        found = evaluate(qrels, Run(run), metrics, make_comparable=True)
        return {m: round(float(found[m]), 4) for m in metrics}

    rows = [
        {
            "tokens": None,
            "candidates": 0,
            "weight": None,
            **score({q: doc_run(o, doc_of) for q, (o, _, _) in gathered.items()}),
        }
    ]
    print(f"hybrid: {rows[0]}", file=sys.stderr)
    for tokens in budgets:
        for candidates in CANDIDATES:
            for weight in WEIGHTS:
                run = {}
                for qid, (order, pool, logits) in gathered.items():
                    chosen = {i: logits[tokens][i] for i in pool[:candidates]}
                    run[qid] = doc_run(fuse_rerank(order, chosen, weight=weight), doc_of)
                rows.append({"tokens": tokens, "candidates": candidates, "weight": weight, **score(run)})
            best = max(
                (r for r in rows if r["candidates"] == candidates and r["tokens"] == tokens), key=lambda r: r["ndcg@10"]
            )
            print(f"tokens {tokens} candidates {candidates}: best {best}", file=sys.stderr)

    # The cross-encoder's time per question for each candidate count, budget and thread count, on real candidates.
    speed = []
    timed = list(beir.queries.items())[: args.timed_queries]
    for threads in thread_counts:
        for tokens in budgets:
            reranker = CrossEncoderReranker(max_tokens=tokens, threads=threads)
            reranker.score_batch([("warm up", "the model")])
            for candidates in CANDIDATES:
                times = []
                for qid, text in timed:
                    pool = gathered[qid][1][:candidates]
                    chunks = {c.id: c for c in kb.store.get(pool)}
                    pairs = [(text, chunks[i].embedding_text) for i in pool if i in chunks]
                    began = time.perf_counter()
                    reranker.score_batch(pairs)
                    times.append((time.perf_counter() - began) * 1000)
                speed.append(
                    {"threads": threads, "tokens": tokens, "candidates": candidates,
                     "p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}
                )  # fmt: skip
                print(f"speed {speed[-1]}", file=sys.stderr)

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    ranked = sorted(rows, key=lambda r: -r["ndcg@10"])
    print("| tokens | candidates | weight | nDCG@10 | Recall@10 | Recall@100 |\n|---|---|---|---|---|---|")
    for row in ranked[:15] + [r for r in rows if r["candidates"] == 0]:
        print(
            f"| {row['tokens'] or '-'} | {row['candidates'] or 'hybrid'} | {row['weight']} | {row['ndcg@10']} "
            f"| {row['recall@10']} | {row['recall@100']} |"
        )
    print("\n| threads | tokens | candidates | p50 ms | max ms |\n|---|---|---|---|---|")
    for row in speed:
        print(f"| {row['threads']} | {row['tokens']} | {row['candidates']} | {row['p50_ms']} | {row['max_ms']} |")
    if args.json_out:
        result = {
            "split": args.split,
            "queries": len(gathered),
            "load_average": [round(x, 2) for x in load],
            "rows": rows,
            "speed": speed,
        }
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
