"""Tune the hybrid fusion on a BEIR split (use `train`; report on `test` with bench/retrieval.py).

Reuses an index built by `bench/retrieval.py --workdir DIR`. For every query it gathers the dense and BM25
candidates once, through the library's store and keyword index, then scores each setting offline:
the dense weight of `rag.retrieve.fuse`, the candidate depth per side, and reciprocal rank fusion for comparison.

    python bench/tune_fusion.py --data ../shared/eval/scifact --split train --workdir /tmp/idx
    python bench/tune_fusion.py --data ../shared/eval/scifact --split train --workdir /tmp/idx \
        --db db-bge-small-128-16 --model bge-small-en-v1.5
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from bench.beir import load_beir, note_name  # noqa: E402
from rag.config import Config  # noqa: E402
from rag.embed import embed_query  # noqa: E402
from rag.knowledge import KnowledgeBase  # noqa: E402
from rag.retrieve import fuse  # noqa: E402

WEIGHTS = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]
DEPTHS = [20, 50, 100, 200]


def doc_run(ranking: dict[str, float], doc_of: dict[str, str], k: int = 100) -> dict[str, float]:
    docs: dict[str, float] = {}
    for chunk_id, value in ranking.items():
        doc = doc_of.get(chunk_id.rsplit("#", 1)[0])
        if doc is not None and value > docs.get(doc, float("-inf")):
            docs[doc] = value
    best = heapq.nlargest(k, docs.items(), key=lambda item: item[1])
    return dict(best) or {"__none__": 0.0}


def rrf(dense: dict[str, float], lexical: dict[str, float], k: int = 60) -> dict[str, float]:
    fused: dict[str, float] = {}
    for scores in (dense, lexical):
        ordered = sorted((i for i in scores if scores[i] > 0 or scores is dense), key=lambda i: -scores[i])
        for rank, chunk_id in enumerate(ordered, 1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return fused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--workdir", type=Path, required=True, help="the --workdir of a bench/retrieval.py run")
    parser.add_argument("--db", default="db-fp32-200-32", help="index folder inside the workdir")
    parser.add_argument("--model", default=Config.model, help="the model that index was built with")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    from ranx import Qrels, Run, evaluate

    beir = load_beir(args.data, args.split)
    # An index built from a slice holds only some documents: tune on the queries whose judged documents it holds.
    present = {p.name for p in (args.workdir / "knowledge").glob("*.md")}
    doc_of = {note_name(d): d for d in beir.corpus if note_name(d) in present}
    held = set(doc_of.values())
    judged = {q: docs for q, docs in beir.qrels.items() if set(docs) <= held}
    beir = dataclasses.replace(beir, qrels=judged, queries={q: beir.queries[q] for q in judged})
    print(f"{len(judged)} {args.split} queries have all their judged documents in the index", file=sys.stderr)
    config = Config(knowledge_dir=args.workdir / "knowledge", db_dir=args.workdir / args.db, model=args.model)
    kb = KnowledgeBase(config)
    keyword = kb.keyword_index()
    gathered = {}
    for n, (qid, text) in enumerate(beir.queries.items()):
        vector = embed_query(kb.embedder, text)  # as the product embeds a question (bge-small adds its prefix)
        dense = kb.store.nearest(vector, k=max(DEPTHS))
        lexical = keyword.scores(text)
        gathered[qid] = (dense, lexical, vector)
        if n % 100 == 0:
            print(f"gathered {n}/{len(beir.queries)}", file=sys.stderr)
    qrels = Qrels(beir.qrels)
    rows = []
    for depth in DEPTHS:
        runs: dict[str, dict[str, dict[str, float]]] = {}
        for qid, (dense_all, lexical_all, vector) in gathered.items():
            dense = dict(list(dense_all.items())[:depth])
            top_lexical = dict(heapq.nlargest(depth, lexical_all.items(), key=lambda item: item[1]))
            missing = [i for i in top_lexical if i not in dense]
            candidates = {**dense, **kb.store.similarities(vector, missing)}
            lexical = {i: lexical_all.get(i, 0.0) for i in candidates}
            for weight in WEIGHTS:
                ranking = fuse(candidates, lexical, dense_weight=weight)
                runs.setdefault(f"weighted w={weight}", {})[qid] = doc_run(ranking, doc_of)
            runs.setdefault("rrf k=60", {})[qid] = doc_run(rrf(candidates, lexical), doc_of)
        for name, run in runs.items():
            scores = evaluate(qrels, Run(run), ["ndcg@10", "recall@100"], make_comparable=True)
            rows.append({"depth": depth, "fusion": name, **{m: round(float(v), 4) for m, v in scores.items()}})
            print(f"depth {depth:>3} {name:<16} {rows[-1]}", file=sys.stderr)
    rows.sort(key=lambda r: -r["ndcg@10"])
    print("| depth | fusion | nDCG@10 | Recall@100 |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['depth']} | {row['fusion']} | {row['ndcg@10']} | {row['recall@100']} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
