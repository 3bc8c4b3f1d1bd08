"""The OpenAI-compatible endpoint (`/v1/models`, `/v1/chat/completions`) through the real `openai` client.

Real parts: the chat served by uvicorn on a loopback port with a copy of the starter notes and store
(tests/web_fixtures.py), the real embedding model, and for a written answer `python -m demo` started with
`RAG_LLM=smollm2` (SmolLM2-135M run by llama.cpp on one thread). A writer that waits for its client to hang up
stands in for a model only where the test is about the queue and disconnects, not about the answer.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx
import openai
import pytest
from fastapi import FastAPI

from bench._process import answers, child_env, free_port, serve
from demo.openai_api import MAX_K, MODEL_ID, add_openai_routes
from demo.server import RequestGuard, body_limit, create_server
from rag.answer import SUPPORT_AT, WAITING_SLOTS, WRITING_SLOTS, Answerer
from rag.knowledge import KnowledgeBase
from rag.passage import Source

from .web_fixtures import KNOWLEDGE, LiveChat, ServerThread, wait_for

pytestmark = pytest.mark.slow

QUESTION = "What does cosine similarity measure?"
ANSWER_KEYS = {"mode", "text", "citations", "unsupported", "model", "searched", "sentences", "dropped_citations"}


def client_for(url: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=300, **options)


@pytest.fixture(scope="module")
def client(live_chat: LiveChat) -> openai.OpenAI:
    return client_for(live_chat.url)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def flat(text: str) -> str:
    return " ".join(text.split())


def check_hits(hits: Sequence[dict[str, Any]], expected: dict[str, Any]) -> None:
    """`hits` are the hits of `python -m rag ask --json` (here: `/api/search`, the same object) for the question."""
    assert [h["id"] for h in hits] == [h["id"] for h in expected["hits"]]
    assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in expected["hits"]])
    for hit in hits:
        assert isinstance(hit["score"], float) and -1 <= hit["score"] <= 1
        assert hit["location"].startswith(hit["source"] + ":") and hit["source"].endswith(".md")


def check_citations(answer: dict[str, Any], passages: Sequence[dict[str, Any]]) -> None:
    """Every [n] in the text and in `citations` names a passage, and `unsupported` counts the sentences."""
    numbers = {p["number"] for p in passages}
    assert numbers == set(range(1, len(passages) + 1))
    in_text = {int(n) for group in re.findall(r"\[(\d+(?:,\s*\d+)*)\]", answer["text"]) for n in group.split(",")}
    assert in_text <= numbers and set(answer["citations"]) <= numbers
    assert set(answer["citations"]) == {n for s in answer["sentences"] for n in s["citations"]}
    assert isinstance(answer["unsupported"], int)
    assert 0 <= answer["unsupported"] <= len(answer["sentences"])
    assert answer["unsupported"] == sum(1 for s in answer["sentences"] if not s["supported"])


# --- extractive answers from the shared chat server ------------------------------------------------------------


def test_a_completion_quotes_the_notes_with_citations_and_sources(client: openai.OpenAI, live_chat: LiveChat) -> None:
    completion = client.chat.completions.create(model=MODEL_ID, messages=[user(QUESTION)])
    assert completion.object == "chat.completion" and completion.model == MODEL_ID
    assert completion.id.startswith("chatcmpl-") and completion.choices[0].finish_reason == "stop"
    text = completion.choices[0].message.content
    assert completion.choices[0].message.role == "assistant" and re.search(r"\[\d\]", text)
    extra = completion.model_extra
    answer, passages = extra["answer"], extra["passages"]
    assert set(answer) >= ANSWER_KEYS
    assert answer["mode"] == "extractive" and answer["text"] == text and answer["model"] is None
    assert answer["searched"] == QUESTION and answer["citations"]
    check_citations(answer, passages)
    check_hits(extra["sources"], live_chat.search(QUESTION, k=5))
    assert extra["sources"][0]["source"] == "cosine-similarity.md"
    # Extractive: every sentence is quoted from the passage it cites, and so supported by it.
    by_number = {p["number"]: flat(p["text"]) for p in passages}
    for sentence in answer["sentences"]:
        assert sentence["supported"] is True
        assert any(flat(sentence["text"]) in by_number[n] for n in sentence["citations"]), sentence
    assert answer["unsupported"] == 0


def test_the_models_list_names_the_one_model(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [(m.id, m.object, m.owned_by) for m in models.data] == [(MODEL_ID, "model", "rag")]
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_a_streamed_completion_ends_with_the_sources(client: openai.OpenAI, live_chat: LiveChat) -> None:
    chunks = list(client.chat.completions.create(model=MODEL_ID, messages=[user(QUESTION)], stream=True))
    assert len(chunks) >= 3 and all(c.object == "chat.completion.chunk" and c.model == MODEL_ID for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.strip() and re.search(r"\[\d\]", text)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop" and all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all("sources" not in (c.model_extra or {}) for c in chunks[:-1])
    extra = last.model_extra
    # An extractive answer is written at once: the deltas are its checked text.
    assert extra["answer"]["mode"] == "extractive" and extra["answer"]["text"] == text
    check_citations(extra["answer"], extra["passages"])
    check_hits(extra["sources"], live_chat.search(QUESTION, k=5))


def test_the_stream_is_server_sent_events_ending_done(live_chat: LiveChat) -> None:
    body = {"model": MODEL_ID, "messages": [user(QUESTION)], "stream": True, "k": 2}
    response = httpx.post(f"{live_chat.url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert '"sources"' in events[-2] and '"finish_reason": "stop"' in events[-2]
    assert '"sources"' not in "".join(events[:-2])
    assert events[-2].count('"location"') >= 2  # k=2 hits, then the passages


def test_a_follow_up_is_searched_with_the_question_before_it(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model=MODEL_ID, messages=[user("What is word2vec?")])
    assert first.model_extra["sources"][0]["source"] == "word2vec.md"
    follow_up = "How is it different from GloVe?"
    messages = [
        {"role": "system", "content": "Answer briefly."},
        user("What is word2vec?"),
        {"role": "assistant", "content": first.choices[0].message.content},
        user(follow_up),
    ]
    completion = client.chat.completions.create(model=MODEL_ID, messages=messages)
    extra = completion.model_extra
    assert "word2vec" in extra["answer"]["searched"].lower() and follow_up in extra["answer"]["searched"]
    assert "glove.md" in {h["source"] for h in extra["sources"]}
    assert extra["answer"]["mode"] == "extractive"
    check_citations(extra["answer"], extra["passages"])
    # Alone, the same question is searched as asked.
    alone = client.chat.completions.create(model=MODEL_ID, messages=[user(follow_up)])
    assert alone.model_extra["answer"]["searched"] == follow_up


def test_a_question_the_notes_do_not_cover_is_refused(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL_ID, messages=[user("What is the capital of Peru?")])
    answer = completion.model_extra["answer"]
    assert answer["mode"] == "refused" and answer["citations"] == [] and answer["model"] is None
    assert answer["reason"].startswith(("not in your notes", "no hits"))
    assert completion.choices[0].message.content == answer["text"] and "Peru" not in answer["text"]
    assert "not" in answer["text"].lower()


def test_text_parts_and_unknown_openai_fields_are_accepted(live_chat: LiveChat) -> None:
    body = {
        "model": "whatever-the-client-picked",
        "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
        "temperature": 0.2,
        "max_tokens": 50,
        "top_p": 0.9,
        "user": "someone",
        "stream_options": {"include_usage": True},
        "k": 3,
    }
    response = httpx.post(f"{live_chat.url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["model"] == MODEL_ID and data["answer"]["searched"] == QUESTION and len(data["sources"]) == 3


# --- bad input, auth and origin ---------------------------------------------------------------------------------

HELLO = [user("hello")]


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"model": MODEL_ID}, "messages", "Field required"),
        ({"messages": []}, "messages", "at least 1 item"),
        ({"messages": "hello"}, "messages", "valid list"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "'user'"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "Field required"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content",
            "text parts",
        ),
        ({"messages": [user("hi"), {"role": "user", "content": 7}]}, "messages[1].content", "must be a string"),
        ({"messages": HELLO, "k": 0}, "k", "greater than or equal to 1"),
        ({"messages": HELLO, "k": MAX_K + 1}, "k", f"less than or equal to {MAX_K}"),
        ({"messages": HELLO, "k": "3"}, "k", "valid integer"),
        ({"messages": HELLO, "stream": "sometimes"}, "stream", "valid boolean"),
        ({"messages": [*HELLO, {"role": "assistant", "content": "hi"}]}, "messages", "last message"),
        ({"messages": [user("   ")]}, "messages[0].content", "question is empty"),
        ([HELLO], None, "valid dictionary"),
    ],
)
def test_a_bad_request_gets_an_openai_error_naming_the_field(
    live_chat: LiveChat, body: Any, param: str | None, message: str
) -> None:
    response = httpx.post(f"{live_chat.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert message in error["message"] and (param is None or param in error["message"])


def test_a_body_that_is_not_json_gets_an_openai_error(live_chat: LiveChat) -> None:
    response = httpx.post(
        f"{live_chat.url}/v1/chat/completions",
        content=b"messages=hello",
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 400 and "must be JSON" in response.json()["error"]["message"]


def test_the_openai_client_reads_the_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "robot", "content": "hi"}])
    assert raised.value.param == "messages[0].role" and raised.value.type == "invalid_request_error"


def basic(user_name: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user_name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_auth_and_same_origin_guard_the_endpoint(live_chat: LiveChat) -> None:
    with ServerThread(create_server(live_chat.kb, auth="ada:s3cret", watcher=live_chat.watcher)) as server:
        url = f"{server.url}/v1/chat/completions"
        body = {"model": MODEL_ID, "messages": [user(QUESTION)]}
        assert httpx.get(f"{server.url}/v1/models", timeout=30).status_code == 401
        denied = httpx.post(url, json=body, timeout=30)
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Basic"
        with pytest.raises(openai.AuthenticationError):
            client_for(server.url).models.list()  # the client's own Bearer key is no login
        # The login as the API key, which is all that many OpenAI front ends let a user enter.
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="ada:nope", max_retries=0).models.list()
        keyed = openai.OpenAI(base_url=f"{server.url}/v1", api_key="ada:s3cret", max_retries=0)
        assert [m.id for m in keyed.models.list().data] == [MODEL_ID]
        assert httpx.get(f"{server.url}/api/status", headers={"Authorization": "Bearer ada:s3cret"}).status_code == 401
        with pytest.raises(openai.AuthenticationError):
            client_for(server.url, default_headers=basic("ada", "nope")).models.list()

        logged_in = client_for(server.url, default_headers=basic("ada", "s3cret"))
        assert [m.id for m in logged_in.models.list().data] == [MODEL_ID]
        completion = logged_in.chat.completions.create(model=MODEL_ID, messages=[user(QUESTION)])
        assert completion.model_extra["sources"][0]["source"] == "cosine-similarity.md"

        login = basic("ada", "s3cret")
        foreign = httpx.post(url, json=body, headers={**login, "Origin": "http://evil.example"}, timeout=30)
        assert foreign.status_code == 403
        assert "refused a request sent by a page at http://evil.example" in foreign.json()["error"]
        api = httpx.post(
            f"{server.url}/api/notes",
            json={"title": "x", "body": "y"},
            headers={**login, "Origin": "http://evil.example"},
            timeout=30,
        )
        assert api.status_code == 403 and api.json() == foreign.json()
        sneaky = httpx.post(url, json=body, headers={**login, "Sec-Fetch-Site": "cross-site"}, timeout=30)
        assert sneaky.status_code == 403
        as_form = httpx.post(url, data={"messages": "hi"}, headers=login, timeout=30)
        assert as_form.status_code == 415
        own = httpx.post(url, json=body, headers={**login, "Origin": server.url}, timeout=60)
        assert own.status_code == 200 and own.json()["answer"]["mode"] == "extractive"

        bad = httpx.post(url, json={"messages": [{"role": "robot", "content": "x"}]}, headers=login, timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages[0].role"


# --- the queue and a client that hangs up (a writer that waits for it) ------------------------------------------


class HangUpWriter:
    """Writes one sentence, then waits until the request's stop event is set: when its client hangs up."""

    model = "hang-up-writer"

    def __init__(self) -> None:
        self.stopped = threading.Semaphore(0)
        self.calls = 0

    def write(self, question: str, sources: Sequence[Source], *, stop: threading.Event | None = None) -> Iterator[str]:
        self.calls += 1
        yield "Word2vec learns word vectors from the words around each word [1]."
        assert stop is not None
        if stop.wait(timeout=60):
            self.stopped.release()
            return
        yield " The client never hung up."

    def condense(self, question: str, history: Sequence[dict[str, str]]) -> str | None:
        return None


def test_a_full_queue_is_429_and_a_hang_up_stops_the_writer(live_kb: KnowledgeBase) -> None:
    writer = HangUpWriter()
    app = FastAPI()
    app.add_middleware(RequestGuard, max_body_bytes=body_limit(live_kb.config.max_note_bytes))
    add_openai_routes(app, live_kb, auth=lambda: None, answerer=Answerer(live_kb, writer=writer))
    admitted = WRITING_SLOTS + WAITING_SLOTS
    outcomes: list[tuple[int, Any]] = []
    hang_up = threading.Event()

    def ask(url: str) -> None:
        body = {"model": MODEL_ID, "messages": [user("What is word2vec?")], "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
            if response.status_code != 200:
                outcomes.append((response.status_code, (response.read(), response.headers)))
                return
            # Held until the hang-up: a line iterator that is dropped closes the connection.
            lines = response.iter_lines()
            for line in lines:
                if '"content": "Word2vec' in line:
                    outcomes.append((200, line))
                    break
            hang_up.wait(timeout=60)
            lines.close()

    with ServerThread(app) as server:
        threads = [threading.Thread(target=ask, args=(server.url,), daemon=True) for _ in range(admitted + 1)]
        for thread in threads:
            thread.start()
        # One writes, the others wait their turn, and the one beyond the queue is told at once.
        wait_for(lambda: len(outcomes) == 2, timeout=60, what="the first draft and a 429")
        (status, (body, headers)), (_, draft) = sorted(outcomes, reverse=True)
        assert status == 429 and headers["retry-after"].isdigit()
        error = json.loads(body)["error"]
        assert error["type"] == "rate_limit_error" and "busy" in error["message"] and "try again" in error["message"]
        assert writer.calls == 1 and '"role"' not in draft
        # Each client hangs up after its first draft; that stops its writer, and the next one gets its turn.
        hang_up.set()
        for _ in range(admitted):
            assert writer.stopped.acquire(timeout=60), "a writer was not stopped when its client hung up"
        for thread in threads:
            thread.join(timeout=60)
        assert writer.calls == admitted and sorted(s for s, _ in outcomes) == [200] * admitted + [429]


# --- a written answer: python -m demo with RAG_LLM=smollm2 -------------------------------------------------------


@pytest.fixture(scope="module")
def model_chat(tmp_path_factory: pytest.TempPathFactory, starter_db: Path, rag_cache_dir: Path) -> Iterator[str]:
    """`python -m demo --read-only` on a copy of the starter notes and store, answering with SmolLM2-135M."""
    root = tmp_path_factory.mktemp("openai-model")
    shutil.copytree(KNOWLEDGE, root / "knowledge")
    shutil.copytree(starter_db, root / "db")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["-m", "demo", "--port", str(port), "--knowledge", str(root / "knowledge"), "--db", str(root / "db")]
    env = child_env({"RAG_LLM": "smollm2", "RAG_LLM_THREADS": "1"}, cache_dir=rag_cache_dir)
    with serve(
        [sys.executable, *args, "--read-only"],
        url=url,
        ready=answers(f"{url}/v1/models"),
        log=root / "demo.log",
        timeout=300,
        env=env,
    ):
        yield url


def test_a_model_answer_streams_and_is_checked(model_chat: str) -> None:
    client = client_for(model_chat)
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=[user("What is word2vec?")], stream=True, temperature=0.7
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    # A model answer arrives piece by piece, before the checked answer.
    assert len(deltas) >= 2 and "".join(deltas).strip()
    extra = chunks[-1].model_extra
    answer, passages = extra["answer"], extra["passages"]
    assert answer["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert answer["mode"] in ("generated", "refused") and answer["searched"] == "What is word2vec?"
    assert extra["sources"][0]["source"] == "word2vec.md" and passages
    if answer["mode"] == "refused":
        assert answer["reason"] == "the model said the sources do not answer it" and answer["citations"] == []
    else:
        assert answer["text"].strip() and answer["sentences"]
        check_citations(answer, passages)
        for sentence in answer["sentences"]:
            assert sentence["supported"] == (bool(sentence["citations"]) and sentence["support"] >= SUPPORT_AT)
