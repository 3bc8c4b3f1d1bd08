"""The web server: the Gradio chat mounted at `/` beside a small JSON API for scripts.

The API routes are plain FastAPI handlers, not Gradio events, so a search skips the Gradio queue:
- `GET /api/search?q=...&k=5&min_score=0.3` returns exactly `python -m rag ask --json`'s object;
- `POST /api/notes` with `{"title", "body", "tags": [...]}` writes and indexes a note (403 when read-only);
- `GET /api/status` returns the index status;
- `GET /v1/models` and `POST /v1/chat/completions` answer OpenAI clients from the notes (`demo.openai_api`).
With `auth`, the chat asks for a login and the API wants the same user and password as HTTP Basic auth.

`RequestGuard`, a middleware in front of everything (the API and every Gradio route), keeps the server to its own
pages and scripts: a `Host` it does not answer to, a write from another origin, a non-JSON body or an oversized
one, and the Gradio routes this chat never uses (uploads, remote files) are refused with a JSON `{"error": ...}`.
FastAPI's own docs pages are off: they load Swagger UI from a CDN, and the chat runs offline.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import asdict
from typing import Annotated, Any, Sequence
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demo.app import APP_CSS, MAX_K, TITLE, ChatService, build_app, theme
from demo.openai_api import add_openai_routes
from demo.settings import parse_allowed_hosts, parse_auth, split_host
from demo.watch import FolderWatcher
from rag.errors import ConfigError, EmptyQuestionError, NoteWriteError, RagError
from rag.filters import SearchFilter
from rag.knowledge import KnowledgeBase

log = logging.getLogger(__name__)
_BASIC = HTTPBasic(auto_error=False)
# Module level, so FastAPI can resolve the annotation (this module postpones annotations).
BasicCredentials = Annotated[HTTPBasicCredentials | None, Depends(_BASIC)]


def create_server(
    kb: KnowledgeBase,
    *,
    read_only: bool = False,
    auth: str | tuple[str, str] | None = None,
    allowed_hosts: Sequence[str] = (),
    watcher: FolderWatcher | None = None,
) -> FastAPI:
    """A FastAPI app serving the chat at `/`, the JSON API under `/api/` and the OpenAI-compatible one under `/v1/`,
    behind a `RequestGuard`.

    Args:
        kb: the knowledge base.
        read_only: refuse every write, in the UI (hidden) and the API (403).
        auth: `user:password` or a pair; protects the chat (login page) and the API (HTTP Basic).
        allowed_hosts: host names (`name` or `name:port`) to answer to besides the server's own address and
            the loopback names; see `RequestGuard`.
        watcher: the folder watcher to report on; the caller starts and stops it.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    credentials = parse_auth(auth)
    watcher = watcher or FolderWatcher(kb)
    service = ChatService(kb, read_only=read_only, watcher=watcher)

    def check_auth(given: BasicCredentials) -> None:
        if credentials is None:
            return
        ok = given is not None and (
            secrets.compare_digest(given.username.encode(), credentials[0].encode())
            & secrets.compare_digest(given.password.encode(), credentials[1].encode())
        )
        if not ok:
            message = "log in with the --auth user and password (HTTP Basic)"
            raise HTTPException(401, message, {"WWW-Authenticate": "Basic"})

    def check_model_auth(request: Request, given: BasicCredentials) -> None:
        """The login of `/v1`: HTTP Basic as everywhere, or `user:password` as the Bearer API key, which is how
        OpenAI clients (the openai package, Open WebUI, jupyter-ai) send a key."""
        if credentials is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and key:
            if secrets.compare_digest(key.strip().encode(), f"{credentials[0]}:{credentials[1]}".encode()):
                return
            raise HTTPException(401, "use the --auth user:password as the API key", {"WWW-Authenticate": "Bearer"})
        check_auth(given)

    # No docs pages: FastAPI's load Swagger UI and ReDoc from a CDN. The schema itself stays at /api/openapi.json.
    app = FastAPI(title=TITLE, docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.add_middleware(
        RequestGuard,
        allowed_hosts=parse_allowed_hosts(allowed_hosts),
        max_body_bytes=body_limit(kb.config.max_note_bytes),
    )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"bad request ({problems})"}, status_code=400)

    @app.get("/api/search", dependencies=[Depends(check_auth)])
    def api_search(
        q: str = Query("", description="the question"),
        k: int = Query(5, description=f"how many hits, 1 to {MAX_K}"),
        min_score: float | None = Query(None, description="drop hits with a cosine similarity below this"),
        tag: Annotated[list[str] | None, Query(description="only notes with this tag (repeatable: all)")] = None,
        path: Annotated[list[str] | None, Query(description="only notes whose path matches (repeatable: any)")] = None,
    ) -> Any:
        if not 1 <= k <= MAX_K:
            return _error(f"k={k} is out of range; use 1 to {MAX_K}", 400)
        try:
            return kb.search(q, k=k, min_score=min_score, only=SearchFilter.of(tag, path) or None).to_dict()
        except EmptyQuestionError:
            return _error("the question is empty; pass it as ?q=your+question", 400)
        except ConfigError as exc:
            return _error(str(exc), 400)
        except RagError as exc:
            return _error(str(exc), 503)

    @app.post("/api/notes", status_code=201, dependencies=[Depends(check_auth)])
    async def api_add_note(request: Request) -> Any:
        if service.read_only:
            return _error("this server is read-only; restart it without --read-only to add notes", 403)
        try:
            payload = await request.json()
        except ValueError:
            return _error('the body must be JSON like {"title": "...", "body": "...", "tags": ["..."]}', 400)
        problem = _note_problem(payload)
        if problem:
            return _error(problem, 400)
        tags = payload.get("tags") or []
        from starlette.concurrency import run_in_threadpool

        try:
            note = await run_in_threadpool(service.add_note, payload["title"], payload["body"], tags)
        except NoteWriteError as exc:
            return _error(str(exc), 400)
        except RagError as exc:
            return _error(str(exc), 503)
        return asdict(note)

    @app.get("/api/status", dependencies=[Depends(check_auth)])
    def api_status() -> Any:
        try:
            return service.status()
        except RagError as exc:
            return _error(str(exc), 503)

    add_openai_routes(app, kb, auth=check_model_auth)

    blocks = build_app(kb, read_only=service.read_only, watcher=watcher)
    return gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        auth=credentials,
        auth_message="Log in with the user and password given to --auth." if credentials else None,
        ssr_mode=False,
        mcp_server=False,
        footer_links=["api"],
        theme=theme(),
        css=APP_CSS,
    )


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _note_problem(payload: Any) -> str | None:
    """What is wrong with a note request's JSON, naming the field; None when it has the right shape."""
    if not isinstance(payload, dict):
        return 'the body must be a JSON object like {"title": "...", "body": "...", "tags": ["..."]}'
    for name in ("title", "body"):
        if not isinstance(payload.get(name), str):
            return f"field {name!r} is missing or not a string"
    tags = payload.get("tags", [])
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        return 'field \'tags\' must be a list of strings, e.g. ["retrieval", "howto"]'
    unknown = sorted(set(payload) - {"title", "body", "tags"})
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}; a note takes title, body and tags"
    return None


def body_limit(max_note_bytes: int) -> int:
    """The largest request body accepted: a note at the size limit even if every byte arrives JSON-escaped
    (`\\u0001` is six bytes), plus room for the title, the tags and Gradio's envelope."""
    return 6 * max_note_bytes + 65_536


# Names that always reach the machine itself; with the server's own port they are always allowed.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Gradio's login form; every other write takes a JSON body.
FORM_ROUTES = ("/login", "/login/")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Gradio routes this chat never uses: they accept files, stream media, edit the app, or fetch URLs from the
# internet on a caller's behalf. Prefixes of the path.
UNUSED_GRADIO_ROUTES = (
    "/gradio_api/upload",
    "/gradio_api/process_recording",
    "/gradio_api/stream/",
    "/gradio_api/component_server",
    "/gradio_api/run-history/",
    "/gradio_api/vibe-",
    "/gradio_api/undo-vibe-edit",
    "/gradio_api/proxy=",
    "/gradio_api/file=http:",
    "/gradio_api/file=https:",
    "/gradio_api/file/http:",
    "/gradio_api/file/https:",
)


class Refusal(Exception):
    """A request the guard turns away, with its status and a message that says what to do instead."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RequestGuard:
    """ASGI middleware in front of the whole server: only the server's own pages and scripts get through.

    Every request (HTTP or websocket, read or write):
    - its `Host` must be a name of this server: the address the connection came in on, `localhost`, `127.0.0.1`
      or `[::1]`, each with the server's port, or an `allowed_hosts` entry (a bare name on any port, `name:port`
      on that port only). A page on another name that resolves here (DNS rebinding) gets 421.
    - an `Origin` header, when there is one, must be the server's own origin (same host and port as `Host`):
      browsers send it on every cross-origin fetch, so pages elsewhere can neither write nor read here (Gradio
      would otherwise answer other loopback origins with CORS headers). 403.

    Every write (any method but GET, HEAD and OPTIONS) also:
    - without `Origin`, needs a `Referer` of this origin if it has one, and is refused when the browser marks it
      `Sec-Fetch-Site: cross-site` or `same-site`. A request with none of these headers comes from no browser
      (curl, httpx, gradio_client, the notebook) and is let through: the browser always sends `Origin` on the
      cross-site writes this guard exists for. 403.
    - has a body of at most `max_body_bytes` (413) and a JSON content type (415); Gradio's login form may post
      form data instead.

    The Gradio routes in `UNUSED_GRADIO_ROUTES` answer 404.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Sequence[str] = (), max_body_bytes: int) -> None:
        self.app = app
        self.allowed_hosts = [split_host(entry) for entry in allowed_hosts]
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            self.check(scope, headers)
            if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
                body = await self.read_body(headers, receive)
                receive = _replay(body, receive)
        except Refusal as refusal:
            await self.refuse(scope, receive, send, refusal)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope, headers: Headers) -> None:
        """Raise `Refusal` for a foreign host, a route this chat never uses, or a foreign origin."""
        host = headers.get("host", "")
        if not self.host_allowed(scope, host):
            shown = host[:100] or "(none)"
            raise Refusal(
                421,
                f"this chat does not answer to the host name {shown!r}; open it at {_loopback_url(scope)}, or, if "
                "that name is this machine's, start the chat with --allowed-hosts NAME (RAG_ALLOWED_HOSTS)",
            )
        path = scope.get("path", "")
        if path.startswith(UNUSED_GRADIO_ROUTES):
            raise Refusal(404, f"this chat does not serve {path[:100]}: it takes no uploads and fetches no URLs")
        origin = headers.get("origin")
        own = f"{'https' if scope.get('scheme') in ('https', 'wss') else 'http'}://{host}"
        unsafe = scope["type"] == "websocket" or scope["method"] not in SAFE_METHODS
        if origin is not None:
            if not _same_origin(origin, host):
                raise Refusal(403, _foreign_message(f"a page at {origin[:100]}", own))
        elif unsafe:
            referer = headers.get("referer")
            site = headers.get("sec-fetch-site", "").lower()
            if referer is not None and not _same_origin(referer, host):
                raise Refusal(403, _foreign_message(f"a page at {referer[:100]}", own))
            if site in ("cross-site", "same-site"):
                raise Refusal(403, _foreign_message(f"a {site} page (Sec-Fetch-Site)", own))
        if scope["type"] == "http" and unsafe:
            self.check_content_type(path, headers)

    def host_allowed(self, scope: Scope, host: str) -> bool:
        name, port = split_host(host)
        if not name:
            return False
        default_port = 443 if scope.get("scheme") in ("https", "wss") else 80
        server = scope.get("server")
        own_address, own_port = (server[0].lower(), server[1]) if server else (None, None)
        if name in LOOPBACK_NAMES or name == own_address:
            return own_port is None or (port or default_port) == own_port
        return any(
            name == allowed and (allowed_port is None or port == allowed_port)
            for allowed, allowed_port in self.allowed_hosts
        )

    def check_content_type(self, path: str, headers: Headers) -> None:
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if path in FORM_ROUTES:
            if media_type not in FORM_TYPES:
                raise Refusal(415, "the login form posts application/x-www-form-urlencoded or multipart/form-data")
        elif media_type != "application/json":
            shown = media_type or "none"
            raise Refusal(415, f"send the body as JSON with Content-Type: application/json (got {shown})")

    async def read_body(self, headers: Headers, receive: Receive) -> bytes:
        """The whole body, refused (413) as soon as it grows past the limit, declared or not."""
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            raise Refusal(413, self.too_large())
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise Refusal(413, self.too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def too_large(self) -> str:
        return (
            f"the request body is over this chat's limit of {self.max_body_bytes:,} bytes; split a long note into "
            "smaller ones, or start a new chat if the conversation has grown this long"
        )

    async def refuse(self, scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
        method = scope.get("method", "WEBSOCKET")
        log.warning("refused %s %s (%d): %s", method, scope.get("path", ""), refusal.status, refusal.message)
        if scope["type"] == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        response = JSONResponse({"error": refusal.message}, status_code=refusal.status)
        await response(scope, receive, send)


def _same_origin(url: str, host: str) -> bool:
    """Whether `url` (an Origin or Referer) has the host and port that `host` (the Host header) names."""
    try:
        parts = urlsplit(url)
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    default_port = 443 if parts.scheme == "https" else 80
    name, port = split_host(host)
    return (parts.hostname.lower(), origin_port or default_port) == (name, port or default_port)


def _foreign_message(sender: str, own: str) -> str:
    return (
        f"refused a request sent by {sender}: this chat accepts requests only from its own pages at {own}/. Use the "
        "chat there, or call the API from a script (curl, httpx, gradio_client), which sends no Origin header"
    )


def _loopback_url(scope: Scope) -> str:
    server = scope.get("server")
    return f"http://127.0.0.1:{server[1]}/" if server else "http://127.0.0.1/"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then waits on the client as usual."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
