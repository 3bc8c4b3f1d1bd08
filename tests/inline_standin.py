"""A small stand-in for `demo.app.build_app`, used only while the web chat is not in this tree.

It is a real Gradio app over the real knowledge base (a question box and the hits as JSON), so `show_chat`'s
launch, iframe and close are exercised for real; tests use it only when `demo.app` cannot be imported.
"""

from __future__ import annotations

import importlib.util

SOURCE = """
import dataclasses
import sys
import types

import gradio as gr


def build_app(kb, *, read_only=False):
    with gr.Blocks(title="stand-in chat") as app:
        question = gr.Textbox(label="Question (stand-in app)")
        hits = gr.JSON(label="Hits")
        question.submit(lambda q: dataclasses.asdict(kb.search(q)), question, hits, api_name="ask")
    return app


sys.modules["demo.app"] = types.ModuleType("demo.app")
sys.modules["demo.app"].build_app = build_app
"""


def web_chat_available() -> bool:
    """Whether the real `demo.app` is in this tree."""
    return importlib.util.find_spec("demo.app") is not None


def install() -> None:
    """Register the stand-in as `demo.app` in this process."""
    exec(compile(SOURCE, "inline_standin", "exec"), {})
