"""HTML pages: overview, ticker charts and accuracy, runs; plotly.js served by the app itself."""

from __future__ import annotations

import gzip
import re

from flask.testing import FlaskClient

from tests.web.conftest import Site


def html(client: FlaskClient, path: str, status: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == status, response.data[:300]
    assert response.content_type == "text/html; charset=utf-8"
    text = response.get_data(as_text=True)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    assert "cdn" not in text.lower()  # everything is served locally
    return text


def test_index_lists_every_configured_ticker(client: FlaskClient, site: Site) -> None:
    page = html(client, "/")
    for ticker in site.config.tickers.symbols:
        assert f'id="ticker-{ticker}"' in page
        assert f'href="/tickers/{ticker}"' in page
    aapl = page.split('id="ticker-AAPL"')[1].split("</tr>")[0]
    assert site.seed.stored_as_of[-1].isoformat() in aapl  # latest stored forecast
    assert f"model v{site.seed.model_id} trained to 2023-06-30" in aapl
    assert '<polyline class="median"' in aapl  # the forecast fan on the sparkline
    assert "–" in aapl and "failed" in aapl  # 80% interval; last run status of the ticker
    googl = page.split('id="ticker-GOOGL"')[1].split("</tr>")[0]
    assert "no forecast yet" in googl
    assert f"#{site.seed.run_ids[-1]}" in page and "partial" in page  # the last run


def test_ticker_page_charts_accuracy_and_attention(client: FlaskClient, site: Site) -> None:
    page = html(client, "/tickers/AAPL")
    assert re.search(r'<script src="/static/plotly\.min\.js\?v=[\d.]+"></script>', page)
    assert page.count("Plotly.newPlot(") == 4  # candles, rolling MAE, history, attention
    assert '"type":"candlestick"' in page and '"type":"bar"' in page
    assert '"fill":"tonexty"' in page  # the close interval band
    assert f'data-as-of="{site.seed.stored_as_of[-1].isoformat()}"' in page
    assert 'data-source="stored"' in page
    assert 'id="skill"' in page and "GARCH(1,1)" in page and 'id="coverage"' in page
    assert 'id="past"' in page
    assert 'type="date" id="as_of" name="as_of"' in page


def test_ticker_page_date_picker_stored_and_live(client: FlaskClient, site: Site) -> None:
    past = site.seed.stored_as_of[2].isoformat()
    page = html(client, f"/tickers/AAPL?as_of={past}")
    assert f'data-as-of="{past}"' in page and 'data-source="stored"' in page
    assert f'value="{past}"' in page
    live = html(client, "/tickers/AAPL?as_of=2024-02-01")
    assert f'data-as-of="{site.seed.last_session.isoformat()}"' in live
    assert 'data-source="live"' in live


def test_ticker_page_without_forecast_links_the_nearest_dates_and_shows_nothing_else(
    client: FlaskClient, site: Site
) -> None:
    page = html(client, "/tickers/AAPL?as_of=2023-03-01", status=404)
    assert 'id="message"' in page and "no model" in page
    # nothing from another date: no chart, no forecast, no accuracy, no past forecasts
    for part in ('id="candles-chart"', 'id="forecast"', 'id="accuracy', 'id="past"'):
        assert part not in page
    first = site.seed.stored_as_of[0].isoformat()  # every stored date is after 2023-03-01
    nearest = re.search(r'<p id="nearest">(.*?)</p>', page, re.S)
    assert nearest and re.findall(r'href="([^"]+)"', nearest.group(1)) == [
        f"/tickers/AAPL?as_of={first}"
    ]
    # the page says which dates have stored forecasts (any other date may be forecast live)
    latest = html(client, "/tickers/AAPL")
    last = site.seed.stored_as_of[-1].isoformat()
    assert f"Stored forecasts: {first} to {last};" in latest
    nothing = html(client, "/tickers/GOOGL", status=404)
    assert "no candles of GOOGL" in nothing


def test_ticker_page_lower_case_and_escaping(client: FlaskClient) -> None:
    page = html(client, "/tickers/aapl?as_of=%22%3E%3Cscript%3Ealert(1)%3C/script%3E", status=400)
    assert "<script>alert(1)" not in page
    assert "&#34;&gt;&lt;script&gt;" in page  # the picker echoes the value, escaped


def test_runs_page_lists_runs_and_escapes_errors(client: FlaskClient, site: Site) -> None:
    page = html(client, "/runs")
    for run_id in site.seed.run_ids:
        assert f'id="run-{run_id}"' in page
    assert "RuntimeError: &lt;boom&gt; &amp; friends" in page
    assert "<boom>" not in page
    assert "42.0 s" in page and "12.5 s" in page


def test_plotly_js_is_served_from_the_package(client: FlaskClient) -> None:
    from plotly.offline import get_plotlyjs

    response = client.get("/static/plotly.min.js")
    assert response.status_code == 200
    assert response.content_type.startswith("application/javascript")
    assert "max-age=31536000" in response.headers["Cache-Control"]
    assert response.get_data(as_text=True) == get_plotlyjs()
    etag = response.headers["ETag"]
    again = client.get("/static/plotly.min.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    zipped = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip, br"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.data).decode() == get_plotlyjs()
    css = client.get("/static/style.css")
    assert css.status_code == 200 and css.content_type.startswith("text/css")


def test_security_headers(client: FlaskClient) -> None:
    for path in ("/", "/healthz"):
        headers = client.get(path).headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'self'" in headers["Content-Security-Policy"]


def test_a_run_page_shows_each_tickers_forecast_model_and_mix(
    client: FlaskClient, site: Site
) -> None:
    from sqlalchemy import create_engine, text

    page = html(client, f"/runs/{site.seed.run_ids[0]}")
    row = page.split('<tr id="ticker-AAPL"', 1)[1].split("</tr>", 1)[0]
    last = site.seed.stored_as_of[-1].isoformat()
    # the link opens the forecast this run stored, not the latest one
    assert f'href="/tickers/AAPL?as_of={last}"' in row
    engine = create_engine(site.url)
    try:
        with engine.connect() as conn:
            closes = (
                conn.execute(
                    text(
                        "SELECT close FROM forecasts WHERE run_id = :r AND ticker = 'AAPL' "
                        "AND as_of_date = :d ORDER BY horizon"
                    ),
                    {"r": site.seed.run_ids[0], "d": site.seed.stored_as_of[-1]},
                )
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert " · ".join(f"{c:,.2f}" for c in closes) in row
    assert "80%: " in row and "MAE/naive: " in row  # the model version's validation scores
    assert "network 30%; high/low HAR-range" in row  # the stored model mix
    assert "12.5" in row  # seconds


def test_the_mix_of_a_global_model_names_the_networks_share_of_each_part() -> None:
    from web.pages import _mix_text

    mix = {
        "close": ["median"] * 4,
        "quantiles": [{"lstm": w, "har_range": 1 - w} for w in (0.75, 0.5, 0.0, 0.0)],
        "range": [{"lstm": w, "har_range": 1 - w} for w in (1.0, 0.25, 0.0, 0.0)],
    }
    assert _mix_text(mix) == "network 75/50/0/0%; high/low network 100/25/0/0%"
    older = {"quantiles": [{"lstm": 0.0}] * 4, "range": ["har_range"] * 4}
    assert _mix_text(older) == "network 0/0/0/0%; high/low HAR-range"
