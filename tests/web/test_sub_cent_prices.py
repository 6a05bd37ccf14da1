"""Prices in JSON keep six significant digits at any scale (issue 17 item 8).

A ticker trading at 0.00019 used to answer 0.0002 for every price and both interval bounds
(rounded to 4 decimal places). Every JSON answer that shows prices is checked over real HTTP.
"""

from __future__ import annotations

import http.client
import json
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from db.models import ForecastRun
from db.repository import upsert_candles
from db.session import make_engine, make_session_factory
from tests.web.conftest import serving, state_of, web_config
from tests.web.seed import bundled_candles, forecast_rows
from web import create_app

SCALE = 1e-6  # AAPL's prices times this: about 0.00019


def six_digits(value: float) -> float:
    return float(f"{value:.6g}")


def http_json(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        data = None if body is None else json.dumps(body)
        headers = {} if body is None else {"Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        return json.loads(response.read())
    finally:
        conn.close()


def test_sub_cent_prices_keep_six_significant_digits(migrated_url: str, tmp_path: Path) -> None:
    candles = bundled_candles("AAPL").iloc[-40:]
    candles[["open", "high", "low", "close"]] *= SCALE
    as_of = candles.index[-1].date()
    writer = make_engine(migrated_url)
    try:
        with make_session_factory(writer).begin() as session:
            upsert_candles(session, ticker="PENNY", frame=candles, source="bundled")
            run = ForecastRun(trigger="manual", status="succeeded", as_of_date=as_of)
            session.add(run)
            session.flush()
            stored = forecast_rows(
                candles, ticker="PENNY", as_of=as_of, run_id=run.id, model_id=None
            )
            session.add_all(stored)
    finally:
        writer.dispose()
    app = create_app(web_config(migrated_url, tmp_path, tickers={"symbols": ["PENNY"]}))
    try:
        with serving(app) as base:
            answers = [
                http_json(base, "GET", f"/api/forecasts/PENNY?as_of={as_of}"),
                http_json(
                    base, "POST", "/predict", {"stock_symbol": "PENNY", "input_date": str(as_of)}
                ),
            ]
            level90 = http_json(base, "GET", f"/api/forecasts/PENNY?as_of={as_of}&level=90")
            history = http_json(base, "GET", "/api/forecasts/PENNY/history")
            start = candles.index[0].date()
            chart = http_json(base, "GET", f"/api/candles/PENNY?start={start}&end={as_of}")
    finally:
        state_of(app).engine.dispose()

    keys = ("open", "high", "low", "close", "close_lo", "close_hi")
    expected = [{k: six_digits(getattr(row, k)) for k in keys} for row in stored]
    assert expected[0]["close_lo"] < expected[0]["close"] < expected[0]["close_hi"] < 0.0002
    for body in answers:
        assert [{k: c[k] for k in keys} for c in body["candles"]] == expected
        assert list(body["predictions"].values()) == [e["close"] for e in expected]
    assert [c["close_lo"] for c in level90["candles"]] == [six_digits(r.close_q05) for r in stored]
    assert [c["quantiles"]["q95"] for c in level90["candles"]] == [
        six_digits(r.close_q95) for r in stored
    ]
    by_horizon = sorted(history["forecasts"], key=lambda row: row["horizon"])
    assert [{k: row[k] for k in keys} for row in by_horizon] == expected
    assert [row["naive_close"] for row in by_horizon] == [six_digits(candles["close"].iloc[-1])] * 4
    got = pd.DataFrame(chart["candles"]).set_index("date")
    assert got["close"].tolist() == [six_digits(v) for v in candles["close"]]
    assert got["low"].tolist() == [six_digits(v) for v in candles["low"]]
    assert len(set(got["close"])) > 20  # not all collapsed to one value
    assert date.fromisoformat(got.index[-1]) == as_of
