"""How well "confident" separates answerable from unanswerable questions.

The BEIR queries are asked of their own corpus (they should come out confident) and of the starter knowledge
folder (they should not). Prints the share of right verdicts on each side, with the calibrated rule
(percentile of the best hit among the corpus's background pairs) and with the old fixed cosine threshold.

    python bench/calibration.py --data ../shared/eval/scifact --workdir /tmp/idx     # reuses that index
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from bench.beir import load_beir, take_slice, write_notes  # noqa: E402
from bench.retrieval import RememberingEmbedder  # noqa: E402
from rag.config import Config  # noqa: E402
from rag.knowledge import KnowledgeBase  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SWEEP = [80.0, 90.0, 95.0, 97.0, 98.0, 99.0, 99.5]


def verdicts(kb: KnowledgeBase, questions: list[str]) -> list[tuple[bool, float, float]]:
    """Per question: the confident verdict, the best hit's similarity and its percentile."""
    out = []
    for question in questions:
        result = kb.search(question, k=5)
        best = max(result.hits, key=lambda h: h.score)
        out.append((result.confident, best.score, max(h.percentile or 0.0 for h in result.hits)))
    return out


def summary(rows: list[tuple[bool, float, float]], *, expect: bool, fixed: float) -> dict:
    return {
        "questions": len(rows),
        "accuracy": round(sum(c == expect for c, _, _ in rows) / len(rows), 4),
        "accuracy_fixed_cosine": round(sum((s >= fixed) == expect for _, s, _ in rows) / len(rows), 4),
        "median_best_score": round(statistics.median(s for _, s, _ in rows), 4),
        "median_best_percentile": round(statistics.median(p for _, _, p in rows), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=0, help="first N queries only, with a small corpus slice")
    parser.add_argument("--distractors", type=int, default=200)
    parser.add_argument("--workdir", type=Path, help="a bench/retrieval.py --workdir to reuse (else a temp folder)")
    parser.add_argument("--db", default="db-fp32-200-32", help="index folder inside the workdir")
    parser.add_argument("--knowledge", type=Path, default=ROOT / "knowledge", help="the unrelated notes")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    beir = load_beir(args.data, args.split)
    if args.limit:
        beir = take_slice(beir, limit=args.limit, distractors=args.distractors)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rag-calib-"))
    write_notes(beir.corpus, workdir / "knowledge")
    # Each question is embedded once and asked of both corpora.
    embedder = RememberingEmbedder(KnowledgeBase(Config()).embedder)
    embedder.remember = True
    own = KnowledgeBase(Config(knowledge_dir=workdir / "knowledge", db_dir=workdir / args.db), embedder=embedder)
    own.sync(wait=600)
    other = KnowledgeBase(
        Config(knowledge_dir=args.knowledge, db_dir=Path(tempfile.mkdtemp(prefix="rag-calib-kn-"))),
        embedder=embedder,
    )
    other.sync()
    questions = list(beir.queries.values())
    fixed = own.config.confident_score
    asked_own, asked_other = verdicts(own, questions), verdicts(other, questions)
    result = {
        "data": str(args.data),
        "confident_percentile": own.config.confident_percentile,
        "fixed_cosine": fixed,
        "own_corpus": summary(asked_own, expect=True, fixed=fixed),
        "starter_knowledge": summary(asked_other, expect=False, fixed=fixed),
        # What other percentile thresholds would have given: (own corpus, starter knowledge) right verdicts.
        "threshold_sweep": {
            str(t): [
                round(sum(p >= t for _, _, p in asked_own) / len(asked_own), 4),
                round(sum(p < t for _, _, p in asked_other) / len(asked_other), 4),
            ]
            for t in SWEEP
        },
    }
    own_cal, other_cal = own.calibration(), other.calibration()
    for name, cal in (("own_corpus", own_cal), ("starter_knowledge", other_cal)):
        if cal is not None:
            result[name]["background_p50_p99"] = [cal.quantiles[500], cal.quantiles[990]]
    print("| asked of | questions | right verdicts (calibrated) | right verdicts (cosine >= 0.40) |")
    print("|---|---|---|---|")
    for name in ("own_corpus", "starter_knowledge"):
        row = result[name]
        print(f"| {name} | {row['questions']} | {row['accuracy']:.1%} | {row['accuracy_fixed_cosine']:.1%} |")
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
