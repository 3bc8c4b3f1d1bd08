"""The example notebook, executed top to bottom by nbclient in a real ipykernel; the test reads its outputs.

`execute_notebook` is also how the outputs saved in `demo/notebook.ipynb` are produced (`make notebook`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from rag.config import Config

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "demo" / "notebook.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def ensure_python3_kernel() -> None:
    """Register this interpreter as the `python3` kernel if no such kernelspec exists (fresh CI machines)."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", "python3"], check=True)


def execute_notebook(path: Path, *, timeout: int = 900) -> nbformat.NotebookNode:
    """Run every cell of `path` in a fresh `python3` kernel started in the notebook's folder."""
    ensure_python3_kernel()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        startup_timeout=120,
        resources={"metadata": {"path": str(path.parent)}},
    )
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        client.set_widgets_metadata()
    return nb


def html_of(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)


def scores_in(html: str) -> list[float]:
    return [float(s) for s in re.findall(r"<code>(-?\d\.\d{3})</code>", html)]


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory, rag_cache_dir: Path) -> nbformat.NotebookNode:
    """The example notebook run over a copy of the starter notes, with its index in a temporary folder."""
    import shutil

    base = tmp_path_factory.mktemp("nb")
    shutil.copytree(ROOT / "knowledge", base / "knowledge")
    with pytest.MonkeyPatch.context() as env:
        for key, value in {
            "RAG_KNOWLEDGE_DIR": str(base / "knowledge"),
            "RAG_DB_DIR": str(base / "db"),
            "RAG_CACHE_DIR": str(rag_cache_dir),  # the kernel's ONNX export, kept out of ~/.cache/rag
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }.items():
            env.setenv(key, value)
        return execute_notebook(NOTEBOOK)


def cell_with(nb: nbformat.NotebookNode, text: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.cell_type == "code" and text in c.source)


@pytest.mark.slow
def test_no_cell_fails_or_complains(executed: nbformat.NotebookNode) -> None:
    assert [c.source for c in executed.cells] == [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells]
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", (cell.source, out)
            # Only the widget cell shows a widget (a progress bar would be one too).
            assert WIDGET_VIEW not in out.get("data", {}) or "ChatWidget()" in cell.source, (cell.source, out)
            if out.output_type == "stream" and out.name == "stderr":
                assert "error" not in out.text.lower() and "traceback" not in out.text.lower(), out.text
            # IPython's help lookup (`word?`) would print this instead of asking.
            assert "not found" not in out.get("text", ""), out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cell_text", "expected_source"),
    [
        ('rag.ask("What is cosine similarity?", k=3)', "cosine-similarity.md"),
        ("%ask -k 3 what's the difference between word2vec and GloVe?", None),
        ("%%ask -k 3", "hybrid-search-bm25.md"),
        ('chat.ask("What does a vector database store?")', "vector-databases-and-chroma.md"),
    ],
)
def test_results_show_scored_sources(
    executed: nbformat.NotebookNode, cell_text: str, expected_source: str | None
) -> None:
    html = html_of(cell_with(executed, cell_text))
    scores = scores_in(html)
    if cell_text.startswith("rag.ask"):
        assert len(scores) == 3  # a SearchResult: one row per hit
    else:
        # An answer's sources are passages: touching hits of one note are one source, so there may be fewer.
        assert 1 <= len(scores) <= (5 if "chat.ask" in cell_text else 3), scores
    # Shown scores are cosine similarities; hybrid ranking need not order them.
    assert all(0 < s <= 1 for s in scores)
    assert "<table" in html and "width:" in html
    locations = re.findall(r"<code>([\w./-]+\.md:\d+(?:-\d+)?)</code>", html)
    assert len(locations) == len(scores)
    if expected_source:
        assert locations[0].startswith(expected_source + ":")
    else:
        assert {loc.split(":")[0] for loc in locations} & {"word2vec.md", "glove.md"}


@pytest.mark.slow
def test_widget_is_displayed_and_its_state_holds_the_result(executed: nbformat.NotebookNode) -> None:
    shown = cell_with(executed, "chat = ChatWidget()")
    views = [o["data"][WIDGET_VIEW] for o in shown.outputs if WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 1
    states = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    state = states[views[0]["model_id"]]["state"]
    assert state["_esm"].startswith("// Front end of demo.widget.ChatWidget")
    assert state["question"] == "What does a vector database store?"
    assert state["result"]["hits"][0]["source"] == "vector-databases-and-chroma.md"
    answer = "".join(o.get("text", "") for o in cell_with(executed, "print(chat.answer)").outputs)
    # The written answer: quoted sentences, each with the number of a source the widget lists.
    assert re.search(r"\. \[\d\]", answer), answer
    assert state["result"]["answer"]["mode"] == "extractive" and state["result"]["answer"]["citations"]
    assert state["result"]["sources"][0]["source"] == "vector-databases-and-chroma.md"


@pytest.mark.slow
def test_inline_app_cell_shows_the_local_iframe(executed: nbformat.NotebookNode) -> None:
    cell = cell_with(executed, "app = show_chat(")
    assert re.search(r'<iframe src="http://127\.0\.0\.1:\d+/"', html_of(cell))
    text = "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs)
    assert "<InlineChat http://127.0.0.1:" in text


def test_notebook_points_at_the_settings_not_at_a_machine(tmp_path: Path) -> None:
    """The saved notebook carries no absolute paths from the machine it was run on."""
    text = NOTEBOOK.read_text(encoding="utf-8")
    assert "/tmp/" not in text and "/root/" not in text and "/work/" not in text
    assert Config().knowledge_dir.as_posix() in text
