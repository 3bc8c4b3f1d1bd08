"""BEIR-format data for the benchmarks: read a folder, take a small slice, write one Markdown note per document.

A BEIR folder holds `corpus.jsonl` ({"_id", "title", "text"}), `queries.jsonl` ({"_id", "text"}) and
`qrels/<split>.tsv` (query-id, corpus-id, score, with a header line). Only queries named in the qrels are used.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Beir:
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # query id -> text, only those with judgements
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance


def load_beir(data: Path, split: str = "test") -> Beir:
    """Read a BEIR folder, failing with the missing file's name."""
    data = Path(data)
    paths = {name: data / name for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv")}
    for name, path in paths.items():
        if not path.is_file():
            raise SystemExit(f"{path} is missing; --data must be a BEIR folder with {name}")
    qrels: dict[str, dict[str, int]] = {}
    with paths[f"qrels/{split}.tsv"].open(newline="") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if not row or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries = {}
    for line in paths["queries.jsonl"].read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            if str(item["_id"]) in qrels:
                queries[str(item["_id"])] = item["text"]
    corpus = {}
    for line in paths["corpus.jsonl"].read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            corpus[str(item["_id"])] = (item.get("title") or "", item.get("text") or "")
    # Judgements of documents or queries that are not in the files cannot be scored.
    qrels = {q: {d: s for d, s in docs.items() if d in corpus} for q, docs in qrels.items() if q in queries}
    qrels = {q: docs for q, docs in qrels.items() if docs}
    return Beir(corpus=corpus, queries={q: queries[q] for q in qrels}, qrels=qrels)


def take_slice(beir: Beir, *, limit: int, distractors: int) -> Beir:
    """The first `limit` queries, their relevant documents, and `distractors` other documents.

    The other documents are the first ones in note-name order, which has nothing to do with their topics but is
    stable: a larger slice only adds notes, so an index kept with --workdir grows instead of being rebuilt.
    """
    chosen = list(beir.qrels)[:limit]
    needed = {d for q in chosen for d in beir.qrels[q]}
    others = sorted(set(beir.corpus) - needed, key=note_name)
    extra = others[:distractors]
    keep = needed | set(extra)
    return Beir(
        corpus={d: beir.corpus[d] for d in beir.corpus if d in keep},
        queries={q: beir.queries[q] for q in chosen},
        qrels={q: beir.qrels[q] for q in chosen},
    )


def note_name(doc_id: str) -> str:
    """A file name for a document id: safe characters kept, anything else replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", doc_id) + ".md"


def write_notes(corpus: dict[str, tuple[str, str]], folder: Path) -> dict[str, str]:
    """One note per document (title in the front matter, text as the body); returns note path -> doc id.

    Files whose content is already what would be written are left alone, so a reused folder syncs as unchanged.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sources = {}
    for doc_id, (title, text) in corpus.items():
        name = note_name(doc_id)
        front = yaml.safe_dump({"title": title or doc_id, "id": doc_id}, allow_unicode=True, width=10_000)
        content = f"---\n{front}---\n\n{text.strip() or title}\n"
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
        sources[name] = doc_id
    wanted = set(sources)
    for stale in folder.glob("*.md"):
        if stale.name not in wanted:
            stale.unlink()
    return sources
