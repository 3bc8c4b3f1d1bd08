"""Web chat security through `python -m demo` itself: no remote binding without auth unless forced, `--read-only`
closes every write path, notes written over HTTP stay inside the knowledge folder, auth guards the API.

Each attempt asserts its own refusal (status and message), so a refusal for the wrong reason fails the test.
Same-origin, Host and size checks are in tests/test_web_origin.py.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from gradio_client import Client

from bench._process import child_env, free_port
from bench.load import launched_demo

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.web, pytest.mark.slow]


def demo_process(*flags: str, tmp_path: Path) -> subprocess.CompletedProcess:
    knowledge = tmp_path / "knowledge"
    knowledge.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "demo", "--port", str(free_port()), "--knowledge", str(knowledge)]
    argv += ["--db", str(tmp_path / "db"), *flags]
    return subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10"])
def test_remote_bind_without_auth_is_refused(tmp_path: Path, host: str) -> None:
    """Refused before anything listens; the message says why and how to go on. (The forced path is not run:
    servers in this project's tests bind 127.0.0.1 only.)"""
    result = demo_process("--host", host, tmp_path=tmp_path)
    assert result.returncode == 2
    message = result.stderr + result.stdout
    assert f"refusing to listen on {host} without --auth" in message and "--allow-remote-without-auth" in message
    assert "Traceback" not in message


@pytest.fixture
def knowledge(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "start.md").write_text("# Start\n\nA first note about cosine similarity between embeddings.\n")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def outside_files(root: Path, knowledge: Path) -> set[str]:
    """Files under `root` that are neither in the knowledge folder nor the server's own (store, log)."""
    skip = (knowledge, root / "db", root / "demo.log")
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not any(p == s or s in p.parents for s in skip)
    }


def test_read_only_blocks_the_api_and_every_gradio_endpoint(
    tmp_path: Path, knowledge: Path, rag_cache_dir: Path
) -> None:
    before = snapshot(knowledge)
    with launched_demo(tmp_path, "--read-only", knowledge=knowledge, cache_dir=rag_cache_dir) as url:
        note = {"title": "Intruder", "body": "should never be written", "tags": ["x"]}
        response = httpx.post(f"{url}/api/notes", json=note, timeout=60)
        assert response.status_code == 403 and "read-only" in response.json()["error"]
        search = httpx.get(f"{url}/api/search", params={"q": "cosine similarity", "k": 5}, timeout=60)
        assert search.status_code == 200 and search.json()["hits"][0]["source"] == "start.md"

        # Only the reading endpoints exist: a writer is not hidden, it is absent.
        client = Client(url, verbose=False)
        api = client.view_api(return_format="dict", print_info=False)
        assert set(api["named_endpoints"]) == {"/ask", "/status"}
        with pytest.raises(ValueError, match="add_note"):
            client.predict("Intruder", "should never be written", "x", api_name="/add_note")
        # Gradio's own route for a named endpoint, reached without the client: there is no such function.
        # (Gradio 6.31 lets its FnIndexInferError escape, hence a 500 rather than a 404; nothing runs.)
        raw = httpx.post(
            f"{url}/gradio_api/call/add_note", json={"data": ["Intruder", "should never be written", "x"]}, timeout=60
        )
        assert raw.status_code in (404, 500) and "event_id" not in raw.text, raw.text
        # The page has no note form and no save button, so no event writes either.
        config = httpx.get(f"{url}/config", timeout=60).json()
        ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
        assert {"rag-note-save", "rag-save-answer", "rag-note-title"}.isdisjoint(ids) and "rag-question" in ids
        names = {d.get("api_name") for d in config["dependencies"]}
        assert {"on_add_note", "on_save_answer"}.isdisjoint(names) and "on_ask" in names
    assert snapshot(knowledge) == before


@dataclass
class Served:
    url: str
    root: Path
    knowledge: Path


@pytest.fixture(scope="module")
def writable_demo(tmp_path_factory: pytest.TempPathFactory, rag_cache_dir: Path) -> Iterator[Served]:
    """One `python -m demo` for the tests that write (or try to), on a folder of one note."""
    root = tmp_path_factory.mktemp("writable-demo")
    folder = root / "notes"
    folder.mkdir()
    (folder / "start.md").write_text("# Start\n\nA first note about cosine similarity between embeddings.\n")
    with launched_demo(root, knowledge=folder, cache_dir=rag_cache_dir) as url:
        yield Served(url, root, folder)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"title": "x", "body": "y", "name": "../escape.md"}, "unknown field(s) name"),
        ({"title": "", "body": "y"}, "needs a title"),
        ({"title": "t", "body": ""}, "the note is empty"),
        ({"title": "Big", "body": "x" * 300_000}, "over the limit of 200,000"),
        ({"title": "Tags as text", "body": "y", "tags": "a"}, "'tags' must be a list"),
        ({"title": "../..", "body": "a title of dots and slashes only"}, "cannot make a file name"),
    ],
)
def test_each_bad_note_gets_its_own_refusal(writable_demo: Served, bad: dict, message: str) -> None:
    before = snapshot(writable_demo.knowledge)
    refused = httpx.post(f"{writable_demo.url}/api/notes", json=bad, timeout=60)
    assert refused.status_code == 400, refused.text
    assert message in refused.json()["error"]
    assert snapshot(writable_demo.knowledge) == before
    assert not outside_files(writable_demo.root, writable_demo.knowledge)


def test_notes_added_through_the_api_are_indexed_and_confined(writable_demo: Served) -> None:
    url, knowledge = writable_demo.url, writable_demo.knowledge
    body = "Marker zebraquartz: a note added over HTTP about quantised embedding caches."
    response = httpx.post(f"{url}/api/notes", json={"title": "Over HTTP", "body": body, "tags": ["web"]}, timeout=120)
    assert response.status_code == 201, response.text
    added = response.json()
    assert added == {"path": "over-http.md", "id": "over-http"} and (knowledge / "over-http.md").is_file()
    again = httpx.post(f"{url}/api/notes", json={"title": "Over HTTP", "body": "other", "tags": []}, timeout=60)
    assert again.status_code == 400 and "already exists" in again.json()["error"]
    hits = httpx.get(f"{url}/api/search", params={"q": body, "k": 5}, timeout=60).json()["hits"]
    assert hits[0]["source"] == added["path"]


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("../../etc/x", "etc-x.md"),
        ("..\\..\\escape-win", "escape-win.md"),
        ("/etc/passwd", "etc-passwd.md"),
        ("notes/../../up-one", "notes-up-one.md"),
        ("%2e%2e%2f%2e%2e%2fencoded", "2e-2e-2f-2e-2e-2fencoded.md"),
    ],
)
def test_a_traversal_through_the_title_stays_in_the_folder(writable_demo: Served, title: str, expected: str) -> None:
    """The title is the one field that reaches the file name; it becomes a slug inside the folder."""
    url, knowledge = writable_demo.url, writable_demo.knowledge
    written = httpx.post(f"{url}/api/notes", json={"title": title, "body": "a traversal try"}, timeout=120)
    assert written.status_code == 201, written.text
    assert written.json()["path"] == expected
    assert (knowledge / expected).is_file() and (knowledge / expected).resolve().parent == knowledge.resolve()
    assert not outside_files(writable_demo.root, writable_demo.knowledge)
    assert not (writable_demo.root / "etc").exists() and not Path("/etc/x").exists()


def test_a_traversal_through_the_gradio_endpoint_stays_in_the_folder(writable_demo: Served) -> None:
    client = Client(writable_demo.url, verbose=False)
    note = client.predict("../../gradio/escape", "a traversal try", "", api_name="/add_note")
    assert note == {"file": "gradio-escape.md", "id": "gradio-escape"}
    assert (writable_demo.knowledge / "gradio-escape.md").is_file()
    assert not outside_files(writable_demo.root, writable_demo.knowledge)


def test_auth_protects_the_api(tmp_path: Path, knowledge: Path, rag_cache_dir: Path) -> None:
    with launched_demo(tmp_path, "--auth", "reader:s3cret-pass", knowledge=knowledge, cache_dir=rag_cache_dir) as url:
        search = httpx.get(f"{url}/api/search", params={"q": "cosine", "k": 5}, timeout=60)
        assert search.status_code == 401 and search.headers["www-authenticate"] == "Basic"
        post = httpx.post(f"{url}/api/notes", json={"title": "Anon", "body": "text"}, timeout=60)
        assert post.status_code == 401 and "--auth" in post.json()["error"]
        wrong = httpx.post(f"{url}/api/notes", json={"title": "Anon", "body": "text"}, auth=("reader", "x"), timeout=60)
        assert wrong.status_code == 401
        assert httpx.get(f"{url}/config", timeout=60).status_code == 401
        gradio = httpx.post(f"{url}/gradio_api/call/add_note", json={"data": ["Anon", "text", ""]}, timeout=60)
        assert gradio.status_code == 401
    assert sorted(p.name for p in knowledge.iterdir()) == ["start.md"]
    assert "s3cret-pass" not in (tmp_path / "demo.log").read_text()
