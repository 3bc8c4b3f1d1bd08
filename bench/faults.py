"""Crash a sync with SIGKILL at random points, sync again, and check the index equals a clean build.

    python bench/faults.py --trials 100 [--notes 300] [--seed 1] [--chroma-url URL] [--spawn]

Each trial changes the knowledge folder (rewrites a random share of a few hundred tiny notes, deletes and adds
a few), starts `python -m rag index`, SIGKILLs it at a random moment of the sync, looks at what the kill left
behind, runs the sync again uncut and compares the store with what a clean build holds: the same chunk ids with
the same texts and note hashes, no duplicates, nothing missing, and a vector index that returns exactly the stored
ids. At the end one clean build into a fresh store is compared vector by vector with the repaired one.

The real CLI and the real model run in every child. By default the children are forked from a multiprocessing
forkserver that has imported torch and sentence-transformers once (it loads no model and touches no store),
which makes a trial take seconds instead of the import time; `--spawn` starts a fresh `python -m rag index`
interpreter for each run instead. The test suite runs a short version of this (tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._process import QUIET, child_env, log_tail, start  # noqa: E402

WORDS = (
    "vector embedding token chunk index query cosine note heading model store sync search distance neighbour "
    "matrix corpus sentence paragraph semantic retrieval cluster dimension weight layer context window batch "
    "similarity ranking score recall precision lexical dense sparse hybrid keyword graph image audio"
).split()

# Heavy modules the forkserver imports once, so each child starts in a fraction of a second.
PRELOAD = ["torch", "sentence_transformers", "tokenizers", "chromadb", "rag.cli", "rag.store"]


@dataclass
class Trial:
    """One kill: when it came, what it interrupted, and whether the repaired index was right."""

    number: int
    kill_after: float
    pending_notes: int
    written_before_kill: int
    phase: str
    problems: list[str] = field(default_factory=list)
    # Chunks whose record and vector are stored but that Chroma's HNSW search did not return (see `_child_dump`).
    hnsw_misses: list[str] = field(default_factory=list)


@dataclass
class Report:
    trials: list[Trial] = field(default_factory=list)
    missed: int = 0  # runs that finished before the kill came; not counted as trials
    final_check: list[str] = field(default_factory=list)
    notes: int = 0
    chunks: int = 0
    seconds: float = 0.0

    @property
    def survived(self) -> int:
        return sum(1 for t in self.trials if not t.problems)

    @property
    def hnsw_missed(self) -> int:
        return sum(1 for t in self.trials if t.hnsw_misses)

    def phases(self) -> dict[str, int]:
        return dict(Counter(t.phase for t in self.trials))


# ---------------------------------------------------------------- the knowledge folder


def note_text(rng: random.Random, number: int, generation: int) -> str:
    """A tiny note with a unique marker word; one in twenty is long enough for several chunks."""
    paragraphs = rng.randint(8, 14) if rng.random() < 0.05 else rng.randint(1, 3)
    lines = [f"# Note {number} revision {generation}", ""]
    for p in range(paragraphs):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
        lines += [f"Marker n{number}g{generation}p{p}: {words}.", ""]
    return "\n".join(lines)


class Folder:
    """The generated knowledge folder and the revision of each note in it."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        self.path = path
        self.rng = rng
        self.revisions: dict[int, int] = {}
        self.next_number = 0
        path.mkdir(parents=True, exist_ok=True)

    def write(self, number: int) -> None:
        self.revisions[number] = self.revisions.get(number, -1) + 1
        target = self.path / f"note-{number:05d}.md"
        target.write_text(note_text(self.rng, number, self.revisions[number]), encoding="utf-8")

    def add(self, count: int) -> None:
        for _ in range(count):
            self.write(self.next_number)
            self.next_number += 1

    def change(self, *, most: float) -> None:
        """Rewrite a random share (up to `most`) of the notes, delete 3 % and add as many new ones."""
        numbers = sorted(self.revisions)
        share = self.rng.uniform(0.02, most)
        for number in self.rng.sample(numbers, max(1, int(len(numbers) * share))):
            self.write(number)
        gone = self.rng.sample(numbers, max(1, len(numbers) * 3 // 100))
        for number in gone:
            (self.path / f"note-{number:05d}.md").unlink()
            del self.revisions[number]
        self.add(len(gone))


def clean_build_chunks(
    folder: Path, *, chunk_tokens: int | None = None, overlap_tokens: int | None = None
) -> dict[str, tuple[str, str]]:
    """What a clean build of `folder` holds with the default settings (or the given ones), without embedding:
    chunk id -> (text, note hash)."""
    from rag.chunk import chunk_note
    from rag.config import Config
    from rag.embed import SentenceTransformerEmbedder
    from rag.load import find_notes, load_note

    tokens = SentenceTransformerEmbedder()  # counts tokens with the model's tokenizer; loads no weights
    budget = min(Config.chunk_tokens if chunk_tokens is None else chunk_tokens, tokens.max_tokens)
    overlap_tokens = Config.overlap_tokens if overlap_tokens is None else overlap_tokens
    result = {}
    for path in find_notes(folder):
        note = load_note(folder, path)
        chunks = chunk_note(
            note, count_tokens=tokens.count_tokens, max_tokens=budget, overlap_tokens=overlap_tokens, model=tokens.name
        )
        result.update({c.id: (c.text, c.note_hash) for c in chunks})
    return result


# ---------------------------------------------------------------- children


def _finds_itself(col: Any, chunk_id: str, page: dict[str, Any], vectors: Any) -> bool:
    vector = vectors[page["ids"].index(chunk_id)]
    return chunk_id in col.query(query_embeddings=[vector], n_results=5, include=[])["ids"][0]


def _child_cli(argv: list[str], log: str, env: dict[str, str]) -> None:
    """Body of a forked child: the real `python -m rag` entry point, output to a log file."""
    os.environ.update(env)
    with open(log, "a", encoding="utf-8") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        from rag.cli import main

        code = main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _child_dump(db: str, url: str | None, collection: str, target: str, with_vectors: bool) -> None:
    """Body of a forked child: everything the store holds, as JSON, plus a check of its vector index."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    from rag.store import Store

    # The generation that answers questions: what a user would search after the kill.
    store = Store.active(db_dir=Path(db), chroma_url=url, name=collection)
    dump: dict[str, Any] = {"chunks": [], "index_problems": [], "hnsw_misses": []}
    if store is not None:
        col = store.collection
        page = col.get(include=["documents", "metadatas", "embeddings"])
        vectors = page["embeddings"]
        for i, chunk_id in enumerate(page["ids"]):
            meta = page["metadatas"][i] or {}
            row = {
                "id": chunk_id,
                "text": page["documents"][i],
                "hash": meta.get("note_hash"),
                "source": meta.get("source"),
            }
            if with_vectors:
                row["vector"] = [float(x) for x in vectors[i]]
            dump["chunks"].append(row)
        count = col.count()
        if count != len(page["ids"]):
            dump["index_problems"].append(f"count() says {count} but get() returned {len(page['ids'])}")
        if count:
            # The nearest-neighbour index must return exactly the stored ids: none lost, no ghosts.
            probe = random.Random(count).sample(range(len(page["ids"])), min(3, len(page["ids"])))
            for i in probe:
                found = col.query(query_embeddings=[vectors[i]], n_results=count, include=[])["ids"][0]
                missing = set(page["ids"]) - set(found)
                # HNSW is approximate: a query for every vector may miss one that is there. A chunk counts as lost
                # only when a query with its own vector cannot find it either.
                missing = {m for m in missing if not _finds_itself(col, m, page, vectors)}
                extra = set(found) - set(page["ids"])
                if extra:
                    dump["index_problems"].append(f"vector search returned {len(extra)} ids the store does not hold")
                if missing:
                    # Reported apart from data problems: the record and vector are stored (compared above and in
                    # the final check) but the approximate index did not return them; an open finding, see README.
                    dump["hnsw_misses"].append(
                        f"vector query returned {len(found)} ids for {count} stored ({len(missing)} missing, "
                        f"{len(extra)} unknown)"
                    )
                    break
                if page["ids"][i] not in found[:3] and not _finds_itself(col, page["ids"][i], page, vectors):
                    dump["hnsw_misses"].append(f"chunk {page['ids'][i]} is not its own nearest neighbour")
    Path(target).write_text(json.dumps(dump), encoding="utf-8")
    os._exit(0)


class Runner:
    """Starts the CLI and store dumps as child processes: forked from a warm forkserver, or fresh interpreters."""

    def __init__(
        self, work: Path, *, db: Path, url: str | None, collection: str, spawn: bool, cache_dir: Path | None = None
    ) -> None:
        self.work = work
        self.db = db
        self.url = url
        self.collection = collection
        self.spawn = spawn
        self.env = {
            **QUIET,
            "RAG_COLLECTION": collection,
            # The children's model cache (ONNX export) stays in the work folder, never in ~/.cache/rag.
            "RAG_CACHE_DIR": str(cache_dir or work / "cache"),
            "TOKENIZERS_PARALLELISM": "false",
            # float32 torch gives the same vector for a text whatever batch it lands in, so a repaired store can be
            # compared with a clean build vector by vector; bfloat16 varies with the batch by about 1e-3.
            "RAG_ENCODER": "fp32",
        }
        self.log = str(work / "children.log")
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)

    def index_argv(self, knowledge: Path, db: Path | None = None) -> list[str]:
        argv = ["index", "--json", "--knowledge", str(knowledge), "--db", str(db or self.db)]
        return argv + (["--chroma-url", self.url] if self.url and db is None else [])

    def start_index(self, knowledge: Path, db: Path | None = None, *, env: dict[str, str] | None = None) -> Any:
        argv = self.index_argv(knowledge, db)
        env = {**self.env, **(env or {})}
        if self.spawn:
            env = child_env({**env, "PYTHONPATH": str(ROOT)})
            return start([sys.executable, "-m", "rag", *argv], log=Path(self.log), env=env, cwd=ROOT)
        child = self.context.Process(target=_child_cli, args=(argv, self.log, env))
        child.start()
        return child

    def run_index(self, knowledge: Path, db: Path | None = None) -> None:
        child = self.start_index(knowledge, db)
        code = wait(child)
        if code != 0:
            raise RuntimeError(
                f"`python -m rag {' '.join(self.index_argv(knowledge, db))}` exited with {code}; end of {self.log}:\n"
                + log_tail(self.log)
            )

    def dump(self, *, db: Path | None = None, with_vectors: bool = False) -> dict[str, Any]:
        target = self.work / "dump.json"
        target.unlink(missing_ok=True)
        url = None if db is not None else self.url
        child = self.context.Process(
            target=_child_dump, args=(str(db or self.db), url, self.collection, str(target), with_vectors)
        )
        child.start()
        child.join()
        if child.exitcode != 0 or not target.exists():
            raise RuntimeError(f"reading the store failed (exit code {child.exitcode})")
        return json.loads(target.read_text(encoding="utf-8"))


def wait(child: Any) -> int:
    if isinstance(child, subprocess.Popen):
        return child.wait()
    child.join()
    return child.exitcode


def running(child: Any) -> bool:
    return child.poll() is None if isinstance(child, subprocess.Popen) else child.is_alive()


def kill(child: Any) -> None:
    child.kill()  # SIGKILL for both Popen and multiprocessing.Process
    wait(child)


# ---------------------------------------------------------------- checks


def compare(dump: dict[str, Any], expected: dict[str, tuple[str, str]]) -> list[str]:
    """Differences between the store and a clean build, in words; empty when they are equal."""
    problems = list(dump["index_problems"])
    ids = [c["id"] for c in dump["chunks"]]
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        problems.append(f"{len(duplicates)} duplicate chunk ids, e.g. {duplicates[:3]}")
    stored = {c["id"]: (c["text"], c["hash"]) for c in dump["chunks"]}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    wrong = sorted(i for i in set(stored) & set(expected) if stored[i] != expected[i])
    if missing:
        problems.append(f"{len(missing)} chunks missing, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} chunks that a clean build does not have, e.g. {extra[:3]}")
    if wrong:
        problems.append(f"{len(wrong)} chunks with other text or note hash, e.g. {wrong[:3]}")
    return problems


def written_notes(dump: dict[str, Any], expected: dict[str, tuple[str, str]], pending: set[str]) -> int:
    """How many of the notes the killed sync had to (re)write were already whole in the store."""
    want: dict[str, set[str]] = {}
    for chunk_id in expected:
        want.setdefault(chunk_id.rsplit("#", 1)[0], set()).add(chunk_id)
    have: dict[str, set[tuple[str, str]]] = {}
    for c in dump["chunks"]:
        have.setdefault(c["source"], set()).add((c["id"], c["hash"]))
    done = 0
    for source in pending:
        expected_pairs = {(i, expected[i][1]) for i in want.get(source, set())}
        if expected_pairs and have.get(source) == expected_pairs:
            done += 1
    return done


def pending_sources(dump: dict[str, Any], expected: dict[str, tuple[str, str]]) -> set[str]:
    """Notes whose chunks in the store differ from the clean build: the work the next sync has to do."""
    have: dict[str, set[tuple[str, str, str]]] = {}
    for c in dump["chunks"]:
        have.setdefault(c["source"], set()).add((c["id"], c["text"], c["hash"]))
    want: dict[str, set[tuple[str, str, str]]] = {}
    for chunk_id, (text, note_hash) in expected.items():
        want.setdefault(chunk_id.rsplit("#", 1)[0], set()).add((chunk_id, text, note_hash))
    return {s for s in want if have.get(s) != want[s]}


def compare_vectors(repaired: dict[str, Any], clean: dict[str, Any], *, tolerance: float = 1e-4) -> list[str]:
    import numpy as np

    a = {c["id"]: c for c in repaired["chunks"]}
    b = {c["id"]: c for c in clean["chunks"]}
    if set(a) != set(b):
        return [f"the repaired store has {len(a)} chunk ids, a clean build {len(b)}; {len(set(a) ^ set(b))} differ"]
    problems = []
    worst = 0.0
    for chunk_id in a:
        if (a[chunk_id]["text"], a[chunk_id]["hash"]) != (b[chunk_id]["text"], b[chunk_id]["hash"]):
            problems.append(f"{chunk_id}: text or hash differs from a clean build")
        worst = max(worst, float(np.max(np.abs(np.array(a[chunk_id]["vector"]) - np.array(b[chunk_id]["vector"])))))
    if worst > tolerance:
        problems.append(f"vectors differ from a clean build by up to {worst:.2e} (tolerance {tolerance:g})")
    return problems


# ---------------------------------------------------------------- the experiment


def run_trials(
    trials: int,
    *,
    notes: int = 300,
    seed: int = 0,
    work: Path,
    url: str | None = None,
    collection: str = "faults",
    spawn: bool = False,
    change: float = 0.5,
    echo: Any = None,
) -> Report:
    """Kill `trials` syncs at random moments; after each, sync again and compare with a clean build.

    Each trial first rewrites a random share of the notes, at most `change`, so the killed sync has work to do.
    """
    started = time.perf_counter()
    say = echo or (lambda *_: None)
    rng = random.Random(seed)
    folder = Folder(work / "knowledge", rng)
    runner = Runner(work, db=work / "db", url=url, collection=collection, spawn=spawn)
    report = Report()

    # Calibrate: a no-op sync gives the start-up time, a full build the time per chunk.
    folder.add(notes)
    t0 = time.perf_counter()
    runner.run_index(folder.path)
    full = time.perf_counter() - t0
    t0 = time.perf_counter()
    runner.run_index(folder.path)
    startup = time.perf_counter() - t0
    folder.write(0)
    t0 = time.perf_counter()
    runner.run_index(folder.path)
    one_note = time.perf_counter() - t0  # start-up plus loading the model
    expected = clean_build_chunks(folder.path)
    per_chunk = max(full - one_note, 0.1) / max(len(expected), 1)
    state = runner.dump()
    problems = compare(state, expected)
    if problems:
        raise RuntimeError(f"an uncut build differs from the expected chunks: {problems}")
    say(
        f"calibrated: {len(expected)} chunks; full build {full:.1f} s, no-op sync {startup:.1f} s, "
        f"one changed note {one_note:.1f} s"
    )

    attempts = 0
    scale = 1.0  # corrects the estimate when runs turn out quicker than calibrated
    while len(report.trials) < trials and attempts < trials * 3:
        attempts += 1
        folder.change(most=change)
        expected = clean_build_chunks(folder.path)
        pending = pending_sources(state, expected)
        estimate = one_note + per_chunk * sum(1 for i in expected if i.rsplit("#", 1)[0] in pending)
        kill_after = rng.uniform(0.3 * startup, 1.1 * estimate * scale)
        child = runner.start_index(folder.path)
        began = time.perf_counter()
        while running(child) and time.perf_counter() - began < kill_after:
            time.sleep(0.02)
        if not running(child):
            wait(child)
            took = time.perf_counter() - began
            # The machine got faster than calibrated: aim the next kills earlier.
            scale = max(0.05, scale * 0.5 + 0.5 * took / max(estimate, 0.1))
            state = runner.dump()
            report.missed += 1
            say(f"  run finished after {took:.2f} s, before the kill at {kill_after:.2f} s; not counted")
            continue
        kill(child)
        after_kill = runner.dump()
        written = written_notes(after_kill, expected, pending)
        phase = "before any write" if written == 0 else "after all writes" if written == len(pending) else "mid-write"
        runner.run_index(folder.path)
        trial = Trial(len(report.trials) + 1, round(kill_after, 3), len(pending), written, phase)
        state = runner.dump()
        trial.problems = compare(state, expected)
        trial.hnsw_misses = list(state.get("hnsw_misses", []))
        report.trials.append(trial)
        verdict = "ok" if not trial.problems else "FAILED: " + "; ".join(trial.problems)
        say(
            f"trial {trial.number:3d}: SIGKILL at {kill_after:5.2f} s, {written:3d}/{len(pending):3d} changed "
            f"notes written ({phase}); after resync {verdict}"
        )

    # Last, one clean build into a fresh store: the repaired store must match it vector by vector.
    clean_db = work / "clean-db"
    runner.run_index(folder.path, db=clean_db)
    report.final_check = compare_vectors(runner.dump(with_vectors=True), runner.dump(db=clean_db, with_vectors=True))
    report.notes = len(folder.revisions)
    report.chunks = len(expected)
    report.seconds = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100, help="kills to survive (default 100)")
    parser.add_argument("--notes", type=int, default=300, help="notes in the generated folder (default 300)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--change", type=float, default=0.5, help="most of the notes one trial rewrites (0.5)")
    parser.add_argument("--chroma-url", help="crash syncs against this Chroma server instead of an embedded store")
    parser.add_argument("--spawn", action="store_true", help="a fresh `python -m rag index` interpreter per run")
    parser.add_argument("--workdir", type=Path, help="keep the folder, store and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with contextlib.ExitStack() as stack:
        work = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-faults-")))
        if args.workdir and work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        collection = f"faults{os.getpid()}" if args.chroma_url else "faults"
        report = run_trials(
            args.trials,
            notes=args.notes,
            seed=args.seed,
            work=work,
            url=args.chroma_url,
            collection=collection,
            spawn=args.spawn,
            change=args.change,
            echo=print,
        )
    print()
    print(f"store: {args.chroma_url or 'embedded'}; children: {'fresh interpreters' if args.spawn else 'forkserver'}")
    print(f"notes: {report.notes}, chunks in a clean build: {report.chunks}")
    print(
        f"trials survived: {report.survived}/{len(report.trials)} "
        f"(runs that finished before the kill: {report.missed})\n"
        f"trials where HNSW search missed a stored chunk: {report.hnsw_missed}/{len(report.trials)}"
    )
    print("kill landed: " + ", ".join(f"{k} {v}" for k, v in sorted(report.phases().items())))
    print(
        "final comparison with a clean build: " + ("equal" if not report.final_check else "; ".join(report.final_check))
    )
    print(f"wall time: {report.seconds} s")
    return 0 if report.survived == len(report.trials) and not report.final_check else 1


if __name__ == "__main__":
    sys.exit(main())
