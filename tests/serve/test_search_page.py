"""The search page at GET / in a real headless browser: type a query, see hits.

Playwright drives the system's Chromium (Debian's `chromium` package); the test skips, naming
what is missing, where either is absent.
"""

from __future__ import annotations

import shutil

import numpy as np

import pytest

playwright_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium binary (apt-get install chromium)")
def test_typing_a_query_shows_hits_with_scores_and_timings(server):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.fill("#query", "how are documents indexed")
            page.click("button[type=submit]")
            page.wait_for_selector(".hit", timeout=60_000)
            hits = page.locator(".hit")
            assert hits.count() == 10  # the page asks for top_k=10
            first = hits.nth(0)
            assert first.locator(".id").inner_text().strip()
            assert np.isfinite(float(first.locator(".score").inner_text()))
            assert len(first.locator("p").inner_text()) > 10  # the matching passage
            assert "hits in" in page.locator("#timings").inner_text()
            # a second search, reranked, replaces the hits and reports the rerank stage's time
            page.fill("#query", "evaluation of retrieval systems")
            page.check("#rerank")
            page.click("button[type=submit]")
            page.wait_for_function("document.querySelector('#timings').textContent.includes('hits in')", timeout=60_000)
            assert hits.count() == 10
            rerank_ms = float(page.locator("#timings").inner_text().split("rerank ")[1].rstrip(")"))
            assert rerank_ms > 0
        finally:
            browser.close()
