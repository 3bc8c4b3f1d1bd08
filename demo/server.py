"""The web server: the Gradio chat mounted at `/` beside a small JSON API for scripts.

The API routes are plain FastAPI handlers, not Gradio events, so a search skips the Gradio queue:
- `GET /api/search?q=...&k=5&min_score=0.3` returns exactly `python -m rag ask --json`'s object;
- `POST /api/notes` with `{"title", "body", "tags": [...]}` writes and indexes a note (403 when read-only);
- `GET /api/status` returns the index status.
With `auth`, the chat asks for a login and the API wants the same user and password as HTTP Basic auth.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from demo.app import APP_CSS, TITLE, ChatService, build_app, theme
from demo.settings import parse_auth
from demo.watch import FolderWatcher
from rag.errors import EmptyQuestionError, NoteWriteError, RagError
from rag.knowledge import KnowledgeBase

MAX_K = 50
_BASIC = HTTPBasic(auto_error=False)
# Module level, so FastAPI can resolve the annotation (this module postpones annotations).
BasicCredentials = Annotated[HTTPBasicCredentials | None, Depends(_BASIC)]


def create_server(
    kb: KnowledgeBase,
    *,
    read_only: bool = False,
    auth: str | tuple[str, str] | None = None,
    watcher: FolderWatcher | None = None,
) -> FastAPI:
    """A FastAPI app serving the chat at `/` and the JSON API under `/api/`.

    Args:
        kb: the knowledge base.
        read_only: refuse every write, in the UI (hidden) and the API (403).
        auth: `user:password` or a pair; protects the chat (login page) and the API (HTTP Basic).
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

    app = FastAPI(title=TITLE, docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)

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
    ) -> Any:
        if not 1 <= k <= MAX_K:
            return _error(f"k={k} is out of range; use 1 to {MAX_K}", 400)
        try:
            return asdict(kb.search(q, k=k, min_score=min_score))
        except EmptyQuestionError:
            return _error("the question is empty; pass it as ?q=your+question", 400)
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
