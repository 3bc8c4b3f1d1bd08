"""Same origin only: the served chat answers its own pages and scripts, and nobody else.

Real parts: the chat served by uvicorn on a loopback port (tests/web_fixtures.py), httpx for hand-made headers,
and Debian's Chromium through Playwright for what a browser really sends. The page that attacks is served from a
second loopback origin (another port) by a tiny http.server, the way a local dev server or any page the user
opens would be.
"""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from gradio_client import Client

from demo.app import MAX_K
from demo.server import body_limit, create_server
from demo.settings import ServerSettings

from .web_fixtures import LiveChat, ServerThread, wait_for

pytestmark = pytest.mark.slow


def notes(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def port_of(url: str) -> int:
    return httpx.URL(url).port or 80


def a_note(title: str) -> dict[str, Any]:
    return {"title": title, "body": f"Marker {uuid.uuid4().hex}: a note written over HTTP.", "tags": ["origin"]}


# --- Host: DNS rebinding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/search?q=cosine", "/api/status", "/", "/config", "/gradio_api/info"])
@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:{port}", "localhost:1", "127.0.0.1.nip.io"])
def test_a_foreign_host_is_refused_on_every_route(live_chat: LiveChat, path: str, host: str) -> None:
    response = httpx.get(live_chat.url + path, headers={"Host": host.format(port=port_of(live_chat.url))}, timeout=30)
    assert response.status_code == 421
    assert "--allowed-hosts" in response.json()["error"]


def test_a_rebound_name_cannot_write_even_from_its_own_origin(live_chat: LiveChat) -> None:
    """DNS rebinding: the attacker's page and the Host both say attacker.example, so Origin alone would pass."""
    host = f"attacker.example:{port_of(live_chat.url)}"
    before = notes(live_chat.knowledge)
    response = httpx.post(
        f"{live_chat.url}/api/notes",
        json=a_note("Rebound write"),
        headers={"Host": host, "Origin": f"http://{host}"},
        timeout=30,
    )
    assert response.status_code == 421
    assert notes(live_chat.knowledge) == before


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST"])
def test_the_loopback_names_with_the_port_are_answered(live_chat: LiveChat, name: str) -> None:
    host = f"{name}:{port_of(live_chat.url)}"
    response = httpx.get(f"{live_chat.url}/api/search", params={"q": "cosine"}, headers={"Host": host}, timeout=30)
    assert response.status_code == 200 and response.json()["hits"]
    assert httpx.get(f"{live_chat.url}/config", headers={"Host": host}, timeout=30).status_code == 200


def test_allowed_hosts_add_names(live_chat: LiveChat) -> None:
    settings = ServerSettings.from_env({"RAG_ALLOWED_HOSTS": "chat.example.org, box.local:8443"})
    app = create_server(live_chat.kb, allowed_hosts=settings.allowed_hosts, read_only=True, watcher=live_chat.watcher)
    with ServerThread(app) as server:

        def status(host: str, **headers: str) -> int:
            return httpx.get(f"{server.url}/api/status", headers={"Host": host, **headers}, timeout=30).status_code

        # A bare name is allowed on any port (a reverse proxy on 443 sends it without one); name:port on that port.
        assert status("chat.example.org") == 200 and status(f"chat.example.org:{server.port}") == 200
        assert status("box.local:8443") == 200
        assert status("box.local") == 421 and status(f"box.local:{server.port}") == 421
        assert status("example.org") == 421 and status("evil.chat.example.org") == 421
        # Behind a TLS proxy the page's origin is https://chat.example.org; it is the server's own.
        assert status("chat.example.org", Origin="https://chat.example.org") == 200
        assert status("chat.example.org", Origin="https://evil.example") == 403


# --- Origin, Referer, Sec-Fetch-Site: cross-site writes -------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},  # sandboxed frames and file:// pages
        {"Origin": "http://127.0.0.1:9"},  # another loopback origin: same machine, other port
        {"Origin": "http://localhost:{port}"},  # this port, but another name: another origin
        {"Referer": "http://evil.example/attack.html"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_write_from_another_origin_is_refused(live_chat: LiveChat, headers: dict[str, str]) -> None:
    headers = {k: v.format(port=port_of(live_chat.url)) for k, v in headers.items()}
    before = notes(live_chat.knowledge)
    response = httpx.post(f"{live_chat.url}/api/notes", json=a_note("Cross origin write"), headers=headers, timeout=30)
    assert response.status_code == 403
    error = response.json()["error"]
    assert "only from its own pages" in error and live_chat.url in error and "gradio_client" in error
    assert notes(live_chat.knowledge) == before


@pytest.mark.parametrize(
    ("headers", "title"),
    [
        ({"Origin": "{url}"}, "Same origin by Origin"),
        ({"Referer": "{url}/?view=api"}, "Same origin by Referer"),
        ({"Sec-Fetch-Site": "same-origin"}, "Same origin by Sec-Fetch-Site"),
        ({}, "No browser at all"),  # curl, httpx, scripts
    ],
)
def test_a_write_from_the_own_origin_or_a_script_is_accepted(
    live_chat: LiveChat, headers: dict[str, str], title: str
) -> None:
    headers = {k: v.format(url=live_chat.url) for k, v in headers.items()}
    response = httpx.post(f"{live_chat.url}/api/notes", json=a_note(title), headers=headers, timeout=60)
    assert response.status_code == 201, response.text
    assert (live_chat.knowledge / response.json()["path"]).is_file()


def test_a_read_from_another_origin_gets_no_cors_grant(live_chat: LiveChat) -> None:
    """Gradio alone would answer another loopback origin with Access-Control-Allow-Origin (and credentials)."""
    for path in ("/config", "/gradio_api/info", "/api/search?q=cosine"):
        response = httpx.get(live_chat.url + path, headers={"Origin": "http://127.0.0.1:9"}, timeout=30)
        assert response.status_code == 403 and "access-control-allow-origin" not in response.headers
    preflight = httpx.options(
        f"{live_chat.url}/gradio_api/call/add_note",
        headers={"Origin": "http://127.0.0.1:9", "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers


def gradio_config(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/config", timeout=30).json()


def event_index(config: dict[str, Any], name: str) -> tuple[int, int]:
    """(fn_index, trigger id) of the page event named `name` (Gradio names events after their function)."""
    (dependency,) = [d for d in config["dependencies"] if d.get("api_name") == name]
    return dependency["id"], dependency["targets"][0][0]


def run_page_event(url: str, name: str, data: list[Any], headers: dict[str, str] | None = None) -> Any:
    """Run a page event the way the browser does (queue/join, then the session's event stream); the last
    message, or the refused join response."""
    fn_index, trigger = event_index(gradio_config(url), name)
    session = uuid.uuid4().hex[:10]
    join = httpx.post(
        f"{url}/gradio_api/queue/join",
        json={"data": data, "fn_index": fn_index, "trigger_id": trigger, "session_hash": session, "event_data": None},
        headers=headers or {},
        timeout=30,
    )
    if join.status_code != 200:
        return join
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}, timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the event stream ended without process_completed")


def test_gradio_writes_from_another_origin_are_refused(live_chat: LiveChat) -> None:
    before = notes(live_chat.knowledge)
    evil = {"Origin": "http://evil.example"}
    call = httpx.post(
        f"{live_chat.url}/gradio_api/call/add_note", json={"data": ["Gradio cross", "body", ""]}, headers=evil
    )
    assert call.status_code == 403 and "only from its own pages" in call.json()["error"]
    join = run_page_event(live_chat.url, "on_add_note", ["Gradio event cross", "", "body"], headers=evil)
    assert join.status_code == 403
    assert notes(live_chat.knowledge) == before
    # The page's own origin runs the same event, and it writes.
    done = run_page_event(live_chat.url, "on_add_note", ["Gradio event own", "", "body"], {"Origin": live_chat.url})
    assert done["success"] is True and "Saved gradio-event-own.md" in json.dumps(done["output"])
    assert (live_chat.knowledge / "gradio-event-own.md").is_file()


# --- Content types, sizes, bounds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
@pytest.mark.parametrize("path", ["/api/notes", "/gradio_api/call/add_note", "/gradio_api/queue/join"])
def test_json_routes_want_a_json_content_type(live_chat: LiveChat, content_type: str | None, path: str) -> None:
    before = notes(live_chat.knowledge)
    # A body each route would take if it were typed JSON (Gradio's routes want {"data": [...]}).
    fields = {"data": ["Not JSON typed", "body", ""]} if path.startswith("/gradio_api") else a_note("Not JSON typed")
    body = json.dumps(fields).encode()
    request = httpx.Request("POST", live_chat.url + path, content=body)
    request.headers.pop("Content-Type", None)  # httpx sets none for raw bytes; make sure
    if content_type is not None:
        request.headers["Content-Type"] = content_type
    response = httpx.Client(timeout=30).send(request)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["error"]
    assert notes(live_chat.knowledge) == before


def test_a_json_content_type_with_parameters_is_json(live_chat: LiveChat) -> None:
    response = httpx.post(
        f"{live_chat.url}/api/notes",
        content=json.dumps(a_note("Charset given")).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=60,
    )
    assert response.status_code == 201, response.text


def test_bodies_over_the_limit_are_refused_declared_or_streamed(live_chat: LiveChat) -> None:
    limit = body_limit(live_chat.kb.config.max_note_bytes)
    before = notes(live_chat.knowledge)
    payload = json.dumps({"title": "Huge", "body": "x" * (limit + 10)}).encode()
    declared = httpx.post(
        f"{live_chat.url}/api/notes", content=payload, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert declared.status_code == 413 and f"{limit:,} bytes" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for start in range(0, len(payload), 65_536):
            yield payload[start : start + 65_536]

    streamed = httpx.post(
        f"{live_chat.url}/api/notes", content=chunks(), headers={"Content-Type": "application/json"}, timeout=60
    )
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413
    join = httpx.post(
        f"{live_chat.url}/gradio_api/queue/join", content=payload, headers={"Content-Type": "application/json"}
    )
    assert join.status_code == 413
    assert notes(live_chat.knowledge) == before
    # A note at the library's own limit still fits, and the library says why it refuses a bigger one.
    over = "\x01" * (live_chat.kb.config.max_note_bytes + 1)  # six bytes each once JSON-escaped
    fits = httpx.post(f"{live_chat.url}/api/notes", json={"title": "Near", "body": over}, timeout=60)
    assert fits.status_code == 400 and "over the limit" in fits.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/gradio_api/upload"),
        ("POST", "/gradio_api/component_server"),
        ("POST", "/gradio_api/process_recording"),
        ("GET", "/gradio_api/file=https://example.com/x.png"),
        ("GET", "/gradio_api/proxy=https://example.com/x"),
    ],
)
def test_gradio_routes_the_chat_never_uses_are_refused(live_chat: LiveChat, method: str, path: str) -> None:
    files = {"files": ("x.txt", b"uploaded", "text/plain")} if path.endswith("upload") else None
    response = httpx.request(method, live_chat.url + path, files=files, json=None if files else {}, timeout=30)
    assert response.status_code == 404
    assert "does not serve" in response.json()["error"]


@pytest.mark.parametrize("k", [0, MAX_K + 1, 2.5, -3])
def test_k_is_bounded_in_the_gradio_api(live_chat: LiveChat, k: float) -> None:
    client = Client(live_chat.url, verbose=False)
    with pytest.raises(Exception, match="out of range"):
        client.predict("cosine similarity", k, None, api_name="/ask")


def test_k_is_bounded_in_the_json_api(live_chat: LiveChat) -> None:
    response = httpx.get(f"{live_chat.url}/api/search", params={"q": "cosine", "k": MAX_K + 1}, timeout=30)
    assert response.status_code == 400 and f"use 1 to {MAX_K}" in response.json()["error"]
    ok = httpx.get(f"{live_chat.url}/api/search", params={"q": "cosine", "k": MAX_K}, timeout=30)
    assert ok.status_code == 200 and ok.json()["hits"]


@pytest.mark.parametrize("k", [500, 0])
def test_k_is_bounded_in_the_page_event(live_chat: LiveChat, k: int) -> None:
    """The slider goes 1-20; an event sent by hand with another k answers no sources (Gradio checks the
    slider's range itself; the chat also bounds k)."""
    done = run_page_event(live_chat.url, "on_ask", ["what does cosine similarity measure", [], k, 0])
    assert done["success"] is False or "out of range" in json.dumps(done["output"])
    assert "rag-card" not in json.dumps(done.get("output"))


def test_title_and_tags_are_bounded_in_the_gradio_api(live_chat: LiveChat) -> None:
    client = Client(live_chat.url, verbose=False)
    with pytest.raises(Exception, match="20 or fewer"):
        client.predict("Many tags", "body", ",".join(f"t{n}" for n in range(21)), api_name="/add_note")
    with pytest.raises(Exception, match="200 or fewer"):
        client.predict("T" * 201, "body", "", api_name="/add_note")
    assert not (live_chat.knowledge / "many-tags.md").exists()


# --- Docs pages -----------------------------------------------------------------------------------------------


def test_fastapi_docs_pages_are_off_and_the_schema_is_plain_json(live_chat: LiveChat) -> None:
    for path in ("/docs", "/redoc", "/api/docs", "/api/redoc"):
        response = httpx.get(live_chat.url + path, timeout=30)
        assert response.status_code == 404, path
        assert "cdn" not in response.text and "swagger" not in response.text.lower()
    schema = httpx.get(f"{live_chat.url}/api/openapi.json", timeout=30)
    assert schema.status_code == 200 and "/api/search" in schema.json()["paths"]


# --- In a browser ---------------------------------------------------------------------------------------------


ATTACK_PAGE = """<!doctype html>
<html><body>
<iframe name="sink"></iframe>
<form id="form" method="POST" action="{chat}/api/notes" enctype="text/plain" target="sink">
  <input type="hidden" name='{{"title": "Cross form post", "body": "written by a form on another origin' value='"}}'>
</form>
<script>
const chat = "{chat}";
window.results = {{}};
async function attempt(name, url, init) {{
  try {{
    const response = await fetch(url, init);
    window.results[name] = response.type === "opaque" ? "opaque" : response.status;
  }} catch (error) {{
    window.results[name] = "blocked";
  }}
}}
(async () => {{
  const note = title => JSON.stringify({{title: title, body: "written by a script on another origin"}});
  await attempt("text_plain", chat + "/api/notes",
    {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: note("Cross text plain")}});
  await attempt("json", chat + "/api/notes",
    {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: note("Cross json")}});
  await attempt("gradio_text_plain", chat + "/gradio_api/call/add_note",
    {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
     body: JSON.stringify({{data: ["Cross gradio plain", "body", ""]}})}});
  await attempt("gradio_json", chat + "/gradio_api/call/add_note",
    {{method: "POST", headers: {{"Content-Type": "application/json"}},
     body: JSON.stringify({{data: ["Cross gradio json", "body", ""]}})}});
  await attempt("read_config", chat + "/config");
  await attempt("read_search", chat + "/api/search?q=cosine");
  document.getElementById("form").submit();
  window.done = true;
}})();
</script>
</body></html>
"""


class PageServer:
    """One HTML page served by http.server on 127.0.0.1 and a free port: a second loopback origin."""

    def __init__(self, page: str) -> None:
        body = page.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_page_on_another_loopback_origin_can_neither_write_nor_read(browser: Any, live_chat: LiveChat) -> None:
    before = notes(live_chat.knowledge)
    with PageServer(ATTACK_PAGE.format(chat=live_chat.url)) as attacker:
        context = browser.new_context()
        page = context.new_page()
        answered: list[tuple[str, str, int]] = []
        page.on("response", lambda r: answered.append((r.request.method, r.url, r.status)))
        page.goto(attacker.url)
        wait_for(lambda: page.evaluate("window.done === true"), timeout=30, what="the attack page's requests")
        # The form's POST navigates the iframe; wait until the chat has answered it.
        form_post = f"{live_chat.url}/api/notes"
        wait_for(lambda: [a for a in answered if a[:2] == ("POST", form_post)][1:], timeout=30, what="the form post")
        results = page.evaluate("window.results")
        context.close()
    # Cross-origin JSON needs a preflight; the guard refuses it, so the browser never sends the POST.
    assert results["json"] == "blocked" and results["gradio_json"] == "blocked"
    # No CORS grant: the page cannot read the chat's answers, not even Gradio's config.
    assert results["read_config"] == "blocked" and results["read_search"] == "blocked"
    # "Simple" requests (text/plain fetch, the form) do reach the server, which refuses them.
    assert results["text_plain"] == "opaque" and results["gradio_text_plain"] == "opaque"
    writes = [a for a in answered if a[0] == "POST" and a[1].startswith(live_chat.url)]
    assert len(writes) == 3 and {status for *_, status in writes} == {403}, writes
    assert notes(live_chat.knowledge) == before


def test_the_api_page_loads_nothing_from_the_internet(browser: Any, live_chat: LiveChat) -> None:
    """Gradio's "Use via API" page, opened from the footer link, fetches only from the chat itself."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    elsewhere: list[str] = []

    def route(route: Any) -> None:
        if route.request.url.startswith(live_chat.url) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", route)
    page.goto(live_chat.url)
    page.locator("#rag-question textarea").wait_for()
    page.get_by_text("Use via API").first.click()
    page.get_by_text("/ask").first.wait_for(timeout=30_000)
    page.get_by_text("/add_note").first.wait_for(timeout=30_000)
    page.get_by_text("pip install gradio_client").first.wait_for(timeout=30_000)
    for tab in ("JavaScript", "cURL", "MCP", "Python"):
        page.get_by_text(tab, exact=True).first.click()
    # The page polls the index status, so the network never goes idle; give lazy loads (fonts, images) a moment.
    page.wait_for_timeout(1500)
    context.close()
    assert elsewhere == []


def test_the_chat_works_through_the_guard_with_a_login(browser: Any, live_chat: LiveChat) -> None:
    """Log in on Gradio's form (a form post), ask (queue posts) and add a note from the page itself."""
    app = create_server(live_chat.kb, auth="ada:s3cret-pass", watcher=live_chat.watcher)
    with ServerThread(app) as server:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(server.url)
        page.locator("input[type=password]").wait_for(timeout=30_000)
        page.locator("input[type=text], input:not([type])").first.fill("ada")
        page.locator("input[type=password]").fill("s3cret-pass")
        page.locator("button", has_text="Login").click()
        page.locator("#rag-question textarea").fill("What does a cosine similarity of 0.8 mean?")
        page.locator("#rag-ask").click()
        page.locator("#rag-sources .rag-card").first.wait_for(timeout=60_000)
        assert page.locator("#rag-sources .rag-card").first.get_attribute("data-source") == "cosine-similarity.md"
        page.locator("button[role=tab]", has_text="Add a note").click()
        page.locator("#rag-note-title textarea, #rag-note-title input").first.fill("Logged in note")
        page.locator("#rag-note-body textarea").fill("Written from the chat's own page after logging in.")
        page.locator("#rag-note-save").click()
        page.locator("#rag-note-notice p", has_text="Saved logged-in-note.md").wait_for(timeout=60_000)
        context.close()
    assert (live_chat.knowledge / "logged-in-note.md").is_file()
