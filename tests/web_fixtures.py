"""Fixtures for the web chat tests: the real app served by uvicorn on a free loopback port.

One chat server per test session (real model, real Chroma on disk in a tmp folder, a copy of the starter
notes, the folder watcher running), because indexing is the slow part; more servers can share its knowledge base.
"""

from __future__ import annotations

import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from bench._process import wait_for  # tests/test_web_*.py import it from here
from demo.watch import FolderWatcher
from rag.config import Config
from rag.knowledge import KnowledgeBase

KNOWLEDGE = Path(__file__).resolve().parent.parent / "knowledge"
CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium, headless and quiet: no background connections on a machine without internet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium through Playwright; a missing browser fails the test, it never skips it."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is not installed at /usr/bin/chromium; run `make browser`")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class ServerThread:
    """Serve an ASGI app with uvicorn in a daemon thread on a socket bound to 127.0.0.1 and a free port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for(
            lambda: self.server.started or not self.thread.is_alive(), timeout=60, interval=0.05, what="uvicorn start"
        )
        if not self.server.started:
            raise RuntimeError("the test server's thread ended before uvicorn started; see the log above")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()


@dataclass
class LiveChat:
    url: str
    kb: KnowledgeBase
    watcher: FolderWatcher
    knowledge: Path

    def search(self, q: str, **params: Any) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/search", params={"q": q, **params}, timeout=60)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="session")
def live_kb(tmp_path_factory: pytest.TempPathFactory, embedder: Any, starter_db: Path) -> KnowledgeBase:
    """A knowledge base on a copy of the starter notes with its own copy of the starter store."""
    root = tmp_path_factory.mktemp("webchat")
    shutil.copytree(KNOWLEDGE, root / "knowledge")
    shutil.copytree(starter_db, root / "db")
    kb = KnowledgeBase(Config(knowledge_dir=root / "knowledge", db_dir=root / "db"), embedder=embedder)
    return kb


@pytest.fixture(scope="session")
def live_chat(live_kb: KnowledgeBase) -> Iterator[LiveChat]:
    """The chat and its JSON API, served over HTTP while the folder watcher runs."""
    from demo.server import create_server  # Gradio takes seconds to import; only this fixture needs it

    watcher = FolderWatcher(live_kb)
    watcher.sync()
    with watcher, ServerThread(create_server(live_kb, watcher=watcher)) as server:
        yield LiveChat(server.url, live_kb, watcher, Path(live_kb.config.knowledge_dir))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium for one test module, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()
