"""Latency of one question through the JSON API (`GET /api/search`) and through the Gradio queue (gradio_client
`/ask`, what the chat UI uses), against `python -m demo` started in a subprocess on a free loopback port.

    python bench/api_latency.py [-n 50] [--knowledge knowledge] [--db DIR]

Prints p50/p95 in milliseconds. Requests are sequential, capped in count (-n at most 500) and in time (60 s a
series). The first start indexes a copy of the notes into a temporary store unless --db points at one.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._process import answers, free_port, serve  # noqa: E402

QUESTIONS = [
    "What does a cosine similarity of 0.8 mean?",
    "How does hybrid search combine BM25 and embeddings?",
    "How big should chunks be?",
    "What is retrieval-augmented generation?",
    "How is word2vec trained?",
]
MAX_REQUESTS = 500
SERIES_SECONDS = 60.0


def measure(label: str, call, n: int) -> None:  # type: ignore[no-untyped-def]
    call(QUESTIONS[0])  # warm-up, not counted
    times: list[float] = []
    started = time.monotonic()
    for i in range(n):
        if time.monotonic() - started > SERIES_SECONDS:
            break
        t0 = time.perf_counter()
        call(QUESTIONS[i % len(QUESTIONS)])
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    print(f"{label:<34} n={len(times):<4} p50={statistics.median(times):7.1f} ms  p95={p95:7.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help=f"requests per series (at most {MAX_REQUESTS})")
    parser.add_argument("--knowledge", default=str(ROOT / "knowledge"), help="notes to copy and serve")
    parser.add_argument("--db", help="reuse this Chroma folder (default: a fresh temporary one)")
    args = parser.parse_args()
    n = max(1, min(args.n, MAX_REQUESTS))
    with tempfile.TemporaryDirectory() as tmp:
        knowledge = Path(tmp) / "knowledge"
        shutil.copytree(args.knowledge, knowledge)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "demo", "--port", str(port), "--knowledge", str(knowledge)]
        cmd += ["--db", args.db or str(Path(tmp) / "db"), "--read-only"]
        ready, log = answers(f"{url}/api/status"), Path(tmp) / "demo.log"
        t0 = time.perf_counter()
        # Gradio keeps the queue's event streams open after SIGTERM; `serve` kills the server after 30 s of that.
        with serve(cmd, url=url, ready=ready, log=log, timeout=600, stop_timeout=30, cwd=ROOT):
            print(f"server ready in {time.perf_counter() - t0:.1f} s (includes indexing) at {url}")
            with httpx.Client(base_url=url, timeout=60) as http:
                measure("JSON API  GET /api/search k=5", lambda q: http.get("/api/search", params={"q": q}).json(), n)
            from gradio_client import Client

            client = Client(url, verbose=False)
            measure("gradio_client /ask (queue+answer)", lambda q: client.predict(q, 5, None, api_name="/ask"), n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
