"""The index: one row per ticker with price context, a server-side sparkline and forecast fan,
the next-session forecast, model age and last run; sortable and filterable in a real browser.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from tests.web.conftest import Site, state_of
from web.pages import SPARK_SESSIONS

SHOTS = Path("/tmp/shots")
CENTS = re.compile(r"-?[\d,]+\.\d{2}")


def row_html(page: str, ticker: str) -> str:
    """The <tr> of `ticker` on the index."""
    return page.split(f'<tr id="ticker-{ticker}"')[1].split("</tr>")[0]


def expected(site: Site, ticker: str) -> dict[str, Any]:
    """What the row should say, straight from the database: closes and the next-session forecast."""
    engine = create_engine(site.url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            closes = conn.execute(
                text(
                    "SELECT close FROM candles WHERE ticker = :t ORDER BY session_date DESC "
                    "LIMIT :n"
                ),
                {"t": ticker, "n": SPARK_SESSIONS},
            ).scalars()
            closes = list(closes)[::-1]
            forecast = conn.execute(
                text(
                    "SELECT close, close_lo, close_hi FROM forecasts WHERE ticker = :t "
                    "AND horizon = 1 ORDER BY as_of_date DESC LIMIT 1"
                ),
                {"t": ticker},
            ).first()
    finally:
        engine.dispose()
    return {"closes": closes, "forecast": forecast}


def money(value: float) -> str:
    return f"{value:,.2f}"


@pytest.mark.parametrize("ticker", ["AAPL", "MSFT"])
def test_rows_show_close_change_forecast_and_interval_in_cents(
    client: FlaskClient, site: Site, ticker: str
) -> None:
    page = client.get("/").get_data(as_text=True)
    row = row_html(page, ticker)
    want = expected(site, ticker)
    last, prev = want["closes"][-1], want["closes"][-2]
    assert f'href="/tickers/{ticker}"' in row
    assert f'<span class="ix-num">{money(last)}</span>' in row
    sign = "+" if round(last - prev, 2) > 0 else ""
    assert f"{sign}{money(round(last - prev, 2) + 0.0)}</span>" in row
    assert f"{sign}{money(round(100 * (last - prev) / prev, 2) + 0.0)}%" in row
    direction = "up" if round(last - prev, 2) > 0 else "down" if last < prev else "flat"
    assert f'class="ix-change {direction}"' in row
    close, lo, hi = want["forecast"]
    assert f'<span class="ix-num">{money(close)}</span>' in row
    assert f"{money(lo)} – {money(hi)}" in row
    shown = re.sub(r"<svg.*?</svg>", "", row, flags=re.S)  # numbers outside the sparkline
    for number in CENTS.findall(re.sub(r'data-sort="[^"]*"', "", shown)):
        assert re.fullmatch(r"-?[\d,]+\.\d{2}", number)


def test_sparkline_has_one_point_per_close_and_the_fan(client: FlaskClient, site: Site) -> None:
    page = client.get("/").get_data(as_text=True)
    for ticker in ("AAPL", "MSFT"):
        row = row_html(page, ticker)
        svgs = re.findall(r"<svg .*?</svg>", row, flags=re.S)
        assert len(svgs) == 1
        points = re.search(r'<polyline class="closes" points="([^"]+)"', svgs[0])
        assert points is not None
        n_closes = len(expected(site, ticker)["closes"])
        assert n_closes == SPARK_SESSIONS  # the seed has more history than the sparkline shows
        assert len(points.group(1).split()) == n_closes
        median = re.search(r'<polyline class="median" points="([^"]+)"', svgs[0])
        assert median is not None and len(median.group(1).split()) == 5  # anchor + 4 sessions
        assert '<polygon class="band80"' in svgs[0]
    # AAPL's stored forecasts have quantiles (a 50% band); MSFT's have none.
    assert '<polygon class="band50"' in row_html(page, "AAPL")
    assert '<polygon class="band50"' not in row_html(page, "MSFT")


def test_ticker_without_forecast_or_candles_says_so(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    row = row_html(response.get_data(as_text=True), "GOOGL")
    assert "no forecast yet" in row and "no candles" in row
    assert "<svg" not in row
    assert 'href="/tickers/GOOGL"' in row


def test_model_age_and_last_run_badge(client: FlaskClient, site: Site) -> None:
    page = client.get("/").get_data(as_text=True)
    aapl = row_html(page, "AAPL")
    assert f"v{site.seed.model_id} · to 2023-06-30" in aapl
    assert re.search(r'<span class="ix-num">\d+ sessions</span>', aapl)
    assert 'class="status status-failed"' in aapl and "&lt;boom&gt;" in aapl  # escaped error
    msft = row_html(page, "MSFT")
    assert 'class="status status-succeeded"' in msft


def test_filter_box_only_for_many_tickers_or_on_request(client: FlaskClient) -> None:
    assert 'id="ix-filter"' not in client.get("/").get_data(as_text=True)  # three tickers
    assert 'id="ix-filter"' in client.get("/?filter=1").get_data(as_text=True)


def test_index_query_count_does_not_grow_per_ticker(client: FlaskClient, site: Site) -> None:
    engine = state_of(site.app).engine
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        assert client.get("/").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    queries = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(queries) <= 5, queries  # forecasts, closes, models, run outcomes, last run


OVERFLOW_JS = """() => {
  const root = document.documentElement;
  const wrap = document.querySelector('.ix-wrap');
  const wide = [...document.querySelectorAll('#ix *')].filter(
    el => el.getBoundingClientRect().right > wrap.getBoundingClientRect().right + 0.5);
  return {page: [root.scrollWidth, root.clientWidth], wrap: [wrap.scrollWidth, wrap.clientWidth],
          wide: wide.map(el => el.tagName + '.' + el.className)};
}"""


def test_index_in_a_browser_fits_sorts_and_filters(browser: Any, live_server: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        response = page.goto(live_server + "/?filter=1")
        assert response is not None and response.status == 200
        fit = page.evaluate(OVERFLOW_JS)
        assert fit["page"][0] <= fit["page"][1], fit
        assert fit["wrap"][0] <= fit["wrap"][1], fit
        assert fit["wide"] == [], fit
        page.screenshot(path=str(SHOTS / "index-1280.png"), full_page=True)

        def order() -> list[str]:
            return page.eval_on_selector_all("#ix tbody tr", "rows => rows.map(r => r.id)")

        assert order() == ["ticker-AAPL", "ticker-MSFT", "ticker-GOOGL"]
        page.click("#ix-change button")  # ascending: AAPL fell, MSFT rose, GOOGL has none
        assert order() == ["ticker-AAPL", "ticker-MSFT", "ticker-GOOGL"]
        assert page.get_attribute("#ix-change", "aria-sort") == "ascending"
        page.click("#ix-change button")
        assert order() == ["ticker-MSFT", "ticker-AAPL", "ticker-GOOGL"]
        assert page.get_attribute("#ix-change", "aria-sort") == "descending"

        page.fill("#ix-filter", "ms")
        assert page.is_visible("#ticker-MSFT")
        assert not page.is_visible("#ticker-AAPL") and not page.is_visible("#ticker-GOOGL")
        assert page.inner_text("#ix-count") == "1 of 3"
        page.fill("#ix-filter", "")
        assert page.is_visible("#ticker-AAPL") and page.is_visible("#ticker-GOOGL")

        page.set_viewport_size({"width": 1920, "height": 900})
        page.goto(live_server + "/")
        fit = page.evaluate(OVERFLOW_JS)
        assert fit["page"][0] <= fit["page"][1] and fit["wide"] == [], fit
        page.screenshot(path=str(SHOTS / "index-1920.png"), full_page=True)
        assert errors == []
    finally:
        context.close()


def test_recent_closes_are_each_tickers_last_sessions_in_any_chunking(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from db import web_queries as q
    from tests.web.seed import bundled_candles

    def tail(ticker: str, n: int) -> list[tuple[str, float]]:
        closes = bundled_candles(ticker)["close"].tail(n)
        return [(ts.date().isoformat(), round(float(v), 4)) for ts, v in closes.items()]

    def as_text(found: dict[str, list[Any]]) -> dict[str, list[tuple[str, float]]]:
        return {t: [(d.isoformat(), round(c, 4)) for d, c in rows] for t, rows in found.items()}

    asked = ["MSFT", "AAPL", "MSFT", "NOPE"]  # a repeat and a ticker without candles
    with state_of(site.app).sessions() as session:
        one_query = as_text(q.recent_closes(session, tickers=asked, sessions=5))
        monkeypatch.setattr(q, "RECENT_CLOSES_CHUNK", 1)  # one query per ticker
        chunked = as_text(q.recent_closes(session, tickers=asked, sessions=5))
        assert q.recent_closes(session, tickers=[], sessions=5) == {}
    stored_msft = [d for d, _ in one_query["MSFT"]]
    assert one_query == chunked and set(one_query) == {"AAPL", "MSFT"}
    assert one_query["AAPL"] == tail("AAPL", 5)
    assert stored_msft == sorted(stored_msft) and len(stored_msft) == 5
