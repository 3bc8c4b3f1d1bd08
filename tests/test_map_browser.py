"""The map and the score picture in a real browser (Debian Chromium) against the live chat: after a question the
Map tab shows the question's star and its sources ringed, and the score picture under the sources marks the best
hit and the confident bar."""

from __future__ import annotations

from typing import Iterator

import pytest

from .web_fixtures import LiveChat, launch_chromium, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def page(live_chat: LiveChat) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(live_chat.url)
        page.locator("#rag-question textarea").wait_for()
        yield page
        browser.close()


def test_the_map_shows_the_question_and_rings_its_sources(page, live_chat: LiveChat) -> None:  # type: ignore[no-untyped-def]
    page.locator("button[role=tab]", has_text="Map").click()
    page.locator("#rag-map svg .rag-point").first.wait_for(timeout=60_000)
    assert page.locator("#rag-map svg .rag-question").count() == 0
    assert page.locator("#rag-map svg .rag-point").count() == live_chat.kb.store.count()

    page.locator("#rag-question textarea").fill("What does a cosine similarity of 0.8 mean?")
    page.locator("#rag-ask").click()
    page.locator("#rag-map svg .rag-question").wait_for(timeout=60_000)
    wait_for(lambda: page.locator("#rag-map svg .rag-source").count() == 5, timeout=30)
    star = page.locator("#rag-map svg .rag-question").bounding_box()
    assert star is not None and star["width"] > 5  # drawn, not just present in the markup
    assert "cosine" in page.locator("#rag-map svg .rag-source title").first.text_content().lower()
    axis = page.locator("#rag-map svg").inner_html()
    assert "PC1: first principal component (" in axis and "% of variance)" in axis

    page.locator("button[role=tab]", has_text="Sources").click()
    picture = page.locator("#rag-score-picture svg.rag-background")
    picture.wait_for(timeout=30_000)
    assert picture.locator(".rag-best").count() == 1 and picture.locator(".rag-bar").count() == 1
    best = picture.locator(".rag-best line").bounding_box()
    assert best is not None and best["height"] > 20
