"""JSON API on SQLite and PostgreSQL: /predict (stored, live), forecasts, history, runs, health."""

from __future__ import annotations

from datetime import date

import pytest
from flask.testing import FlaskClient

from tests.web.conftest import Site

CANDLE_KEYS = {"date", "open", "high", "low", "close", "close_lo", "close_hi"}
ROUNDING = 1.5e-3  # prices (~190) have 6 significant digits: sums of three rounding errors


def predict(client: FlaskClient, ticker: str, day: str) -> tuple[int, dict]:
    response = client.post("/predict", json={"stock_symbol": ticker, "input_date": day})
    assert response.content_type == "application/json"
    return response.status_code, response.get_json()


STALE_KEYS = [
    "stale", "requested_date", "data_through", "model_trained_through", "model_age_sessions",
    "stale_reason",
]  # fmt: skip


def assert_forecast_shape(body: dict, *, ticker: str, as_of: date, source: str) -> None:
    """The default body; a stale answer (only) ends with the STALE_KEYS."""
    tail = STALE_KEYS if body.get("stale") else []
    assert list(body) == [
        "ticker", "as_of", "source", "model_version", "candles", "predictions", *tail
    ]  # fmt: skip
    assert (body["ticker"], body["as_of"], body["source"]) == (ticker, as_of.isoformat(), source)
    assert len(body["candles"]) == 4
    for candle in body["candles"]:
        assert set(candle) == CANDLE_KEYS
        assert candle["low"] <= min(candle["open"], candle["close"])
        assert candle["high"] >= max(candle["open"], candle["close"])
        assert candle["close_lo"] <= candle["close"] <= candle["close_hi"]
    dates = [c["date"] for c in body["candles"]]
    assert dates == sorted(dates) and dates[0] > body["as_of"]
    assert body["predictions"] == {c["date"]: c["close"] for c in body["candles"]}


def test_predict_stored_forecast_of_a_session(client: FlaskClient, site: Site) -> None:
    as_of = site.seed.stored_as_of[-5]
    status, body = predict(client, "AAPL", as_of.isoformat())
    assert status == 200
    assert_forecast_shape(body, ticker="AAPL", as_of=as_of, source="stored")
    assert body["model_version"] == site.seed.model_id


def test_predict_weekend_date_uses_the_session_before(client: FlaskClient, site: Site) -> None:
    saturday = date(2023, 12, 16)
    assert saturday.weekday() == 5
    status, body = predict(client, "AAPL", saturday.isoformat())
    assert status == 200
    assert body["as_of"] == "2023-12-15" and body["source"] == "stored"
    assert [c["date"] for c in body["candles"]] == [
        "2023-12-18", "2023-12-19", "2023-12-20", "2023-12-21"
    ]  # fmt: skip


def test_predict_lower_case_symbol_and_stored_values(client: FlaskClient, site: Site) -> None:
    as_of = site.seed.stored_as_of[0]
    _, upper = predict(client, "AAPL", as_of.isoformat())
    status, lower = predict(client, "aapl", as_of.isoformat())
    assert status == 200 and lower == upper


def test_predict_falls_back_to_live_inference(client: FlaskClient, site: Site) -> None:
    last = site.seed.last_session
    status, body = predict(client, "AAPL", last.isoformat())
    assert status == 200
    assert_forecast_shape(body, ticker="AAPL", as_of=last, source="live")
    assert body["model_version"] == site.seed.model_id
    # the only model was trained to 2023-06-30: older than [model] retrain_every allows
    assert body["stale"] is True and body["model_trained_through"] == "2023-06-30"
    assert body["model_age_sessions"] > site.config.model.retrain_every
    assert [c["date"] for c in body["candles"]] == [
        "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"
    ]  # fmt: skip


def test_predict_after_the_last_candle_uses_the_last_candle(
    client: FlaskClient, site: Site
) -> None:
    status, body = predict(client, "AAPL", "2031-01-01")
    assert status == 200
    assert body["as_of"] == site.seed.last_session.isoformat() and body["source"] == "live"
    status, msft = predict(client, "MSFT", "2030-06-30")
    assert status == 200
    assert msft["as_of"] == site.seed.msft_as_of.isoformat()
    assert msft["source"] == "stored" and msft["model_version"] is None


def test_predict_404_without_model_or_data(client: FlaskClient, site: Site) -> None:
    # AAPL on 2023-03-01: candles but no stored forecast and no model trained by then.
    status, body = predict(client, "AAPL", "2023-03-01")
    assert status == 404 and body["error"]["code"] == "no_forecast"
    # GOOGL is configured but has no candles at all.
    status, body = predict(client, "GOOGL", "2023-12-01")
    assert status == 404 and body["error"]["code"] == "no_data"
    # Before the first stored candle.
    status, body = predict(client, "AAPL", "2001-01-01")
    assert status == 404 and body["error"]["code"] == "no_data"
    # MSFT has candles but no model: any date without a stored forecast is a 404.
    status, body = predict(client, "MSFT", "2023-12-01")
    assert status == 404 and body["error"]["code"] == "no_forecast"


def test_forecast_endpoint_matches_predict(client: FlaskClient, site: Site) -> None:
    as_of = site.seed.stored_as_of[3]
    response = client.get(f"/api/forecasts/AAPL?as_of={as_of.isoformat()}")
    assert response.status_code == 200
    body = response.get_json()
    skill = body.pop("skill")  # the /predict body plus the forecast's skill
    assert body == predict(client, "AAPL", as_of.isoformat())[1]
    assert skill["end"] == as_of.isoformat() and skill["sessions"] == 250
    latest = client.get("/api/forecasts/MSFT")  # no as_of: the latest session
    assert latest.status_code == 200
    assert latest.get_json()["as_of"] == site.seed.msft_as_of.isoformat()


def test_history_has_actuals_errors_and_naive_baseline(client: FlaskClient, site: Site) -> None:
    response = client.get("/api/forecasts/AAPL/history?limit=500")  # one page (default 100)
    assert response.status_code == 200
    body = response.get_json()
    rows = body["forecasts"]
    assert body["ticker"] == "AAPL" and body["truncated"] is False
    assert len(rows) == 4 * len(site.seed.stored_as_of)
    assert rows[0]["as_of_date"] == site.seed.stored_as_of[-1].isoformat()  # newest first
    known = [r for r in rows if r["actual_close"] is not None]
    unknown = [r for r in rows if r["actual_close"] is None]
    assert known and unknown  # targets after the last candle have no actual yet
    for row in known:
        # prices are rounded to 6 significant digits: errors of the rounded prices agree to 1.5e-3
        assert row["abs_error"] == pytest.approx(
            abs(row["close"] - row["actual_close"]), abs=ROUNDING
        )
        assert row["naive_abs_error"] == pytest.approx(
            abs(row["naive_close"] - row["actual_close"]), abs=ROUNDING
        )
        assert isinstance(row["in_interval"], bool)
    for row in unknown:
        assert row["abs_error"] is None and row["in_interval"] is None
    summary = {s["horizon"]: s for s in body["summary"]}
    assert sorted(summary) == [1, 2, 3, 4]
    for horizon, entry in summary.items():
        errors = [r for r in known if r["horizon"] == horizon]
        assert entry["n"] == len(errors)
        assert entry["model_mae"] == pytest.approx(
            sum(r["abs_error"] for r in errors) / len(errors), abs=ROUNDING
        )
        naive = sum(r["naive_abs_error"] for r in errors) / len(errors)
        assert entry["naive_mae"] == pytest.approx(naive, abs=ROUNDING)
        assert entry["mae_ratio"] == pytest.approx(entry["model_mae"] / naive, rel=1e-3)
        assert 0.0 <= entry["coverage_80"] <= 1.0


def test_history_date_filters(client: FlaskClient, site: Site) -> None:
    stored = site.seed.stored_as_of
    start, end = stored[5], stored[9]
    body = client.get(f"/api/forecasts/AAPL/history?start={start}&end={end}").get_json()
    days = {r["as_of_date"] for r in body["forecasts"]}
    assert days == {d.isoformat() for d in stored[5:10]}
    assert (body["start"], body["end"]) == (start.isoformat(), end.isoformat())
    empty = client.get("/api/forecasts/AAPL/history?end=2020-01-01").get_json()
    assert empty["forecasts"] == [] and empty["summary"] == []
    none_yet = client.get("/api/forecasts/GOOGL/history").get_json()
    assert none_yet["forecasts"] == []


def test_runs_with_ticker_outcomes(client: FlaskClient, site: Site) -> None:
    response = client.get("/api/runs")
    assert response.status_code == 200
    runs = response.get_json()["runs"]
    assert [r["id"] for r in runs] == list(reversed(site.seed.run_ids))  # newest first
    partial = runs[0]
    assert partial["status"] == "partial" and partial["duration_s"] == 42.0
    assert partial["started_at"].endswith("+00:00")
    failed = {t["ticker"]: t for t in partial["tickers"]}["AAPL"]
    assert failed["status"] == "failed" and "boom" in failed["error"]
    assert len(client.get("/api/runs?limit=1").get_json()["runs"]) == 1


def test_healthz_reports_database_and_latest_run(client: FlaskClient, site: Site) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["latest_run"]["id"] == site.seed.run_ids[-1]
    assert body["latest_run"]["status"] == "partial"


def test_stored_response_is_stable_across_requests(client: FlaskClient, site: Site) -> None:
    day = site.seed.stored_as_of[10].isoformat()
    first = predict(client, "AAPL", day)
    assert all(predict(client, "AAPL", day) == first for _ in range(3))


def test_candles_between_two_dates_oldest_first_rounded(client: FlaskClient) -> None:
    body = client.get("/api/candles/aapl?start=2023-12-01&end=2023-12-08").get_json()
    assert body["ticker"] == "AAPL" and (body["start"], body["end"]) == ("2023-12-01", "2023-12-08")
    dates = [c["date"] for c in body["candles"]]
    assert dates == ["2023-12-01", "2023-12-04", "2023-12-05", "2023-12-06", "2023-12-07",
                     "2023-12-08"]  # fmt: skip
    for candle in body["candles"]:
        assert set(candle) == {"date", "open", "high", "low", "close"}
        assert all(float(f"{v:.6g}") == v for k, v in candle.items() if k != "date")
        assert candle["low"] <= min(candle["open"], candle["close"]) <= candle["high"]


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("start=2023-12-01", 400, "missing_field"),
        ("end=2023-12-01", 400, "missing_field"),
        ("start=2023-12-08&end=2023-12-01", 400, "invalid_date"),
        ("start=2000-01-01&end=2023-12-01", 400, "invalid_parameter"),
        ("start=2023-13-01&end=2023-12-01", 400, "invalid_date"),
    ],
)
def test_candles_bad_ranges_are_400(client: FlaskClient, query: str, status: int, code: str):
    response = client.get(f"/api/candles/AAPL?{query}")
    assert response.status_code == status and response.get_json()["error"]["code"] == code


def test_candles_of_an_unknown_ticker_are_404(client: FlaskClient) -> None:
    response = client.get("/api/candles/ZZZZ?start=2023-12-01&end=2023-12-08")
    assert response.status_code == 404
