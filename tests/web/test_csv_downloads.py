"""CSV downloads of a ticker's stored forecasts, over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import create_engine, text

from tests.web.conftest import Site, http_get, serving


def test_forecasts_csv_holds_every_stored_forecast_with_its_outcome(site: Site) -> None:
    with serving(site.app) as base:
        status, headers, body = http_get(base, "/tickers/aapl/forecasts.csv")
        missing = http_get(base, "/tickers/ZZZ/forecasts.csv")[0]
        bad = http_get(base, "/tickers/..%2Fetc/forecasts.csv")[0]
        page = http_get(base, "/tickers/AAPL")[2].decode()
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert headers["Content-Disposition"] == 'attachment; filename="AAPL-forecasts.csv"'
    assert missing == 404 and bad in (400, 404)
    assert 'href="/tickers/AAPL/forecasts.csv"' in page  # linked from the ticker page
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    engine = create_engine(site.url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                text(
                    "SELECT as_of_date, horizon, close, close_q05, actual_close, winkler_80 "
                    "FROM forecast_accuracy WHERE ticker = 'AAPL' "
                    "ORDER BY as_of_date DESC, horizon"
                )
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == len(stored) > 0
    for row, (as_of, horizon, close, q05, actual, winkler) in zip(rows, stored, strict=True):
        assert row["as_of_date"] == str(as_of)[:10] and int(row["horizon"]) == horizon
        assert float(row["close"]) == close
        assert (row["close_q05"] == "") == (q05 is None)
        assert (row["actual_close"] == "") == (actual is None)
        if winkler is not None:
            assert float(row["winkler_80"]) == winkler
    assert any(r["actual_close"] for r in rows) and any(not r["actual_close"] for r in rows)


def test_accuracy_csv_holds_the_pages_skill_and_coverage_tables(site: Site) -> None:
    with serving(site.app) as base:
        status, headers, body = http_get(base, "/tickers/AAPL/accuracy.csv?window=60")
        api = json.loads(http_get(base, "/api/forecasts/AAPL")[2])["skill"]
        page = http_get(base, "/tickers/AAPL")[2].decode()
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert headers["Content-Disposition"] == 'attachment; filename="AAPL-accuracy.csv"'
    assert 'id="accuracy-csv"' in page
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    skill = {(r["metric"], r["against"], r["horizon"]): r for r in rows if r["table"] == "skill"}
    for entry in api["versus"]:  # the same numbers as the API (all 30 stored as-of dates)
        for h, cell in entry["by_horizon"].items():
            row = skill[(entry["metric"], entry["baseline"], h)]
            assert float(row["value"]) == pytest.approx(cell["ratio"])
            assert int(row["n"]) == cell["n"]
    coverage = [r for r in rows if r["table"] == "coverage"]
    assert {r["level"] for r in coverage} == {"50", "80", "90"}
    for level in api["coverage"]:  # each hit rate with its 95% interval
        for h, cell in level["by_horizon"].items():
            (row,) = [
                r for r in coverage if r["level"] == str(level["level"]) and r["horizon"] == h
            ]
            got = [float(row[k]) for k in ("value", "lo", "hi")]
            assert got == pytest.approx([cell["rate"], cell["lo"], cell["hi"]])
