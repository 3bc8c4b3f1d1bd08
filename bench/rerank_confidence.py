"""Does the cross-encoder's score tell answerable questions from unanswerable ones better than today's verdict?

Indexes the starter notes (knowledge/) in a temporary folder, asks the answerable questions of
bench/questions/knowledge.jsonl and the unanswerable ones of knowledge-unanswerable.jsonl in search mode "rerank",
and compares two signals of the best hits: the cosine percentile that the other modes' verdict is computed from,
and the best raw cross-encoder logit that rerank mode's verdict is computed from. Prints each signal's ROC AUC,
its best single threshold's accuracy, and the accuracy of both verdicts as shipped (the percentile bar of the
other modes, the logit bar of rerank mode). With --foreign, also how often queries of another corpus pass each bar.

    python bench/rerank_confidence.py --foreign ../shared/eval/scifact --json-out bench/results-rerank-confidence.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from rag.config import Config  # noqa: E402
from rag.knowledge import KnowledgeBase  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "bench" / "questions"


def auc(positive: list[float], negative: list[float]) -> float:
    """Probability that a random answerable question scores above a random unanswerable one (ties count half)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def best_threshold(positive: list[float], negative: list[float]) -> tuple[float, float]:
    """The bar that classifies the most questions right (at or above: answerable), and that accuracy."""
    best = (float("-inf"), 0.0)
    for bar in sorted(set(positive + negative)):
        right = sum(p >= bar for p in positive) + sum(n < bar for n in negative)
        accuracy = right / (len(positive) + len(negative))
        if accuracy > best[1]:
            best = (bar, accuracy)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--foreign", type=Path, help="a BEIR folder (e.g. ../shared/eval/scifact) whose queries the notes do not cover"
    )
    parser.add_argument("--foreign-queries", type=int, default=100, help="how many of its queries to ask")
    args = parser.parse_args(argv)
    answerable = [json.loads(line)["question"] for line in (QUESTIONS / "knowledge.jsonl").read_text().splitlines()]
    unanswerable = [
        json.loads(line)["question"] for line in (QUESTIONS / "knowledge-unanswerable.jsonl").read_text().splitlines()
    ]
    work = Path(tempfile.mkdtemp(prefix="rag-rerank-confidence-"))
    kb = KnowledgeBase(Config(knowledge_dir=ROOT / "knowledge", db_dir=work / "db", search_mode="rerank"))
    kb.sync()
    foreign: list[str] = []
    if args.foreign:
        with (args.foreign / "queries.jsonl").open(encoding="utf-8") as lines:
            foreign = [json.loads(line)["text"] for line in lines][: args.foreign_queries]
    rows = []
    for kind, questions in (("answerable", answerable), ("unanswerable", unanswerable), ("foreign", foreign)):
        for question in questions:
            result = kb.search(question, k=5)
            rows.append(
                {
                    "kind": kind,
                    "question": question,
                    "confident": result.confident,
                    "percentile": max((h.percentile or 0.0) for h in result.hits),
                    "logit": max(h.rerank_score for h in result.hits if h.rerank_score is not None),
                }
            )
    report = {}
    for signal in ("percentile", "logit"):
        positive = [r[signal] for r in rows if r["kind"] == "answerable"]
        negative = [r[signal] for r in rows if r["kind"] == "unanswerable"]
        bar, accuracy = best_threshold(positive, negative)
        report[signal] = {
            "auc": round(auc(positive, negative), 3),
            "best_bar": round(bar, 3),
            "accuracy": round(accuracy, 3),
        }
    own = [r for r in rows if r["kind"] != "foreign"]
    shipped = sum(r["confident"] == (r["kind"] == "answerable") for r in own) / len(own)
    report["shipped_verdict_accuracy"] = round(shipped, 3)
    cosine = sum((r["percentile"] >= Config.confident_percentile) == (r["kind"] == "answerable") for r in own)
    report["cosine_verdict_accuracy"] = round(cosine / len(own), 3)
    if args.foreign:
        strays = [r for r in rows if r["kind"] == "foreign"]
        report["foreign"] = {
            "queries": len(strays),
            "confident_by_logit": sum(r["confident"] for r in strays),
            "confident_by_percentile": sum(r["percentile"] >= Config.confident_percentile for r in strays),
        }
    load = os.getloadavg()
    print(f"{len(answerable)} answerable, {len(unanswerable)} unanswerable questions; load average {load[0]:.2f}")
    print("| signal | ROC AUC | best bar | accuracy at it |\n|---|---|---|---|")
    for signal in ("percentile", "logit"):
        r = report[signal]
        print(f"| {signal} | {r['auc']} | {r['best_bar']} | {r['accuracy']} |")
    print(
        f"| the other modes' verdict (percentile >= {Config.confident_percentile:g}) | | "
        f"| {report['cosine_verdict_accuracy']} |"
    )
    print(
        f"| rerank mode's verdict as shipped (logit >= {Config.rerank_confident_logit:g}) | | "
        f"| {report['shipped_verdict_accuracy']} |"
    )
    if args.foreign:
        f = report["foreign"]
        print(
            f"{f['queries']} queries of {args.foreign.name} asked of the notes: confident {f['confident_by_logit']} "
            f"times by the logit bar, {f['confident_by_percentile']} by the percentile bar"
        )
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"load_average": [round(x, 2) for x in load], **report, "rows": rows}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
