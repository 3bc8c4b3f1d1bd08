"""Warm query latency through the library (`KnowledgeBase.search`) on an index of SciFact abstracts.

    python bench/query.py --data ../shared/eval/scifact --limit 5183 --workdir /tmp/rag-query

Writes each abstract as a note, indexes them once (kept in --workdir, so a second run only queries), then asks
the test queries after a warm-up and prints p50/p95 in milliseconds, split into embedding and store time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench._data import beir_documents, write_notes  # noqa: E402
from rag.config import Config  # noqa: E402
from rag.embed import embed_query  # noqa: E402
from rag.knowledge import KnowledgeBase  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a BEIR folder (corpus.jsonl, queries.jsonl)")
    parser.add_argument("--limit", type=int, default=None, help="documents to index (default all)")
    parser.add_argument("--workdir", type=Path, required=True, help="notes and index are kept here between runs")
    parser.add_argument("--queries", type=int, default=300, help="questions to time (default 300)")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    notes = args.workdir / "notes"
    if not notes.exists():
        write_notes(notes, beir_documents(args.data, limit=args.limit))
    config = Config.from_env().replace(knowledge_dir=notes, db_dir=args.workdir / "db")
    kb = KnowledgeBase(config)
    started = time.perf_counter()
    report = kb.sync(progress=sys.stderr.isatty())
    print(
        f"sync: {report.added} added, {report.unchanged} unchanged, {report.chunks} chunks "
        f"({time.perf_counter() - started:.1f} s, encoder {config.encoder})"
    )
    with open(args.data / "queries.jsonl", encoding="utf-8") as handle:
        questions = [json.loads(line)["text"] for line in handle][: args.queries]
    for question in questions[:10]:  # warm-up: session, caches
        kb.search(question, k=args.k)
    total, embed, store = [], [], []
    for question in questions:
        t0 = time.perf_counter()
        kb.search(question, k=args.k)
        t1 = time.perf_counter()
        vector = embed_query(kb.embedder, question)
        t2 = time.perf_counter()
        kb.store.query(vector, k=args.k)
        t3 = time.perf_counter()
        total.append((t1 - t0) * 1000)
        embed.append((t2 - t1) * 1000)
        store.append((t3 - t2) * 1000)
    row = {
        "chunks": report.chunks,
        "notes": report.notes,
        "queries": len(questions),
        "search_p50_ms": round(statistics.median(total), 2),
        "search_p95_ms": round(percentile(total, 0.95), 2),
        "embed_p50_ms": round(statistics.median(embed), 2),
        "store_p50_ms": round(statistics.median(store), 2),
    }
    print(
        f"{row['notes']} notes / {row['chunks']} chunks, {row['queries']} queries, k={args.k}: "
        f"search p50 {row['search_p50_ms']} ms, p95 {row['search_p95_ms']} ms "
        f"(embed p50 {row['embed_p50_ms']} ms, store p50 {row['store_p50_ms']} ms)"
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
