"""Reads never write, rebuilds are blue/green, and an edit re-embeds only the chunks whose text changed.

Real model, real Chroma on disk and behind `chroma run`; a rebuild is killed with SIGKILL in a real process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.config import Config
from rag.embed import SentenceTransformerEmbedder
from rag.knowledge import KnowledgeBase
from rag.store import Store

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def snapshot(store: Store) -> dict[str, tuple[str, str, int, int]]:
    """Every stored chunk: id -> (text, note hash, first line, position in its note)."""
    return {c.id: (c.text, c.note_hash, c.start_line, c.index) for c in store.iter_chunks(with_text=True)}


def long_note(paragraphs: int = 20) -> str:
    sections = [
        f"## Topic {i}\n\nParagraph {i} explains embedding detail number {i} at some length." for i in range(paragraphs)
    ]
    return "---\ntitle: Long note\n---\n# Long note\n\n" + "\n\n".join(sections) + "\n"


def test_a_one_paragraph_edit_re_embeds_only_that_chunk(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, backend: str | None, collection_name: str
) -> None:
    knowledge = tmp_path / "knowledge"
    knowledge.mkdir()
    (knowledge / "long.md").write_text(long_note())
    config = Config(knowledge_dir=knowledge, db_dir=tmp_path / "db", chroma_url=backend, collection=collection_name)
    kb = KnowledgeBase(config, embedder=embedder)
    first = kb.sync()
    assert first.embedded == first.chunks >= 20
    before = snapshot(kb.store)

    text = (knowledge / "long.md").read_text()
    (knowledge / "long.md").write_text(text.replace("detail number 7 at", "detail number 7, now edited, at"))
    report = kb.sync()
    after = snapshot(kb.store)
    assert (report.updated, report.embedded) == (1, 1)
    assert len(after) == len(before)
    assert len(set(before) - set(after)) == 1 and len(set(after) - set(before)) == 1
    # Kept chunks keep their vectors and texts; their metadata follows the new file (its hash).
    kept = set(before) & set(after)
    assert all(after[i][0] == before[i][0] and after[i][1] != before[i][1] for i in kept)

    # A paragraph inserted at the top moves every later chunk down: none is re-embedded, all lines follow.
    edited = (knowledge / "long.md").read_text().replace("# Long note\n\n", "# Long note\n\nA new opening line.\n\n", 1)
    (knowledge / "long.md").write_text(edited)
    moved = kb.sync()
    final = snapshot(kb.store)
    assert moved.embedded <= 2
    shifted = [i for i in set(after) & set(final) if final[i][2] == after[i][2] + 2]
    assert len(shifted) >= len(after) - 2
    lines = edited.split("\n")
    for chunk in kb.store.iter_chunks(with_text=True):
        assert lines[chunk.start_line - 1] == chunk.text.split("\n")[0]
    assert kb.sync().embedded == 0


def test_reads_never_delete_or_rebuild_and_a_rebuild_switches_whole(
    tmp_path: Path, knowledge: Path, embedder: SentenceTransformerEmbedder, backend: str | None, collection_name: str
) -> None:
    config = Config(knowledge_dir=knowledge, db_dir=tmp_path / "db", chroma_url=backend, collection=collection_name)
    KnowledgeBase(config, embedder=embedder).sync()
    before = snapshot(KnowledgeBase(config, embedder=embedder).store)

    other = KnowledgeBase(config.replace(chunk_tokens=96), embedder=embedder)
    status = other.status()
    assert status.chunks == len(before) and status.mismatch and "python -m rag index" in status.mismatch
    result = other.search("what does cosine similarity measure?", k=3)
    assert result.hits and result.hits[0].chunk.source == "cosine-similarity.md"
    report = other.sync(rebuild=False)
    assert report.rebuild_needed and report.embedded == 0
    from rag.knowledge import ask

    assert ask("what is word2vec?", config=config.replace(chunk_tokens=96)).hits
    assert snapshot(KnowledgeBase(config, embedder=embedder).store) == before

    rebuilt = other.sync()
    assert rebuilt.rebuilt and "chunking changed" in rebuilt.rebuilt
    assert other.status().mismatch is None and other.status().rebuild is None
    fresh = KnowledgeBase(config.replace(chunk_tokens=96), embedder=embedder)
    assert fresh.store.count() == rebuilt.chunks != len(before)
    # The old generation is gone; the old settings now see a mismatch, and read without harm.
    old = KnowledgeBase(config, embedder=embedder)
    assert old.mismatch() and old.store.count() == rebuilt.chunks


def test_a_killed_rebuild_leaves_the_old_index_answering_and_the_next_one_resumes(
    tmp_path: Path, knowledge: Path, embedder: SentenceTransformerEmbedder, rag_cache_dir: Path
) -> None:
    config = Config(knowledge_dir=knowledge, db_dir=tmp_path / "db")
    # Enough notes that the rebuild is surely under way, not done, when it is killed.
    for n in range(30):
        (knowledge / f"extra-{n}.md").write_text(f"# Extra {n}\n\n" + f"Filler sentence {n} about vectors. " * 40)
    KnowledgeBase(config, embedder=embedder).sync()
    before = snapshot(KnowledgeBase(config, embedder=embedder).store)

    env = {
        **os.environ,
        "RAG_KNOWLEDGE_DIR": str(knowledge),
        "RAG_DB_DIR": str(config.db_dir),
        "RAG_CHUNK_TOKENS": "96",
        "RAG_CACHE_DIR": str(rag_cache_dir),
        "HF_HUB_OFFLINE": "1",
        "RAG_ENCODER": "fp32",
    }
    proc = subprocess.Popen([sys.executable, "-m", "rag", "index"], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    watcher = KnowledgeBase(config.replace(chunk_tokens=96), embedder=embedder)
    deadline = time.monotonic() + 300
    progress = None
    while time.monotonic() < deadline and proc.poll() is None:
        progress = watcher.status().rebuild
        if progress is not None and progress.done >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"the rebuild finished before it could be killed: {proc.stderr.read()!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert progress is not None and 3 <= progress.done < progress.total
    assert "rebuilding: " in str(progress) and "chunking changed" in str(progress)

    # The old index answers, whole, while the new one is half built.
    old = KnowledgeBase(config, embedder=embedder)
    assert snapshot(old.store) == before and old.mismatch() is None
    assert old.search("what does cosine similarity measure?", k=1).hits[0].chunk.source == "cosine-similarity.md"

    resumed = KnowledgeBase(config.replace(chunk_tokens=96), embedder=embedder).sync()
    assert resumed.rebuilt and resumed.embedded < resumed.chunks, "the next index resumes instead of starting over"
    clean = KnowledgeBase(
        Config(knowledge_dir=knowledge, db_dir=tmp_path / "clean", chunk_tokens=96), embedder=embedder
    )
    clean.sync()
    done = KnowledgeBase(config.replace(chunk_tokens=96), embedder=embedder)
    assert {k: v[:2] for k, v in snapshot(done.store).items()} == {k: v[:2] for k, v in snapshot(clean.store).items()}


def test_verify_finds_every_chunk_and_a_repair_copy_keeps_every_record(
    tmp_path: Path, indexed_config: Config, embedder: SentenceTransformerEmbedder, rag_cache_dir: Path
) -> None:
    env = {**os.environ, "RAG_CACHE_DIR": str(rag_cache_dir), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "rag", "status", "--knowledge", str(indexed_config.knowledge_dir)]
    argv += ["--db", str(indexed_config.db_dir), "--json", "--verify"]
    run = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    import json

    check = json.loads(run.stdout)["verify"]
    assert check["unreachable"] == [] and check["checked"] == check["total"] > 100 and not check["sampled"]
    sampled = subprocess.run([*argv, "--sample", "10"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert json.loads(sampled.stdout)["verify"] | {"total": 0} == {
        "checked": 10,
        "total": 0,
        "unreachable": [],
        "sampled": True,
        "after": None,
    }
    bad = subprocess.run([*argv[:-1], "--repair"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--repair goes with --verify" in bad.stderr

    kb = KnowledgeBase(indexed_config, embedder=embedder)
    old = kb.store
    records = old.collection.get(include=["embeddings", "documents", "metadatas"])
    copy = old.copy_to_new_generation()
    assert Store.active(db_dir=indexed_config.db_dir).name == copy.name != old.name
    again = copy.collection.get(ids=records["ids"], include=["embeddings", "documents", "metadatas"])
    assert again["ids"] == records["ids"] and again["documents"] == records["documents"]
    assert again["metadatas"] == records["metadatas"]
    diff = abs(again["embeddings"] - records["embeddings"]).max()
    assert diff < 1e-6, diff
    fresh = KnowledgeBase(indexed_config, embedder=embedder)
    assert fresh.verify().unreachable == [] and fresh.sync().embedded == 0
    assert fresh.search("what is cosine similarity?", k=1).hits[0].chunk.source == "cosine-similarity.md"


def test_the_chat_serves_the_old_index_while_it_rebuilds_for_new_settings(
    tmp_path: Path,
    knowledge: Path,
    embedder: SentenceTransformerEmbedder,
    rag_cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`python -m demo` started with other chunk settings answers at once from the index it has, shows the rebuild
    in its status, and switches when the new generation is complete."""
    import httpx

    from bench.load import launched_demo

    KnowledgeBase(Config(knowledge_dir=knowledge, db_dir=tmp_path / "db"), embedder=embedder).sync()
    before = KnowledgeBase(Config(knowledge_dir=knowledge, db_dir=tmp_path / "db"), embedder=embedder).store.count()
    monkeypatch.setenv("RAG_CHUNK_TOKENS", "96")  # the chat's settings: other chunks than the index has
    with launched_demo(tmp_path, knowledge=knowledge, cache_dir=rag_cache_dir) as url:
        found = httpx.get(f"{url}/api/search", params={"q": "what does cosine similarity measure?", "k": 1}, timeout=60)
        assert found.status_code == 200 and found.json()["hits"][0]["source"] == "cosine-similarity.md"
        seen = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = httpx.get(f"{url}/api/status", timeout=60).json()
            seen.append((status["chunks"], status["rebuilding"], status["mismatch"]))
            if status["mismatch"] is None and status["rebuilding"] is None:
                break
            time.sleep(0.5)
        assert seen[0][0] == before and seen[0][2], "the old index answers first, and says it does not fit"
        assert all(rebuilding.startswith("rebuilding: ") for _, rebuilding, _ in seen if rebuilding)
        final = seen[-1]
        assert final[1] is None and final[2] is None and final[0] > before, seen[-3:]
        again = httpx.get(f"{url}/api/search", params={"q": "what does cosine similarity measure?", "k": 1}, timeout=60)
        assert again.json()["hits"][0]["source"] == "cosine-similarity.md"
