"""An OpenAI-compatible endpoint over the notes, so any OpenAI client (the `openai` package, chat front ends,
editor plugins) can ask them.

- `GET /v1/models` lists one model, `rag-notes`.
- `POST /v1/chat/completions` answers the last user message from the notes; the messages before it are the
  conversation, so a follow-up ("How is it different?") is searched with the question it follows. With
  `"stream": true` the answer comes as Server-Sent Events of `chat.completion.chunk`s, ending `data: [DONE]`.

Every completion, and the last chunk of a stream, carries three fields OpenAI does not have: `sources`, the hits
as `python -m rag ask --json` prints them; `passages`, the numbered sources the answer's [n] refer to; and
`answer`, the checked answer (mode, text, citations, unsupported, model, ...). A streamed model answer is sent
as it is written, and its checked text may differ from the deltas (a [n] naming no source is dropped): a client
that shows citations takes `answer.text` from the last chunk.

The request takes `messages` (roles user, assistant and system; content a string or text parts), `model`
(any name; there is one model), `stream`, and `k` (an extension: how many hits to search for, 1 to 20); other
OpenAI fields (temperature, max_tokens, ...) are accepted and ignored, and system messages too: the notes'
answerer has its own instructions. A bad request gets OpenAI's error shape, `{"error": {"message", "type",
"param", "code"}}`, with status 400 and `param` naming the field.

The routes use the server's auth dependency and sit behind its `RequestGuard` (host, origin, content type and
size checks); they never write. Answers are written in worker threads, and a client that hangs up stops the
model. This module does not search or write answers itself: `rag.answer.Answerer` does.
"""

from __future__ import annotations

import asyncio
import collections
import json
import secrets
import threading
import time
from typing import Any, AsyncIterator, Callable, Generator, Literal, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.types import Receive, Scope, Send

from rag.answer import Answer, Answerer, BusyError
from rag.errors import ConfigError, EmptyQuestionError, RagError
from rag.filters import SearchFilter
from rag.knowledge import KnowledgeBase

MODEL_ID = "rag-notes"
OWNER = "rag"
# How many hits a request may ask for with `k`.
MAX_K = 20
# Seconds a client told the model is busy should wait before it tries again (the openai client honours it).
RETRY_AFTER = 2

T = TypeVar("T")


# ---------------------------------------------------------------- the request


def message_text(content: Any) -> str:
    """A message's text: the string itself, or its text parts joined by newlines.

    Raises:
        ValueError: anything else, such as an image part.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str) for part in content
    ):
        return "\n".join(part["text"] for part in content)
    raise ValueError(
        'must be a string or a list of text parts, {"type": "text", "text": "..."}; the notes answer text only'
    )


class ChatMessage(BaseModel):
    """One message of the conversation; fields other than role and content (name, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return message_text(value)


class ChatRequest(BaseModel):
    """The body of `POST /v1/chat/completions`; unknown OpenAI fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    stream: bool = False
    k: int = Field(5, ge=1, le=MAX_K, strict=True)
    # Extensions: search only notes with all these tags / under any of these path globs.
    tags: list[str] = Field(default_factory=list, max_length=20)
    paths: list[str] = Field(default_factory=list, max_length=20)


class BadRequest(Exception):
    """A request the endpoint answers with 400, naming the field at fault (`param`)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def parse_request(body: bytes) -> ChatRequest:
    """The validated request.

    Raises:
        BadRequest: the body is not JSON, or a field is missing or wrong; the first such field is `param`.
    """
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadRequest('the body must be JSON like {"model": "rag-notes", "messages": [...]}') from None
    try:
        request = ChatRequest.model_validate(payload)
    except ValidationError as exc:
        problems = [(_param(error["loc"]), error["msg"].removeprefix("Value error, ")) for error in exc.errors()]
        message = "; ".join(f"{param}: {msg}" if param else msg for param, msg in problems)
        raise BadRequest(f"bad request ({message})", problems[0][0]) from None
    last = len(request.messages) - 1
    if request.messages[last].role != "user":
        raise BadRequest("messages: the last message must be the question, a message with role 'user'", "messages")
    if not request.messages[last].content.strip():
        param = f"messages[{last}].content"
        raise BadRequest(f"{param}: the question is empty; put it in the last user message", param)
    return request


def _param(loc: tuple[int | str, ...]) -> str | None:
    """A pydantic error location as OpenAI names a field: `messages[2].content`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or None


def conversation(request: ChatRequest) -> tuple[str, list[dict[str, str]]]:
    """The question (the last message) and the turns before it that the answerer reads (user and assistant)."""
    *earlier, last = request.messages
    history = [{"role": m.role, "content": m.content} for m in earlier if m.role != "system" and m.content.strip()]
    return last.content, history


# ---------------------------------------------------------------- the response


def completion(answer: Answer, *, ident: str, created: int) -> dict[str, Any]:
    """A `chat.completion` holding the checked answer, with `sources`, `passages` and `answer`."""
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": MODEL_ID,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": None,
        **answer_fields(answer),
    }


def answer_fields(answer: Answer) -> dict[str, Any]:
    """What a completion adds to OpenAI's fields: the hits, the numbered passages and the checked answer."""
    data = answer.result_dict()
    return {"sources": data["hits"], "passages": data["sources"], "answer": data["answer"]}


def chunk(
    *, ident: str, created: int, delta: dict[str, str], finish_reason: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL_ID,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        **extra,
    }


def event(data: dict[str, Any] | str) -> str:
    """One Server-Sent Event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def openai_error(
    message: str,
    status: int,
    *,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, kind=kind, param=param, code=code), status_code=status, headers=headers)


def error_body(
    message: str, *, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def rag_error(exc: Exception) -> JSONResponse:
    """The OpenAI-style response to an error the answerer raised."""
    if isinstance(exc, BusyError):
        headers = {"Retry-After": str(RETRY_AFTER)}
        return openai_error(str(exc), 429, kind="rate_limit_error", code="model_busy", headers=headers)
    if isinstance(exc, EmptyQuestionError):
        return openai_error(f"{exc}; put the question in the last user message", 400, param="messages")
    return openai_error(str(exc), 503, kind="server_error")


class EventStream(StreamingResponse):
    """Server-Sent Events that set `stop` as soon as the client hangs up, so the model stops writing."""

    def __init__(self, content: AsyncIterator[str], *, stop: threading.Event) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self.stop = stop

    async def listen_for_disconnect(self, receive: Receive) -> None:
        await super().listen_for_disconnect(receive)
        # Before the stream is cancelled: its worker thread finishes the draft it is on only once the model sees
        # this.
        self.stop.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stop.set()


# ---------------------------------------------------------------- the routes


def add_openai_routes(
    app: FastAPI, kb: KnowledgeBase, *, auth: Callable[..., Any], answerer: Answerer | None = None
) -> None:
    """Add `GET /v1/models` and `POST /v1/chat/completions` to `app`.

    Args:
        app: the server's FastAPI app.
        kb: the knowledge base; its shared `answerer` writes the answers.
        auth: the dependency that checks a request's login (the server's HTTP Basic check).
        answerer: answer with this instead of `kb.answerer`.
    """
    created = int(time.time())
    model = {"id": MODEL_ID, "object": "model", "created": created, "owned_by": OWNER}

    def get_answerer() -> Answerer:
        # `kb.answerer` takes the knowledge base's lock, which a sync may hold: call it in a worker thread.
        return answerer or kb.answerer

    @app.get("/v1/models", dependencies=[Depends(auth)])
    def list_models() -> Any:
        return {"object": "list", "data": [model]}

    @app.get("/v1/models/{name}", dependencies=[Depends(auth)])
    def get_model(name: str) -> Any:
        if name != MODEL_ID:
            return openai_error(f"no model {name!r}; this server has one, {MODEL_ID!r}", 404, param="model")
        return model

    @app.post("/v1/chat/completions", dependencies=[Depends(auth)])
    async def chat_completions(request: Request) -> Any:
        try:
            parsed = parse_request(await request.body())
        except BadRequest as exc:
            return openai_error(exc.message, 400, param=exc.param)
        question, history = conversation(parsed)
        ident = f"chatcmpl-{secrets.token_hex(12)}"
        stamp = int(time.time())
        stop = threading.Event()
        try:
            only = SearchFilter.of(parsed.tags, parsed.paths) or None
        except ConfigError as exc:
            return openai_error(str(exc), 400, param="paths")
        drafts = _drafts(get_answerer, question, history, parsed.k, stop, only)
        if not parsed.stream:
            try:
                final = await _while_connected(request, stop, lambda: collections.deque(drafts, maxlen=1)[0])
            except RagError as exc:
                return rag_error(exc)
            return completion(final, ident=ident, created=stamp)
        # The first draft before the response starts, so that a busy model or a failed search gets its status.
        try:
            first = await _while_connected(request, stop, lambda: next(drafts, None))
        except RagError as exc:
            return rag_error(exc)
        if first is None:
            return openai_error("the answerer gave no answer", 503, kind="server_error")
        return EventStream(_events(first, drafts, stop, ident=ident, created=stamp), stop=stop)


Drafts = Generator[Answer, None, None]


def _drafts(
    get_answerer: Callable[[], Answerer],
    question: str,
    history: list[dict[str, str]],
    k: int,
    stop: threading.Event,
    only: SearchFilter | None = None,
) -> Drafts:
    yield from get_answerer().stream(question, history=history, k=k, stop=stop, only=only)


async def _while_connected(request: Request, stop: threading.Event, work: Callable[[], T]) -> T:
    """`work()` in a worker thread; a client that hangs up meanwhile sets `stop`, so the work ends early."""
    watcher = asyncio.ensure_future(_stop_on_disconnect(request, stop))
    try:
        return await run_in_threadpool(work)
    finally:
        watcher.cancel()


async def _stop_on_disconnect(request: Request, stop: threading.Event) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    stop.set()


async def _events(
    first: Answer, drafts: Drafts, stop: threading.Event, *, ident: str, created: int
) -> AsyncIterator[str]:
    """The stream: a role chunk, each draft's new text, the rest of the checked text, then a last chunk with
    `finish_reason`, `sources`, `passages` and `answer`, and `[DONE]`; an error mid-way ends it with an OpenAI
    error event."""
    ids = {"ident": ident, "created": created}
    sent = ""
    try:
        yield event(chunk(**ids, delta={"role": "assistant", "content": ""}))
        answer = first
        async for answer in _after(first, drafts):
            # A draft's text grows; the checked text usually continues it, but need not.
            new = answer.text[len(sent) :] if answer.text.startswith(sent) else ""
            if new:
                sent += new
                yield event(chunk(**ids, delta={"content": new}))
        yield event(chunk(**ids, delta={}, finish_reason="stop", **answer_fields(answer)))
        yield event("[DONE]")
    except RagError as exc:
        yield event(error_body(str(exc), kind="server_error"))
    finally:
        stop.set()
        # Runs once the worker thread has returned (a thread is never abandoned), so the generator is idle; closing
        # it frees its place in the answerer's queue now rather than when it is collected.
        drafts.close()


async def _after(first: Answer, drafts: Drafts) -> AsyncIterator[Answer]:
    """`first`, then the drafts after it, each read in a worker thread."""
    yield first
    async for answer in iterate_in_threadpool(drafts):
        yield answer
