"""Real browser (Debian's headless chromium via playwright) against the app over real HTTP.

These tests fail, never skip, when /usr/bin/chromium is missing; playwright never downloads one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.conftest import Site


@pytest.fixture
def page(browser, live_server: str) -> Iterator[object]:
    """A phone-sized page that records console errors and uncaught exceptions."""
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    try:
        yield page
    finally:
        context.close()


def test_index_lists_the_tickers(page, live_server: str, sqlite_site: Site) -> None:
    response = page.goto(live_server + "/")
    assert response is not None and response.status == 200
    for ticker in sqlite_site.config.tickers.symbols:
        assert page.locator(f"#ticker-{ticker} .ix-ticker a").inner_text() == ticker
    assert page.errors == []


def test_ticker_page_renders_the_candlestick_chart(
    page, live_server: str, sqlite_site: Site, tmp_path: Path
) -> None:
    page.goto(live_server + "/tickers/AAPL")
    page.wait_for_selector("#candles-chart .main-svg", timeout=15_000)
    assert page.locator("#candles-chart g.trace.boxes").count() >= 1  # candlestick traces
    page.wait_for_selector("#attention-chart .main-svg")
    page.wait_for_selector("#history-chart .main-svg")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1  # no sideways scrolling of the page at phone width
    shot = tmp_path / "ticker-aapl.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    assert page.errors == []


@pytest.mark.slow
def test_date_picker_changes_the_forecast(page, live_server: str, sqlite_site: Site) -> None:
    page.goto(live_server + "/tickers/AAPL")
    latest = sqlite_site.seed.stored_as_of[-1].isoformat()
    assert page.locator("#forecast-as-of").inner_text() == latest
    first_close = page.locator("#forecast td.strong").first.inner_text()

    past = sqlite_site.seed.stored_as_of[3].isoformat()
    page.fill("#as_of", past)
    with page.expect_navigation():
        page.click("form.picker button[type=submit]")
    assert page.locator("#forecast-as-of").inner_text() == past
    assert page.locator("#forecast").get_attribute("data-source") == "stored"
    assert page.locator("#forecast td.strong").first.inner_text() != first_close
    page.wait_for_selector("#candles-chart .main-svg")

    page.fill("#as_of", "2024-01-15")  # no stored forecast: inferred live
    with page.expect_navigation():
        page.click("form.picker button[type=submit]")
    assert page.locator("#forecast").get_attribute("data-source") == "live"
    assert page.locator("#forecast-as-of").inner_text() == sqlite_site.seed.last_session.isoformat()
    page.wait_for_selector("#candles-chart .main-svg")
    assert page.errors == []
