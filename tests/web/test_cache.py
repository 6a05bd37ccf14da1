"""web.cache: rendered stored forecasts per change marker, ETag / If-None-Match, invalidation."""

from __future__ import annotations

import http.client
import json
import tracemalloc
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from sqlalchemy import delete
from sqlalchemy.engine import make_url

from db.models import Forecast
from db.repository import upsert_candles
from db.session import make_engine, make_session_factory
from tests.web.conftest import Site, http_get, state_of, web_config, without_skill
from tests.web.seed import bundled_candles, store_night
from web import api, create_app
from web.cache import CACHE_KEY, Entry, ResponseCache, cached_page, entry_bytes, response_cache
from web.fast_predict import raw_key


def test_etag_and_if_none_match_304_over_http(live_server: str, sqlite_site: Site) -> None:
    path = f"/api/forecasts/AAPL?as_of={sqlite_site.seed.stored_as_of[4].isoformat()}"
    status, headers, body = http_get(live_server, path)
    assert status == 200 and json.loads(body)["source"] == "stored"
    etag = headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    assert headers["Cache-Control"] == "no-cache"
    status, again, cached = http_get(live_server, path)
    assert (status, again["ETag"], cached) == (200, etag, body)
    for match in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        status, headers304, empty = http_get(live_server, path, {"If-None-Match": match})
        assert status == 304 and empty == b"" and headers304["ETag"] == etag, match
    status, _, full = http_get(live_server, path, {"If-None-Match": '"something-else"'})
    assert status == 200 and full == body
    # another level, another ticker: other tags
    other_level = http_get(live_server, path + "&level=90")[1]["ETag"]
    msft = http_get(live_server, "/api/forecasts/MSFT?as_of=2023-12-29")[1]["ETag"]
    assert len({etag, other_level, msft}) == 3


def test_post_predict_is_never_304(live_server: str, sqlite_site: Site) -> None:
    parts = urlsplit(live_server)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    body = json.dumps(
        {"stock_symbol": "AAPL", "input_date": sqlite_site.seed.stored_as_of[4].isoformat()}
    )
    try:
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        first = conn.getresponse()
        first.read()
        conn.request(
            "POST",
            "/predict",
            body,
            {"Content-Type": "application/json", "If-None-Match": "*"},
        )
        second = conn.getresponse()
        assert second.status == 200 and json.loads(second.read())["source"] == "stored"
    finally:
        conn.close()


def test_a_predict_body_seen_before_is_answered_from_its_bytes(
    client: FlaskClient, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = site.seed.stored_as_of[5].isoformat()
    body = json.dumps({"stock_symbol": "AAPL", "input_date": day})
    level_90 = json.dumps({"stock_symbol": "AAPL", "input_date": day, "level": 90})
    post = {"content_type": "application/json"}
    first = client.post("/predict", data=body, **post)
    first_90 = client.post("/predict", data=level_90, **post)
    assert first.status_code == first_90.status_code == 200
    bad = json.dumps({"stock_symbol": "AAPL", "input_date": "2023-02-30"})
    assert client.post("/predict", data=bad, **post).status_code == 400

    parsed: list[int] = []
    original = api._json_body

    def counting() -> Any:
        parsed.append(1)
        return original()

    monkeypatch.setattr(api, "_json_body", counting)
    again = client.post("/predict", data=body, **post)
    assert again.status_code == 200 and again.get_data() == first.get_data()
    assert client.post("/predict", data=level_90, **post).get_data() == first_90.get_data()
    assert parsed == []  # both answered from their bytes
    other = client.post("/predict", data=body, query_string={"level": "50"}, **post)
    assert other.status_code == 200 and other.get_json()["level"] == 50
    assert len(parsed) == 1  # another query string is another key
    assert client.post("/predict", data=bad, **post).status_code == 400
    assert len(parsed) == 2  # a 400 is never kept


def test_levels_and_tickers_do_not_collide(
    client: FlaskClient, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = site.seed.stored_as_of[7].isoformat()
    urls = [
        f"/api/forecasts/AAPL?as_of={day}",
        f"/api/forecasts/AAPL?as_of={day}&level=50",
        f"/api/forecasts/AAPL?as_of={day}&level=90",
        f"/api/forecasts/AAPL?as_of={site.seed.stored_as_of[8].isoformat()}",
        f"/api/forecasts/MSFT?as_of={site.seed.msft_as_of.isoformat()}",
    ]
    first = {url: client.get(url) for url in urls}
    # /predict is the API's body without `skill` (kept in the cache under its own key)
    predicted = client.post("/predict", json={"stock_symbol": "AAPL", "input_date": day})
    assert all(r.status_code == 200 for r in first.values())
    assert len({r.get_data() for r in first.values()}) == len(urls)
    assert len({r.headers["ETag"] for r in first.values()}) == len(urls)
    assert first[urls[2]].get_json()["level"] == 90
    assert first[urls[4]].get_json()["ticker"] == "MSFT"

    def no_lookup(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("answered from the database, not the cache")

    monkeypatch.setattr(api, "find_forecast", no_lookup)
    for url in reversed(urls):  # from the cache now, each its own body
        again = client.get(url)
        assert again.status_code == 200 and again.get_data() == first[url].get_data()
    assert client.post("/predict", json={"stock_symbol": "AAPL", "input_date": day}).get_data() == (
        predicted.get_data()
    )  # from the cache too
    assert predicted.get_json() == without_skill(first[urls[0]].get_json())


def _app(url: str, tmp_path: Path) -> Flask:
    # change_check_ms = 0: these tests commit and ask on the very next request, within the
    # production 50 ms window (test_cache_freshness covers the default window over HTTP)
    app = create_app(web_config(url, tmp_path, web={"change_check_ms": 0}))
    app.config["TESTING"] = True
    return app


def test_new_forecast_set_is_served_on_the_next_request(migrated_url: str, tmp_path: Path) -> None:
    candles = bundled_candles("AAPL")
    sessions = [ts.date() for ts in candles.index]
    old_day, new_day = sessions[-2], sessions[-1]
    writer = make_engine(migrated_url)
    factory = make_session_factory(writer)
    app = _app(migrated_url, tmp_path)
    try:
        with factory.begin() as session:
            upsert_candles(session, ticker="AAPL", frame=candles, source="bundled")
            store_night(session, candles, [old_day])
        if make_url(migrated_url).get_backend_name() == "sqlite":
            with app.app_context():  # a commit moments ago must be seen by the file check too
                response_cache().recent_s = 0.0
        client = app.test_client()
        path = f"/api/forecasts/AAPL?as_of={old_day.isoformat()}"
        before = client.get(path)
        assert before.status_code == 200 and before.get_json()["source"] == "stored"
        assert client.get(path).get_data() == before.get_data()  # cached
        late = client.post("/predict", json={"stock_symbol": "AAPL", "input_date": str(new_day)})
        assert late.status_code == 404  # no model, no stored forecast of the last session yet

        # The next night's run replaces the old forecast and stores one of the new session.
        with factory.begin() as session:
            session.execute(delete(Forecast).where(Forecast.as_of_date == old_day))
            store_night(session, candles, [old_day, new_day], flat=True)

        after = client.get(path, headers={"If-None-Match": before.headers["ETag"]})
        assert after.status_code == 200 and after.headers["ETag"] != before.headers["ETag"]
        assert [c["close"] for c in after.get_json()["candles"]] != [
            c["close"] for c in before.get_json()["candles"]
        ]
        assert all(c["close"] == c["open"] for c in after.get_json()["candles"])
        late = client.post("/predict", json={"stock_symbol": "AAPL", "input_date": str(new_day)})
        assert late.status_code == 200 and late.get_json()["as_of"] == new_day.isoformat()
    finally:
        state_of(app).engine.dispose()
        writer.dispose()


def test_cached_page_helper(site: Site, tmp_path: Path) -> None:
    """The generic decorator for pages: body cached per marker, ETag, 304, None skips it."""
    app = Flask(__name__)
    app.extensions.update(site.app.extensions)  # the site's state (engine, config)
    app.extensions.pop(CACHE_KEY, None)
    calls: list[str] = []

    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    @app.get("/page/<name>")
    @cached_page(lambda name: None if name == "nocache" else name)
    def page(name: str) -> str:
        calls.append(name)
        return f"<p>{name} {len(calls)}</p>"

    client = app.test_client()
    first = client.get("/page/a")
    assert first.status_code == 200 and first.mimetype == "text/html"
    assert client.get("/page/a").get_data() == first.get_data() == b"<p>a 1</p>"
    assert client.get("/page/b").get_data() == b"<p>b 2</p>"
    assert (
        client.get("/page/a", headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    )
    assert client.get("/page/nocache").get_data() != client.get("/page/nocache").get_data()
    assert calls == ["a", "b", "nocache", "nocache"]


def test_sqlite_unchanged_files_skip_the_marker_query(
    sqlite_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a quiet database (its files unchanged) is not queried for the marker."""
    app = _app(sqlite_site.url, Path(sqlite_site.url.removeprefix("sqlite:///")).parent)
    try:
        with app.app_context():
            response_cache().recent_s = 0.0
        client = app.test_client()
        path = f"/api/forecasts/AAPL?as_of={sqlite_site.seed.stored_as_of[2].isoformat()}"
        first = client.get(path)
        assert first.status_code == 200
        # the first connection may create the -wal file: the next request reads the marker again
        assert client.get(path).get_data() == first.get_data()

        def no_query(*_args: Any, **_kwargs: Any) -> Any:
            raise AssertionError("the marker was queried although no file changed")

        monkeypatch.setattr("db.web_queries.change_marker_fast", no_query)
        assert client.get(path).get_data() == first.get_data()
    finally:
        state_of(app).engine.dispose()


def test_a_commit_is_seen_once_the_change_check_window_has_passed(
    migrated_url: str, tmp_path: Path
) -> None:
    """Within [web] change_check_ms of a check, requests reuse it (no stat, no query); the first
    request after the window sees a commit made in the meantime."""
    candles = bundled_candles("AAPL")
    day = candles.index[-2].date()
    writer = make_engine(migrated_url)
    factory = make_session_factory(writer)
    app = create_app(web_config(migrated_url, tmp_path, web={"change_check_ms": 50}))
    now = [1000.0]
    try:
        with factory.begin() as session:
            upsert_candles(session, ticker="AAPL", frame=candles, source="bundled")
            store_night(session, candles, [day])
        with app.app_context():
            cache = response_cache()
            assert cache.check_every_s == 0.05  # from the config
            cache.recent_s = 0.0
            cache._clock = lambda: now[0]
        client = app.test_client()
        path = f"/api/forecasts/AAPL?as_of={day.isoformat()}"
        before = client.get(path).get_json()
        now[0] += 3.0
        assert client.get(path).get_json() == before  # a fresh check: nothing changed
        with factory.begin() as session:  # another night's set replaces this one
            session.execute(delete(Forecast).where(Forecast.as_of_date == day))
            store_night(session, candles, [day], flat=True)
        now[0] += 0.03  # inside the window: the last check still answers
        assert client.get(path).get_json() == before
        now[0] += 0.03  # past it: checked again, the new set is served
        after = client.get(path).get_json()
        assert after != before and all(c["close"] == c["open"] for c in after["candles"])
    finally:
        state_of(app).engine.dispose()
        writer.dispose()


def _filled(cache: ResponseCache, marker: tuple[int, ...]) -> None:
    """Make `marker` the cache's current one (as a check of the database would)."""
    cache._marker = marker


def test_the_cache_drops_least_recently_used_entries_beyond_its_byte_budget() -> None:
    body = b"x" * 3000
    one = entry_bytes(("k", 0), Entry("e" * 24, body, "text/html"))
    cache = ResponseCache(max_bytes=3 * one + 10)
    _filled(cache, (7,))
    for i in range(3):
        cache.put(("k", i), (7,), body, "text/html")
    assert len(cache) == 3 and cache.size_bytes == 3 * one
    assert cache.get(("k", 0), (7,)) is not None  # 0 is now the most recently used
    cache.put(("k", 3), (7,), body, "text/html")
    assert [("k", i) in cache for i in range(4)] == [True, False, True, True]
    assert cache.size_bytes == 3 * one <= cache.max_bytes
    cache.put(("k", 4), (7,), b"y" * 20_000, "text/html")  # larger than the whole budget
    assert ("k", 4) not in cache and len(cache) == 3
    cache.put(("k", 3), (7,), body[:100], "text/html")  # replaced: charged its new size
    assert cache.size_bytes == 2 * one + entry_bytes(("k", 3), Entry("e" * 24, body[:100], ""))
    cache.put(("k", 5), (8,), body, "text/html")  # made under another marker: not kept
    assert ("k", 5) not in cache
    cache.clear()
    assert cache.size_bytes == 0 and len(cache) == 0


def test_what_an_entry_is_charged_covers_the_memory_it_holds() -> None:
    """tracemalloc: the budget is an upper bound of what the entries really take."""
    cache = ResponseCache(max_bytes=1 << 30)
    _filled(cache, (1,))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2000):
            start, end = f"2022-{i:06d}", "2023-12-29"  # new strings, as parsed from a request
            cache.put(("page", "api.candles", ("AAPL", start, end)), (1,), b"{}" * (i % 50), "x")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= cache.size_bytes <= 1.5 * held


def test_the_budget_comes_from_the_config(site: Site, tmp_path: Path) -> None:
    app = create_app(web_config(site.url, tmp_path, web={"cache_mb": 3}))
    try:
        with app.app_context():
            assert response_cache().max_bytes == 3 * 1024 * 1024
        default = create_app(web_config(site.url, tmp_path))
        with default.app_context():
            assert response_cache().max_bytes == 32 * 1024 * 1024
        state_of(default).engine.dispose()
    finally:
        state_of(app).engine.dispose()


def test_a_predict_with_unknown_query_arguments_is_not_kept_under_its_bytes(
    client: FlaskClient, site: Site
) -> None:
    body = json.dumps({"stock_symbol": "AAPL", "input_date": site.seed.stored_as_of[9].isoformat()})
    post = {"data": body, "content_type": "application/json"}
    plain = client.post("/predict", **post)
    assert plain.status_code == 200
    with site.app.app_context():
        cache = response_cache()
    for n in range(3):
        other = client.post(f"/predict?utm={n}", **post)
        assert other.get_data() == plain.get_data()
        assert other.headers["ETag"] == plain.headers["ETag"]
        assert raw_key(body.encode(), f"utm={n}".encode()) not in cache
    assert raw_key(body.encode(), b"") in cache
    assert client.post("/predict?level=80", **post).get_data() == plain.get_data()
    assert raw_key(body.encode(), b"level=80") in cache  # level is read: kept
