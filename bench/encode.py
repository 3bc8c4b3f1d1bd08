"""Encoding throughput: torch fp32 against the faster document encoders on the same chunks, with their fidelity.

    python bench/encode.py                                         # the starter notes' chunks, 4 times over
    python bench/encode.py --data ../shared/eval/scifact --limit 300 --json-out bench/results-encode.json

The chunks are cut as a sync cuts them (`rag.load.parse_note`, then `rag.chunk.chunk_note` with the default
budget and overlap); a SciFact folder gives the documents its test queries judge first, then the corpus in order.
Each encoder is called with slices of `--call-size` chunks, as the sync hands them over, except the variants
marked "whole", which get every chunk in one call (sorted by length as a whole). Prints chunks/s (median of
--repeats interleaved runs), the ratio to fp32 sentence-transformers at batch 32 (the reference), and how far the
vectors move: cosine to fp32 per vector (min, mean), how many of each chunk's top-5 neighbours stay the same, and
how many of each query's top-5 chunks stay the same. Queries are encoded once by the exact fp32 ONNX export, as
the product encodes them. The int8 variants (onnxruntime dynamic quantisation of that export) are made here, in
the cache folder, for comparison only. It leaves out what a sync adds around the model (chunking, Chroma writes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench._data import ROOT, starter_chunks  # noqa: E402
from rag.config import Config  # noqa: E402
from rag.embed import SentenceTransformerEmbedder  # noqa: E402
from rag.onnx_embed import OnnxEmbedder, session_options  # noqa: E402

FFN = ("intermediate", "output")


@dataclass
class Variant:
    """One encoder as measured: how it is called and with how many threads."""

    name: str
    encoder: Any
    threads: int
    torch: bool
    whole: bool = False


def scifact_chunks(folder: Path, embedder: SentenceTransformerEmbedder, *, limit: int) -> tuple[list[str], list[str]]:
    """Embedded texts of the chunks of `limit` documents and the test queries, judged documents first."""
    from rag.chunk import chunk_note
    from rag.load import parse_note

    judged: dict[str, None] = {}
    query_ids: dict[str, None] = {}
    for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, doc_id, _ = line.split("\t")
        query_ids[query_id] = None
        judged[doc_id] = None
    documents = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            documents[str(doc["_id"])] = doc
    order = [d for d in judged if d in documents] + [d for d in documents if d not in judged]
    texts = []
    for doc_id in order[:limit]:
        doc = documents[doc_id]
        note = parse_note(f"{doc_id}.md", f"# {doc.get('title') or doc_id}\n\n{doc.get('text') or ''}\n".encode())
        chunks = chunk_note(
            note,
            count_tokens=embedder.count_tokens,
            max_tokens=Config.chunk_tokens,
            overlap_tokens=Config.overlap_tokens,
        )
        texts += [c.embedding_text for c in chunks]
    queries = []
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        for line in handle:
            query = json.loads(line)
            if str(query["_id"]) in query_ids:
                queries.append(query["text"])
    return texts, queries


def starter_queries() -> list[str]:
    lines = (ROOT / "bench" / "questions" / "knowledge.jsonl").read_text().splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


def quantised(source: Path, target: Path, *, ffn_only: bool, layers: int) -> Path:
    """An int8 copy of the fp32 export (weights per channel, activations per batch), made once."""
    if target.exists():
        return target
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = None
    if ffn_only:
        nodes = [f"/model/encoder/layer.{i}/{part}/dense/MatMul" for i in range(layers) for part in FFN]
    target.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
        op_types_to_quantize=["MatMul"] if ffn_only else None, nodes_to_quantize=nodes,
        # The fused graph's com.microsoft operators defeat shape inference; their outputs are float32.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )  # fmt: skip
    return target


class QuantisedOnnx(OnnxEmbedder):
    """The ONNX encoder running an int8 file instead of the fp32 export."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path

    def prepare(self) -> Path:
        return self.path

    def _load(self) -> tuple[Any, Any]:
        # All of onnxruntime's graph optimisations (its default): they fuse the quantise/MatMulInteger pairs.
        if self._session is None:
            import onnxruntime as ort
            from tokenizers import Tokenizer

            options = session_options(self.threads or 1)
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            tokenizer = Tokenizer.from_file(str(self.location / "tokenizer.json"))
            tokenizer.enable_truncation(self.max_tokens)
            tokenizer.enable_padding()
            self._tokenizer = tokenizer
        return self._session, self._tokenizer


def neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1)[:, :k]


def top_chunks(queries: np.ndarray, chunks: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ chunks.T), axis=1)[:, :k]


def overlap(want: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(want, got, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a BEIR folder with qrels/test.tsv; default: the starter notes")
    parser.add_argument("--limit", type=int, default=300, help="documents taken from --data (default 300)")
    parser.add_argument("--repeat-chunks", type=int, default=4, help="starter chunks repeated (default 4)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per encoder (default 2)")
    parser.add_argument("--call-size", type=int, default=64, help="chunks per embed_batch call (the sync's 64)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch/onnxruntime threads")
    parser.add_argument("--cache-dir", type=Path, help="ONNX export cache (default RAG_CACHE_DIR or ~/.cache/rag)")
    parser.add_argument("--no-int8", action="store_true", help="leave out the int8 variants")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    import torch

    threads = args.threads
    fp32 = SentenceTransformerEmbedder()
    if args.data:
        texts, queries = scifact_chunks(args.data, fp32, limit=args.limit)
        unique = len(texts)
    else:
        texts = starter_chunks(fp32)
        unique = len(texts)
        texts, queries = texts * args.repeat_chunks, starter_queries()
    cache = args.cache_dir or Config.from_env().cache_dir or Path(tempfile.gettempdir()) / "rag-bench-cache"
    where = {"location": fp32.location, "max_tokens": fp32.max_tokens, "cache_dir": cache}
    onnx = OnnxEmbedder(**where, threads=threads)
    export = onnx.prepare()
    variants = [
        Variant("fp32", fp32, threads, torch=True),
        Variant("bf16", SentenceTransformerEmbedder(precision="bf16"), threads, torch=True),
        Variant("bf16 whole", SentenceTransformerEmbedder(precision="bf16"), threads, torch=True, whole=True),
        Variant("bf16 b16", SentenceTransformerEmbedder(precision="bf16", batch_size=16), threads, torch=True),
        Variant("bf16 b64", SentenceTransformerEmbedder(precision="bf16", batch_size=64), threads, torch=True),
        Variant("bf16 1 thread", SentenceTransformerEmbedder(precision="bf16"), 1, torch=True),
        Variant("bf16-mixed", SentenceTransformerEmbedder(precision="bf16-mixed"), threads, torch=True),
        Variant("onnx fp32", onnx, threads, torch=False),
        Variant("onnx b32", OnnxEmbedder(**where, threads=threads, batch_size=32), threads, torch=False),
    ]
    if not args.no_int8:
        layers = int(json.loads((Path(fp32.location) / "config.json").read_text())["num_hidden_layers"])
        folder = Path(cache) / "bench-int8" / export.parent.name
        for name, ffn_only in (("int8 all", False), ("int8 ffn", True)):
            path = quantised(export, folder / f"{name.replace(' ', '-')}.onnx", ffn_only=ffn_only, layers=layers)
            variants.append(Variant(name, QuantisedOnnx(path, **where, threads=threads), threads, torch=False))

    for variant in variants:  # load, export if needed, warm up
        torch.set_num_threads(variant.threads)
        variant.encoder.embed_batch(texts[:8])
    query_vectors = onnx.embed_batch(queries)
    rates: dict[str, list[float]] = {v.name: [] for v in variants}
    vectors: dict[str, np.ndarray] = {}
    load_before = open("/proc/loadavg").read().split()[0]
    for _ in range(args.repeats):
        for variant in variants:  # interleaved, so load on the machine hits every encoder alike
            torch.set_num_threads(variant.threads)
            size = len(texts) if variant.whole else args.call_size
            started = time.perf_counter()
            parts = [variant.encoder.embed_batch(texts[i : i + size]) for i in range(0, len(texts), size)]
            rates[variant.name].append(len(texts) / (time.perf_counter() - started))
            vectors[variant.name] = np.concatenate(parts)[:unique]
    load_after = open("/proc/loadavg").read().split()[0]

    reference = vectors["fp32"]
    want_neighbours = neighbours(reference, 5)
    want_top = top_chunks(query_vectors, reference, 5)
    base = statistics.median(rates["fp32"])
    rows = []
    for variant in variants:
        got = vectors[variant.name]
        cosine = (got * reference).sum(axis=1)
        median = statistics.median(rates[variant.name])
        rows.append(
            {
                "encoder": variant.name,
                "runtime": "torch" if variant.torch else "onnxruntime",
                "threads": variant.threads,
                "batch": getattr(variant.encoder, "batch_size", None),
                "call": "whole" if variant.whole else args.call_size,
                "chunks_per_s": round(median, 2),
                "runs": [round(r, 2) for r in rates[variant.name]],
                "ratio_to_fp32": round(median / base, 2),
                "cosine_min": round(float(cosine.min()), 6),
                "cosine_mean": round(float(cosine.mean()), 6),
                "top5_agreement": round(overlap(want_neighbours, neighbours(got, 5)), 4),
                "query_top5_agreement": round(overlap(want_top, top_chunks(query_vectors, got, 5)), 4),
            }
        )
    tokens = fp32.count_tokens(texts[:unique])
    print(
        f"{len(texts)} chunks ({unique} distinct, {statistics.mean(tokens):.0f} tokens on average), {len(queries)} "
        f"queries, {args.repeats} runs each, {os.cpu_count()} cores, load {load_before} -> {load_after}"
    )
    print(
        f"{'encoder':14} {'runtime':11} {'thr':>3} {'batch':>5} {'call':>5} {'chunks/s':>9} {'x fp32':>7} "
        f"{'cos min':>9} {'cos mean':>9} {'top-5':>6} {'q top-5':>7}"
    )
    for r in rows:
        print(
            f"{r['encoder']:14} {r['runtime']:11} {r['threads']:3} {r['batch']:5} {r['call']:>5} "
            f"{r['chunks_per_s']:9.2f} {r['ratio_to_fp32']:7.2f} {r['cosine_min']:9.6f} {r['cosine_mean']:9.6f} "
            f"{r['top5_agreement']:6.3f} {r['query_top5_agreement']:7.3f}"
        )
    result = {
        "chunks": len(texts),
        "distinct_chunks": unique,
        "queries": len(queries),
        "mean_tokens": round(statistics.mean(tokens), 1),
        "repeats": args.repeats,
        "cores": os.cpu_count(),
        "load_before": float(load_before),
        "load_after": float(load_after),
        "results": rows,
    }
    print(json.dumps(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
