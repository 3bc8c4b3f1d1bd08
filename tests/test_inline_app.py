"""`show_chat`: the real web chat launched inline on 127.0.0.1, reached over HTTP, then closed."""

from __future__ import annotations

import httpx
import pytest

from demo.notebook import show_chat
from rag.config import Config
from rag.knowledge import KnowledgeBase


@pytest.mark.slow
def test_show_chat_serves_the_app_locally_and_close_frees_it(indexed_config: Config, embedder) -> None:  # type: ignore[no-untyped-def]
    kb = KnowledgeBase(indexed_config, embedder=embedder)
    chat = show_chat(kb, height=480)
    try:
        assert chat.url.startswith("http://127.0.0.1:") and chat.running
        page = httpx.get(chat.url, timeout=30)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        # The real chat, not a placeholder: its JSON API answers over the same port.
        from gradio_client import Client

        question = "what is cosine similarity?"
        reply = Client(chat.url, verbose=False).predict(question, 3, 0.0, api_name="/ask")
        # The reply repeats the question, so only what the notes add proves an answer: the library's own hits,
        # with the note on cosine similarity first.
        expected = kb.search(question, k=3, min_score=0.0).to_dict()
        assert reply["question"] == question
        assert [h["source"] for h in reply["hits"]] == [h["source"] for h in expected["hits"]]
        assert reply["hits"][0]["source"] == "cosine-similarity.md"
        assert [h["score"] for h in reply["hits"]] == pytest.approx([h["score"] for h in expected["hits"]], abs=1e-4)
        assert reply["answer"]["text"].strip() and reply["answer"]["text"] != question
        assert "running" in repr(chat)
    finally:
        chat.close()
    assert not chat.running and "closed" in repr(chat)
    with pytest.raises(httpx.TransportError):
        httpx.get(chat.url, timeout=5)
    chat.close()  # a second close is harmless
