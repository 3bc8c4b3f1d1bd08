"""A small stand-in for `demo.app.build_app`, used only while the web chat is not in this tree.

It is a real Gradio app over the real knowledge base (a question box and the hits as JSON), so `show_chat`'s
launch, iframe and close are exercised for real; tests use it only when `demo.app` cannot be imported.
"""

from __future__ import annotations

import importlib.util
import types

SOURCE = """
import dataclasses
import sys
import types


def build_app(kb, *, read_only=False):
    import gradio as gr

    with gr.Blocks(title="stand-in chat") as app:
        question = gr.Textbox(label="Question (stand-in app)")
        hits = gr.JSON(label="Hits")
        question.submit(lambda q: dataclasses.asdict(kb.search(q)), question, hits, api_name="ask")
    return app


if "demo.app" not in sys.modules:
    sys.modules["demo.app"] = types.ModuleType("demo.app")
    sys.modules["demo.app"].build_app = build_app
"""


def web_chat_available() -> bool:
    """Whether the real `demo.app` is in this tree."""
    return importlib.util.find_spec("demo.app") is not None


def module() -> types.ModuleType:
    """The stand-in as a module object with `build_app`, not registered anywhere."""
    namespace: dict[str, object] = {}
    exec(compile(SOURCE.split("\nif ", 1)[0], "inline_standin", "exec"), namespace)
    stand_in = types.ModuleType("demo.app")
    stand_in.build_app = namespace["build_app"]  # type: ignore[attr-defined]
    return stand_in
