"""The served chat over HTTP: the JSON API, the Gradio API through gradio_client, live folder sync, auth and
read-only mode. Real model, real Chroma on disk, a real uvicorn server on a loopback port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from bench._process import answers, child_env, free_port, serve
from demo.server import create_server
from rag.knowledge import KnowledgeBase

from .web_fixtures import KNOWLEDGE, LiveChat, ServerThread, wait_for

pytestmark = pytest.mark.slow

HIT_KEYS = {"score", "text", "source", "title", "heading", "start_line", "end_line", "tags", "id"}


def test_search_api_returns_the_cli_json_shape(live_chat: LiveChat) -> None:
    data = live_chat.search("what does cosine similarity measure", k=3)
    expected = live_chat.kb.search("what does cosine similarity measure", k=3).to_dict()
    assert set(data) == {"question", "confident", "hits", "reason", "confident_by", "confident_at"}
    assert data["reason"] == expected["reason"] and data["confident_by"] == "percentile"
    assert [h["id"] for h in data["hits"]] == [h["id"] for h in expected["hits"]]
    assert [h["score"] for h in data["hits"]] == pytest.approx([h["score"] for h in expected["hits"]])
    assert data["confident"] is True and len(data["hits"]) == 3
    for h in data["hits"]:
        assert set(h) >= HIT_KEYS and isinstance(h["score"], float)
    assert data["hits"][0]["source"] == "cosine-similarity.md"


def test_search_api_applies_min_score(live_chat: LiveChat) -> None:
    everything = live_chat.search("what does cosine similarity measure", k=10)["hits"]
    cut = everything[4]["score"]
    data = live_chat.search("what does cosine similarity measure", k=10, min_score=cut)
    assert [h["id"] for h in data["hits"]] == [h["id"] for h in everything if h["score"] >= cut]
    assert 5 <= len(data["hits"]) < 10


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": "  "}, "question is empty"),
        ({"q": "x", "k": 0}, "k=0 is out of range"),
        ({"q": "x", "k": 51}, "k=51 is out of range"),
        ({"q": "x", "k": "many"}, "k"),
    ],
)
def test_search_api_rejects_bad_input_with_a_message(live_chat: LiveChat, params: dict, message: str) -> None:
    response = httpx.get(f"{live_chat.url}/api/search", params=params, timeout=30)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_notes_api_writes_a_note_that_the_next_search_finds(live_chat: LiveChat) -> None:
    note = {"title": "Okapi field notes", "body": "The okapi is a giraffid from the Ituri rainforest.", "tags": ["zoo"]}
    response = httpx.post(f"{live_chat.url}/api/notes", json=note, timeout=60)
    assert response.status_code == 201, response.text
    assert response.json() == {"path": "okapi-field-notes.md", "id": "okapi-field-notes"}
    assert (live_chat.knowledge / "okapi-field-notes.md").read_text(encoding="utf-8").startswith("---\n")
    top = live_chat.search("okapi giraffid rainforest", k=1)["hits"][0]
    assert top["source"] == "okapi-field-notes.md" and top["tags"] == ["zoo"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"title": "  ", "body": "text"}, "needs a title"),
        ({"title": "Cosine similarity", "body": "x", "tags": "a,b"}, "'tags' must be a list"),
        ({"body": "text"}, "'title' is missing"),
        ({"title": "Big", "body": "x" * 300_000}, "over the limit"),
        ({"title": "t", "body": "b", "colour": "red"}, "unknown field(s) colour"),
        ({"title": "T" * 201, "body": "x"}, "has 201 characters; shorten it to 200"),
        ({"title": "Many tags", "body": "x", "tags": [f"t{n}" for n in range(21)]}, "21 tags; keep it to 20"),
        ({"title": "Long tag", "body": "x", "tags": ["t" * 51]}, "over 50 characters"),
    ],
)
def test_notes_api_rejects_bad_notes(live_chat: LiveChat, payload: dict, message: str) -> None:
    response = httpx.post(f"{live_chat.url}/api/notes", json=payload, timeout=60)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_notes_api_refuses_a_name_that_exists(live_chat: LiveChat) -> None:
    note = {"title": "Duplicate title here", "body": "first"}
    assert httpx.post(f"{live_chat.url}/api/notes", json=note, timeout=60).status_code == 201
    again = httpx.post(f"{live_chat.url}/api/notes", json=note, timeout=60)
    assert again.status_code == 400 and "already exists" in again.json()["error"]


def test_status_api_reports_notes_chunks_sync_and_skipped(live_chat: LiveChat) -> None:
    (live_chat.knowledge / "empty-note.md").write_text("---\ntitle: Empty\n---\n", encoding="utf-8")
    try:
        status = wait_for(lambda: _status_with_skipped(live_chat, "empty-note.md"))
        assert status["notes"] >= 14 and status["chunks"] > status["notes"]
        assert status["watching"] is True and status["last_sync"]
        (skipped,) = [s for s in status["skipped"] if s["path"] == "empty-note.md"]
        assert "no text" in skipped["reason"]
    finally:
        (live_chat.knowledge / "empty-note.md").unlink()


def _status_with_skipped(live_chat: LiveChat, path: str) -> dict | None:
    status = httpx.get(f"{live_chat.url}/api/status", timeout=30).json()
    return status if any(s["path"] == path for s in status["skipped"]) else None


def test_gradio_client_round_trip(live_chat: LiveChat) -> None:
    client = Client(live_chat.url, verbose=False)
    data = client.predict("How does hybrid search combine BM25 with embeddings?", 3, None, api_name="/ask")
    assert data["confident"] is True and len(data["hits"]) == 3
    assert all(isinstance(h["score"], float) and set(h) >= HIT_KEYS for h in data["hits"])
    assert data["hits"][0]["source"] == "hybrid-search-bm25.md"
    assert "[1]" in data["markdown"] and "**Sources**" in data["markdown"]
    assert data["answer"]["mode"] == "extractive" and data["answer"]["citations"]
    assert set(data["answer"]["citations"]) <= {s["number"] for s in data["sources"]}
    status = client.predict(api_name="/status")
    assert status["notes"] >= 14 and status["files"][0]["file"].endswith(".md") and "path" not in status["files"][0]


def test_gradio_client_add_note_then_ask(live_chat: LiveChat) -> None:
    client = Client(live_chat.url, verbose=False)
    note = client.predict(
        "Pangolin scales", "Pangolins are covered in keratin scales and eat ants.", "zoo, mammals", api_name="/add_note"
    )
    assert note == {"file": "pangolin-scales.md", "id": "pangolin-scales"}
    data = client.predict("what are pangolins covered in?", 1, None, api_name="/ask")
    assert data["hits"][0]["source"] == "pangolin-scales.md"
    assert "keratin scales" in data["answer"]["text"]


def test_a_dropped_file_is_cited_and_a_deleted_one_is_not(live_chat: LiveChat) -> None:
    path = live_chat.knowledge / "dropped-axolotl.md"
    question = "axolotl gill regeneration in Mexican lakes"
    path.write_text(
        "# Axolotls\n\nThe axolotl regrows its gills and limbs; it lives in lakes near Mexico City.\n", encoding="utf-8"
    )
    wait_for(lambda: live_chat.search(question, k=1)["hits"][0]["source"] == "dropped-axolotl.md", timeout=15)
    path.write_text(
        "# Axolotls\n\nThe axolotl regrows its gills. Edited: it also regrows parts of its heart.\n", encoding="utf-8"
    )
    wait_for(lambda: "heart" in live_chat.search(question, k=1)["hits"][0]["text"], timeout=15)
    path.unlink()
    wait_for(
        lambda: all(h["source"] != "dropped-axolotl.md" for h in live_chat.search(question, k=5)["hits"]), timeout=15
    )


def test_read_only_server_refuses_every_write(live_chat: LiveChat) -> None:
    with ServerThread(create_server(live_chat.kb, read_only=True, watcher=live_chat.watcher)) as server:
        response = httpx.post(f"{server.url}/api/notes", json={"title": "No", "body": "no"}, timeout=30)
        assert response.status_code == 403 and "read-only" in response.json()["error"]
        client = Client(server.url, verbose=False)
        api = client.view_api(print_info=False, return_format="dict")
        assert "/ask" in api["named_endpoints"] and "/add_note" not in api["named_endpoints"]
        config = httpx.get(f"{server.url}/config", timeout=30).json()
        ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
        assert "rag-note-save" not in ids and "rag-save-answer" not in ids and "rag-question" in ids
        assert httpx.get(f"{server.url}/api/status", timeout=30).json()["read_only"] is True
    assert not (live_chat.knowledge / "no.md").exists()


def test_auth_protects_the_api_and_the_chat(live_chat: LiveChat) -> None:
    with ServerThread(create_server(live_chat.kb, auth="ada:s3cret", watcher=live_chat.watcher)) as server:
        denied = httpx.get(f"{server.url}/api/search", params={"q": "cosine"}, timeout=30)
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Basic"
        wrong = httpx.get(f"{server.url}/api/search", params={"q": "cosine"}, auth=("ada", "nope"), timeout=30)
        assert wrong.status_code == 401
        ok = httpx.get(f"{server.url}/api/search", params={"q": "cosine"}, auth=("ada", "s3cret"), timeout=30)
        assert ok.status_code == 200 and ok.json()["hits"]
        assert httpx.get(f"{server.url}/config", timeout=30).status_code == 401
        client = Client(server.url, auth=("ada", "s3cret"), verbose=False)
        assert client.predict("cosine similarity", 1, None, api_name="/ask")["hits"]


def test_main_refuses_a_public_address_without_auth() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "demo", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert run.returncode == 2
    assert "refusing to listen on 0.0.0.0 without --auth" in run.stderr and "--allow-remote-without-auth" in run.stderr


def test_main_serves_the_chat(tmp_path: Path, rag_cache_dir: Path) -> None:
    """`python -m demo` indexes the folder, serves on the given port and answers, to its names only.

    The server's variables come from the environment (the library's Config must accept them), and a flag wins
    over its variable (`--port` over `RAG_PORT`)."""
    import shutil

    shutil.copytree(KNOWLEDGE, tmp_path / "knowledge")
    port = free_port()
    args = [sys.executable, "-m", "demo", "--port", str(port), "--knowledge", str(tmp_path / "knowledge")]
    args += ["--db", str(tmp_path / "db"), "--read-only"]
    env = child_env({"RAG_PORT": "1", "RAG_ALLOWED_HOSTS": "chat.example.org"}, cache_dir=rag_cache_dir)
    url = f"http://127.0.0.1:{port}"
    with serve(args, url=url, ready=answers(f"{url}/api/status"), log=tmp_path / "demo.log", timeout=300, env=env):
        status = _get_json(f"{url}/api/status")
        assert status["notes"] == 14 and status["read_only"] is True and status["watching"] is True
        hits = _get_json(f"{url}/api/search?q=word2vec+skip-gram&k=2")["hits"]
        assert hits[0]["source"] == "word2vec.md"
        named = httpx.get(f"{url}/api/status", headers={"Host": f"chat.example.org:{port}"}, timeout=30)
        assert named.status_code == 200
        foreign = httpx.get(f"{url}/api/status", headers={"Host": f"attacker.example:{port}"}, timeout=30)
        assert foreign.status_code == 421 and "--allowed-hosts" in foreign.json()["error"]
    err = (tmp_path / "demo.log").read_text()
    assert "14 notes" in err and f"chat at http://127.0.0.1:{port} (read-only)" in err
    assert "refused GET /api/status (421)" in err


def _get_json(url: str) -> dict | None:
    try:
        response = httpx.get(url, timeout=30)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def test_kb_fixture_is_independent_of_the_repo_notes(live_kb: KnowledgeBase) -> None:
    assert Path(live_kb.config.knowledge_dir).resolve() != KNOWLEDGE.resolve()
