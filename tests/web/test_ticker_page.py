"""The ticker page (issue 12 part 2): chart zoom, holidays, fan, as-of offsets, accuracy, paging."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from forecasting.calendar import next_sessions
from tests.web.conftest import Site
from tests.web.seed import bundled_candles
from web import ticker_view
from web.cache import response_cache

SHOTS = Path("/tmp/shots")


def get(client: FlaskClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.data[:300]
    return response.get_data(as_text=True)


def figure(page: str, div_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(data, layout) of the plotly figure embedded in the element `div_id`."""
    chunk = page.split(f'id="{div_id}"', 1)[1]
    rest = chunk[chunk.index("Plotly.newPlot(") + len("Plotly.newPlot(") :]
    decoder, pos, args = json.JSONDecoder(), 0, []
    for _ in range(3):  # the div id, data, layout
        while rest[pos] in " \n\t,":
            pos += 1
        value, pos = decoder.raw_decode(rest, pos)
        args.append(value)
    return args[1], args[2]


def sessions() -> list[date]:
    return [ts.date() for ts in bundled_candles("AAPL").index]


def clear_page_cache(client: FlaskClient) -> None:
    """Forget rendered pages: a test that patches the page code has not changed the database."""
    with client.application.app_context():
        response_cache().clear()


def test_default_view_zooms_on_three_months_and_the_forecast(client: FlaskClient, site: Site):
    data, layout = figure(get(client, "/tickers/AAPL"), "candles-chart")
    as_of = site.seed.stored_as_of[-1]
    days = [d for d in sessions() if d <= as_of]
    start, end = layout["xaxis"]["range"]
    assert start[:10] == days[-64].isoformat()  # the session before the 63 shown
    assert end[:10] == next_sessions(as_of, 4)[-1].isoformat()
    labels = [b["label"] for b in layout["xaxis"]["rangeselector"]["buttons"]]
    assert labels == ["3M", "6M", "1Y", "all"]
    actual = next(t for t in data if t.get("name") == "actual")["x"]
    last = next_sessions(as_of, 4)[-1]  # actuals of forecast days are drawn too (as-of pages)
    # only the shown sessions and the one before them
    assert actual == [d.isoformat() for d in sessions() if days[-64] <= d <= last]
    page = get(client, "/tickers/AAPL")
    more = re.search(r'id="candles-chart" data-more-url="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    start = (as_of - timedelta(days=370)).isoformat()
    assert more.replace("&amp;", "&") == (
        f"/api/candles/AAPL?start={start}&end={(days[-64] - timedelta(days=1)).isoformat()}"
    )
    older = client.get(more.replace("&amp;", "&")).get_json()["candles"]
    assert 180 <= len(older) <= 200 and older[-1]["date"] == days[-65].isoformat()
    assert all(d >= start for d in (c["date"] for c in older))
    low, high = layout["yaxis"]["range"]
    shown = bundled_candles("AAPL").loc[days[-63].isoformat() :]
    assert low <= shown["low"].min() and high >= shown["high"].max()
    assert high - low < 2 * (shown["high"].max() - shown["low"].min())  # zoomed, not the year


def test_rangebreaks_remove_weekends_and_exchange_holidays(client: FlaskClient) -> None:
    _, layout = figure(get(client, "/tickers/AAPL"), "candles-chart")
    breaks = layout["xaxis"]["rangebreaks"]
    assert {"bounds": ["sat", "mon"]} in breaks
    values = next(b["values"] for b in breaks if "values" in b)
    assert {"2023-12-25", "2023-11-23", "2023-07-04", "2024-01-01"} <= set(values)
    assert not set(values) & {d.isoformat() for d in sessions()}  # never a trading session


def test_fan_has_a_band_per_stored_level(client: FlaskClient) -> None:
    data, _ = figure(get(client, "/tickers/AAPL"), "candles-chart")
    bands = {t.get("name", "") for t in data if t.get("fill") == "tonexty"}
    assert bands == {"50% close interval", "80% close interval", "90% close interval"}
    names = {t.get("name", "") for t in data}
    assert {"actual up (close ≥ open)", "actual down (close < open)"} <= names
    assert "forecast candles (stored)" in names
    # one centre: a single line, at the served closes, and no other centre line
    (centre,) = [t for t in data if t["type"] == "scatter" and t.get("mode") == "lines+markers"]
    candles = next(t for t in data if t.get("name") == "forecast candles (stored)")
    assert centre["name"] == "forecast close (median)"
    assert centre["y"][-4:] == candles["close"]
    # the fan lies behind the actual candles: every band comes before the first candlestick
    first_candle = next(i for i, t in enumerate(data) if t["type"] == "candlestick")
    assert max(i for i, t in enumerate(data) if t.get("fill") == "tonexty") < first_candle
    msft, _ = figure(get(client, "/tickers/MSFT"), "candles-chart")  # no quantiles stored
    assert {t.get("name", "") for t in msft if t.get("fill") == "tonexty"} == {"80% close interval"}


def test_as_of_page_puts_forecast_candles_beside_the_actuals(client: FlaskClient, site: Site):
    as_of = site.seed.stored_as_of[3]
    data, layout = figure(get(client, f"/tickers/AAPL?as_of={as_of}"), "candles-chart")
    kinds = [t.get("name") for t in data if t["type"] == "candlestick"]
    assert kinds == ["actual", "forecast candles (stored)"]  # slot order: actual left
    actual = next(t for t in data if t.get("name") == "actual")["x"]
    forecast = next(t for t in data if t.get("name", "").startswith("forecast candles"))["x"]
    targets = [d.isoformat() for d in next_sessions(as_of, 4)]
    assert forecast == targets and set(targets) <= set(actual)  # same days drawn by both ...
    assert layout["boxmode"] == "group"  # ... side by side in each day's slot, never on top
    assert layout["xaxis"]["range"][1][:10] == targets[-1]
    msft, msft_layout = figure(get(client, "/tickers/MSFT"), "candles-chart")
    assert msft_layout["boxmode"] == "overlay"  # a forecast of future days needs no offset


def accuracy_counts(page: str) -> dict[int, int]:
    """Forecasts scored per horizon, from the 80% row of the coverage table."""
    table = page.split('id="coverage"', 1)[1].split("</table>", 1)[0]
    row = table.split('data-level="80"', 1)[1].split("</tr>", 1)[0]
    return {
        int(h): int(n)
        for h, n in re.findall(r'data-h="(\d)" data-rate="[^"]+"[^>]* data-n="(\d+)"', row)
    }


def test_accuracy_summary_honours_as_of_and_window(client: FlaskClient, site: Site) -> None:
    latest = get(client, "/tickers/AAPL")
    earlier = get(client, f"/tickers/AAPL?as_of={site.seed.stored_as_of[12]}")
    assert accuracy_counts(latest) and accuracy_counts(earlier)
    assert sum(accuracy_counts(earlier).values()) < sum(accuracy_counts(latest).values())
    assert accuracy_counts(earlier)[1] == 13  # as-of dates 0..12 all have their h1 actual
    verdict_classes = re.findall(r'<td class="(\w+)" data-h=', latest.split('id="skill"')[1])
    assert verdict_classes and set(verdict_classes) <= {"better", "worse", "neutral"}
    assert 'id="skill-rule"' in latest and "95% block-bootstrap interval" in latest
    assert 'id="rolling-chart"' in latest
    rolling, _ = figure(latest, "rolling-chart")
    assert [t["name"] for t in rolling] == ["candlecast", "GARCH(1,1)"]  # not model vs naive
    small = get(client, f"/tickers/AAPL?as_of={site.seed.stored_as_of[-1]}&window=60")
    assert accuracy_counts(small) == accuracy_counts(latest)  # all 30 stored are in 60 sessions
    history, _ = figure(latest, "history-chart")
    assert all(t.get("visible", True) is True for t in history)  # every horizon shown


def past_rows(page: str) -> list[str]:
    body = page.split('id="past">', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", body, re.S)


def test_recent_forecasts_are_paged_by_twenty(client: FlaskClient) -> None:
    first = get(client, "/tickers/AAPL")
    rows = past_rows(first)
    assert len(rows) == 20
    total = int(re.search(r"\((\d+) forecasts\)", first).group(1))
    pages_count = -(-total // 20)
    assert total > 40 and f"page 1 of {pages_count}" in first
    assert 'rel="next" href="/tickers/AAPL?window=250&amp;page=2#past-title"' in first
    second = get(client, "/tickers/AAPL?page=2")
    assert len(past_rows(second)) == 20 and past_rows(second)[0] != rows[0]
    assert f"page 2 of {pages_count}" in second and 'rel="prev"' in second
    last = get(client, f"/tickers/AAPL?page={pages_count}")
    assert len(past_rows(last)) == total - 20 * (pages_count - 1)
    for cell in re.findall(r"<td>([\d,]+\.\d+)</td>", "".join(rows)):
        assert re.fullmatch(r"[\d,]+\.\d{2}", cell)  # rounded to cents


def test_attention_sentence_is_derived_from_the_weights(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = get(client, "/tickers/AAPL")  # the seed's weights rise linearly (entropy ~0.94)
    assert 'id="attention-entropy">0.943<' in page and "near-uniform" not in page
    data, _ = figure(page, "attention-chart")
    assert any(t.get("name", "") == "uniform (1/20)" for t in data)
    with client.application.test_request_context("/tickers/AAPL"):
        seed = ticker_view.page_forecast("AAPL", "")[0].attention
    tenth = len(seed) // 10
    ratio = (sum(seed[-tenth:]) / tenth) / (sum(seed[:tenth]) / tenth)
    assert f"the newest tenth of the 20-session window gets {ratio:.1f}x the weight" in page

    original = ticker_view.page_forecast

    def with_weights(weights: tuple[float, ...]) -> str:
        def replaced(ticker: str, raw: str) -> Any:
            view, message, status = original(ticker, raw)
            return dataclasses.replace(view, attention=weights, attention_dates=()), message, status

        monkeypatch.setattr(ticker_view, "page_forecast", replaced)
        clear_page_cache(client)
        return get(client, "/tickers/AAPL")

    flat = tuple(1 / 60 + (0.003 if i % 2 else -0.003) for i in range(60))
    assert "Attention is near-uniform: the model weighs the last 60 sessions about equally" in (
        with_weights(flat)
    )
    # the case: high entropy (> 0.98) but bars rising from 0.0095 to 0.022 are not "equal"
    rising = tuple(0.0095 + (0.022 - 0.0095) * i / 59 for i in range(60))
    total = sum(rising)
    rising_page = with_weights(tuple(v / total for v in rising))
    assert "about equally" not in rising_page and "leans toward recent sessions" in rising_page
    assert "gets 2.1x the weight of the oldest tenth" in rising_page
    older = with_weights(tuple(reversed([v / total for v in rising])))
    assert "leans toward older sessions: the oldest tenth of the 60-session window gets 2.1x" in (
        older
    )
    assert 'id="attention-chart"' not in with_weights(())


GD = "document.querySelector('#candles-chart .plotly-graph-div')"
CANDLE_TRACES = """() => {
  const gd = document.querySelector('#candles-chart .plotly-graph-div');
  return gd.calcdata.filter(cd => cd[0].trace.type === 'candlestick').map(cd => ({
    name: cd[0].trace.name, x: cd[0].trace.x, offset: cd[0].t.bPos, half: cd[0].t.bdPos}));
}"""


ACTUAL = f"({GD}).data.find(t => t.name === 'actual')"


@pytest.mark.slow
def test_as_of_page_in_a_browser(browser, live_server: str, sqlite_site: Site) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    as_of = sqlite_site.seed.stored_as_of[3].isoformat()
    errors: list[str] = []
    for width in (1280, 1920):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            for name, path in (
                ("latest", "/tickers/AAPL"),
                ("asof", f"/tickers/AAPL?as_of={as_of}"),
            ):
                page.goto(live_server + path)
                page.wait_for_selector("#candles-chart .main-svg", timeout=15_000)
                page.wait_for_selector("#attention-chart .main-svg")
                page.screenshot(path=str(SHOTS / f"ticker-{name}-{width}.png"), full_page=True)
                assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
            traces = page.evaluate(CANDLE_TRACES)  # the as-of page
            actual, forecast = traces  # both drawn, on the same days ...
            assert actual["name"] == "actual" and forecast["name"].startswith("forecast")
            assert len(forecast["x"]) == 4 and set(forecast["x"]) <= set(actual["x"])
            # ... at x offsets that keep the boxes apart (forecast right of the actual)
            assert forecast["offset"] - forecast["half"] >= actual["offset"] + actual["half"] - 1
            assert page.locator("#candles-chart g.trace.boxes").count() == 2
            # the fan: one drawn (non-empty) filled band per stored level, 50/80/90
            fills = page.eval_on_selector_all(
                "#candles-chart g.scatterlayer path.js-fill",
                "paths => paths.filter(p => (p.getAttribute('d') || '').length > 10).length",
            )
            assert fills == 3
            y_range = "() => document.querySelector('#candles-chart .plotly-graph-div')" + (
                ".layout.yaxis.range.slice()"
            )
            zoomed = page.evaluate(y_range)
            shown = page.evaluate(f"() => {ACTUAL}.x.length")
            page.locator("#candles-chart .rangeselector .button").nth(3).click()  # "all"
            # the rest of the year is fetched from /api/candles and put before the shown months
            page.wait_for_function(
                "() => document.getElementById('candles-chart').dataset.loaded", timeout=10_000
            )
            assert page.get_attribute("#candles-chart", "data-loaded") != "failed"
            assert page.evaluate(f"() => {ACTUAL}.x.length") > shown + 150
            page.wait_for_function(f"z => ({y_range})()[0] < z[0]", arg=zoomed, timeout=5_000)
            if width == 1280:  # paging the recent forecasts: older, then back to newer
                page.goto(live_server + "/tickers/AAPL")
                first = page.inner_text("#past tbody tr:first-child td:first-child")
                with page.expect_navigation():
                    page.click('#past-pager a[rel="next"]')
                assert "page=2" in page.url
                assert page.inner_text("#past-pager .pages").startswith("page 2 of ")
                assert page.inner_text("#past tbody tr:first-child td:first-child") <= first
                page.screenshot(path=str(SHOTS / "ticker-page2-1280.png"), full_page=True)
                with page.expect_navigation():
                    page.click('#past-pager a[rel="prev"]')
                assert page.inner_text("#past-pager .pages").startswith("page 1 of ")
        finally:
            context.close()
    assert errors == []
