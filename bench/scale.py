"""How cost grows with the corpus (issue 14 point 4): index, unchanged re-sync, warm queries, memory, disk at N chunks.

    python bench/scale.py --eval /work/shared/eval --sizes 10000,30000 --reuse /tmp/rag-scale \
        --json-out bench/results-scale.json

For each size it writes a knowledge folder of Markdown notes holding about N chunks, made of real text: SciFact's
abstracts (with --eval) or else the starter notes, mixed so that no two notes are alike (each note takes the
shuffled sentences of two source texts under a title of its own). Then, with the real model and Chroma on disk:

- index: `KnowledgeBase.sync()` of the new folder in a child process (its peak RSS is the indexing peak), with
  the embedding throughput, so that a size not run can be extrapolated;
- serve, in a second child process, as the chat would: an unchanged re-sync in a fresh knowledge base and in a
  warm one, the first load of the keyword index and of the calibration, then warm query latency p50/p95 of
  `KnowledgeBase.search(mode=...)` for each mode, the parts of a hybrid search, hybrid search with a path and a
  tag filter, one edited note's sync and the keyword index's rebuild after it, and the process's RSS;
- the size on disk of the Chroma store and of the derived files (BM25 index, vector copy, calibration).

With --reuse DIR the notes and stores stay in DIR/chunks-N and a later run reuses them: the index figures are then
those saved by the run that built them (marked "reused"), and only the serve figures are measured again. Every
figure carries the load average it was measured at; above 1.5 it was measured beside other work.
It leaves out answer writing (bench/answers.py) and retrieval quality (bench/retrieval.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

# Bump when the way notes are made changes, so a reused folder made the old way is rebuilt.
CORPUS_FORMAT = 1
BUSY_LOAD = 1.5
# Notes carry one of this many tags (`tagged`): the tag filter of the serve phase keeps one note in TAG_SETS.
TAG_SETS = 20
GOALS = {"hybrid_p50_ms": 15.0, "rss_mb": 1536.0, "resync_50k_notes_s": 3.0}
GOAL_SIZE = 100_000
GOAL_NOTES = 50_000
STARTER_QUESTIONS = (
    "what is cosine similarity",
    "how does BM25 keyword search work",
    "how are chunks sized for embedding",
    "what does word2vec learn",
    "how does retrieval augmented generation use sources",
    "how do vector databases index embeddings",
    "what is the difference between one-hot and dense vectors",
    "how are image embeddings made",
)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def rss_mb() -> tuple[float, float]:
    """This process's resident memory now and at its peak, in MB."""
    now = 0.0
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return round(now, 1), round(peak, 1)


def folder_mb(folder: Path) -> float:
    if not folder.exists():
        return 0.0
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


# --- corpus -----------------------------------------------------------------------------------------------------


def beir_folder(path: Path) -> Path:
    """The BEIR folder itself, or its `scifact` child when given the folder above it."""
    path = Path(path)
    if (path / "corpus.jsonl").is_file():
        return path
    if (path / "scifact" / "corpus.jsonl").is_file():
        return path / "scifact"
    raise SystemExit(f"{path} holds no corpus.jsonl (nor scifact/corpus.jsonl); --eval must be a BEIR folder")


def source_texts(eval_dir: Path | None) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(title, sentences) of every source text, and questions to time: SciFact's, or the starter notes'."""
    sentence_end = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
    texts: list[tuple[str, list[str]]] = []
    questions: list[str] = []
    if eval_dir is not None:
        folder = beir_folder(eval_dir)
        with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
            for line in handle:
                doc = json.loads(line)
                sentences = [s for s in sentence_end.split(doc.get("text") or "") if s.strip()]
                if sentences:
                    texts.append((doc.get("title") or str(doc["_id"]), sentences))
        with open(folder / "queries.jsonl", encoding="utf-8") as handle:
            questions = [json.loads(line)["text"] for line in handle if line.strip()]
    else:
        from rag.load import find_notes, load_note

        root = ROOT / "knowledge"
        for path in find_notes(root):
            note = load_note(root, path)
            body = re.sub(r"^#+ .*$", "", note.body, flags=re.MULTILINE)
            sentences = [s for s in sentence_end.split(" ".join(body.split())) if s.strip()]
            texts.append((note.title, sentences))
        questions = list(STARTER_QUESTIONS)
    if not texts:
        raise SystemExit("no source texts found")
    return texts, questions


SHAPES = ("pair", "single")


def make_note(number: int, texts: list[tuple[str, list[str]]], shape: str = "pair") -> str:
    """Note `number`: two source texts' sentences, shuffled, in two sections, under a title of its own (shape
    "pair", about 5.5 chunks a note); or, shape "single", two to four shuffled sentences of one source text under
    its own title (about 1.7 chunks, so 100k chunks hold over 50k notes, the size of the re-sync goal).

    It depends only on `number` and the shape, so a larger corpus starts with the notes of a smaller one."""
    rng = random.Random(number)
    if shape == "single":
        which = rng.randrange(len(texts))
        sentences = list(texts[which][1])
        rng.shuffle(sentences)
        keep = sentences[: max(2, min(4, len(sentences) // 2))]
        return f"# {texts[which][0].rstrip('.')} (note {number})\n\n{' '.join(keep)}\n"
    first, second = rng.sample(range(len(texts)), 2) if len(texts) > 1 else (0, 0)
    title = f"{texts[first][0].rstrip('.')} (note {number})"
    sections = []
    for heading, which in (("Background", first), ("Findings", second)):
        sentences = list(texts[which][1])
        rng.shuffle(sentences)
        keep = sentences[: max(2, min(6, (len(sentences) * 2) // 3))]
        sections.append(f"## {heading} {number}\n\n{' '.join(keep)}\n")
    return f"# {title}\n\n" + "\n".join(sections)


def write_corpus(
    folder: Path, size: int, eval_dir: Path | None, embedder: Any, config: Any, shape: str = "pair"
) -> dict[str, Any]:
    """Write notes of `shape` into `folder` until they hold at least `size` chunks (as the sync will chunk them)."""
    from rag.chunk import chunk_note
    from rag.load import parse_note

    texts, _ = source_texts(eval_dir)
    budget = min(config.chunk_tokens, embedder.max_tokens)
    folder.mkdir(parents=True, exist_ok=True)
    chunks = notes = 0
    while chunks < size:
        name = f"note-{notes:06d}.md"
        text = tagged(notes, make_note(notes, texts, shape))
        note = parse_note(name, text.encode("utf-8"))
        chunks += len(
            chunk_note(
                note,
                count_tokens=embedder.count_tokens,
                max_tokens=budget,
                overlap_tokens=config.overlap_tokens,
                model=embedder.name,
            )
        )
        (folder / name).write_text(text, encoding="utf-8")
        notes += 1
    return {"notes": notes, "chunks": chunks, "tag_sets": TAG_SETS, "shape": shape}


def tagged(number: int, text: str) -> str:
    """The note with a front matter tag `set-K`, K = number mod TAG_SETS, so a tag filter keeps 1 note in TAG_SETS.

    Tags are not embedded, so they change no chunk id; a corpus written before tags were added has none, and the
    tag-filtered search is then left out."""
    return f"---\ntags: [set-{number % TAG_SETS}]\n---\n\n{text}"


# --- the two child phases ---------------------------------------------------------------------------------------


def make_config(workdir: Path) -> Any:
    from rag.config import Config

    return Config.from_env().replace(knowledge_dir=workdir / "notes", db_dir=workdir / "db")


class CopiedVectors:
    """The configured embedder, except that a text whose chunk a larger corpus's store already holds gets that
    stored vector (the same model's, for the same text) instead of a model call: the notes of a smaller corpus
    are the first notes of a larger one, so its stores are built without embedding anything twice."""

    def __init__(self, inner: Any, donor: Path) -> None:
        from rag.knowledge import KnowledgeBase

        self.inner, self.name, self.max_tokens = inner, inner.name, inner.max_tokens
        store = KnowledgeBase(make_config(donor)).store
        chunks = list(store.iter_chunks(with_text=True))
        vectors = store.vectors([c.id for c in chunks])
        self.known = {c.embedding_text: vectors[c.id] for c in chunks if c.id in vectors}
        self.copied = self.embedded = 0

    def embed_batch(self, texts: Any) -> Any:
        import numpy as np

        missing = [t for t in texts if t not in self.known]
        fresh = dict(zip(missing, self.inner.embed_batch(missing), strict=True)) if missing else {}
        self.embedded += len(missing)
        self.copied += len(texts) - len(missing)
        return np.stack([self.known[t] if t in self.known else fresh[t] for t in texts])

    def count_tokens(self, texts: Any) -> list[int]:
        return self.inner.count_tokens(texts)


def phase_index(workdir: Path, donor: Path | None = None) -> dict[str, Any]:
    """Sync the folder once (a first index when the store is new); figures of this process. With `donor` (the
    workdir of a larger corpus), vectors of chunks its store holds are copied, not embedded."""
    from rag.embed import make_embedder
    from rag.knowledge import KnowledgeBase

    load_before = load_average()
    config = make_config(workdir)
    copied = CopiedVectors(make_embedder(config), donor) if donor is not None else None
    kb = KnowledgeBase(config, embedder=copied)
    started = time.perf_counter()
    report = kb.sync()
    total = time.perf_counter() - started
    now, peak = rss_mb()
    return {
        "index_s": round(total, 2),
        "sync_folder_s": report.seconds,
        # The rest of the sync: the BM25 index with its vector copy, and the calibration, built and saved.
        "derived_s": round(total - report.seconds, 2),
        "embedded": report.embedded if copied is None else copied.embedded,
        "copied": 0 if copied is None else copied.copied,
        "chunks": report.chunks,
        "notes": report.notes,
        "chunks_per_s": round(report.embedded / report.seconds, 1) if report.embedded and copied is None else None,
        "encoder": type(kb.embedder if copied is None else copied.inner).__name__,
        "index_rss_mb": now,
        "index_peak_rss_mb": peak,
        "load": [load_before, load_average()],
    }


def phase_serve(workdir: Path, questions: list[str], modes: list[str], *, queries: int, rerank_queries: int) -> dict:
    """As a chat process would: open, re-sync an unchanged folder, load the derived files, answer warm queries."""
    from rag.embed import embed_query
    from rag.knowledge import KnowledgeBase
    from rag.retrieve import CANDIDATES

    config = make_config(workdir)
    row: dict[str, Any] = {"load": [load_average()]}
    t0 = time.perf_counter()
    kb = KnowledgeBase(config)
    assert kb.store is not None  # opening the store imports chromadb (~2 s), a cost that does not grow with the corpus
    row["open_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    report = kb.sync()
    row["resync_fresh_s"] = round(time.perf_counter() - t0, 3)
    if report.added or report.updated or report.removed:
        raise SystemExit(f"the re-sync was not unchanged: {report}")
    warm = []
    for _ in range(3):
        t0 = time.perf_counter()
        kb.sync()
        warm.append(time.perf_counter() - t0)
    row["resync_warm_s"] = round(statistics.median(warm), 3)
    t0 = time.perf_counter()
    kb.store.note_states()
    row["note_states_s"] = round(time.perf_counter() - t0, 3)
    row["notes"], row["chunks"] = report.notes, report.chunks
    t0 = time.perf_counter()
    keyword = kb.keyword_index()
    row["keyword_load_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    kb.calibration()
    row["calibration_load_s"] = round(time.perf_counter() - t0, 3)
    row["rss_after_load_mb"] = rss_mb()[0]

    for mode in modes:
        count = rerank_queries if mode == "rerank" else queries
        asked = [questions[n % len(questions)] for n in range(count + 3)]
        t0 = time.perf_counter()
        kb.search(asked[0], mode=mode)  # the first one loads what the mode needs (the cross-encoder for rerank)
        row[f"{mode}_first_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        for question in asked[1:3]:
            kb.search(question, mode=mode)
        times = []
        for question in asked[3:]:
            t0 = time.perf_counter()
            kb.search(question, mode=mode)
            times.append((time.perf_counter() - t0) * 1000)
        row[f"{mode}_p50_ms"] = round(statistics.median(times), 2)
        row[f"{mode}_p95_ms"] = round(percentile(times, 95), 2)
        row[f"{mode}_queries"] = len(times)

    # Where a warm hybrid search spends its time, part by part (the same calls `rag.retrieve._hybrid` makes).
    embedder, store = kb.embedder, kb.store
    parts: dict[str, list[float]] = {"embed": [], "chroma_nearest": [], "bm25_scores": [], "chroma_get": []}
    for question in [questions[n % len(questions)] for n in range(queries)]:
        t0 = time.perf_counter()
        vector = embed_query(embedder, question)
        t1 = time.perf_counter()
        nearest = store.nearest(vector, k=CANDIDATES)
        t2 = time.perf_counter()
        keyword.scores(question, top=CANDIDATES, among=nearest)
        t3 = time.perf_counter()
        store.get(list(nearest)[:5])
        t4 = time.perf_counter()
        for name, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[name].append(value * 1000)
    row["hybrid_parts_p50_ms"] = {name: round(statistics.median(v), 2) for name, v in parts.items()}
    row["rss_mb"], row["peak_rss_mb"] = rss_mb()
    row["keyword_rows"] = len(keyword)
    row["vector_copy_mb"] = round(keyword.vectors.nbytes / 2**20, 1)

    # A filtered search (`--path`): its cost grows with the whole corpus, not with the notes it keeps.
    if "hybrid" in modes:
        from rag.filters import SearchFilter

        def filtered_p50(only: SearchFilter) -> float:
            """Median ms of a hybrid search under `only`, the first two questions (which resolve it) left out."""
            times = []
            for question in [questions[n % len(questions)] for n in range(min(queries, 20))]:
                t0 = time.perf_counter()
                kb.search(question, mode="hybrid", only=only)
                times.append((time.perf_counter() - t0) * 1000)
            return round(statistics.median(times[2:] or times), 2)

        row["hybrid_filtered_p50_ms"] = filtered_p50(SearchFilter.of(None, ["note-0000*.md"]))  # the first 100 notes
        t0 = time.perf_counter()
        keyword.sources()
        row["keyword_sources_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        # A tag filter (one note in TAG_SETS); tags live only in Chroma's metadata.
        only = SearchFilter.of(["set-3"], None)
        if kb.search(questions[0], mode="hybrid", only=only).hits:
            row["hybrid_tag_filtered_p50_ms"] = filtered_p50(only)

    # One note edited, then put back: what an `add_note` or a saved edit costs at this size.
    note = config.knowledge_dir / "note-000000.md"
    original = note.read_text(encoding="utf-8")
    edits = []
    before_edit = kb.keyword_index()
    for text in (original + "\nOne more sentence, written by the benchmark.\n", original):
        note.write_text(text, encoding="utf-8")
        t0 = time.perf_counter()
        report = kb.sync()
        edits.append((time.perf_counter() - t0, report.seconds))
        if text != original:
            # The keyword index alone after that edit: rebuilt (and saved, in a folder of its own) from the index
            # before it, as the sync just did; the store's chunk list is read as when a caller passes no pairs.
            from rag.keyword import KeywordIndex

            with tempfile.TemporaryDirectory() as scratch:
                t0 = time.perf_counter()
                KeywordIndex.open(store, Path(scratch) / "bm25", previous=before_edit)
                row["keyword_edit_rebuild_s"] = round(time.perf_counter() - t0, 3)
    # The first edit also loads the document encoder; the second (putting the note back) is the warm figure.
    row["first_edit_sync_s"] = round(edits[0][0], 3)
    row["edit_sync_s"], row["edit_sync_folder_s"] = round(edits[1][0], 3), round(edits[1][1], 3)
    row["load"].append(load_average())
    return row


def run_child(phase: str, workdir: Path, args: argparse.Namespace, donor: Path | None = None) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--workdir", str(workdir)]
    if donor is not None:
        command += ["--donor", str(donor)]
    command += ["--modes", args.modes, "--queries", str(args.queries), "--rerank-queries", str(args.rerank_queries)]
    if args.eval is not None:
        command += ["--eval", str(args.eval)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"{phase} of {workdir} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the parent -------------------------------------------------------------------------------------------------


def measure_size(size: int, base: Path, args: argparse.Namespace, donor: Path | None = None) -> dict[str, Any]:
    from rag.embed import make_embedder

    workdir = base / (f"chunks-{size}" if args.shape == "pair" else f"chunks-{size}-{args.shape}")
    manifest_path = workdir / "corpus.json"
    source = str(beir_folder(args.eval)) if args.eval is not None else "knowledge/"
    wanted = {"format": CORPUS_FORMAT, "size": size, "source": source, "shape": args.shape}
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if {k: manifest.get(k) for k in wanted} != wanted:
        shutil.rmtree(workdir, ignore_errors=True)
        config = make_config(workdir)
        t0 = time.perf_counter()
        made = write_corpus(workdir / "notes", size, args.eval, make_embedder(config), config, args.shape)
        manifest = {**wanted, **made, "write_s": round(time.perf_counter() - t0, 1)}
        manifest_path.write_text(json.dumps(manifest))
    index_path = workdir / "index.json"
    index = run_child("index", workdir, args, donor)
    if index["embedded"] or index["copied"]:
        index_path.write_text(json.dumps(index))
        index["reused"] = False
    elif index_path.exists():
        index = {**json.loads(index_path.read_text()), "reused": True}
    else:
        index["reused"] = True  # built by a run that kept no figures
    serve = run_child("serve", workdir, args)
    row = {"size": size, "corpus": manifest, "index": index, "serve": serve, "workdir": str(workdir)}
    row["disk"] = {"chroma_mb": folder_mb(workdir / "db") - folder_mb(workdir / "db" / "derived")}
    row["disk"]["derived_mb"] = folder_mb(workdir / "db" / "derived")
    row["disk"]["chroma_mb"] = round(row["disk"]["chroma_mb"], 1)
    return row


def busy(load: list[float]) -> str:
    return " (beside other work)" if max(load) > BUSY_LOAD else ""


def print_row(row: dict[str, Any], modes: list[str]) -> None:
    index, serve, disk = row["index"], row["serve"], row["disk"]
    reused = " (reused: figures of the run that built it)" if index.get("reused") else ""
    if index.get("copied"):
        reused += f" ({index['copied']} vectors copied from the larger corpus's store, not embedded)"
    print(f"\n## {row['size']} chunks asked: {serve['chunks']} chunks in {serve['notes']} notes")
    print(
        f"index: {index['index_s']} s (sync_folder {index['sync_folder_s']} s, BM25 + vector copy + calibration "
        f"{index['derived_s']} s), {index['embedded']} chunks embedded at {index['chunks_per_s']} chunks/s by "
        f"{index['encoder']}; peak RSS {index['index_peak_rss_mb']} MB; load {index['load']}"
        f"{busy(index['load'])}{reused}"
    )
    print(
        f"unchanged re-sync: {serve['resync_fresh_s']} s in a fresh knowledge base (after {serve['open_s']} s opening "
        f"it), {serve['resync_warm_s']} s warm "
        f"(store's note states {serve['note_states_s']} s); first keyword index load {serve['keyword_load_s']} s, "
        f"calibration {serve['calibration_load_s']} s"
    )
    print("| mode | p50 ms | p95 ms | first ms | queries |")
    print("|---|---|---|---|---|")
    for mode in modes:
        print(
            f"| {mode} | {serve[f'{mode}_p50_ms']} | {serve[f'{mode}_p95_ms']} | {serve[f'{mode}_first_ms']} | "
            f"{serve[f'{mode}_queries']} |"
        )
    parts = ", ".join(f"{k} {v}" for k, v in serve["hybrid_parts_p50_ms"].items())
    print(f"hybrid parts, p50 ms: {parts}")
    if "hybrid_filtered_p50_ms" in serve:
        print(
            f"hybrid with a path filter (100 notes): p50 {serve['hybrid_filtered_p50_ms']} ms, of which listing the "
            f"keyword index's note paths {serve['keyword_sources_ms']} ms"
        )
    if "hybrid_tag_filtered_p50_ms" in serve:
        print(f"hybrid with a tag filter (1 note in {TAG_SETS}): p50 {serve['hybrid_tag_filtered_p50_ms']} ms")
    print(
        f"one note edited (warm): sync {serve['edit_sync_s']} s, of which sync_folder {serve['edit_sync_folder_s']} "
        f"s, the rest rebuilding the BM25 index and checking the calibration; the first edit, which also loads the "
        f"document encoder, {serve['first_edit_sync_s']} s; the keyword index alone rebuilt after that edit "
        f"{serve.get('keyword_edit_rebuild_s')} s"
    )
    print(
        f"serving RSS {serve['rss_mb']} MB (peak {serve['peak_rss_mb']} MB; {serve['rss_after_load_mb']} MB before "
        f"the first query), of which the keyword index's vector copy {serve['vector_copy_mb']} MB; disk: Chroma "
        f"{disk['chroma_mb']} MB, BM25 + vectors + calibration {disk['derived_mb']} MB; load {serve['load']}"
        f"{busy(serve['load'])}"
    )


def goals(rows: list[dict[str, Any]]) -> list[str]:
    """Each goal against the measured size nearest to it, extrapolated linearly when that size was not run."""
    if not rows:
        return []
    largest = max(rows, key=lambda r: r["serve"]["chunks"])
    serve, chunks = largest["serve"], largest["serve"]["chunks"]
    lines = []
    at = "measured" if chunks >= GOAL_SIZE * 0.95 else f"measured at {chunks} chunks, not at {GOAL_SIZE}"
    at += busy(serve["load"])
    p50 = serve.get("hybrid_p50_ms")
    if p50 is not None:
        verdict = "met" if p50 <= GOALS["hybrid_p50_ms"] else "missed"
        lines.append(f"hybrid p50 at {GOAL_SIZE} chunks <= {GOALS['hybrid_p50_ms']:g} ms: {p50} ms, {verdict} ({at})")
    verdict = "met" if serve["rss_mb"] <= GOALS["rss_mb"] else "missed"
    lines.append(
        f"serving RSS at {GOAL_SIZE} chunks <= {GOALS['rss_mb']:g} MB: {serve['rss_mb']} MB, {verdict} ({at}); "
        f"the vector copy alone grows by {serve['vector_copy_mb'] / max(chunks, 1) * 1000:.2f} MB per 1,000 "
        f"chunks, {serve['vector_copy_mb'] / max(chunks, 1) * GOAL_SIZE:.0f} MB at {GOAL_SIZE}"
    )
    # Opening the store costs the same at any size; the sync itself grows with the notes.
    guess = serve["resync_fresh_s"] / max(serve["notes"], 1) * GOAL_NOTES
    verdict = "met" if guess <= GOALS["resync_50k_notes_s"] else "missed"
    lines.append(
        f"unchanged re-sync of {GOAL_NOTES} notes <= {GOALS['resync_50k_notes_s']:g} s: {serve['resync_fresh_s']} s "
        f"for {serve['notes']} notes in a fresh knowledge base, {guess:.2f} s extrapolated linearly to {GOAL_NOTES} "
        f"notes, {verdict} (plus {serve['open_s']} s opening the store in a new process){busy(serve['load'])}"
    )
    rates = [r["index"]["chunks_per_s"] for r in rows if r["index"].get("chunks_per_s")]
    if rates:
        rate = statistics.median(rates)
        lines.append(
            f"embedding throughput {rate} chunks/s: a first index of {GOAL_SIZE} chunks takes about "
            f"{GOAL_SIZE / rate / 3600:.1f} h of embedding on this machine"
        )
    return lines


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,30000,100000", help="chunk counts, comma-separated")
    parser.add_argument("--eval", type=Path, help="BEIR folder (or the folder above scifact/); else starter notes")
    parser.add_argument("--reuse", type=Path, help="keep notes and stores here and reuse them in later runs")
    parser.add_argument("--modes", default="dense,hybrid,rerank")
    parser.add_argument("--queries", type=int, default=40, help="timed warm queries per mode")
    parser.add_argument("--rerank-queries", type=int, default=10, help="timed warm queries in rerank mode")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--shape", choices=SHAPES, default="pair", help="notes of two sources (pair) or one (single)")
    parser.add_argument(
        "--copy-vectors",
        action="store_true",
        help="build the largest size first and copy its stored vectors into the smaller ones (their notes are its "
        "first notes) instead of embedding them again; their index time then measures no embedding",
    )
    parser.add_argument("--phase", choices=["index", "serve"], help=argparse.SUPPRESS)
    parser.add_argument("--donor", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    if args.phase == "index":
        print(json.dumps(phase_index(args.workdir, args.donor)))
        return []
    if args.phase == "serve":
        _, questions = source_texts(args.eval)
        row = phase_serve(args.workdir, questions, modes, queries=args.queries, rerank_queries=args.rerank_queries)
        print(json.dumps(row))
        return []

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.copy_vectors:
        sizes.sort(reverse=True)
    base = args.reuse or Path(tempfile.mkdtemp(prefix="rag-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        donor: Path | None = None
        for size in sizes:
            row = measure_size(size, base, args, donor)
            rows.append(row)
            if args.copy_vectors and donor is None:
                donor = Path(row["workdir"])
            print_row(row, modes)
            sys.stdout.flush()
    finally:
        if args.reuse is None:
            shutil.rmtree(base, ignore_errors=True)
    lines = goals(rows)
    if lines:
        print("\n## goals")
        for line in lines:
            print(f"- {line}")
    if args.json_out is not None:
        result = {"sizes": rows, "goals": lines, "source": str(args.eval or "knowledge/"), "argv": sys.argv[1:]}
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
