"""Many processes, one knowledge folder, one index: the web chat, a Jupyter kernel and the CLI at the same time.

Three real processes share a folder and a Chroma server, each writing notes and asking questions for half a
minute once the chat answers: the chat (`python -m demo`, reached over its JSON API), a real ipykernel driven
through jupyter_client (`KnowledgeBase.add_note` and `rag.ask`, as a notebook would) and the CLI
(`python -m rag add-note` and `ask --json`, one fresh interpreter per command). At the end every note is in the
folder, every process finds every note by its unique word, the kernel, which stayed up the whole time, finds each
one by dense search too, and the shared index equals a clean build of the folder.

Chroma's embedded store (`PersistentClient`) cannot keep that promise: a process that keeps it open does not see
the other processes' writes in its vector index until it writes itself (new notes missing from dense search,
deleted or edited chunks coming back as hits with no source or text), and two live writers can leave a vector
index that loses records or fails queries with "Error finding id". So the embedded variant here checks the
message a second process must get instead
(`test_a_second_process_on_a_busy_embedded_store_is_told_to_use_a_server`), which fails until the library refuses
that second writer.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench._process import answers, child_env, free_port, serve, stop
from rag.config import Config
from rag.knowledge import KnowledgeBase

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

# Once the chat answers, the three write and ask side by side: the chat for this long, the kernel and the CLI until
# the chat is done (at the latest MAX_SECONDS after the start). Each writes a bounded number of notes.
CHAT_SECONDS = 30.0
MAX_SECONDS = 150.0
NOTES_PER_WRITER = {"chat": 6, "kernel": 5, "cli": 3}
# A clean build runs the same model through the same encoder; batching moves bfloat16 vectors by about 1e-3.
SAME_VECTOR = 0.995

WORDS = (
    "vector embedding token chunk index query cosine heading model store sync search distance neighbour matrix "
    "corpus sentence paragraph semantic retrieval cluster dimension weight layer context window batch ranking "
    "score recall precision lexical dense sparse hybrid keyword graph image audio river mountain kitchen garden"
).split()

SEED_NOTES = {
    "cosine.md": "# Cosine similarity\n\nCosine similarity measures the angle between two vectors: 1 means the "
    "same direction, 0 unrelated.\n",
    "chunking.md": "# Chunking\n\nNotes are split at their headings into chunks that fit the model's token budget.\n",
    "bm25.md": "# BM25\n\nBM25 ranks chunks by the words they share with the question, weighted by rarity.\n",
}
QUESTIONS = ["what does cosine similarity measure?", "how are notes chunked?", "what is BM25?"]


@dataclass(frozen=True)
class Planned:
    """A note one process will write: its title, its unique word and its body."""

    who: str
    title: str
    word: str
    body: str


@dataclass
class Shared:
    """What the loops report back: notes written (folder path by title) and problems, in words."""

    written: dict[str, str] = field(default_factory=dict)  # title -> path inside the folder
    problems: list[str] = field(default_factory=list)
    asked: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)  # the chat's loop is over: write no more

    def wrote(self, note: Planned, path: str) -> None:
        with self.lock:
            self.written[note.title] = path

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def ask(self, who: str) -> None:
        with self.lock:
            self.asked[who] = self.asked.get(who, 0) + 1


def letters(n: int) -> str:
    """0 -> "a", 25 -> "z", 26 -> "ba": a number as letters, so the unique words are plain words to BM25."""
    out = ""
    while True:
        out = chr(ord("a") + n % 26) + out
        n //= 26
        if n == 0:
            return out


def plan_notes(seed: int) -> dict[str, list[Planned]]:
    """Each writer's notes: a made-up word no other note holds, inside a sentence of varied ordinary words."""
    rng = random.Random(seed)
    plans: dict[str, list[Planned]] = {}
    for who, count in NOTES_PER_WRITER.items():
        plans[who] = []
        for n in range(count):
            word = f"zq{who[:3]}{letters(n)}vort"
            filler = " ".join(rng.choice(WORDS) for _ in range(24))
            body = f"The {word} procedure was written by the {who} process. It concerns {filler}.\n"
            plans[who].append(Planned(who, f"{who.capitalize()} note {n}", word, body))
    return plans


def write_seed(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, text in SEED_NOTES.items():
        (folder / name).write_text(text, encoding="utf-8")


def tracebacks(text: str) -> list[str]:
    """Lines that show an uncaught error or a logged failure in a process's output."""
    bad = ("Traceback (most recent call last)", "Segmentation fault", "sync failed", "InternalError", " ERROR ")
    return [line for line in text.splitlines() if any(b in line for b in bad)]


# ---------------------------------------------------------------- the three processes


@dataclass
class Setup:
    """Where the processes meet: folder, local db folder (derived data), Chroma server URL and collection."""

    knowledge: Path
    db: Path
    url: str | None
    collection: str
    env: dict[str, str]
    cwd: Path

    @property
    def location(self) -> list[str]:
        flags = ["--knowledge", str(self.knowledge), "--db", str(self.db)]
        return flags + (["--chroma-url", self.url] if self.url else [])

    def config(self) -> Config:
        return Config(knowledge_dir=self.knowledge, db_dir=self.db, chroma_url=self.url, collection=self.collection)


def make_setup(tmp_path: Path, url: str | None, collection: str, cache: Path) -> Setup:
    knowledge = tmp_path / "knowledge"
    write_seed(knowledge)
    db = tmp_path / "db"
    # Flags for the chat and the CLI, the same settings as variables for the kernel; every child runs in
    # `tmp_path`, so nothing can fall back to the repository's knowledge/ or .chroma.
    extra = {
        "RAG_KNOWLEDGE_DIR": str(knowledge),
        "RAG_DB_DIR": str(db),
        "RAG_COLLECTION": collection,
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(ROOT),
    }
    if url:
        extra["RAG_CHROMA_URL"] = url
    return Setup(knowledge, db, url, collection, child_env(extra, cache_dir=cache), tmp_path)


def chat_loop(url: str, notes: list[Planned], shared: Shared, deadline: float) -> None:
    """The chat's user: a question, then a note through `POST /api/notes`, until the notes or the time run out."""
    with httpx.Client(base_url=url, timeout=120) as client:
        for n, note in enumerate(notes):
            if time.monotonic() > deadline:
                return
            response = client.get("/api/search", params={"q": QUESTIONS[n % len(QUESTIONS)], "k": 3})
            if response.status_code != 200 or not response.json().get("hits"):
                shared.problem(f"chat search answered {response.status_code}: {response.text[:300]}")
            shared.ask("chat")
            response = client.post("/api/notes", json={"title": note.title, "body": note.body, "tags": ["chat"]})
            if response.status_code != 201:
                shared.problem(f"chat note answered {response.status_code}: {response.text[:300]}")
                continue
            shared.wrote(note, response.json()["path"])
            time.sleep(1.0)


def run_cli(setup: Setup, *args: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rag", *args, *setup.location],
        input=stdin,
        capture_output=True,
        text=True,
        env=setup.env,
        cwd=setup.cwd,
        timeout=timeout,
    )


def cli_loop(setup: Setup, notes: list[Planned], shared: Shared, deadline: float) -> None:
    """A shell user: `add-note`, then `ask --json`, one fresh interpreter per command."""
    try:
        _cli_loop(setup, notes, shared, deadline)
    except Exception as exc:  # noqa: BLE001 - reported with the other problems instead of dying in the thread
        shared.problem(f"the CLI loop failed: {type(exc).__name__}: {exc}")


def _cli_loop(setup: Setup, notes: list[Planned], shared: Shared, deadline: float) -> None:
    for n, note in enumerate(notes):
        if shared.done.is_set() or time.monotonic() > deadline:
            return
        done = run_cli(setup, "add-note", "--title", note.title, "--tags", "cli", "--text", note.body, "--json")
        if done.returncode != 0 or tracebacks(done.stderr):
            shared.problem(f"`rag add-note` exited {done.returncode}: {done.stderr[-1500:]}")
            continue
        shared.wrote(note, json.loads(done.stdout)["path"])
        done = run_cli(setup, "ask", QUESTIONS[n % len(QUESTIONS)], "-k", "3", "--json")
        if done.returncode != 0 or tracebacks(done.stderr) or not json.loads(done.stdout or "{}").get("hits"):
            shared.problem(f"`rag ask` exited {done.returncode}: {done.stdout[-300:]} {done.stderr[-1500:]}")
        shared.ask("cli")


KERNEL_LOOP = """
import json, os, time
import rag
from rag.knowledge import shared_knowledge_base

plan = json.loads({plan!r})
kb = shared_knowledge_base()
deadline = time.monotonic() + plan["seconds"]
for n, note in enumerate(plan["notes"]):
    if time.monotonic() > deadline or os.path.exists(plan["stop_file"]):
        break
    written = kb.add_note(note["title"], note["body"], tags=["kernel"])
    print("NOTE " + json.dumps({{"title": note["title"], "path": written.path}}), flush=True)
    result = rag.ask(plan["questions"][n % len(plan["questions"])], k=3)
    print("ASK " + json.dumps({{"hits": len(result.hits)}}), flush=True)
    time.sleep(1.0)
"""

KERNEL_CHECK = """
import json
import rag
from rag.knowledge import shared_knowledge_base

kb = shared_knowledge_base()
found = {{}}
for note in json.loads({notes!r}):
    by_word = [h.chunk.source for h in rag.ask(note["word"], k=5).hits]
    by_text = [h.chunk.source for h in kb.search(note["body"], k=3, mode="dense").hits]
    found[note["path"]] = {{"word": note["path"] in by_word, "dense": note["path"] in by_text}}
print("FOUND " + json.dumps(found), flush=True)
"""


class Kernel:
    """A real ipykernel (the `python3` kernelspec, started by jupyter_client) running code as a notebook would."""

    def __init__(self, setup: Setup) -> None:
        from jupyter_client.manager import start_new_kernel

        self.manager, self.client = start_new_kernel(
            kernel_name="python3", startup_timeout=120, env=setup.env, cwd=str(setup.cwd)
        )
        self.output: list[str] = []
        self.errors: list[str] = []

    def run(self, code: str, *, timeout: float) -> list[str]:
        """Execute `code`; returns its stdout lines. Errors raised in the kernel are kept in `errors`."""
        lines: list[str] = []

        def hook(message: dict[str, Any]) -> None:
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                self.output.append(content["text"])
                if content["name"] == "stdout":
                    lines.extend(content["text"].splitlines())
            elif kind == "error":
                self.errors.append(f"{content['ename']}: {content['evalue']}\n" + "\n".join(content["traceback"]))

        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=hook)
        if reply["content"]["status"] != "ok":
            self.errors.append(f"cell ended with status {reply['content']['status']}")
        return lines

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


def kernel_loop(kernel: Kernel, notes: list[Planned], shared: Shared, seconds: float, stop_file: Path) -> None:
    plan = {
        "seconds": seconds,
        "stop_file": str(stop_file),
        "questions": QUESTIONS,
        "notes": [{"title": n.title, "body": n.body} for n in notes],
    }
    try:
        for line in kernel.run(KERNEL_LOOP.format(plan=json.dumps(plan)), timeout=seconds + 300):
            kind, _, payload = line.partition(" ")
            if kind == "NOTE":
                item = json.loads(payload)
                shared.wrote(next(n for n in notes if n.title == item["title"]), item["path"])
            elif kind == "ASK":
                shared.ask("kernel")
                if not json.loads(payload)["hits"]:
                    shared.problem("rag.ask in the kernel found nothing for a seed question")
    except Exception as exc:  # noqa: BLE001 - a timeout or a dead kernel is a finding, reported with the rest
        shared.problem(f"the kernel's loop failed: {type(exc).__name__}: {exc}")
    for error in kernel.errors:
        shared.problem(f"the kernel raised {error[-1500:]}")


# ---------------------------------------------------------------- checks


def chunk_rows(config: Config) -> dict[str, tuple[str, str, str]]:
    """Every chunk of the index `config` names: id -> (source, text, note hash)."""
    store = KnowledgeBase(config).store
    return {c.id: (c.source, c.text, c.note_hash) for c in store.iter_chunks(with_text=True)}


def compare_with_clean_build(setup: Setup, tmp_path: Path) -> list[str]:
    """Differences between the shared index and a fresh `python -m rag index` of the same folder, in words."""
    clean = Config(knowledge_dir=setup.knowledge, db_dir=tmp_path / "clean-db", collection=setup.collection)
    alone = {k: v for k, v in setup.env.items() if k not in ("RAG_CHROMA_URL", "RAG_DB_DIR")}  # embedded, one process
    argv = ["index", "--json", "--knowledge", str(clean.knowledge_dir), "--db", str(clean.db_dir)]
    done = subprocess.run(
        [sys.executable, "-m", "rag", *argv], capture_output=True, text=True, env=alone, cwd=setup.cwd, timeout=600
    )
    assert done.returncode == 0, done.stderr
    shared_rows, clean_rows = chunk_rows(setup.config()), chunk_rows(clean)
    problems = []
    if set(shared_rows) != set(clean_rows):
        problems.append(
            f"chunk ids differ: {len(set(shared_rows) - set(clean_rows))} only in the shared index, "
            f"{len(set(clean_rows) - set(shared_rows))} only in a clean build"
        )
    shared_set, clean_set = set(shared_rows.values()), set(clean_rows.values())
    if shared_set != clean_set:
        only = sorted(r[0] for r in shared_set - clean_set)
        missing = sorted(r[0] for r in clean_set - shared_set)
        problems.append(f"(source, text, note hash) differ: extra in {only[:5]}, missing from {missing[:5]}")
    common = sorted(set(shared_rows) & set(clean_rows))
    shared_store, clean_store = KnowledgeBase(setup.config()).store, KnowledgeBase(clean).store
    mine, theirs = shared_store.vectors(common), clean_store.vectors(common)
    for chunk_id in common:
        cosine = float(np.dot(mine[chunk_id], theirs[chunk_id]))
        if cosine < SAME_VECTOR:
            problems.append(
                f"chunk {chunk_id} of {shared_rows[chunk_id][0]}: its vector is {cosine:.4f} from a clean one"
            )
    for chunk_id, vector in mine.items():
        if chunk_id not in shared_store.nearest(vector, k=3):
            problems.append(f"chunk {chunk_id} of {shared_rows[chunk_id][0]} is not found by its own vector")
    return problems


def test_chat_kernel_and_cli_share_one_index_through_a_chroma_server(
    tmp_path: Path, chroma_server: str, collection_name: str, rag_cache_dir: Path
) -> None:
    run_three_processes(make_setup(tmp_path, chroma_server, collection_name, rag_cache_dir), tmp_path)


def run_three_processes(setup: Setup, tmp_path: Path) -> None:
    """The chat, a kernel and the CLI write and ask side by side; then every check of the module docstring."""
    started = time.monotonic()
    plans = plan_notes(seed=12)
    shared = Shared()
    port = free_port()
    chat_argv = [sys.executable, "-m", "demo", "--port", str(port), *setup.location]
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "chat.log"
    kernel = Kernel(setup)  # it starts beside the chat; both write once the chat answers
    stop_file = tmp_path / "stop-writing"  # tells the kernel the chat is done
    loops = [
        threading.Thread(target=kernel_loop, args=(kernel, plans["kernel"], shared, MAX_SECONDS, stop_file)),
        threading.Thread(target=cli_loop, args=(setup, plans["cli"], shared, started + MAX_SECONDS)),
    ]
    try:
        with serve(chat_argv, url=url, ready=answers(f"{url}/api/status"), log=log, env=setup.env, cwd=setup.cwd,
                   timeout=300) as chat:  # fmt: skip
            ready = time.monotonic()
            for loop in loops:
                loop.start()
            chat_loop(url, plans["chat"], shared, ready + CHAT_SECONDS)
            shared.done.set()
            stop_file.touch()
            for loop in loops:
                loop.join(timeout=600)
                assert not loop.is_alive(), "a writer's loop did not finish"

            written = [n for plan in plans.values() for n in plan if n.title in shared.written]
            by_writer = {who: sum(1 for n in written if n.who == who) for who in plans}
            assert all(by_writer.values()), f"every process must have written a note: {by_writer}"
            assert shared.problems == [], "\n\n".join(shared.problems)
            looped = time.monotonic()

            # Every note is in the folder, whole, and found by its unique word in every process.
            for note in written:
                text = (setup.knowledge / shared.written[note.title]).read_text(encoding="utf-8")
                assert note.word in text, f"{shared.written[note.title]} lost its text"
            _wait_until_indexed(url, len(SEED_NOTES) + len(written))
            checks = [{"word": n.word, "body": n.body, "path": shared.written[n.title]} for n in written]
            missing = []
            for check in checks:
                response = httpx.get(f"{url}/api/search", params={"q": check["word"], "k": 5}, timeout=120)
                assert response.status_code == 200, response.text
                if check["path"] not in [h["source"] for h in response.json()["hits"]]:
                    missing.append(f"the chat does not find {check['path']} by {check['word']!r}")
            batch = run_cli(setup, "ask", "--batch", "-", "-k", "5", stdin="\n".join(c["word"] for c in checks))
            assert batch.returncode == 0 and not tracebacks(batch.stderr), batch.stderr
            for check, line in zip(checks, batch.stdout.splitlines(), strict=True):
                if check["path"] not in [h["source"] for h in json.loads(line)["hits"]]:
                    missing.append(f"the CLI does not find {check['path']} by {check['word']!r}")
            lines = kernel.run(KERNEL_CHECK.format(notes=json.dumps(checks)), timeout=300)
            assert kernel.errors == [], "\n\n".join(kernel.errors)
            found = json.loads(next(line for line in lines if line.startswith("FOUND "))[6:])
            for path, how in found.items():
                if not how["word"]:
                    missing.append(f"the kernel does not find {path} by its word")
                if not how["dense"]:
                    missing.append(f"the kernel's dense search does not find {path} by its text")
            assert missing == [], "\n".join(missing)

            checked = time.monotonic()
            code = stop(chat.process)
        # uvicorn shuts down on SIGTERM and then re-raises it, so a clean stop reads -SIGTERM; -SIGKILL would mean
        # it hung and `stop` had to kill it.
        assert code in (0, -signal.SIGTERM), f"the chat exited with {code}"
        assert tracebacks(log.read_text(encoding="utf-8")) == [], log.read_text(encoding="utf-8")[-3000:]
        assert tracebacks("".join(kernel.output)) == [], "".join(kernel.output)[-3000:]
    finally:
        shared.done.set()
        stop_file.touch()
        for loop in loops:
            if loop.is_alive():
                loop.join(timeout=600)
        kernel.shutdown()

    assert compare_with_clean_build(setup, tmp_path) == []
    print(
        f"notes written by {by_writer}, questions asked by {shared.asked}; seconds: chat ready "
        f"{ready - started:.0f}, loops done {looped - started:.0f}, searches {checked - looped:.0f}, "
        f"clean build {time.monotonic() - checked:.0f}"
    )


def _wait_until_indexed(url: str, notes: int, *, timeout: float = 60) -> None:
    """Until the chat's status shows every file of the folder indexed (its watcher may still be syncing)."""
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(f"{url}/api/status", timeout=60).json()
        states = [f["state"] for f in status["files"]]
        if len(states) == notes and set(states) == {"indexed"}:
            return
        assert time.monotonic() < deadline, f"files not all indexed after {timeout:g} s: {status['files']}"
        time.sleep(0.5)


def test_a_second_process_on_a_busy_embedded_store_is_told_to_use_a_server(tmp_path: Path, rag_cache_dir: Path) -> None:
    """While the chat keeps an embedded store open, a second writer (the CLI, a notebook) is refused with a
    message naming the chat's process and pointing at `--chroma-url`, before it writes anything. (Before the chat
    claimed its store, the CLI's `add-note` succeeded and the chat then served a vector index that lacked the note.)
    """
    setup = make_setup(tmp_path, None, "knowledge", rag_cache_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    chat_argv = [sys.executable, "-m", "demo", "--port", str(port), *setup.location]
    before = sorted(p.name for p in setup.knowledge.iterdir())
    with serve(chat_argv, url=url, ready=answers(f"{url}/api/status"), log=tmp_path / "chat.log", env=setup.env,
               cwd=setup.cwd, timeout=300) as chat:  # fmt: skip
        pid = str(chat.process.pid)
        done = run_cli(setup, "add-note", "--title", "Second writer", "--text", "A note from a second process.")
        kernel = subprocess.run(
            [sys.executable, "-c", SECOND_WRITER, str(setup.knowledge), str(setup.db)],
            capture_output=True, text=True, env=setup.env, cwd=setup.cwd, timeout=300,
        )  # fmt: skip
        after = sorted(p.name for p in setup.knowledge.iterdir())
        # The owner keeps working: it still answers and writes.
        assert httpx.get(f"{url}/api/search", params={"q": "what is BM25?"}, timeout=120).status_code == 200
        note = {"title": "Owner note", "body": "The chat still writes its own notes.", "tags": []}
        assert httpx.post(f"{url}/api/notes", json=note, timeout=120).status_code == 201

    assert done.returncode == 1, f"`rag add-note` beside the chat exited {done.returncode}: {done.stderr[-1500:]}"
    assert pid in done.stderr and "--chroma-url" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    refused = json.loads(kernel.stdout)
    assert refused["error"] == "RagError", refused
    assert pid in refused["message"] and "--chroma-url" in refused["message"], refused
    assert after == before, "a refused writer must leave the folder as it was"


SECOND_WRITER = """
import json, sys
from rag.config import Config
from rag.errors import RagError
from rag.knowledge import KnowledgeBase

kb = KnowledgeBase(Config.from_env().replace(knowledge_dir=sys.argv[1], db_dir=sys.argv[2]))
try:
    kb.add_note("Kernel second writer", "A note from a notebook beside the chat.")
except RagError as exc:
    print(json.dumps({"error": "RagError", "type": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps({"error": None, "message": "add_note succeeded beside the chat"}))
"""
