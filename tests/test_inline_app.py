"""`show_chat`: the web chat launched inline on 127.0.0.1, reached over HTTP, then closed.

Until the web chat (`demo.app`) is in this tree, the launch is exercised with the stand-in app of
`inline_standin`; `show_chat`'s own code path (import, sync, build, launch, handle) is the real one either way.
"""

from __future__ import annotations

import sys

import httpx
import inline_standin
import pytest

from demo.notebook import show_chat
from rag.config import Config
from rag.knowledge import KnowledgeBase


@pytest.mark.slow
def test_show_chat_serves_the_app_locally_and_close_frees_it(
    indexed_config: Config, embedder, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    if not inline_standin.web_chat_available():
        monkeypatch.setitem(sys.modules, "demo.app", inline_standin.module())
    kb = KnowledgeBase(indexed_config, embedder=embedder)
    chat = show_chat(kb, height=480)
    try:
        assert chat.url.startswith("http://127.0.0.1:") and chat.running
        page = httpx.get(chat.url, timeout=30)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        assert "running" in repr(chat)
    finally:
        chat.close()
    assert not chat.running and "closed" in repr(chat)
    with pytest.raises(httpx.TransportError):
        httpx.get(chat.url, timeout=5)
    chat.close()  # a second close is harmless
