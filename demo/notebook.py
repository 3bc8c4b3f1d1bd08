"""`show_chat`: the Gradio web chat rendered inline in a notebook cell, sharing the kernel's index.

Gradio serves the app on a local port and the cell shows it in an iframe, so the browser must reach the
kernel's machine on that port: fine on a laptop, broken on remote JupyterHub, Docker or VS Code remote. There,
use the in-kernel `demo.widget.ChatWidget`, which needs no port.

    from demo.notebook import show_chat
    chat = show_chat()
    ...
    chat.close()
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rag.knowledge import KnowledgeBase, shared_knowledge_base


@dataclass
class InlineChat:
    """A running inline chat; `close()` stops its server and frees the port."""

    app: Any  # gradio.Blocks; typed loosely so importing this module does not import gradio
    url: str

    @property
    def running(self) -> bool:
        return bool(getattr(self.app, "is_running", False))

    def close(self) -> None:
        """Stop the server; the iframe in the cell then shows a connection error. Safe to call twice."""
        if self.running:
            self.app.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "closed"
        return f"<InlineChat {self.url} ({state}); call .close() to stop it>"


def show_chat(
    kb: KnowledgeBase | None = None,
    *,
    height: int = 640,
    port: int | None = None,
    read_only: bool | None = None,
) -> InlineChat:
    """Start the web chat on 127.0.0.1 and display it in the current cell.

    Args:
        kb: the knowledge base; defaults to the shared one of the `RAG_*` settings (the one `%ask` uses).
        height: iframe height in pixels.
        port: the port to serve on; by default Gradio picks a free one from 7860 up.
        read_only: hide note writing; defaults to the knowledge base's `read_only` setting.

    Returns:
        A handle whose `close()` stops the server.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from demo.app import build_app  # imported here: gradio takes seconds to import

    kb = kb or shared_knowledge_base()
    kb.sync(rebuild=False)
    app = build_app(kb, read_only=kb.config.read_only if read_only is None else read_only)
    app.launch(
        inline=True,
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=port,
        height=height,
        share=False,
        quiet=True,
        ssr_mode=False,
    )
    return InlineChat(app=app, url=app.local_url)
