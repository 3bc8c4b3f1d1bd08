"""Encoding throughput: torch fp32 against the fast encoders on the same chunks, with their agreement.

    python bench/encode.py                                   # the starter notes' chunks, 4 times over
    python bench/encode.py --data ../shared/eval/scifact --limit 512

Prints chunks/s (median of --repeats interleaved runs), the ratio to fp32, and how far the vectors move: cosine to
fp32 per vector (min and mean) and how many of each chunk's top-5 neighbours stay the same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench._data import beir_documents, starter_chunks  # noqa: E402
from rag.config import Config  # noqa: E402
from rag.embed import SentenceTransformerEmbedder  # noqa: E402
from rag.onnx_embed import OnnxEmbedder  # noqa: E402


def neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1)[:, :k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a BEIR folder; default: the starter notes' chunks")
    parser.add_argument("--limit", type=int, default=512, help="documents taken from --data (default 512)")
    parser.add_argument("--repeat-chunks", type=int, default=4, help="starter chunks repeated (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per encoder (default 3)")
    parser.add_argument("--cache-dir", type=Path, help="ONNX export cache (default RAG_CACHE_DIR or ~/.cache/rag)")
    args = parser.parse_args()

    fp32 = SentenceTransformerEmbedder()
    if args.data:
        texts = [f"{title}\n\n{text}" for _, title, text in beir_documents(args.data, limit=args.limit)]
    else:
        texts = starter_chunks(fp32, repeat=args.repeat_chunks)
    cache = args.cache_dir or Config.from_env().cache_dir or Path(tempfile.gettempdir()) / "rag-bench-cache"
    encoders = {
        "fp32": fp32,
        "bf16": SentenceTransformerEmbedder(precision="bf16"),
        "onnx": OnnxEmbedder(location=fp32.location, max_tokens=fp32.max_tokens, cache_dir=cache),
    }
    for encoder in encoders.values():
        encoder.embed_batch(texts[:8])  # load, export if needed, warm up
    rates: dict[str, list[float]] = {name: [] for name in encoders}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, encoder in encoders.items():  # interleaved, so load on the machine hits every encoder alike
            started = time.perf_counter()
            vectors[name] = encoder.embed_batch(texts)
            rates[name].append(len(texts) / (time.perf_counter() - started))
    reference = neighbours(vectors["fp32"], 5)
    rows = []
    base = statistics.median(rates["fp32"])
    for name in encoders:
        cosine = (vectors[name] * vectors["fp32"]).sum(axis=1)
        found = neighbours(vectors[name], 5)
        agree = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(reference, found, strict=True)])
        median = statistics.median(rates[name])
        rows.append(
            {
                "encoder": name,
                "chunks_per_s": round(median, 2),
                "runs": [round(r, 2) for r in rates[name]],
                "ratio_to_fp32": round(median / base, 2),
                "cosine_min": round(float(cosine.min()), 6),
                "cosine_mean": round(float(cosine.mean()), 6),
                "top5_agreement": round(float(agree), 4),
            }
        )
    print(f"{len(texts)} chunks, {args.repeats} runs each, {os.cpu_count()} cores")
    print(f"{'encoder':8} {'chunks/s':>9} {'x fp32':>7} {'cos min':>9} {'cos mean':>9} {'top-5':>6}")
    for r in rows:
        print(
            f"{r['encoder']:8} {r['chunks_per_s']:9.2f} {r['ratio_to_fp32']:7.2f} {r['cosine_min']:9.6f} "
            f"{r['cosine_mean']:9.6f} {r['top5_agreement']:6.3f}"
        )
    print(json.dumps({"chunks": len(texts), "results": rows}))


if __name__ == "__main__":
    main()
