"""The example notebook in a real JupyterLab, driven by Debian's Chromium through Playwright.

JupyterLab runs headless on a free port of 127.0.0.1 with a temporary root, config, settings and IPython
folder, and with news, update checks and the extension manager's PyPI lookups turned off, so nothing is
fetched. The test runs all cells, then uses the in-kernel widget like a person: types a question, reads the
scored sources, adds a note through the form and finds it with the next question. A screenshot goes to
artifacts/notebook.png.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from .web_fixtures import launch_chromium

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "demo" / "notebook.ipynb"
ARTIFACTS = ROOT / "artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def lab(tmp_path: Path, knowledge: Path, starter_db: Path) -> Iterator[tuple[str, Path]]:
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
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
        "IPYTHONDIR": str(ipython),
        "RAG_KNOWLEDGE_DIR": str(knowledge),
        "RAG_DB_DIR": str(tmp_path / "db"),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    port, token = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1"]
    command += [f"--port={port}", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}"]
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/api/status", params={"token": token}, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start; log:\n{(tmp_path / 'jupyterlab.log').read_text()}")
            time.sleep(0.5)
        yield f"{url}/lab/tree/notebook.ipynb?token={token}", knowledge
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_widget_answers_and_learns_a_note_in_jupyterlab(lab: tuple[str, Path]) -> None:
    from playwright.sync_api import sync_playwright

    url, knowledge = lab
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            # Focus the notebook (a dialog or the launcher may hold the focus at first), then wait for its kernel.
            page.locator(".jp-Notebook").first.wait_for(timeout=180_000)
            page.locator(".jp-Notebook").first.click()
            page.wait_for_function(
                "() => ['idle', 'busy'].includes("
                "window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel?.status)",
                timeout=180_000,
            )
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            widget = page.locator(".ragchat")
            widget.wait_for(timeout=600_000)
            # The last cell starts the inline web chat; its iframe means every cell has run.
            page.locator('iframe[src^="http://127.0.0.1:"]').wait_for(state="attached", timeout=600_000)
            assert widget.locator("[data-role=question]").input_value() == "What does a vector database store?"

            ask(page, "What is one-hot encoding and why is it sparse?")
            first_location(page, "one-hot-vs-dense.md:")
            scores = [float(s) for s in widget.locator("[data-role=score]").all_inner_texts()]
            assert len(scores) == 5 and all(0 < s <= 1 for s in scores)
            titles = widget.locator("[data-role=title]").all_inner_texts()
            assert titles[0] and widget.locator("[data-role=heading]").count() >= 1
            assert "score" in widget.locator("[data-role=answer]").inner_text()
            fill = widget.locator(".ragchat-bar-fill").first.evaluate("el => el.style.width")
            assert fill == f"{scores[0] * 100:.0f}%"

            widget.locator("[data-role=note-form] summary").click()
            widget.locator("[data-role=note-title]").fill("Quokka water")
            widget.locator("[data-role=note-tags]").fill("animals, test")
            widget.locator("[data-role=note-body]").fill(
                "Quokkas on Rottnest Island drink little water; they get moisture from the leaves they eat.\n\n"
                'Markup stays text: <img src=x onerror="window.__pwned = 1">'
            )
            widget.locator("[data-role=add-note]").click()
            page.wait_for_function(
                "() => document.querySelector('.ragchat [data-role=notice]')?.textContent.includes('quokka-water.md')",
                timeout=300_000,
            )
            assert (knowledge / "quokka-water.md").exists()

            ask(page, "Where do quokkas get their water?")
            first_location(page, "quokka-water.md:")
            best = widget.locator("[data-role=source]").first
            assert "<img src=x" in best.inner_text()
            assert page.evaluate("() => window.__pwned") is None
            assert float(widget.locator("[data-role=score]").first.inner_text()) > 0.4

            # The picture: the widget's cell (its two lines of code, then the chat), with the file browser closed.
            page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
            cell = "document.querySelector('.ragchat').closest('.jp-Cell')"
            page.evaluate(f"() => {cell}.scrollIntoView({{block: 'start'}})")
            page.wait_for_timeout(500)  # let the scroll settle before the picture; nothing is asserted on time
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "notebook.png"))
        finally:
            browser.close()


def ask(page, question: str) -> None:  # type: ignore[no-untyped-def]
    box = page.locator(".ragchat [data-role=question]")
    box.fill(question)
    box.press("Enter")


def first_location(page, prefix: str) -> None:  # type: ignore[no-untyped-def]
    """Wait until the widget's best source comes from `prefix` (a `path:` location)."""
    page.wait_for_function(
        "(prefix) => document.querySelector('.ragchat [data-role=location]')?.textContent.startsWith(prefix)",
        arg=prefix,
        timeout=300_000,
    )
