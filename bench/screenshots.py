"""The README's pictures of the chat answering: `python bench/screenshots.py [--out docs]`.

Serves the real chat (`python -m demo`) on a copy of the bundled notes with a fresh store, asks a question and a
follow-up in Debian's Chromium (Playwright, never `playwright install`), and saves the page: `chat.png` with the
extractive writer, `chat-model.png` with the packaged SmolLM2 test model (`RAG_LLM=smollm2`, one thread), whose
answers show what the citation check marks. Not a measurement; it lives with the scripts that drive the product.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._process import child_env, free_port, serve  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
QUESTIONS = ("What is word2vec?", "How is it different from GloVe?")


def shoot(out: Path, name: str, *, env: dict[str, str], timeout: float) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "knowledge"
        shutil.copytree(ROOT / "knowledge", folder)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "demo", "--port", str(port), "--knowledge", str(folder), "--db", f"{work}/db"]
        with serve(argv, url=url, log=Path(work) / "chat.log", env=child_env(env), cwd=ROOT, timeout=300):
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url)
                for n, question in enumerate(QUESTIONS, 1):
                    page.locator("#rag-question textarea").fill(question)
                    page.locator("#rag-ask").click()
                    # Each answer ends with its sources list; wait for the n-th.
                    page.locator("#rag-chat .message-row", has_text="Sources").nth(n - 1).wait_for(
                        timeout=timeout * 1000
                    )
                page.wait_for_timeout(800)
                page.screenshot(path=str(out / name), full_page=True)
                browser.close()
    print(f"wrote {out / name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the pictures (docs)")
    parser.add_argument("--no-model", action="store_true", help="only the extractive picture")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    shoot(args.out, "chat.png", env={}, timeout=120)
    if not args.no_model:
        shoot(args.out, "chat-model.png", env={"RAG_LLM": "smollm2", "RAG_LLM_THREADS": "1"}, timeout=300)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
