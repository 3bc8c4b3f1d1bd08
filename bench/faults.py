"""Crash syncs and rebuilds with SIGKILL at random points, run the index again, and check it equals a clean build.

    python bench/faults.py [--trials 8] [--notes 60] [--seed 1] [--rebuilds 0.5] [--chunk-sizes 128 96]
                           [--chroma-url URL] [--spawn] [--json-out FILE]

Each trial changes the knowledge folder (rewrites a random share of a few hundred tiny notes, deletes and adds
a few) and starts `python -m rag index`, which it SIGKILLs at a random moment. A trial is one of two kinds:

- sync: the settings stay, so the index is an incremental sync of the changed notes;
- rebuild: the chunk size flips between two values (`--chunk-sizes`), so the index builds a new generation
  beside the one that answers. While the rebuild lies killed, the old generation must still answer whole: the
  same records and vectors as before the kill, every chunk found by its own vector (`status --verify`), and a
  question through `python -m rag ask` answered from it.

Then `python -m rag index` runs again uncut with the trial's settings (a resumed rebuild, for that kind) and the
store is compared with a clean build of the same folder and settings: the same chunk ids with the same texts and
note hashes, no duplicates, nothing missing, vectors equal to the clean build's, exactly one generation left, and
`python -m rag status --verify` finding every chunk by its own vector. When it finds some unreachable (Chroma
bug chroma-core/chroma#7758), the bench counts them and runs `status --verify --repair`, and records whether that
brought them to 0. At the end one clean build into a fresh store is compared vector by vector with the store.

The clean build's vectors come from the real CLI too: a chunk id is a content address (note path, embedded text,
model and chunking), so its vector does not depend on the other notes. Each trial builds, into a fresh store,
only the notes holding ids no clean build has embedded yet, and keeps every vector it saw.

The real CLI and the real model run in every child. By default the children are forked from a multiprocessing
forkserver that has imported torch and sentence-transformers once (it loads no model and touches no store),
which makes a trial take seconds instead of the import time; `--spawn` starts a fresh `python -m rag index`
interpreter for each index run instead (the reads, `status` and `ask`, stay forked). The test suite runs a short
version of this (tests/test_faults.py).
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
from dataclasses import asdict, dataclass, field
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

KINDS = ("sync", "rebuild")
# Vectors count as equal to a clean build's when no component differs by more than this (float32 torch gives the
# same vector for a text whatever batch it lands in, to about 1e-6); it is stricter than a cosine of 0.999.
VECTOR_TOLERANCE = 1e-4


@dataclass
class Trial:
    """One kill: when it came, what it interrupted, and whether the index was right after the next run."""

    number: int
    kill_after: float
    pending_notes: int
    written_before_kill: int
    phase: str
    problems: list[str] = field(default_factory=list)
    # Chunks whose record and vector are stored but that Chroma's HNSW search did not return (see `_child_dump`).
    hnsw_misses: list[str] = field(default_factory=list)
    kind: str = "sync"
    chunk_tokens: int = 0
    # Killed as soon as the first batch of notes was written (`kill_after_first_batch`), not at a random moment.
    aimed: bool = False
    # Generations of the index left once the run after the kill finished (one when all is well).
    generations_left: int = 1
    # Lowest cosine between a stored vector and the clean build's vector of the same chunk id.
    worst_cosine: float = 1.0
    # A rebuild killed before its switch: whether the old generation was checked while the new one lay half built.
    old_generation_checked: bool = False
    # While a killed rebuild lay half built: chunks of the old generation the first `status --verify` missed and a
    # second one, in a fresh process, found (Chroma's HNSW graph is rebuilt from disk at each load).
    old_generation_misses: int = 0
    # Chunks `python -m rag status --verify` found unreachable after the trial, before any repair.
    unreachable: int = 0
    # Whether `status --verify --repair` (run only when `unreachable` > 0) left 0 unreachable; None: not run.
    repaired: bool | None = None
    # Wall time of the whole trial: the killed run, the checks, the next index and the comparison.
    seconds: float = 0.0
    # Of which, seconds per kind of child ("killed index", "index", "clean build", "dump", "status", "ask").
    spent: dict[str, float] = field(default_factory=dict)

    @property
    def ends_reachable(self) -> bool:
        return self.unreachable == 0 or self.repaired is True


@dataclass
class Report:
    trials: list[Trial] = field(default_factory=list)
    missed: int = 0  # runs that finished before the kill came; not counted as trials
    final_check: list[str] = field(default_factory=list)
    notes: int = 0
    chunks: int = 0
    seconds: float = 0.0
    # Unreachable chunks `status --verify` found after the runs that finished before the kill (repaired too).
    missed_unreachable: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    # os.getloadavg() when the trials started and when they ended.
    load: dict[str, list[float]] = field(default_factory=dict)

    @property
    def survived(self) -> int:
        return sum(1 for t in self.trials if not t.problems)

    @property
    def hnsw_missed(self) -> int:
        return sum(1 for t in self.trials if t.hnsw_misses)

    @property
    def ends_reachable(self) -> bool:
        return all(t.ends_reachable for t in self.trials)

    def phases(self, kind: str | None = None) -> dict[str, int]:
        return dict(Counter(t.phase for t in self.trials if kind is None or t.kind == kind))

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """Per kind of trial: trials, kills mid-write, survivors, unreachable chunks and what repair did."""
        summary = {}
        for kind in KINDS:
            trials = [t for t in self.trials if t.kind == kind]
            repaired = [t for t in trials if t.repaired is not None]
            summary[kind] = {
                "trials": len(trials),
                "killed_mid_write": sum(1 for t in trials if t.phase == "mid-write"),
                "aimed": sum(1 for t in trials if t.aimed),
                "survived": sum(1 for t in trials if not t.problems),
                "trials_with_unreachable": sum(1 for t in trials if t.unreachable),
                "unreachable_chunks": sum(t.unreachable for t in trials),
                "repairs": len(repaired),
                "repaired_to_zero": sum(1 for t in repaired if t.repaired),
                "ends_reachable": sum(1 for t in trials if t.ends_reachable),
                "old_generation_checked": sum(1 for t in trials if t.old_generation_checked),
                "old_generation_first_check_misses": sum(t.old_generation_misses for t in trials),
                "phases": self.phases(kind),
            }
        return summary

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "survived": self.survived,
            "hnsw_missed": self.hnsw_missed,
            "ends_reachable": self.ends_reachable,
            "phases": self.phases(),
            "by_kind": self.by_kind(),
        }


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


def source_of(chunk_id: str) -> str:
    return chunk_id.rsplit("#", 1)[0]


# ---------------------------------------------------------------- children


def _finds_itself(col: Any, chunk_id: str, page: dict[str, Any], vectors: Any) -> bool:
    vector = vectors[page["ids"].index(chunk_id)]
    return chunk_id in col.query(query_embeddings=[vector], n_results=5, include=[])["ids"][0]


def _child_cli(argv: list[str], log: str, env: dict[str, str], out: str | None = None) -> None:
    """Body of a forked child: the real `python -m rag` entry point, output to a log file (stdout to `out`)."""
    os.environ.update(env)
    with open(log, "a", encoding="utf-8") as errors, open(out or log, "a", encoding="utf-8") as output:
        os.dup2(output.fileno(), 1)
        os.dup2(errors.fileno(), 2)
        from rag.cli import main

        code = main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _generations(client: Any, collection: str) -> list[dict[str, Any]]:
    """Every generation of the index `collection`, read from Chroma's own list (not through the library)."""
    found = []
    for col in client.list_collections():
        if col.name == collection or (
            col.name.startswith(f"{collection}--") and col.name[len(collection) + 2 :].isdigit()
        ):
            meta = col.metadata or {}
            found.append({"name": col.name, "state": meta.get("state"), "chunker": meta.get("chunker")})
    return sorted(found, key=lambda g: g["name"])


def _child_dump(
    db: str, url: str | None, collection: str, target: str, with_vectors: bool, generation: str = "active"
) -> None:
    """Body of a forked child: everything one generation holds, as JSON (vectors beside it as .npy), plus a check
    of its vector index. `generation` is "active" (the one that answers) or "building" (a rebuild under way)."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import numpy as np

    from rag.store import Store, connect

    # The generation that answers questions: what a user would search after the kill.
    store = Store.active(db_dir=Path(db), chroma_url=url, name=collection)
    if store is not None and generation == "building":
        store = store.pending_rebuild()
    dump: dict[str, Any] = {"chunks": [], "index_problems": [], "hnsw_misses": [], "generations": []}
    if url or Path(db).exists():
        dump["generations"] = _generations(connect(db_dir=Path(db), chroma_url=url), collection)
    if store is not None:
        dump["name"] = store.name
        dump["build"] = str(store.build)
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
            dump["chunks"].append(row)
        if with_vectors:
            np.save(target + ".npy", np.asarray(vectors, dtype=np.float32).reshape(len(page["ids"]), -1))
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
        # Seconds spent in each kind of child, so a run can say where its time went.
        self.spent: Counter[str] = Counter()
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)

    def store_argv(self, knowledge: Path, db: Path | None = None) -> list[str]:
        argv = ["--json", "--knowledge", str(knowledge), "--db", str(db or self.db)]
        return argv + (["--chroma-url", self.url] if self.url and db is None else [])

    def index_argv(self, knowledge: Path, db: Path | None = None) -> list[str]:
        return ["index", *self.store_argv(knowledge, db)]

    def start_index(self, knowledge: Path, db: Path | None = None, *, env: dict[str, str] | None = None) -> Any:
        argv = self.index_argv(knowledge, db)
        env = {**self.env, **(env or {})}
        if self.spawn:
            env = child_env({**env, "PYTHONPATH": str(ROOT)})
            return start([sys.executable, "-m", "rag", *argv], log=Path(self.log), env=env, cwd=ROOT)
        child = self.context.Process(target=_child_cli, args=(argv, self.log, env))
        child.start()
        return child

    def run_index(
        self, knowledge: Path, db: Path | None = None, *, env: dict[str, str] | None = None, what: str = "index"
    ) -> None:
        began = time.perf_counter()
        child = self.start_index(knowledge, db, env=env)
        code = wait(child)
        self.spent[what] += time.perf_counter() - began
        if code != 0:
            raise RuntimeError(
                f"`python -m rag {' '.join(self.index_argv(knowledge, db))}` exited with {code}; end of {self.log}:\n"
                + log_tail(self.log)
            )

    def cli(self, argv: list[str], *, env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run `python -m rag ARGV` to the end in a forked child: its exit code and its stdout."""
        out = self.work / "cli-stdout.txt"
        out.unlink(missing_ok=True)
        began = time.perf_counter()
        child = self.context.Process(target=_child_cli, args=(argv, self.log, {**self.env, **(env or {})}, str(out)))
        child.start()
        child.join()
        self.spent[argv[0]] += time.perf_counter() - began
        return child.exitcode, out.read_text(encoding="utf-8") if out.exists() else ""

    def cli_json(self, argv: list[str], *, env: dict[str, str] | None = None, codes: tuple[int, ...] = (0,)) -> Any:
        code, out = self.cli(argv, env=env)
        if code not in codes:
            raise RuntimeError(
                f"`python -m rag {' '.join(argv)}` exited with {code}; end of {self.log}:\n{log_tail(self.log)}"
            )
        return json.loads(out)

    def dump(self, *, db: Path | None = None, with_vectors: bool = False, generation: str = "active") -> dict[str, Any]:
        import numpy as np

        target = self.work / "dump.json"
        target.unlink(missing_ok=True)
        url = None if db is not None else self.url
        began = time.perf_counter()
        child = self.context.Process(
            target=_child_dump, args=(str(db or self.db), url, self.collection, str(target), with_vectors, generation)
        )
        child.start()
        child.join()
        self.spent["dump"] += time.perf_counter() - began
        if child.exitcode != 0 or not target.exists():
            raise RuntimeError(f"reading the store failed (exit code {child.exitcode})")
        dump = json.loads(target.read_text(encoding="utf-8"))
        if with_vectors and dump["chunks"]:
            matrix = np.load(str(target) + ".npy")
            for row, vector in zip(dump["chunks"], matrix, strict=True):
                row["vector"] = vector
        return dump


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


def journal_stamps(db: Path) -> dict[Path, tuple[int, int]]:
    """Inode and modification time of every generation's sync journal under the local `db` folder."""
    from rag.knowledge import SYNC_JOURNAL

    stamps = {}
    for path in db.glob(f"derived/*/{SYNC_JOURNAL}"):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        stamps[path] = (stat.st_ino, stat.st_mtime_ns)
    return stamps


def wait_for_first_batch(child: Any, db: Path, *, poll: float = 0.005) -> None:
    """Return as soon as `child`'s sync has written its first batch of notes, or when it exits.

    A sync names each batch in its journal just before embedding and writing it, and replaces the journal for the
    next batch (or the deletions) or removes it once every note is written. So the first journal that differs from
    the ones there at the start marks the first batch begun, and its next change marks that batch written.
    """
    before = journal_stamps(db)
    first: tuple[Path, tuple[int, int]] | None = None
    while running(child):
        now = journal_stamps(db)
        if first is None:
            first = next(((p, s) for p, s in now.items() if before.get(p) != s), None)
        elif now.get(first[0]) != first[1]:
            return
        time.sleep(poll)


class CleanVectors:
    """The vector a clean build gives each chunk id, from the real CLI indexing fresh stores.

    A chunk id is a content address (note path, embedded text, model, chunking), so its vector in a clean build
    of the whole folder is the one a clean build of its note alone gives. `for_chunks` builds, into a fresh
    store, only the notes holding ids no clean build has embedded yet.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.vectors: dict[str, Any] = {}
        self.notes_built = 0

    def keep(self, dump: dict[str, Any]) -> None:
        self.vectors.update((c["id"], c["vector"]) for c in dump["chunks"])

    def for_chunks(self, folder: Path, expected: dict[str, tuple[str, str]], env: dict[str, str]) -> dict[str, Any]:
        sources = sorted({source_of(i) for i in expected if i not in self.vectors})
        if sources:
            part = self.runner.work / "clean-part"
            shutil.rmtree(part, ignore_errors=True)
            for source in sources:
                (part / "knowledge" / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / source, part / "knowledge" / source)
            self.runner.run_index(part / "knowledge", db=part / "db", env=env, what="clean build")
            built = self.runner.dump(db=part / "db", with_vectors=True)
            problems = compare(built, {i: v for i, v in expected.items() if source_of(i) in set(sources)})
            if problems:
                raise RuntimeError(
                    f"a clean build of {len(sources)} notes differs from the expected chunks: {problems}"
                )
            self.keep(built)
            self.notes_built += len(sources)
        return {i: self.vectors[i] for i in expected}


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
        want.setdefault(source_of(chunk_id), set()).add(chunk_id)
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
        want.setdefault(source_of(chunk_id), set()).add((chunk_id, text, note_hash))
    return {s for s in want if have.get(s) != want[s]}


def compare_vectors(
    repaired: dict[str, Any], clean: dict[str, Any], *, tolerance: float = VECTOR_TOLERANCE
) -> list[str]:
    """Differences between two dumps taken with vectors: ids, texts, hashes and vectors."""
    a = {c["id"]: c for c in repaired["chunks"]}
    b = {c["id"]: c for c in clean["chunks"]}
    if set(a) != set(b):
        return [f"the repaired store has {len(a)} chunk ids, a clean build {len(b)}; {len(set(a) ^ set(b))} differ"]
    problems = [
        f"{i}: text or hash differs from a clean build"
        for i in a
        if (a[i]["text"], a[i]["hash"]) != (b[i]["text"], b[i]["hash"])
    ]
    problems += vector_differences(
        {i: c["vector"] for i, c in a.items()}, {i: c["vector"] for i, c in b.items()}, tolerance=tolerance
    )[0]
    return problems


def vector_differences(
    stored: dict[str, Any], clean: dict[str, Any], *, tolerance: float = VECTOR_TOLERANCE
) -> tuple[list[str], float]:
    """Problems, in words, where a stored vector differs from the clean one of the same id; and the lowest cosine."""
    import numpy as np

    ids = sorted(set(stored) & set(clean))
    if not ids:
        return [], 1.0
    a = np.stack([np.asarray(stored[i], dtype=np.float32) for i in ids])
    b = np.stack([np.asarray(clean[i], dtype=np.float32) for i in ids])
    worst = float(np.max(np.abs(a - b)))
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    lowest = float(np.min(cosine))
    if worst > tolerance:
        far = int(np.sum(np.max(np.abs(a - b), axis=1) > tolerance))
        text = f"{far} vectors differ from a clean build by up to {worst:.2e} (tolerance {tolerance:g}"
        return [f"{text}; lowest cosine {lowest:.6f})"], lowest
    return [], lowest


def same_generation(after: dict[str, Any], before: dict[str, Any]) -> list[str]:
    """Differences between a generation now and before, exactly: records, texts, hashes and vectors."""
    problems = []
    if after.get("name") != before.get("name") or after.get("build") != before.get("build"):
        problems.append(
            f"the answering generation is {after.get('name')} ({after.get('build')}), not {before.get('name')}"
        )
    a = {c["id"]: c for c in after["chunks"]}
    b = {c["id"]: c for c in before["chunks"]}
    if set(a) != set(b):
        problems.append(f"it holds {len(set(a) - set(b))} chunks it did not, and lost {len(set(b) - set(a))}")
    changed = [i for i in set(a) & set(b) if (a[i]["text"], a[i]["hash"]) != (b[i]["text"], b[i]["hash"])]
    if changed:
        problems.append(f"{len(changed)} chunks changed text or note hash, e.g. {changed[:3]}")
    moved = vector_differences({i: a[i]["vector"] for i in a}, {i: b[i]["vector"] for i in b}, tolerance=0.0)[0]
    return problems + moved


# ---------------------------------------------------------------- the experiment


class Trials:
    """The state a run of trials carries from one to the next: the folder, the settings, the store's contents."""

    def __init__(self, runner: Runner, folder: Folder, *, chunk_sizes: tuple[int, int], say: Any) -> None:
        self.runner = runner
        self.folder = folder
        self.chunk_sizes = chunk_sizes
        self.tokens = chunk_sizes[0]
        self.clean = CleanVectors(runner)
        self.say = say
        self.state: dict[str, Any] = {}
        # Chunks the last check of an old generation missed at first (see `Trial.old_generation_misses`).
        self.old_misses = 0

    def env(self, tokens: int | None = None) -> dict[str, str]:
        return {"RAG_CHUNK_TOKENS": str(tokens or self.tokens)}

    def expected(self, tokens: int | None = None) -> dict[str, tuple[str, str]]:
        return clean_build_chunks(self.folder.path, chunk_tokens=tokens or self.tokens)

    def verify(self, *, repair: bool = False) -> dict[str, Any]:
        argv = ["status", *self.runner.store_argv(self.folder.path), "--verify", *(["--repair"] if repair else [])]
        return self.runner.cli_json(argv, env=self.env(), codes=(0, 1))["verify"]

    def settle(self, trial: Trial | None, expected: dict[str, tuple[str, str]]) -> int:
        """Check the store after an uncut run: data, vectors, generations, reachability; repair when needed.
        Returns how many chunks `status --verify` found unreachable before any repair."""
        self.state = self.runner.dump(with_vectors=True)
        problems = compare(self.state, expected)
        vectors = {c["id"]: c["vector"] for c in self.state["chunks"]}
        moved, lowest = vector_differences(vectors, self.clean.for_chunks(self.folder.path, expected, self.env()))
        problems += moved
        generations = self.state["generations"]
        if len(generations) != 1 or generations[0]["name"] != self.state.get("name"):
            problems.append(f"{len(generations)} generations left, not one: {generations}")
        check = self.verify()
        unreachable = len(check["unreachable"])
        if check["checked"] != len(self.state["chunks"]):
            problems.append(f"status --verify checked {check['checked']} of {len(self.state['chunks'])} chunks")
        if trial is not None:
            trial.problems += problems
            trial.hnsw_misses = list(self.state.get("hnsw_misses", []))
            trial.generations_left = len(generations)
            trial.worst_cosine = round(lowest, 6)
            trial.unreachable = unreachable
        elif problems:
            raise RuntimeError(f"an uncut run left the store unlike a clean build: {problems}")
        if unreachable:
            result = self.verify(repair=True)
            # `--repair` checks again first and copies nothing when that check finds every chunk: HNSW search
            # of a graph Chroma has just reloaded can find a chunk the run before missed. Its own check stands.
            after = result["after"] or result
            repaired = not after["unreachable"]
            how = "after --repair" if result["after"] else "--repair's own check found"
            self.say(f"  status --verify: {unreachable} unreachable, {how} {len(after['unreachable'])}")
            self.state = self.runner.dump(with_vectors=True)
            again = compare(self.state, expected)
            if len(self.state["generations"]) != 1:
                again.append(f"{len(self.state['generations'])} generations left, not one")
            if trial is not None:
                trial.repaired = repaired
                trial.problems += [f"after repair: {p}" for p in again]
        return unreachable

    def old_generation_answers(self, before: dict[str, Any], tokens: int, rng: random.Random) -> list[str]:
        """While a killed rebuild lies half built: the old generation holds what it held, every chunk is found by
        its own vector, and `python -m rag ask` with the new settings answers from it."""
        now = self.runner.dump(with_vectors=True)
        problems = same_generation(now, before)
        status = self.runner.cli_json(
            ["status", *self.runner.store_argv(self.folder.path), "--verify"], env=self.env(tokens), codes=(0, 1)
        )
        check = status["verify"]
        if check["unreachable"] and check["checked"] == len(before["chunks"]):
            # Counted, then checked once more: only a miss that a fresh load of the index repeats is a failure.
            self.old_misses = len(check["unreachable"])
            argv = ["status", *self.runner.store_argv(self.folder.path), "--verify"]
            check = self.runner.cli_json(argv, env=self.env(tokens), codes=(0, 1))["verify"]
        if check["unreachable"] or check["checked"] != len(before["chunks"]):
            problems.append(
                f"status --verify of the old generation: {len(check['unreachable'])} unreachable of {check['checked']}"
            )
        if not status.get("mismatch"):
            problems.append("status does not say that the index was built for other settings")
        asked = rng.choice(before["chunks"])
        result = self.runner.cli_json(
            ["ask", *self.runner.store_argv(self.folder.path), "-k", "3", asked["text"]], env=self.env(tokens)
        )
        hits = result["hits"]
        old_ids = {c["id"] for c in before["chunks"]}
        if not hits or hits[0]["source"] != asked["source"]:
            problems.append(f"ask with a chunk of {asked['source']} found {[h['source'] for h in hits]}")
        if any(h["id"] not in old_ids for h in hits):
            problems.append("ask answered with chunks the old generation does not hold")
        return [f"while killed: {p}" for p in problems]


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
    rebuilds: float = 0.5,
    chunk_sizes: tuple[int, int] = (128, 96),
    aim: float = 0.0,
    echo: Any = None,
) -> Report:
    """Kill `trials` syncs and rebuilds at random moments; after each, index again and compare with a clean build.

    Each trial first rewrites a random share of the notes, at most `change`, so the killed run has work to do.
    A share `rebuilds` of the trials (evenly spread) flips the chunk size between the two `chunk_sizes`.
    A share `aim` of each kind's trials (evenly spread) is killed right after the first batch of notes is written
    instead of at a random moment: with small folders a random moment mostly falls before any write, since the
    start-up takes longer than embedding and writing a few dozen chunks.
    """
    started = time.perf_counter()
    say = echo or (lambda *_: None)
    rng = random.Random(seed)
    folder = Folder(work / "knowledge", rng)
    runner = Runner(work, db=work / "db", url=url, collection=collection, spawn=spawn)
    run = Trials(runner, folder, chunk_sizes=chunk_sizes, say=say)
    report = Report(load={"start": [round(x, 2) for x in os.getloadavg()]})
    report.settings = {
        "trials": trials,
        "notes": notes,
        "seed": seed,
        "change": change,
        "rebuilds": rebuilds,
        "chunk_sizes": list(chunk_sizes),
        "store": url or "embedded",
        "children": "fresh interpreters" if spawn else "forkserver",
        "vector_tolerance": VECTOR_TOLERANCE,
        "aim": aim,
    }

    # Calibrate: a full build gives the time per chunk (and, into an empty store, clean vectors), a no-op sync the
    # start-up time, one changed note the start-up plus loading the model.
    folder.add(notes)
    t0 = time.perf_counter()
    runner.run_index(folder.path, env=run.env())
    full = time.perf_counter() - t0
    run.clean.keep(runner.dump(with_vectors=True))
    t0 = time.perf_counter()
    runner.run_index(folder.path, env=run.env())
    startup = time.perf_counter() - t0
    folder.write(0)
    t0 = time.perf_counter()
    runner.run_index(folder.path, env=run.env())
    one_note = time.perf_counter() - t0
    expected = run.expected()
    # The first build also warmed the disk caches and Chroma; time the embedding on a second one, into a scratch
    # store (a clean build too, so its vectors must equal the first's).
    t0 = time.perf_counter()
    runner.run_index(folder.path, db=work / "calibrate-db", env=run.env())
    full = time.perf_counter() - t0
    scratch = runner.dump(db=work / "calibrate-db", with_vectors=True)
    shutil.rmtree(work / "calibrate-db")
    problems = compare(scratch, expected)
    problems += vector_differences({c["id"]: c["vector"] for c in scratch["chunks"]}, run.clean.vectors)[0]
    if problems:
        raise RuntimeError(f"two clean builds of one folder differ: {problems}")
    run.clean.keep(scratch)
    per_chunk = max(full - one_note, 0.1) / max(len(expected), 1)
    run.settle(None, expected)
    say(
        f"calibrated: {len(expected)} chunks; full build {full:.1f} s, no-op sync {startup:.1f} s, "
        f"one changed note {one_note:.1f} s"
    )

    attempts = 0
    scale = dict.fromkeys(KINDS, 1.0)  # corrects the estimates when runs turn out quicker than calibrated
    while len(report.trials) < trials and attempts < trials * 3:
        attempts += 1
        trial_began = time.perf_counter()
        spent_before = Counter(runner.spent)
        number = len(report.trials) + 1
        kind = "rebuild" if int(number * rebuilds) > int((number - 1) * rebuilds) else "sync"
        of_kind = 1 + sum(1 for t in report.trials if t.kind == kind)
        aimed = int(of_kind * aim) > int((of_kind - 1) * aim)
        folder.change(most=change)
        before = run.state
        tokens = run.tokens
        if kind == "rebuild":
            tokens = chunk_sizes[1] if run.tokens == chunk_sizes[0] else chunk_sizes[0]
        expected = run.expected(tokens)
        if kind == "rebuild":
            pending = {source_of(i) for i in expected}  # the new generation starts empty
        else:
            pending = pending_sources(before, expected)
        estimate = one_note + per_chunk * sum(1 for i in expected if source_of(i) in pending)
        kill_after = rng.uniform(0.3 * startup, 1.1 * estimate * scale[kind])
        child = runner.start_index(folder.path, env=run.env(tokens))
        began = time.perf_counter()
        if aimed:
            # The random moment drawn above goes unused, but drawing it keeps `rng`'s sequence (the notes each
            # trial rewrites) the same whatever the aim.
            wait_for_first_batch(child, runner.db)
            kill_after = time.perf_counter() - began
        else:
            while running(child) and time.perf_counter() - began < kill_after:
                time.sleep(0.02)
        runner.spent["killed index"] += time.perf_counter() - began
        if not running(child):
            code = wait(child)
            took = time.perf_counter() - began
            if code != 0:
                raise RuntimeError(f"an uncut index exited with {code}; end of {runner.log}:\n{log_tail(runner.log)}")
            if not aimed:
                # The machine got faster than calibrated: aim the next kills earlier.
                scale[kind] = max(0.05, scale[kind] * 0.5 + 0.5 * took / max(estimate, 0.1))
            run.tokens = tokens
            report.missed += 1
            report.missed_unreachable += run.settle(None, expected)
            when = "its first batch was seen written" if aimed else f"the kill at {kill_after:.2f} s"
            say(f"  {kind} finished after {took:.2f} s, before {when}; not counted")
            continue
        kill(child)
        trial = Trial(number, round(kill_after, 3), len(pending), 0, "", kind=kind, chunk_tokens=tokens, aimed=aimed)
        if kind == "rebuild":
            after_kill = runner.dump()
            if after_kill.get("build") == before.get("build"):
                # Killed before the switch: the new generation lies half built beside the old, answering one.
                building = runner.dump(generation="building")
                trial.written_before_kill = written_notes(building, expected, pending)
                run.old_misses = 0
                trial.problems += run.old_generation_answers(before, tokens, rng)
                trial.old_generation_checked = True
                trial.old_generation_misses = run.old_misses
            else:
                trial.written_before_kill = written_notes(after_kill, expected, pending)
                trial.phase = "after the switch"
        else:
            trial.written_before_kill = written_notes(runner.dump(), expected, pending)
        if not trial.phase:
            written = trial.written_before_kill
            trial.phase = (
                "before any write" if written == 0 else "after all writes" if written == len(pending) else "mid-write"
            )
        runner.run_index(folder.path, env=run.env(tokens))
        run.tokens = tokens
        run.settle(trial, expected)
        trial.seconds = round(time.perf_counter() - trial_began, 1)
        trial.spent = {k: round(v, 2) for k, v in (runner.spent - spent_before).items()}
        report.trials.append(trial)
        verdict = "ok" if not trial.problems else "FAILED: " + "; ".join(trial.problems)
        reach = f", {trial.unreachable} unreachable (repair: {trial.repaired})" if trial.unreachable else ""
        say(
            f"trial {trial.number:3d} {kind:7s} {tokens:3d} tokens: SIGKILL at {kill_after:5.2f} s"
            f"{' (aimed)' if aimed else ''}, "
            f"{trial.written_before_kill:3d}/{len(pending):3d} notes written ({trial.phase}); after the next index "
            f"{verdict}{reach} ({trial.seconds:.0f} s)"
        )

    # Last, one clean build into a fresh store: the store must match it vector by vector.
    clean_db = work / "clean-db"
    runner.run_index(folder.path, db=clean_db, env=run.env())
    report.final_check = compare_vectors(runner.dump(with_vectors=True), runner.dump(db=clean_db, with_vectors=True))
    report.notes = len(folder.revisions)
    report.chunks = len(expected)
    report.seconds = round(time.perf_counter() - started, 1)
    report.load["end"] = [round(x, 2) for x in os.getloadavg()]
    report.settings["clean_notes_built"] = run.clean.notes_built
    return report


def print_report(report: Report) -> None:
    settings = report.settings
    print()
    print(f"store: {settings.get('store')}; children: {settings.get('children')}")
    print(f"notes: {report.notes}, chunks in a clean build: {report.chunks}")
    print(
        f"trials survived: {report.survived}/{len(report.trials)} "
        f"(runs that finished before the kill: {report.missed})\n"
        f"trials where HNSW search missed a stored chunk: {report.hnsw_missed}/{len(report.trials)}"
    )
    print("kill landed: " + ", ".join(f"{k} {v}" for k, v in sorted(report.phases().items())))
    aimed = Counter(t.phase for t in report.trials if t.aimed)
    if aimed:
        print("of which aimed right after the first batch: " + ", ".join(f"{k} {v}" for k, v in sorted(aimed.items())))
    print()
    widths = (8, 6, 16, 8, 17, 13)

    def line(cells: tuple[Any, ...]) -> str:
        return " ".join(
            str(c).rjust(w) if n else str(c).ljust(w) for n, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(("kind", "trials", "killed mid-write", "survived", "unreachable after", "repaired to 0")))
    for kind, row in report.by_kind().items():
        unreachable = f"{row['unreachable_chunks']} in {row['trials_with_unreachable']}"
        repaired = f"{row['repaired_to_zero']}/{row['repairs']}" if row["repairs"] else "-"
        print(line((kind, row["trials"], row["killed_mid_write"], row["survived"], unreachable, repaired)))
    print("(unreachable after: chunks `status --verify` found unreachable after the trial, before repair, in N trials)")
    print(f"every trial ends with 0 unreachable chunks: {'yes' if report.ends_reachable else 'NO'}")
    misses = [t for t in report.trials if t.old_generation_misses]
    if misses:
        total = sum(t.old_generation_misses for t in misses)
        print(
            f"old generation while a rebuild lay killed: the first --verify missed {total} chunks in {len(misses)} "
            "trials; a second, fresh load found them"
        )
    if report.missed_unreachable:
        print(f"unreachable chunks after runs the kill missed (repaired too): {report.missed_unreachable}")
    print(
        "final comparison with a clean build: " + ("equal" if not report.final_check else "; ".join(report.final_check))
    )
    for kind in KINDS:
        trials = [t for t in report.trials if t.kind == kind]
        if trials:
            spent: Counter[str] = Counter()
            for t in trials:
                spent.update(t.spent)
            where = ", ".join(f"{k} {v / len(trials):.1f}" for k, v in spent.most_common())
            print(f"{kind} trial: {sum(t.seconds for t in trials) / len(trials):.1f} s on average ({where})")
    load = report.load
    print(f"load average (1, 5, 15 min): {load.get('start')} at the start, {load.get('end')} at the end")
    print(f"wall time: {report.seconds} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="kills to survive (default 8; the issue's run is 100)")
    parser.add_argument("--notes", type=int, default=60, help="notes in the generated folder (default 60)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--change", type=float, default=0.5, help="most of the notes one trial rewrites (0.5)")
    parser.add_argument("--rebuilds", type=float, default=0.5, help="share of trials that kill a rebuild (0.5)")
    parser.add_argument(
        "--chunk-sizes",
        type=int,
        nargs=2,
        default=[128, 96],
        metavar=("A", "B"),
        help="the rebuilds flip between these",
    )
    parser.add_argument(
        "--aim",
        type=float,
        default=0.25,
        help="share of each kind's trials killed right after their first batch of notes is written (0.25)",
    )
    parser.add_argument("--chroma-url", help="crash syncs against this Chroma server instead of an embedded store")
    parser.add_argument("--spawn", action="store_true", help="a fresh `python -m rag index` interpreter per run")
    parser.add_argument("--workdir", type=Path, help="keep the folder, store and logs here (default: a temp dir)")
    parser.add_argument("--json-out", type=Path, help="also write the report, every trial included, as JSON here")
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
            rebuilds=args.rebuilds,
            chunk_sizes=tuple(args.chunk_sizes),
            aim=args.aim,
            echo=print,
        )
    print_report(report)
    if args.json_out:
        args.json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    ok = report.survived == len(report.trials) and report.ends_reachable and not report.final_check
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
