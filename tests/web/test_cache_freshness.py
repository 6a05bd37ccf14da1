"""Rendered answers follow every committed write (issue 17, items 1-4), over real HTTP.

A standalone `candlecast sync` and a rebuilt schema are seen within a second by a web app on
its default settings; pages showing a live forecast are never cached; unknown query arguments
are not part of a cache key; the cache keeps within its byte budget.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pytest
from flask import Flask

from db.migrate import downgrade, upgrade
from db.runs import finish_run, start_run
from db.session import make_engine, make_session_factory
from jobs.cli import main
from jobs.cli_support import EXIT_OK
from jobs.config import DATABASE_URL_ENV, WebConfig
from tests.web.conftest import Site, http_get, serving, state_of, web_config
from tests.web.seed import bundled_candles, store_night
from tests.web.test_ticker_page import figure
from web import create_app
from web.cache import response_cache

BUNDLED = Path(__file__).resolve().parents[2] / "forecasting" / "bundled"
WITHIN_S = 1.0  # a commit is served this soon (default change_check_ms is 50 ms)
T = TypeVar("T")


def default_app(url: str, tmp_path: Path, **web: Any) -> Flask:
    """The web app on `url` with the default [web] settings (change_check_ms 50), except `web`."""
    settings = {"change_check_ms": WebConfig().change_check_ms, **web}
    app = create_app(web_config(url, tmp_path, web=settings))
    app.config["TESTING"] = True
    return app


def poll(check: Callable[[], T | None], within: float = WITHIN_S) -> T | None:
    """`check()`'s first truthy value within `within` seconds (at least one try), else None."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.02)


def post_json(base: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def test_a_standalone_sync_is_served_within_a_second_with_new_etags(
    migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`candlecast sync` adds a candle while the app runs: /api/candles, the ticker page and
    the stored /predict answer show it within 1 s, each with a new ETag (the old one gets 200)."""
    csv = tmp_path / "csv"
    csv.mkdir()
    history = pd.read_csv(BUNDLED / "AAPL.csv.gz").tail(300)
    history.iloc[:-1].to_csv(csv / "AAPL.csv", index=False)
    config = tmp_path / "candlecast.toml"
    config.write_text('[data]\nprovider = "csv"\ncsv_dir = "csv"\n[tickers]\nsymbols = ["AAPL"]\n')
    monkeypatch.setenv(DATABASE_URL_ENV, migrated_url)
    assert main(["--config", str(config), "sync"]) == EXIT_OK
    old_day, new_day = (date.fromisoformat(d) for d in history["Date"].iloc[-2:])

    writer = make_engine(migrated_url)
    app = default_app(migrated_url, tmp_path)
    try:
        with make_session_factory(writer).begin() as session:  # a run stored both sets earlier
            store_night(session, bundled_candles("AAPL"), [old_day, new_day])
        candles_path = f"/api/candles/AAPL?start={old_day}&end={new_day}"
        predict = {"stock_symbol": "AAPL", "input_date": new_day.isoformat()}

        def candle_dates(body: bytes) -> list[str]:
            return [c["date"] for c in json.loads(body)["candles"]]

        def chart_last_day(body: bytes) -> str:
            data, _ = figure(body.decode(), "candles-chart")
            return next(t for t in data if t.get("name") == "actual")["x"][-1]

        with serving(app) as base:
            status, before_candles, body = http_get(base, candles_path)
            assert status == 200 and candle_dates(body) == [old_day.isoformat()]
            status, before_page, body = http_get(base, "/tickers/AAPL")
            assert status == 200 and chart_last_day(body) == old_day.isoformat()
            status, before_predict, answer = post_json(base, "/predict", predict)
            assert status == 200 and answer["source"] == "stored"
            assert answer["as_of"] == old_day.isoformat()  # the latest stored session

            history.to_csv(csv / "AAPL.csv", index=False)  # the provider has the new session
            assert main(["--config", str(config), "sync"]) == EXIT_OK

            def fresh(path: str, old: dict[str, str], shows: Callable[[bytes], bool]) -> Any:
                got = http_get(base, path, {"If-None-Match": old["ETag"]})
                return got if got[0] == 200 and shows(got[2]) else None

            got = poll(lambda: fresh(candles_path, before_candles, lambda b: len(b) > 0))
            assert got is not None, "the old ETag still got a 304"
            assert candle_dates(got[2]) == [old_day.isoformat(), new_day.isoformat()]
            assert got[1]["ETag"] != before_candles["ETag"]

            new_chart = lambda b: chart_last_day(b) == new_day.isoformat()  # noqa: E731
            got = poll(lambda: fresh("/tickers/AAPL", before_page, new_chart))
            assert got is not None, "the ticker page does not show the synced candle"
            assert got[1]["ETag"] != before_page["ETag"]

            def predicted() -> Any:
                got = post_json(base, "/predict", predict)
                return got if got[2].get("as_of") == new_day.isoformat() else None

            got = poll(predicted)
            assert got is not None, "stored /predict still answers as of the old session"
            assert got[0] == 200 and got[2]["source"] == "stored"
            assert got[1]["ETag"] != before_predict["ETag"]
    finally:
        state_of(app).engine.dispose()
        writer.dispose()


def _finished_run(url: str, message: str) -> int:
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            run_id = start_run(session, trigger="manual").id
            finish_run(session, run_id=run_id, status="failed", message=message)
        return run_id
    finally:
        engine.dispose()


def test_runs_page_etag_changes_after_the_schema_is_rebuilt(
    migrated_url: str, tmp_path: Path
) -> None:
    """`db downgrade base` + `db upgrade` + a run: ids restart, yet /runs gets a new ETag."""
    first = _finished_run(migrated_url, "first schema")
    app = default_app(migrated_url, tmp_path)
    try:
        with serving(app) as base:
            status, headers, body = http_get(base, "/runs")
            assert status == 200 and b"first schema" in body

            downgrade(migrated_url, "base")
            upgrade(migrated_url)
            assert _finished_run(migrated_url, "second schema") == first  # ids restarted

            def rebuilt() -> Any:
                got = http_get(base, "/runs", {"If-None-Match": headers["ETag"]})
                return got if got[0] == 200 and b"second schema" in got[2] else None

            got = poll(rebuilt)
            assert got is not None, "/runs still serves the old schema's page"
            assert got[1]["ETag"] != headers["ETag"] and b"first schema" not in got[2]
    finally:
        state_of(app).engine.dispose()


def test_a_page_showing_a_live_forecast_is_never_cached(
    live_server: str, sqlite_site: Site
) -> None:
    """The same rule as the API: a live answer has no ETag and is rendered every time."""
    live = f"/tickers/AAPL?as_of={sqlite_site.seed.last_session.isoformat()}"
    status, headers, body = http_get(live_server, live)
    assert status == 200 and b"live" in body
    assert "ETag" not in headers
    status, headers, _ = http_get(live_server, live, {"If-None-Match": "*"})
    assert status == 200 and "ETag" not in headers
    api = f"/api/forecasts/AAPL?as_of={sqlite_site.seed.last_session.isoformat()}"
    status, headers, body = http_get(live_server, api)
    assert json.loads(body)["source"] == "live" and "ETag" not in headers
    # a stored forecast's page still is cached
    stored = f"/tickers/AAPL?as_of={sqlite_site.seed.stored_as_of[-1].isoformat()}"
    status, headers, _ = http_get(live_server, stored)
    assert status == 200 and "ETag" in headers
    assert http_get(live_server, stored, {"If-None-Match": headers["ETag"]})[0] == 304


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/", "?utm_source=mail&x=1"),
        ("/tickers/AAPL", "?x=1&ref=abc"),
        ("/tickers/AAPL?window=60", "&x=2"),
        ("/runs", "?x=3"),
        ("/runs/1", "?x=4"),
        ("/api/candles/AAPL?start=2023-01-03&end=2023-03-31", "&x=5"),
        ("/api/forecasts/AAPL?as_of=2023-12-28", "&x=6"),
    ],
)
def test_unknown_query_arguments_are_not_part_of_the_cache_key(
    live_server: str, sqlite_site: Site, path: str, extra: str
) -> None:
    status, headers, body = http_get(live_server, path)
    assert status == 200
    with sqlite_site.app.app_context():
        cache = response_cache()
    entries = len(cache)
    for n in range(3):
        again = http_get(live_server, path + extra + f"&n={n}")
        assert again[0] == 200 and again[1]["ETag"] == headers["ETag"] and again[2] == body
    assert len(cache) == entries  # no new entry


def test_the_response_cache_keeps_within_its_byte_budget(site: Site, tmp_path: Path) -> None:
    """[web] cache_mb bounds each worker's cache: many distinct /api/candles answers (tens of KB
    each) evict the least recently used instead of growing the process."""
    app = default_app(site.url, tmp_path, cache_mb=1)
    budget = 1 << 20
    try:
        with serving(app) as base:
            sizes = []
            days = pd.bdate_range("2022-01-03", "2022-06-30")
            for start in days:
                status, _, body = http_get(
                    base, f"/api/candles/AAPL?start={start:%Y-%m-%d}&end=2023-12-29"
                )
                assert status == 200
                sizes.append(len(body))
            with app.app_context():
                cache = response_cache()
            assert sum(sizes) > 2 * budget  # the answers would not fit
            assert cache.max_bytes == budget
            assert budget // 2 < cache.size_bytes <= budget
            assert 0 < len(cache) < len(sizes)
            # the most recent answer is still kept, the first one is gone
            kept = [
                ("page", "api.candles", ("AAPL", f"{d:%Y-%m-%d}", "2023-12-29")) in cache
                for d in (days[0], days[-1])
            ]
            assert kept == [False, True]
    finally:
        state_of(app).engine.dispose()
