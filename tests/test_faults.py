"""Faults: syncs killed with SIGKILL, note writes killed mid-way, two processes syncing one store.

The kill trials use bench/faults.py (the long version is `python bench/faults.py --trials 100`): real CLI,
real model, real Chroma, processes killed for real. Nothing here is faked.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from bench._process import child_env, stop, wait_for
from bench.faults import Folder, Runner, clean_build_chunks, compare, run_trials, wait
from rag.config import Config
from rag.knowledge import sync_lock_path
from rag.load import find_notes, load_note
from rag.write import write_note

ROOT = Path(__file__).resolve().parent.parent


def explain(report) -> str:
    lines = [f"trial {t.number} ({t.kind}, {t.phase}): {'; '.join(t.problems)}" for t in report.trials if t.problems]
    lines += [f"trial {t.number} ({t.kind}): {t.unreachable} unreachable, repair {t.repaired}" for t in report.trials]
    return "\n".join(lines + report.final_check)


def assert_survived(report, trials: int, *, old_generation_checked: bool = True) -> None:
    """What the 100-trial run proves, on a smaller scale: every kill of a sync or a rebuild is followed by an index
    equal to a clean build (ids, texts, hashes, vectors), one generation, and 0 unreachable chunks in the end."""
    assert len(report.trials) == trials, f"only {len(report.trials)} kills landed before the runs finished"
    kinds = report.by_kind()
    assert kinds["sync"]["trials"] == kinds["rebuild"]["trials"] == trials // 2, kinds
    assert report.survived == trials, explain(report)
    assert all(t.generations_left == 1 for t in report.trials), explain(report)
    assert all(t.worst_cosine >= 0.999 for t in report.trials), [t.worst_cosine for t in report.trials]
    # Chroma may leave a chunk unreachable (chroma-core/chroma#7758); then `status --verify --repair` must bring
    # the count to 0, and every trial ends with none.
    assert report.ends_reachable, explain(report)
    assert all(t.repaired is (True if t.unreachable else None) for t in report.trials), explain(report)
    # A rebuild killed before its switch leaves the old generation answering whole, checked then (with a single
    # rebuild trial the kill may come after the switch, so short runs skip this).
    if old_generation_checked:
        assert kinds["rebuild"]["old_generation_checked"] >= 1, kinds
    assert not report.final_check, explain(report)


@pytest.mark.slow
def test_sigkills_during_syncs_and_rebuilds_leave_an_index_equal_to_a_clean_build(tmp_path: Path) -> None:
    report = run_trials(8, notes=50, seed=6, work=tmp_path, change=0.5, aim=0.5)
    assert_survived(report, 8)
    # The kills must land inside the writes at least sometimes, or this proves nothing. Half the trials of each kind
    # are aimed there (right after the first batch is written), since random moments mostly fall in the start-up.
    aimed = [t.phase for t in report.trials if t.aimed]
    assert len(aimed) == 4 and "before any write" not in aimed, aimed
    assert report.phases().get("mid-write", 0) + report.phases().get("after all writes", 0) >= 1, report.phases()


@pytest.mark.slow
def test_sigkill_of_a_fresh_python_m_rag_index(tmp_path: Path) -> None:
    """The same proof with a fresh `python -m rag index` interpreter per run, not a forked one."""
    report = run_trials(2, notes=40, seed=7, work=tmp_path, spawn=True, change=0.5)
    assert_survived(report, 2, old_generation_checked=False)


@pytest.mark.slow
def test_sigkills_during_syncs_and_rebuilds_against_a_chroma_server(tmp_path: Path, chroma_server: str) -> None:
    report = run_trials(4, notes=50, seed=8, work=tmp_path, url=chroma_server, collection="faultsci", change=0.5)
    assert_survived(report, 4)


# ---------------------------------------------------------------- atomic note writes

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from rag.write import write_note

    folder = Path(sys.argv[1])
    body = "\\n".join(f"line {i} " + "x" * 60 for i in range(40_000)) + "\\nEND OF NOTE\\n"
    print("ready", flush=True)
    for n in range(1_000_000):
        write_note(folder, title=f"Big note {n}", body=body, max_bytes=10_000_000)
    """
)


@pytest.mark.slow
def test_a_killed_note_write_never_leaves_a_half_written_note(tmp_path: Path) -> None:
    """SIGKILL a process writing 2.6 MB notes in a loop, 20 times: every visible note is whole."""
    folder = tmp_path / "knowledge"
    folder.mkdir()
    rng = random.Random(3)
    env = child_env()
    for _ in range(20):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE, cwd=ROOT, env=env
        )
        assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.6))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
    visible = list(find_notes(folder))
    assert visible, "the writer never finished a note; the kills came too early to prove anything"
    for path in visible:
        note = load_note(folder, path, max_bytes=10_000_000)
        assert note.body.rstrip().endswith("END OF NOTE"), f"{path.name} is cut short"
        assert note.title.startswith("Big note")
    # Whatever the kills left behind is a hidden temporary file, which no sync ever reads.
    leftovers = [p for p in folder.iterdir() if p not in visible]
    assert all(p.name.startswith(".new-") for p in leftovers), leftovers


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_link(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", broken_link)
    with pytest.raises(OSError):
        write_note(tmp_path, title="Lost", body="some text")
    assert list(tmp_path.iterdir()) == []


# One writer of a note titled "Same title". With "pause", it stops once the note's bytes are written and synced to
# disk, before it is published under its name, and goes on when the test writes a line to its stdin.
SAME_TITLE_WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from rag.errors import NoteWriteError
    from rag.write import write_note

    folder, body, pause = Path(sys.argv[1]), sys.argv[2], sys.argv[3:] == ["pause"]
    fsync = os.fsync

    def fsync_then_wait(fd):
        fsync(fd)
        print("written, not published", flush=True)
        sys.stdin.readline()

    if pause:
        os.fsync = fsync_then_wait
    try:
        print("wrote", write_note(folder, title="Same title", body=body).path, flush=True)
    except NoteWriteError as exc:
        print("refused:", exc, flush=True)
    """
)


def test_two_writers_never_overwrite_each_other(tmp_path: Path) -> None:
    """Two processes write a note of the same name at once; the second starts while the first is mid-write."""
    folder = tmp_path / "knowledge"
    folder.mkdir()
    env = child_env()

    def writer(body: str, *flags: str) -> list[str]:
        return [sys.executable, "-c", SAME_TITLE_WRITER, str(folder), body, *flags]

    first = subprocess.Popen(
        writer("first body", "pause"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    try:
        assert first.stdout is not None and first.stdout.readline() == "written, not published\n"
        # The first writer has its whole note in a temporary file and has not published it: it is mid-write.
        assert [p.name.startswith(".new-") for p in folder.iterdir()] == [True]
        second = subprocess.run(writer("second body"), capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert second.returncode == 0, second.stderr
        assert second.stdout == "wrote same-title.md\n"
        out, _ = first.communicate("go\n", timeout=120)
    finally:
        stop(first)
    assert first.returncode == 0
    assert out.startswith("refused: a note named same-title.md already exists")
    # One note, the second writer's, whole; the first's temporary file is gone.
    assert [p.name for p in folder.iterdir()] == ["same-title.md"]
    text = (folder / "same-title.md").read_text()
    assert "second body" in text and "first body" not in text


# ---------------------------------------------------------------- two processes, one store


def held_by_another_process(path: Path) -> bool:
    """Whether another process holds the lock file `path` (tried without waiting, released at once)."""
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


@pytest.mark.slow
def test_second_sync_stops_with_a_message_or_waits(tmp_path: Path, backend: str | None, collection_name: str) -> None:
    """Real processes: a second sync gives up with a clear message, a third waits; the store ends up whole."""
    folder = Folder(tmp_path / "knowledge", random.Random(5))
    folder.add(100)
    db = tmp_path / "db"
    config = Config(knowledge_dir=folder.path, db_dir=db, chroma_url=backend, collection=collection_name)
    runner = Runner(tmp_path, db=db, url=backend, collection=collection_name, spawn=False)
    argv = [sys.executable, "-m", "rag", *runner.index_argv(folder.path)]
    env = {**os.environ, **runner.env}
    first = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lock = sync_lock_path(config)[0]
    wait_for(lambda: held_by_another_process(lock), timeout=300, interval=0.02, what="taking the lock", process=first)

    impatient = subprocess.run(
        argv, cwd=ROOT, env={**env, "RAG_LOCK_WAIT": "0.5"}, capture_output=True, text=True, timeout=300
    )
    patient = runner.start_index(folder.path, env={"RAG_LOCK_WAIT": "900"})  # queues behind the first
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert wait(patient) == 0, Path(runner.log).read_text()

    assert impatient.returncode == 1
    assert "another process has been syncing" in impatient.stderr
    assert "wait for it to finish" in impatient.stderr
    assert impatient.stdout == ""
    assert compare(runner.dump(), clean_build_chunks(folder.path)) == []
