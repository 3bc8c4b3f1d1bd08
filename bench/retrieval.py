"""Retrieval benchmark on a BEIR folder, through the product's own pipeline.

Each document becomes a Markdown note; `KnowledgeBase.sync` loads, chunks, embeds and stores them in a real
Chroma store on disk; `KnowledgeBase.search` answers each query in every mode asked for. A document's score is
its best chunk's. Prints nDCG@10, Recall@10, Recall@100 and MRR@10 (computed by ranx), ingest throughput, warm
query latency and peak memory as a table, and everything as JSON.

    python bench/retrieval.py --data ../shared/eval/scifact                  # the full run, for people
    python bench/retrieval.py --data tests/fixtures/beir-tiny --limit 5      # a smoke slice
    python bench/retrieval.py --data DIR --workdir /tmp/idx                  # keep the index; later runs reuse it
    python bench/retrieval.py --data DIR --modes hybrid,rerank --rerank-candidates 10,20 --encoders fast,bge-small

One index per encoder is built once and queried in every mode. Mode `rerank` gives a row per combination of
--rerank-candidates, --rerank-weight and --rerank-threads; `added_p50_ms` is its p50 latency minus hybrid's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import numpy as np  # noqa: E402

from bench.beir import Beir, load_beir, take_slice, write_notes  # noqa: E402
from rag.config import Config  # noqa: E402
from rag.embed import embed_query  # noqa: E402
from rag.knowledge import KnowledgeBase  # noqa: E402

METRICS = ["ndcg@10", "recall@10", "recall@100", "mrr@10"]
MODES = ["dense", "bm25", "hybrid", "rerank"]
# The cross-encoder is slow on a laptop CPU: rerank rows are asked for, not run by default.
DEFAULT_MODES = ["dense", "bm25", "hybrid"]
# Chunks asked for per query: documents have a few chunks each, and Recall@100 needs 100 documents.
DEPTH = 300
LATENCY_K = 5


# Benchmark names for the library's `encoder` setting: `fast` is what the default (`auto`) picks on this machine.
ENCODERS = {"fp32": "fp32", "fast": "auto", "bf16": "bf16", "onnx": "onnx"}
# Encoders of another model: benchmark name -> (model, encoder setting).
MODELS = {"bge-small": ("bge-small-en-v1.5", "onnx")}


def available_encoders() -> list[str]:
    return [*ENCODERS, *MODELS]


def knowledge_base(config: Config, encoder: str) -> KnowledgeBase:
    """The factory for each benchmarked encoder, through the library's `model` and `encoder` settings."""
    if encoder in MODELS:
        model, setting = MODELS[encoder]
        return KnowledgeBase(config.replace(model=model, encoder=setting))
    if encoder not in ENCODERS:
        raise SystemExit(f"encoder {encoder!r} is not available here; choose from {', '.join(available_encoders())}")
    return KnowledgeBase(config.replace(encoder=ENCODERS[encoder]))


class RememberingEmbedder:
    """Wraps an embedder so each query is embedded once across modes; off while latency is timed."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.name = inner.name
        self.max_tokens = inner.max_tokens
        self.remember = False
        self._seen: dict[str, object] = {}

    def embed_batch(self, texts):  # type: ignore[no-untyped-def]
        return self.inner.embed_batch(texts)

    def embed_queries(self, texts):  # type: ignore[no-untyped-def]
        # Questions go through the library's own query path (e.g. ONNX for the fast encoder), remembered if asked.
        if not self.remember or len(texts) != 1:
            return np.stack([embed_query(self.inner, t) for t in texts])
        if texts[0] not in self._seen:
            self._seen[texts[0]] = np.stack([embed_query(self.inner, texts[0])])
        return self._seen[texts[0]]

    def count_tokens(self, texts):  # type: ignore[no-untyped-def]
        return self.inner.count_tokens(texts)


def describe(embedder) -> str:  # type: ignore[no-untyped-def]
    """What an encoder setting resolved to, e.g. `PairedEmbedder(SentenceTransformerEmbedder bf16, OnnxEmbedder)`:
    `fast` follows the library's default, which changes over time."""
    parts = [getattr(embedder, side) for side in ("documents", "queries") if hasattr(embedder, side)]
    if not parts:
        precision = getattr(embedder, "precision", None)
        return type(embedder).__name__ + (f" {precision}" if precision else "")
    return f"{type(embedder).__name__}({', '.join(describe(part) for part in parts)})"


def provenance() -> dict:
    """The commit the run started at and the files that differed from it, so a figure can be traced to code."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "HEAD").strip() or None, "uncommitted": changed}


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux: the process's peak resident memory so far.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def ingest(kb: KnowledgeBase, workdir: Path, encoder: str) -> dict:
    """Sync the notes; a reused index keeps the throughput measured when it was built."""
    record = workdir / f"ingest-{encoder}.json"
    kb.embedder.embed_batch(["load the model before the clock starts"])
    started = time.perf_counter()
    report = kb.sync(progress=sys.stderr.isatty(), wait=600)
    seconds = time.perf_counter() - started
    embedded = report.added + report.updated
    if embedded == 0 and record.exists():
        figures = json.loads(record.read_text())
        figures["reused"] = True
        return figures
    figures = {
        "notes": report.notes,
        "chunks": report.chunks,
        "seconds": round(seconds, 2),
        "notes_per_s": round(embedded / seconds, 2) if seconds else None,
        "chunks_per_s": round(report.chunks / seconds, 2) if seconds and embedded == report.notes else None,
        "skipped": len(report.skipped),
        "reused": False,
    }
    record.write_text(json.dumps(figures))
    return figures


def run_queries(kb: KnowledgeBase, beir: Beir, sources: dict[str, str], *, mode: str, depth: int) -> dict:
    """query id -> {doc id: score}; a document's score is its best chunk's ranking score."""
    run: dict[str, dict[str, float]] = {}
    for qid, text in beir.queries.items():
        result = kb.search(text, k=depth, mode=mode)
        docs: dict[str, float] = {}
        for hit in result.hits:
            doc = sources.get(hit.chunk.source)
            value = float(getattr(hit, "rank_score", hit.score))
            if doc is not None and value > docs.get(doc, float("-inf")):
                docs[doc] = value
        # ranx wants at least one scored document per query.
        run[qid] = docs or {"__none__": 0.0}
    return run


def evaluate(beir: Beir, run: dict) -> dict[str, float]:
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    scores = ranx_evaluate(Qrels(beir.qrels), Run(run), METRICS, make_comparable=True)
    return {m: round(float(scores[m]), 4) for m in METRICS}


def latency(kb: KnowledgeBase, beir: Beir, *, mode: str, limit: int, repeats: int = 1) -> dict[str, float]:
    """Warm per-query time of a user's search (k=5) through the library, after one untimed warm-up; nothing (the
    timing is skipped) when `limit` or `repeats` is zero."""
    questions = list(beir.queries.values())[:limit]
    if not questions or repeats < 1:
        return {}
    kb.search(questions[0], k=LATENCY_K, mode=mode)
    times = []
    for _ in range(repeats):
        for question in questions:
            started = time.perf_counter()
            kb.search(question, k=LATENCY_K, mode=mode)
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    # The question's embedding alone, on the same questions: it tracks how fast the machine is right now, so a
    # slow run can be told apart from a slow search (this VM's speed was seen to vary by 2x within an hour).
    embedding = []
    for question in questions:
        started = time.perf_counter()
        embed_query(kb.embedder, question)
        embedding.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(p95, 2),
        "embed_p50_ms": round(statistics.median(embedding), 2),
    }


def benchmark(args: argparse.Namespace) -> dict:
    beir = load_beir(args.data, args.split)
    if args.limit:
        beir = take_slice(beir, limit=args.limit, distractors=args.distractors)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rag-bench-"))
    sources = write_notes(beir.corpus, workdir / "knowledge")
    result = {
        "data": str(args.data),
        "split": args.split,
        "queries": len(beir.queries),
        "documents": len(beir.corpus),
        "chunk_tokens": args.chunk_tokens,
        "overlap_tokens": args.overlap_tokens,
        "latency_queries": args.latency_queries,
        "latency_repeats": args.latency_repeats,
        "runs": [],
    }
    for encoder in args.encoders:
        config = Config(
            knowledge_dir=workdir / "knowledge",
            db_dir=workdir / f"db-{encoder}-{args.chunk_tokens}-{args.overlap_tokens}",
            chunk_tokens=args.chunk_tokens,
            overlap_tokens=args.overlap_tokens,
        )
        plain = knowledge_base(config, encoder)
        memo = RememberingEmbedder(plain.embedder)
        kb = KnowledgeBase(plain.config, embedder=memo)
        print(f"[{encoder}] syncing {len(beir.corpus)} notes into {config.db_dir}", file=sys.stderr)
        figures = ingest(kb, workdir, f"{encoder}-{args.chunk_tokens}-{args.overlap_tokens}")
        figures["embedder"] = describe(plain.embedder)
        print(f"[{encoder}] ingest {figures}", file=sys.stderr)
        for mode, variant in configurations(args):
            started = time.perf_counter()
            searcher = kb if not variant else KnowledgeBase(kb.config.replace(**variant), embedder=memo)
            memo.remember = True
            run = run_queries(searcher, beir, sources, mode=mode, depth=args.depth)
            memo.remember = False
            metrics = evaluate(beir, run)
            row = {
                "encoder": encoder,
                "mode": mode,
                "variant": " ".join(f"{k.split('_')[1]}={v}" for k, v in variant.items()),
                **metrics,
                "ingest_chunks_per_s": figures.get("chunks_per_s"),
                "ingest_notes_per_s": figures.get("notes_per_s"),
                **latency(searcher, beir, mode=mode, limit=args.latency_queries, repeats=args.latency_repeats),
                **variant,
                "eval_seconds": round(time.perf_counter() - started, 1),
                "peak_rss_mb": peak_rss_mb(),
                "load_average": round(os.getloadavg()[0], 2),
            }
            print(f"[{encoder}] {mode} {row['variant']}: {metrics}", file=sys.stderr)
            result["runs"].append(row)
        added_latency(result["runs"], encoder)
        result.setdefault("ingest", {})[encoder] = figures
    return result


def configurations(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """(mode, settings) per row: one per mode, and for `rerank` one per combination of its settings."""
    rows: list[tuple[str, dict]] = []
    for mode in args.modes:
        if mode != "rerank":
            rows.append((mode, {}))
            continue
        for candidates in args.rerank_candidates:
            for weight in args.rerank_weight:
                for threads in args.rerank_threads:
                    variant = {"rerank_candidates": candidates, "rerank_weight": weight, "rerank_threads": threads}
                    rows.append((mode, variant))
    return rows


def added_latency(runs: list[dict], encoder: str) -> None:
    """Each rerank row's p50 minus the hybrid row's of the same encoder: what the cross-encoder adds."""
    hybrid = next((r for r in runs if r["encoder"] == encoder and r["mode"] == "hybrid" and "p50_ms" in r), None)
    for row in runs:
        if hybrid is not None and row["encoder"] == encoder and row["mode"] == "rerank" and "p50_ms" in row:
            row["added_p50_ms"] = round(row["p50_ms"] - hybrid["p50_ms"], 2)


def table(result: dict) -> str:
    columns = [
        "encoder", "mode", "variant", *METRICS, "ingest_chunks_per_s", "p50_ms", "p95_ms", "added_p50_ms",
        "embed_p50_ms", "peak_rss_mb", "load_average",
    ]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in result["runs"]:
        lines.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--split", default="test", help="qrels file to score against (default test)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N queries (a quick slice)")
    parser.add_argument("--distractors", type=int, default=200, help="with --limit: unjudged documents to add")
    parser.add_argument(
        "--modes", default=",".join(DEFAULT_MODES), help="comma list of dense, bm25, hybrid, rerank (not by default)"
    )
    parser.add_argument(
        "--rerank-candidates", default=str(Config.rerank_candidates), help="rerank: comma list of candidate counts"
    )
    parser.add_argument("--rerank-weight", default=str(Config.rerank_weight), help="rerank: comma list of weights")
    parser.add_argument("--rerank-threads", default=str(Config.rerank_threads), help="rerank: comma list of threads")
    parser.add_argument("--encoders", default="fp32,fast", help=f"comma list of {', '.join(available_encoders())}")
    parser.add_argument("--workdir", help="keep notes and index here and reuse them (default: a temp folder)")
    parser.add_argument("--chunk-tokens", type=int, default=Config.chunk_tokens)
    parser.add_argument("--overlap-tokens", type=int, default=Config.overlap_tokens)
    parser.add_argument("--depth", type=int, default=DEPTH, help="chunks retrieved per query for the metrics")
    parser.add_argument("--latency-queries", type=int, default=100, help="queries timed per mode (k=5)")
    parser.add_argument(
        "--latency-repeats", type=int, default=3, help="passes over those queries; p50/p95 are over all of them"
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}")
    args.encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    args.rerank_candidates = [int(x) for x in args.rerank_candidates.split(",")]
    args.rerank_weight = [float(x) for x in args.rerank_weight.split(",")]
    args.rerank_threads = [int(x) for x in args.rerank_threads.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = {
        **provenance(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    result = {**started, **benchmark(args)}
    load = os.getloadavg()
    result["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["load_at_end"] = [round(x, 2) for x in load]
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (each row: its own 1-minute figure)")
    print(table(result))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
