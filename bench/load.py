"""Load: concurrent searches against the web chat while notes are added through it; every note must get indexed.

    python bench/load.py --launch [--clients 20] [--seconds 60]
    python bench/load.py --url http://127.0.0.1:7860 [--clients 20] [--seconds 60]

`--clients` threads call `GET /api/search?q=...&k=5` in a loop for `--seconds`; one more thread adds a note through
`POST /api/notes` every `--note-every` seconds. Afterwards each added note is searched for by its own text until
it shows up (or `--settle` seconds pass). Prints requests served, errors, p50/p95/max latency and the notes found.
Loopback only, bounded in time and in requests. `--launch` starts `python -m demo` on a free port with a copy of
the starter notes in a temporary folder and stops it at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._process import answers, child_env, free_port, serve  # noqa: E402

QUESTIONS = [
    "what are embeddings?",
    "how is cosine similarity computed?",
    "why split notes into chunks?",
    "what does word2vec learn?",
    "how does GloVe use co-occurrence counts?",
    "what is retrieval-augmented generation?",
    "how do vector databases index vectors?",
    "what is BM25 and why combine it with dense search?",
    "how are images embedded?",
    "one-hot vectors versus dense vectors",
    "what makes BERT embeddings contextual?",
    "how do I evaluate retrieval quality?",
    "what is a sentence embedding?",
    "graph embeddings for recommendations",
    "what does Chroma store?",
    "recall at k",
]


@dataclass
class Tally:
    """Everything the threads measured, behind one lock."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, text to search it by)
    note_errors: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"error: {url} is not a loopback address; this load test only runs against 127.0.0.1")


def searcher(url: str, deadline: float, tally: Tally, number: int, max_requests: int) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(max_requests):
            if time.monotonic() >= deadline:
                return
            question = QUESTIONS[(number + i) % len(QUESTIONS)]
            started = time.perf_counter()
            try:
                response = client.get("/api/search", params={"q": question, "k": 5})
                elapsed = time.perf_counter() - started
                problem = search_problem(response, question)
            except httpx.HTTPError as exc:
                elapsed, problem = time.perf_counter() - started, type(exc).__name__
            with tally.lock:
                tally.latencies.append(elapsed)
                if problem:
                    tally.errors[problem] += 1


def search_problem(response: httpx.Response, question: str) -> str:
    """Why a search response is wrong, or '' when it keeps the JSON contract."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    if not {"question", "confident", "hits"} <= set(body) or not isinstance(body["hits"], list):
        return "missing keys"
    if len(body["hits"]) > 5 or any(not {"score", "source", "text"} <= set(h) for h in body["hits"]):
        return "malformed hits"
    return ""


def writer(url: str, deadline: float, tally: Tally, every: float, run: str) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        n = 0
        while time.monotonic() < deadline and n < 10_000:
            n += 1
            token = f"loadnote{run}n{n}"
            body = f"Marker {token}: a note added during the load test, number {n}, about quantised embedding caches."
            try:
                response = client.post("/api/notes", json={"title": f"Load {run} {n}", "body": body, "tags": ["load"]})
                if response.status_code in (200, 201) and "path" in response.json():
                    with tally.lock:
                        tally.notes.append((response.json()["path"], body))
                else:
                    tally.note_errors[f"HTTP {response.status_code}"] += 1
            except (httpx.HTTPError, ValueError) as exc:
                tally.note_errors[type(exc).__name__] += 1
            time.sleep(every)


def find_notes(url: str, notes: list[tuple[str, str]], settle: float) -> tuple[list[str], float]:
    """Search each note by its own text until it is among the hits; returns the ones never found and the wait."""
    started = time.monotonic()
    missing = dict(notes)
    with httpx.Client(base_url=url, timeout=60) as client:
        while missing and time.monotonic() - started < settle:
            for path, text in list(missing.items()):
                response = client.get("/api/search", params={"q": text, "k": 5})
                if response.status_code == 200 and any(h.get("source") == path for h in response.json()["hits"]):
                    del missing[path]
            if missing:
                time.sleep(1)
    return sorted(missing), time.monotonic() - started


@contextlib.contextmanager
def launched_demo(
    work: Path,
    *flags: str,
    knowledge: Path | None = None,
    ready: float = 600,
    cache_dir: Path | None = None,
) -> Iterator[str]:
    """`python -m demo` on a free loopback port with its own knowledge and db folders; yields the URL.

    `cache_dir` is the server's `RAG_CACHE_DIR` (its ONNX export of the model); by default the one already set.
    """
    folder = knowledge or work / "knowledge"
    if knowledge is None:
        shutil.copytree(ROOT / "knowledge", folder)
    port = free_port()
    argv = [sys.executable, "-m", "demo", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--knowledge", str(folder), "--db", str(work / "db"), *flags]
    url = f"http://127.0.0.1:{port}"
    # 401/403: a server started with --auth is up, it just wants a password.
    ready_check = answers(f"{url}/api/status", statuses=(200, 401, 403))
    env = child_env(cache_dir=cache_dir)
    with serve(argv, url=url, ready=ready_check, log=work / "demo.log", timeout=ready, env=env, cwd=ROOT):
        yield url


def run(url: str, *, clients: int, seconds: float, note_every: float, settle: float, max_requests: int) -> int:
    check_loopback(url)
    tally = Tally()
    run_id = uuid.uuid4().hex[:8]
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=searcher, args=(url, deadline, tally, n, max_requests), daemon=True)
        for n in range(clients)
    ]
    threads.append(threading.Thread(target=writer, args=(url, deadline, tally, note_every, run_id), daemon=True))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 180)
    elapsed = time.perf_counter() - started
    missing, waited = find_notes(url, tally.notes, settle)

    served = len(tally.latencies)
    errors = sum(tally.errors.values())
    ms = sorted(x * 1000 for x in tally.latencies)
    print(f"url: {url}  clients: {clients}  seconds: {seconds:g}")
    print(f"requests served: {served} in {elapsed:.1f} s ({served / elapsed:.1f}/s)")
    print(f"errors: {errors}" + (f" {dict(tally.errors)}" if errors else ""))
    if ms:
        p95 = statistics.quantiles(ms, n=20)[-1] if len(ms) > 1 else ms[0]
        print(f"latency ms: p50 {statistics.median(ms):.0f}  p95 {p95:.0f}  max {ms[-1]:.0f}")
    print(
        f"notes added: {len(tally.notes)} "
        f"(refused or failed: {sum(tally.note_errors.values())} {dict(tally.note_errors)})"
    )
    print(
        f"notes found by search afterwards: {len(tally.notes) - len(missing)}/{len(tally.notes)} "
        f"(waited {waited:.1f} s)"
    )
    if missing:
        print("never indexed: " + ", ".join(missing))
    ok = served > 0 and errors == 0 and not missing and not tally.note_errors and tally.notes
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running web chat, e.g. http://127.0.0.1:7860 (loopback only)")
    where.add_argument("--launch", action="store_true", help="start `python -m demo` on a free port for the run")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--note-every", type=float, default=2.0, help="seconds between added notes (default 2)")
    parser.add_argument("--settle", type=float, default=120, help="how long to wait for added notes to be found")
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap on requests per client")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 200 or not 0 < args.seconds <= 3600:
        parser.error("--clients must be 1-200 and --seconds at most 3600")
    options = dict(
        clients=args.clients,
        seconds=args.seconds,
        note_every=args.note_every,
        settle=args.settle,
        max_requests=args.max_requests,
    )
    if args.url:
        return run(args.url.rstrip("/"), **options)
    with tempfile.TemporaryDirectory(prefix="rag-load-") as tmp, launched_demo(Path(tmp)) as url:
        return run(url, **options)


if __name__ == "__main__":
    sys.exit(main())
