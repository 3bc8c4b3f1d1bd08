"""The example notebook in a real JupyterLab, driven by Debian's Chromium through Playwright.

JupyterLab runs headless on a free port of 127.0.0.1 with a temporary root, config, settings and IPython
folder, and with news, update checks and the extension manager's PyPI lookups turned off, so nothing is
fetched. The test runs all cells, then uses the in-kernel widget like a person: types a question, reads the
answer and its numbered sources, asks a follow-up that keeps the thread, starts a new conversation, adds a note
with markup and a code fence through the form and finds it, shown as text and code, with the next question. A
screenshot goes to artifacts/notebook.png.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Iterator

import pytest

from bench._process import answers, child_env, free_port, serve

from .web_fixtures import launch_chromium

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "demo" / "notebook.ipynb"
ARTIFACTS = ROOT / "artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def lab(tmp_path: Path, knowledge: Path, starter_db: Path, rag_cache_dir: Path) -> Iterator[tuple[str, Path]]:
    """A running JupyterLab serving a copy of the example notebook; yields its URL with token and the notes."""
    root, config, ipython = tmp_path / "lab", tmp_path / "jupyter-config", tmp_path / "ipython"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / "notebook.ipynb")
    shutil.copytree(starter_db, tmp_path / "db")
    (config / "labconfig").mkdir(parents=True)
    settings = {
        "ServerApp": {"open_browser": False},
        "LabApp": {
            "news_url": None,
            "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
            "extension_manager": "readonly",
            "expose_app_in_browser": True,
        },
    }
    (config / "jupyter_server_config.json").write_text(json.dumps(settings))
    disabled = {"@jupyterlab/apputils-extension:announcements": True}
    (config / "labconfig" / "page_config.json").write_text(json.dumps({"disabledExtensions": disabled}))
    extra = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
        "IPYTHONDIR": str(ipython),
        "RAG_KNOWLEDGE_DIR": str(knowledge),
        "RAG_DB_DIR": str(tmp_path / "db"),
    }
    port, token = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1"]
    command += [f"--port={port}", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}"]
    url = f"http://127.0.0.1:{port}"
    with serve(
        command,
        url=url,
        ready=answers(f"{url}/api/status?token={token}"),
        log=tmp_path / "jupyterlab.log",
        timeout=120,
        stop_timeout=30,
        env=child_env(extra, cache_dir=rag_cache_dir),
        cwd=root,
    ):
        yield f"{url}/lab/tree/notebook.ipynb?token={token}", knowledge


def test_widget_answers_and_learns_a_note_in_jupyterlab(lab: tuple[str, Path]) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, knowledge = lab
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            # Focus the notebook (a dialog or the launcher may hold the focus at first), then wait for its kernel.
            notebook = page.locator(".jp-Notebook").first
            expect(notebook).to_be_visible(timeout=180_000)
            notebook.click()
            page.wait_for_function(
                "() => ['idle', 'busy'].includes("
                "window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel?.status)",
                timeout=180_000,
            )
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            widget = page.locator(".ragchat")
            expect(widget).to_be_visible(timeout=600_000)
            # The last cell starts the inline web chat; its iframe means every cell has run.
            expect(page.locator('iframe[src^="http://127.0.0.1:"]')).to_be_attached(timeout=600_000)
            expect(widget.locator("[data-role=question]")).to_have_value("What does a vector database store?")

            ask(page, "What is one-hot encoding and why is it sparse?")
            expect_first_location(widget, "one-hot-vs-dense.md:")
            scores = [float(s) for s in widget.locator("[data-role=score]").all_inner_texts()]
            assert 1 <= len(scores) <= 5 and all(0 < s <= 1 for s in scores)
            relevance = widget.locator("[data-role=relevance]").all_inner_texts()
            assert len(relevance) == len(scores) and all(re.fullmatch(r"relevance [01]\.\d\d", r) for r in relevance)
            titles = widget.locator("[data-role=title]").all_inner_texts()
            # Every source names its note and lines; a section only when its hits share one (a passage may span two).
            assert len(titles) == len(scores) and all(titles)
            assert widget.locator("[data-role=location]").count() == len(scores)
            assert widget.locator("[data-role=heading]").count() <= len(scores)
            # The written answer, each [n] naming a listed source.
            answer = widget.locator("[data-role=answer]")
            expect(answer).to_contain_text("[1]")
            numbers = {int(n) for n in re.findall(r"\[(\d+)\]", answer.inner_text())}
            assert numbers and numbers <= set(range(1, len(scores) + 1))
            fill = widget.locator(".ragchat-bar-fill").first.evaluate("el => el.style.width")
            assert fill == f"{scores[0] * 100:.0f}%"

            # A follow-up is read with the turns before it; the earlier turns are listed.
            ask(page, "And how do dense embeddings fix that?")
            expect(widget.locator("[data-role=searched]")).to_contain_text("one-hot encoding", timeout=300_000)
            history = widget.locator("[data-role=history]")
            expect(history).to_contain_text("You: What is one-hot encoding and why is it sparse?")
            widget.locator("[data-role=reset]").click()
            expect(widget.locator("[data-role=turn]")).to_have_count(0)
            expect(widget.locator("[data-role=source]")).to_have_count(0)

            widget.locator("[data-role=note-form] summary").click()
            widget.locator("[data-role=note-title]").fill("Quokka water")
            widget.locator("[data-role=note-tags]").fill("animals, test")
            widget.locator("[data-role=note-body]").fill(
                "Quokkas on Rottnest Island drink little water; they get moisture from the leaves they eat.\n\n"
                'Markup stays text: <img src=x onerror="window.__pwned = 1"> <script>window.__pwned = 2</script>\n\n'
                "```\nquokka.drink(<b>water</b>)\n```\n"
            )
            widget.locator("[data-role=add-note]").click()
            expect(widget.locator("[data-role=notice]")).to_contain_text("quokka-water.md", timeout=300_000)
            assert (knowledge / "quokka-water.md").exists()

            ask(page, "Where do quokkas get their water?")
            expect_first_location(widget, "quokka-water.md:")
            best = widget.locator("[data-role=source]").first
            expect(best).to_contain_text("<img src=x")
            expect(best).to_contain_text("<script>window.__pwned = 2</script>")
            expect(best.locator("pre code")).to_have_text("quokka.drink(<b>water</b>)")
            assert best.locator("img, script, pre b").count() == 0
            assert page.evaluate("() => window.__pwned") is None
            assert float(widget.locator("[data-role=score]").first.inner_text()) > 0.4
            expect(widget.locator("[data-role=answer]")).to_contain_text("Rottnest")

            # The picture: the widget's cell (its two lines of code, then the chat), with the file browser closed.
            page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
            cell = page.locator(".jp-Cell", has=widget)
            cell.evaluate("el => el.scrollIntoView({block: 'start'})")
            expect(cell).to_be_in_viewport()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "notebook.png"))
        finally:
            browser.close()


def ask(page, question: str) -> None:  # type: ignore[no-untyped-def]
    box = page.locator(".ragchat [data-role=question]")
    box.fill(question)
    box.press("Enter")


def expect_first_location(widget, prefix: str) -> None:  # type: ignore[no-untyped-def]
    """Wait until the widget's best source comes from `prefix` (a `path:` location)."""
    from playwright.sync_api import expect

    location = widget.locator("[data-role=location]").first
    expect(location).to_have_text(re.compile("^" + re.escape(prefix)), timeout=300_000)
