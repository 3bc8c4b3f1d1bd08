"""Answer quality and latency through the library (`Answerer.stream`) on the starter notes, per answer writer.

    python bench/answers.py [--writers extractive,smollm2] [--threads 1] [--limit N] [--json-out FILE]

Copies knowledge/ into a temporary folder, indexes it into a fresh store (real model, real Chroma), then, for each
writer, answers one warm-up question (not counted; a model's load is timed on its own) and asks every question of
bench/questions/knowledge.jsonl (a follow-up with the turn before it as history) and of
bench/questions/knowledge-unanswerable.jsonl. It prints two tables:

- quality: how often the answer contains the expected phrase (case-insensitive, dashes and Markdown emphasis
  ignored: rough), cites the note it comes from, and how often the phrase was in the sources shown at all (what
  retrieval left the writer); the share of unsupported sentences among all answer sentences; refusal rates on the
  answerable questions and on the unanswerable ones, in-domain and off-topic apart;
- latency and support: question to first text and to the full answer, p50/p95 over the answers written (a
  generated answer's first draft with text; an extractive answer has only its final one), and the spread of the
  sentences' `support` scores (p10/p50/p90) beside the threshold `rag.answer.SUPPORT_AT`.

Torch and llama.cpp threads are set explicitly and printed; the load average before and after says whether
anything else ran. It measures the default search settings (hybrid, k=5); it does not judge answers by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rag.answer import SUPPORT_AT, Answer, Answerer  # noqa: E402
from rag.config import Config  # noqa: E402
from rag.embed import resolve_encoder  # noqa: E402
from rag.knowledge import KnowledgeBase  # noqa: E402

QUESTIONS = ROOT / "bench" / "questions"
WARM_UP = "How are embeddings used for recommendation?"
_DASHES = re.compile("[\u2010-\u2015\u2212]")
_EMPHASIS = re.compile(r"[*_`]")


def code_version() -> str:
    """The commit the library code was measured at, with "+changes" when rag/ differs from it."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--", "rag") else "")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank `q` quantile (0-1) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def normalise(text: str) -> str:
    """Text as the rough phrase match reads it: lower case, every dash a hyphen, no Markdown emphasis."""
    return " ".join(_EMPHASIS.sub("", _DASHES.sub("-", text)).lower().split())


def contains(text: str, phrase: str) -> bool:
    return normalise(phrase) in normalise(text)


def read_questions(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The rows of a question file (JSON lines), the first `limit` of them."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def ask(answerer: Answerer, question: str, history: list[dict[str, str]], *, k: int) -> tuple[Answer, float, float]:
    """The final answer, and milliseconds to its first text and to the end."""
    started = time.perf_counter()
    first: float | None = None
    final: Answer | None = None
    for draft in answerer.stream(question, history=history, k=k):
        if first is None and draft.text.strip():
            first = time.perf_counter()
        final = draft
    ended = time.perf_counter()
    assert final is not None and final.final
    return final, ((first or ended) - started) * 1000, (ended - started) * 1000


def run_writer(answerer: Answerer, questions: list[dict[str, Any]], *, k: int) -> list[dict[str, Any]]:
    """One row per question: what was asked, the answer, its checks and its timings."""
    said: dict[str, str] = {}
    rows = []
    for item in questions:
        question = item["question"]
        history: list[dict[str, str]] = []
        before = item.get("follow_up_of")
        if before:
            history = [{"role": "user", "content": before}, {"role": "assistant", "content": said.get(before, "")}]
        answer, first_ms, answer_ms = ask(answerer, question, history, k=k)
        said[question] = answer.text
        by_number = {s.number: s for s in answer.sources}
        expected = item.get("answer")
        row = {
            "question": question,
            "kind": item.get("kind", "answerable"),
            "follow_up": bool(before),
            "searched": answer.searched,
            "mode": answer.mode,
            "text": answer.text,
            "reason": answer.reason,
            "first_ms": round(first_ms, 1),
            "answer_ms": round(answer_ms, 1),
            "sentences": len(answer.sentences),
            "unsupported": answer.unsupported,
            "support": [s.support for s in answer.sentences],
            "citations": answer.citations,
            "cited_notes": sorted({by_number[n].source for n in answer.citations if n in by_number}),
            "source_notes": [s.source for s in answer.sources],
        }
        if expected is not None:
            row.update(
                expected_source=item.get("source"),
                expected=expected,
                contains=contains(answer.text, expected) and answer.mode != "refused",
                in_sources=any(contains(s.text, expected) for s in answer.sources),
                cites_note=item.get("source") in row["cited_notes"],
            )
        print(
            f"  {answer.mode:<10} {answer_ms:8.0f} ms  {'+' if row.get('contains') else ' '} {question[:70]}",
            file=sys.stderr,
        )
        rows.append(row)
    return rows


def share(rows: list[dict[str, Any]], key: str) -> float | None:
    return round(sum(bool(r[key]) for r in rows) / len(rows), 3) if rows else None


def refusal_rate(rows: list[dict[str, Any]]) -> float | None:
    return round(sum(r["mode"] == "refused" for r in rows) / len(rows), 3) if rows else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one writer's rows (see the module docstring)."""
    answerable = [r for r in rows if r["kind"] == "answerable"]
    written = [r for r in rows if r["mode"] != "refused"]
    support_of = {
        name: [s for r in group if r["mode"] != "refused" for s in r["support"] if s is not None]
        for name, group in (("answerable", answerable), ("unanswerable", [r for r in rows if r not in answerable]))
    }
    sentences = sum(r["sentences"] for r in written)
    every_support = support_of["answerable"] + support_of["unanswerable"]

    def spread(values: list[float]) -> dict[str, float | None]:
        return {f"p{int(q * 100)}": percentile(values, q) for q in (0.1, 0.5, 0.9)}

    return {
        "questions": len(rows),
        "answerable": len(answerable),
        "answered": sum(r["mode"] != "refused" for r in answerable),
        "contains": share(answerable, "contains"),
        "cites_note": share(answerable, "cites_note"),
        "in_sources": share(answerable, "in_sources"),
        "sentences": sentences,
        "unsupported_share": round(sum(r["unsupported"] for r in written) / sentences, 3) if sentences else None,
        # Sentences that cite a source (only those get a support score).
        "cited_share": round(len(every_support) / sentences, 3) if sentences else None,
        "refused": {
            "answerable": refusal_rate(answerable),
            "in-domain": refusal_rate([r for r in rows if r["kind"] == "in-domain"]),
            "off-topic": refusal_rate([r for r in rows if r["kind"] == "off-topic"]),
        },
        "written": len(written),
        "first_p50_ms": percentile([r["first_ms"] for r in written], 0.5),
        "first_p95_ms": percentile([r["first_ms"] for r in written], 0.95),
        "answer_p50_ms": percentile([r["answer_ms"] for r in written], 0.5),
        "answer_p95_ms": percentile([r["answer_ms"] for r in written], 0.95),
        "support": spread(every_support),
        "support_answerable": spread(support_of["answerable"]),
        "support_unanswerable": spread(support_of["unanswerable"]),
        "below_support_at": round(sum(s < SUPPORT_AT for s in every_support) / len(every_support), 3)
        if every_support
        else None,
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value >= 100 else f"{value:.2f}"
    return str(value)


def tables(result: dict[str, Any]) -> str:
    """The two Markdown tables: quality, then latency and support."""
    quality = ["writer", "answered", "contains", "cites note", "in sources", "unsupported", "refused ans."]
    quality += ["refused in-domain", "refused off-topic"]
    speed = ["writer", "written", "first p50 ms", "first p95 ms", "full p50 ms", "full p95 ms"]
    speed += ["cited", "support p10", "p50", "p90", f"below {SUPPORT_AT}"]
    lines = ["| " + " | ".join(quality) + " |", "|" + "---|" * len(quality)]
    for run in result["writers"]:
        s = run["summary"]
        cells = [run["writer"], f"{s['answered']}/{s['answerable']}", s["contains"], s["cites_note"], s["in_sources"]]
        cells += [s["unsupported_share"], s["refused"]["answerable"], s["refused"]["in-domain"]]
        cells += [s["refused"]["off-topic"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", "| " + " | ".join(speed) + " |", "|" + "---|" * len(speed)]
    for run in result["writers"]:
        s = run["summary"]
        cells = [run["writer"], s["written"], s["first_p50_ms"], s["first_p95_ms"], s["answer_p50_ms"]]
        cells += [s["answer_p95_ms"], s["cited_share"], s["support"]["p10"], s["support"]["p50"], s["support"]["p90"]]
        cells += [s["below_support_at"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", default="extractive,smollm2", help="comma list: extractive, smollm2, a .gguf")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads of a model writer (default 1)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--limit", type=int, default=0, help="ask only the first N questions of each file")
    parser.add_argument("-k", type=int, default=5, help="hits searched per question (default 5)")
    parser.add_argument("--knowledge", type=Path, default=ROOT / "knowledge", help="notes to copy and index")
    parser.add_argument("--questions", type=Path, default=QUESTIONS / "knowledge.jsonl")
    parser.add_argument("--unanswerable", type=Path, default=QUESTIONS / "knowledge-unanswerable.jsonl")
    parser.add_argument("--json-out", type=Path, help="also write the result, every answer included, here")
    args = parser.parse_args(argv)
    args.writers = [w.strip() for w in args.writers.split(",") if w.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.torch_threads)
    questions = read_questions(args.questions, args.limit) + read_questions(args.unanswerable, args.limit)
    load_before = os.getloadavg()
    encoder = resolve_encoder(Config.from_env().encoder)
    result: dict[str, Any] = {
        "code": code_version(),
        "threads": {
            "torch": torch.get_num_threads(),
            "llama_cpp": args.threads,
            "onnxruntime": "default (one per core)",
            "cpus": os.cpu_count(),
        },
        "encoder": encoder,
        "k": args.k,
        "support_at": SUPPORT_AT,
        "questions": {
            "answerable": sum("answer" in q for q in questions),
            "follow_ups": sum("follow_up_of" in q for q in questions),
            "in-domain": sum(q.get("kind") == "in-domain" for q in questions),
            "off-topic": sum(q.get("kind") == "off-topic" for q in questions),
        },
        "writers": [],
    }
    print(
        f"threads: torch {result['threads']['torch']}, llama.cpp {args.threads}, onnxruntime its default "
        f"(cpus {os.cpu_count()}); encoder {encoder}; k={args.k}; code {result['code']}; load average before "
        + " ".join(f"{x:.2f}" for x in load_before)
    )
    with tempfile.TemporaryDirectory(prefix="bench-answers-") as tmp:
        knowledge = Path(tmp) / "knowledge"
        shutil.copytree(args.knowledge, knowledge)
        config = Config(knowledge_dir=knowledge, db_dir=Path(tmp) / "db")
        kb = KnowledgeBase(config)
        started = time.perf_counter()
        report = kb.sync()
        seconds = round(time.perf_counter() - started, 1)
        result["index"] = {"notes": report.notes, "chunks": report.chunks, "seconds": seconds}
        print(f"index: {report.notes} notes, {report.chunks} chunks in {seconds} s (model load included)")
        for writer in args.writers:
            if writer == "extractive":
                answerer = kb.answerer
            else:
                # The same store and embedder; only the writer differs.
                with_model = config.replace(llm=writer, llm_threads=args.threads)
                answerer = KnowledgeBase(with_model, embedder=kb.embedder).answerer
            # A model writer loads on first use; timed on its own, so no question is charged with it.
            load = getattr(answerer.writer, "_load", None)
            t0 = time.perf_counter()
            if load is not None:
                load()
            load_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            answerer.answer(WARM_UP, k=args.k)
            warm_s = time.perf_counter() - t0
            name = answerer.writer.model or "extractive"
            print(f"{writer}: model {name}, load {load_s:.2f} s, warm-up answer {warm_s:.2f} s", file=sys.stderr)
            rows = run_writer(answerer, questions, k=args.k)
            result["writers"].append(
                {
                    "writer": writer,
                    "model": answerer.writer.model,
                    "load_s": round(load_s, 2),
                    "warm_up_s": round(warm_s, 2),
                    "summary": summarise(rows),
                    "answers": rows,
                }
            )
    load_after = os.getloadavg()
    result["load_average"] = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]}
    for run in result["writers"]:
        print(f"{run['writer']}: model {run['model'] or '-'}, load {run['load_s']} s, warm-up {run['warm_up_s']} s")
    q = result["questions"]
    print(
        f"{q['answerable']} answerable questions ({q['follow_ups']} follow-ups), {q['in-domain']} in-domain and "
        f"{q['off-topic']} off-topic unanswerable; latency over the answers written (not refused)"
    )
    print(tables(result))
    print("load average after " + " ".join(f"{x:.2f}" for x in load_after))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
