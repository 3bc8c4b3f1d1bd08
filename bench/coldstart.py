"""Cold start: how long a fresh `python -m rag ask ... --json` takes against an existing index.

    python bench/coldstart.py --runs 5

Builds an index of the starter notes in a temporary folder (with the configured encoder, which also exports
the ONNX query encoder), then times --runs fresh processes and prints the median wall and CPU time, the same
for the naive fp32 encoder (--baseline-runs), and an import breakdown from `python -X importtime`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "how does cosine similarity compare two embeddings?"


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall and CPU seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done


def import_breakdown(stderr: str, top: int) -> list[tuple[str, float]]:
    """Cumulative import seconds per top-level package, from `-X importtime` output."""
    totals: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if name.startswith("  "):  # nested import: already counted in its parent's cumulative time
            continue
        package = name.strip().split(".")[0]
        try:
            totals[package] = totals.get(package, 0.0) + int(cumulative) / 1e6
        except ValueError:
            continue
    return sorted(totals.items(), key=lambda item: -item[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-runs", type=int, default=2, help="runs with RAG_ENCODER=fp32 (0 to skip)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rag-coldstart-"))
    try:
        shutil.copytree(ROOT / "knowledge", work / "knowledge")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        env.update(
            HF_HUB_OFFLINE="1",
            RAG_KNOWLEDGE_DIR=str(work / "knowledge"),
            RAG_DB_DIR=str(work / "db"),
            RAG_CACHE_DIR=os.environ.get("RAG_CACHE_DIR", str(work / "cache")),
        )
        wall, _, _ = run(["-m", "rag", "index"], env)
        print(f"index built in {wall:.1f} s (encoder {os.environ.get('RAG_ENCODER', 'auto')})")
        ask = ["-m", "rag", "ask", QUESTION, "--json"]
        results = {}
        for label, extra, runs in (("fast", {}, args.runs), ("fp32", {"RAG_ENCODER": "fp32"}, args.baseline_runs)):
            walls, cpus = [], []
            for _ in range(runs):
                wall, cpu, done = run(ask, {**env, **extra})
                json.loads(done.stdout)
                walls.append(wall)
                cpus.append(cpu)
            if walls:
                results[label] = {
                    "runs": runs,
                    "wall_median_s": round(statistics.median(walls), 2),
                    "cpu_median_s": round(statistics.median(cpus), 2),
                    "walls": [round(w, 2) for w in walls],
                }
                print(
                    f"{label:5} ask: median {results[label]['wall_median_s']:.2f} s wall, "
                    f"{results[label]['cpu_median_s']:.2f} s CPU over {runs} runs {results[label]['walls']}"
                )
        if "fp32" in results:
            ratio = results["fp32"]["wall_median_s"] / results["fast"]["wall_median_s"]
            print(f"fp32 / fast wall ratio: {ratio:.1f}x")
        _, _, done = run(["-X", "importtime", *ask], env)
        breakdown = import_breakdown(done.stderr, 10)
        print("imports of one fast ask (cumulative s, top level):")
        for name, seconds in breakdown:
            print(f"  {name:28} {seconds:6.2f}")
        print(json.dumps({"results": results, "imports": dict(breakdown)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
