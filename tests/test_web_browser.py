"""The chat in a real browser (Debian Chromium through Playwright) against the live server: ask and see scored
sources, add a note in the UI and see it cited, HTML in a note stays text, and folder edits show up live."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .web_fixtures import LiveChat, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SCORE = re.compile(r"^cosine -?\d\.\d\d$")


@pytest.fixture
def page(browser, live_chat: LiveChat):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    page.goto(live_chat.url)
    page.locator("#rag-question textarea").wait_for()
    yield page
    context.close()


def ask(page, question: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """Ask in the UI and return the source cards as {source, score, title} once the answer for it is shown."""
    page.locator("button[role=tab]", has_text="Sources").click()
    before = page.locator("#rag-chat .message-row").count()
    page.locator("#rag-question textarea").fill(question)
    page.locator("#rag-ask").click()
    wait_for(lambda: page.locator("#rag-chat .message-row").count() >= before + 2, timeout=60)
    page.locator("#rag-sources .rag-card").first.wait_for(timeout=60_000)
    page.wait_for_timeout(300)
    return page.locator("#rag-sources .rag-card").evaluate_all(
        """cards => cards.map(c => ({source: c.dataset.source, score: c.querySelector('.rag-score').textContent,
            title: c.querySelector('.rag-title').textContent}))"""
    )


def last_answer(page) -> str:  # type: ignore[no-untyped-def]
    return page.locator("#rag-chat .message-row").last.inner_text()


def add_note_in_ui(page, title: str, tags: str, body: str) -> str:  # type: ignore[no-untyped-def]
    page.locator("button[role=tab]", has_text="Add a note").click()
    page.locator("#rag-note-title textarea, #rag-note-title input").first.fill(title)
    page.locator("#rag-note-tags textarea, #rag-note-tags input").first.fill(tags)
    page.locator("#rag-note-body textarea").fill(body)
    before = _notice(page)
    page.locator("#rag-note-save").click()
    # Each call in these tests expects a different message, so a change means the answer arrived.
    return wait_for(lambda: _notice(page) != before and _notice(page), timeout=60)


def _notice(page) -> str:  # type: ignore[no-untyped-def]
    return page.evaluate("(document.querySelector('#rag-note-notice p') || {}).textContent || ''")


def test_question_shows_answer_and_a_score_beside_each_source(page, live_chat: LiveChat) -> None:  # type: ignore[no-untyped-def]
    cards = ask(page, "What does a cosine similarity of 0.8 mean?")
    # Five hits, shown as passages: hits of one note that touch are one source, so there may be fewer cards.
    assert 2 <= len(cards) <= 5
    assert all(SCORE.match(c["score"]) for c in cards), cards
    assert cards[0]["source"] == "cosine-similarity.md"
    # The shown score is the cosine similarity; the order is the hybrid ranking, which it need not follow.
    assert all(0 < float(c["score"].split()[1]) <= 1 for c in cards)
    answer = last_answer(page)
    assert "[1]" in answer or "[2]" in answer
    assert "Sources" in answer and cards[0]["score"] in answer
    legend = page.locator("#rag-sources").inner_text()
    assert "Sources are listed by relevance" in legend and "similarity between your question and the passage" in legend
    page.locator("#rag-sources details summary").first.click()
    assert page.locator("#rag-sources details[open] .rag-chunk-body").first.inner_text().strip()
    out = ROOT / "artifacts"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "chat.png"), full_page=True)


def set_top_k(page, value: int) -> None:  # type: ignore[no-untyped-def]
    """Type `value` into the top-k box until the slider beside it shows it too.

    The settings accordion mounts the slider when it opens. On a loaded machine the first entry, made right after
    the accordion opened, was seen not to take: the slider stayed at 5 (once in 84 runs with a busy CPU, once in
    a CI run); most likely the component received its initial value after the entry. A person would type again;
    so does this, at most three times, and the slider must end up showing `value`.
    """
    box = page.locator("#rag-topk input[type=number]")
    shown = page.locator("#rag-topk input[type=range]")
    for attempt in range(3):
        box.fill(str(value))
        box.press("Enter")
        box.blur()
        try:
            # The number box and the slider share one value; once the slider shows it the app has it too.
            expect(shown).to_have_value(str(value), timeout=3000)
            return
        except AssertionError:
            if attempt == 2:
                raise


def test_top_k_control_changes_the_number_of_sources(page) -> None:  # type: ignore[no-untyped-def]
    page.locator("button", has_text="Search settings").click()
    set_top_k(page, 2)
    cards = ask(page, "How are word2vec vectors trained?")
    assert 1 <= len(cards) <= 2 and cards[0]["source"] == "word2vec.md"


def test_note_added_in_the_ui_is_cited_with_its_score(page, live_chat: LiveChat) -> None:  # type: ignore[no-untyped-def]
    assert "needs a title" in add_note_in_ui(page, "", "", "A body without a title.")
    notice = add_note_in_ui(
        page,
        "Tardigrade survival",
        "biology, ui",
        "Tardigrades survive vacuum and radiation by entering a dried tun state.",
    )
    assert "Saved tardigrade-survival.md" in notice
    assert "already exists" in add_note_in_ui(page, "Tardigrade survival", "", "again")
    cards = ask(page, "How do tardigrades survive in a vacuum?")
    assert cards[0]["source"] == "tardigrade-survival.md" and SCORE.match(cards[0]["score"])
    assert "Tardigrades survive vacuum and radiation" in last_answer(page)


def test_html_and_script_in_a_note_show_as_text_and_never_run(page, live_chat: LiveChat) -> None:  # type: ignore[no-untyped-def]
    body = (
        "The quokka protocol marks every message with a smiling header.\n\n"
        "Quokka protocol payloads look like <script>window.__xss = 'script'; alert(1)</script> and "
        "<img src=x onerror=\"window.__xss = 'img'; alert(2)\"> in the raw text."
    )
    assert "Saved" in add_note_in_ui(page, "Quokka <b>protocol</b>", "security", body)
    cards = ask(page, "What do quokka protocol payloads look like?")
    assert cards[0]["source"] == "quokka-b-protocol-b.md"
    assert cards[0]["title"] == "Quokka <b>protocol</b>"
    page.locator("#rag-sources details summary").first.click()
    chunk = page.locator("#rag-sources details[open] .rag-chunk-body").first.inner_text()
    assert "<script>window.__xss = 'script'; alert(1)</script>" in chunk
    assert "<img src=x onerror=" in chunk
    assert "<img src=x onerror=" in last_answer(page)
    page.wait_for_timeout(500)
    assert page.evaluate("window.__xss") is None
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("#rag-chat script, #rag-sources script").count() == 0


def test_save_answer_as_note(page, live_chat: LiveChat) -> None:  # type: ignore[no-untyped-def]
    ask(page, "What is GloVe trained on?")
    page.locator("#rag-save-answer").click()
    notice = page.locator("#rag-save-notice p")
    notice.wait_for(timeout=60_000)
    text = notice.inner_text()
    saved = re.search(r"Saved as (answer-[\w-]+\.md)", text)
    assert saved, text
    content = (live_chat.knowledge / saved.group(1)).read_text(encoding="utf-8")
    assert "## Question\n\nWhat is GloVe trained on?" in content and "glove.md:" in content


def test_files_dropped_and_deleted_in_the_folder_show_up_live(page, live_chat: LiveChat) -> None:  # type: ignore[no-untyped-def]
    note = live_chat.knowledge / "narwhal-tusks.md"
    question = "Why do narwhals have a tusk?"
    shutil.copyfile(_write_tmp(live_chat.knowledge.parent / "narwhal.md"), note)
    cards = wait_for(lambda: _cited(ask(page, question), "narwhal-tusks.md"), timeout=20, interval=0.5)
    assert SCORE.match(cards[0]["score"])
    page.locator("button[role=tab]", has_text="Index").click()
    wait_for(lambda: "watching the folder" in page.locator("#rag-status").inner_text(), timeout=10)
    note.unlink()
    wait_for(lambda: not _cited(ask(page, question), "narwhal-tusks.md"), timeout=20, interval=0.5)


def _write_tmp(path: Path) -> Path:
    path.write_text(
        "# Narwhal tusks\n\nThe narwhal tusk is a sensory tooth that can detect changes in seawater.\n",
        encoding="utf-8",
    )
    return path


def _cited(cards: list[dict], source: str) -> list[dict]:
    return [c for c in cards if c["source"] == source]
