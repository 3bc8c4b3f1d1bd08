"""Answer coverage of the text a reader is shown: the top-k chunks (before) against the passages `gather_sources`
grows from them (after), on long, many-section notes (issue 13, point 1).

    python bench/passages.py [-k 5] [--sets long,knowledge] [--json-out FILE]

Each set is a folder of notes, copied and indexed into a temporary store (real model, real Chroma), and questions
with an expected phrase that its note states (bench/questions/long.jsonl over bench/questions/long-notes/: four
documents of 8-10 sections, each question's phrase in one section and mostly outside the chunk that matches the
question best; and the starter set, bench/questions/knowledge.jsonl over knowledge/). For every question it
searches once with k hits and counts whether the phrase (case-insensitive, dashes and Markdown emphasis ignored)
appears in:

- top-1 chunk: the best chunk alone (how the questions were designed: mostly not);
- chunks: the k hits' chunk texts, what a reader saw before passages;
- passages: `gather_sources(result, file_reader(folder))`, what a reader sees now, from the same k hits;
- chunks, same words: more hits of a wider search, in rank order, until they hold as many words as the passages
  did for that question, so a gain from showing more words is told apart from a gain from showing the right ones.

It prints coverage and the average words shown per question, and the word budget of the passages (k x
`rag.passage.PASSAGE_WORDS`). A follow-up is searched as `rag.answer.standalone_question` rewrites it without a
model. No answer is written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.answers import code_version, contains, read_questions  # noqa: E402
from rag.answer import standalone_question  # noqa: E402
from rag.config import Config  # noqa: E402
from rag.knowledge import KnowledgeBase  # noqa: E402
from rag.passage import PASSAGE_WORDS, file_reader, gather_sources  # noqa: E402
from rag.retrieve import CANDIDATES  # noqa: E402

QUESTIONS = ROOT / "bench" / "questions"
SETS = {
    "long": (QUESTIONS / "long-notes", QUESTIONS / "long.jsonl"),
    "knowledge": (ROOT / "knowledge", QUESTIONS / "knowledge.jsonl"),
}
# How many hits the same-words baseline may draw on: the hybrid search's own candidate depth, so that a search for
# this many ranks its first k exactly as a search for k does (both fuse the same candidates).
WIDE_K = CANDIDATES


def words(text: str) -> int:
    return len(text.split())


def measure(kb: KnowledgeBase, folder: Path, questions: list[dict[str, Any]], *, k: int) -> list[dict[str, Any]]:
    """One row per question: where its phrase was shown, and how many words each view showed."""
    read = file_reader(folder)
    rows = []
    for item in questions:
        history = [{"role": "user", "content": item["follow_up_of"]}] if item.get("follow_up_of") else []
        searched = standalone_question(item["question"], history)
        wide = kb.search(searched, k=max(WIDE_K, k))
        result = replace(wide, hits=wide.hits[:k])
        chunks = [h.chunk.text for h in result.hits]
        sources = gather_sources(result, read)
        shown = sum(words(s.text) for s in sources)
        same_words: list[str] = []
        for hit in wide.hits:
            if sum(words(t) for t in same_words) >= shown:
                break
            same_words.append(hit.chunk.text)
        phrase = item["answer"]
        rows.append(
            {
                "question": item["question"],
                "searched": searched,
                "source": item["source"],
                "answer": phrase,
                "top1": bool(chunks) and contains(chunks[0], phrase),
                "chunks": any(contains(t, phrase) for t in chunks),
                "passages": any(contains(s.text, phrase) for s in sources),
                "same_words": any(contains(t, phrase) for t in same_words),
                "chunk_words": sum(words(t) for t in chunks),
                "passage_words": shown,
                "same_words_words": sum(words(t) for t in same_words),
                "same_words_hits": len(same_words),
                "sources": [s.location for s in sources],
                "overlapping_sources": overlapping(sources),
            }
        )
    return rows


def overlapping(sources: list[Any]) -> int:
    """How many sources share lines with an earlier source of the same note (text shown twice)."""
    count = 0
    for i, source in enumerate(sources):
        if any(
            o.source == source.source and o.start_line <= source.end_line and source.start_line <= o.end_line
            for o in sources[:i]
        ):
            count += 1
    return count


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)

    def rate(key: str) -> float:
        return round(sum(bool(r[key]) for r in rows) / n, 3)

    def mean(key: str) -> float:
        return round(sum(r[key] for r in rows) / n, 1)

    return {
        "questions": n,
        "top1": rate("top1"),
        "chunks": rate("chunks"),
        "passages": rate("passages"),
        "same_words": rate("same_words"),
        "chunk_words": mean("chunk_words"),
        "passage_words": mean("passage_words"),
        "same_words_words": mean("same_words_words"),
        "same_words_hits": mean("same_words_hits"),
        "sources": mean_len(rows, "sources"),
        "overlapping_sources": sum(r["overlapping_sources"] for r in rows),
    }


def mean_len(rows: list[dict[str, Any]], key: str) -> float:
    return round(sum(len(r[key]) for r in rows) / len(rows), 1)


def table(result: dict[str, Any]) -> str:
    columns = ["set", "k", "questions", "top-1 chunk", "top-k chunks", "words", "passages", "words", "budget"]
    columns += ["sources", "overlapping", "chunks, same words", "words", "hits"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, run in result["sets"].items():
        for k, s in run["summary"].items():
            cells = [name, k, s["questions"], s["top1"], s["chunks"], s["chunk_words"], s["passages"]]
            cells += [s["passage_words"], result["word_budget"][k], s["sources"], s["overlapping_sources"]]
            cells += [s["same_words"], s["same_words_words"], s["same_words_hits"]]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="3,5", help="comma list of hits per question (default 3,5)")
    parser.add_argument("--sets", default="long,knowledge", help=f"comma list of {', '.join(SETS)}")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--json-out", type=Path, help="also write the result, every question included, here")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = set(names) - set(SETS)
    if unknown:
        parser.error(f"unknown set(s) {', '.join(sorted(unknown))}; choose from {', '.join(SETS)}")
    import torch

    torch.set_num_threads(args.torch_threads)
    ks = [int(k) for k in args.k.split(",") if k.strip()]
    if not ks or min(ks) < 1 or max(ks) > WIDE_K:
        parser.error(f"-k takes numbers from 1 to {WIDE_K}")
    result: dict[str, Any] = {
        "code": code_version(),
        "k": ks,
        "passage_words": PASSAGE_WORDS,
        "word_budget": {str(k): k * PASSAGE_WORDS for k in ks},
        "threads": {"torch": torch.get_num_threads(), "onnxruntime": "default (one per core)"},
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "sets": {},
    }
    for name in names:
        folder, question_file = SETS[name]
        with tempfile.TemporaryDirectory(prefix="bench-passages-") as tmp:
            notes = Path(tmp) / "notes"
            shutil.copytree(folder, notes)
            kb = KnowledgeBase(Config(knowledge_dir=notes, db_dir=Path(tmp) / "db"))
            started = time.perf_counter()
            report = kb.sync()
            seconds = round(time.perf_counter() - started, 1)
            runs = {str(k): measure(kb, notes, read_questions(question_file), k=k) for k in ks}
        result["sets"][name] = {
            "notes": report.notes,
            "chunks": report.chunks,
            "index_seconds": seconds,
            "summary": {k: summarise(rows) for k, rows in runs.items()},
            "questions": runs,
        }
        print(f"{name}: {report.notes} notes, {report.chunks} chunks, indexed in {seconds} s", file=sys.stderr)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(
        f"k={args.k}; a passage grows within {PASSAGE_WORDS} words, so k passages show at most k x {PASSAGE_WORDS} "
        f"words; torch threads {result['threads']['torch']}; code {result['code']}; load average before "
        + " ".join(map(str, result["load_average_before"]))
        + ", after "
        + " ".join(map(str, result["load_average_after"]))
    )
    print("coverage = share of questions whose expected phrase is in the text shown; words = average per question")
    print(table(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
