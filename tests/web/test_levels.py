"""The `level` parameter (50, 80, 90) of /predict and /api/forecasts, on SQLite and PostgreSQL.

Seeded AAPL forecasts have close quantiles at close x (0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03),
so the 50% interval is close x [0.99, 1.01] and the 90% one close x [0.97, 1.03]; MSFT's stored
forecast has none (an older model).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient

from forecasting.quantiles import QUANTILE_NAMES
from tests.web.conftest import Site, without_skill
from tests.web.seed import MODEL_MIX, QUANTILE_FACTORS
from web import api, create_app

DEFAULT_KEYS = ["ticker", "as_of", "source", "model_version", "candles", "predictions"]
LEVEL_KEYS = ["ticker", "as_of", "source", "model_version", "level", "candles", "predictions",
              "model_mix"]  # fmt: skip
CANDLE_KEYS = ["date", "open", "high", "low", "close", "close_lo", "close_hi"]
BOUNDS = {50: (0.99, 1.01), 80: (0.98, 1.02), 90: (0.97, 1.03)}
SIX_DIGITS = 1e-5  # relative: prices in bodies have six significant digits, so products agree


def predict(client: FlaskClient, body: dict[str, Any], query: str = "") -> tuple[int, dict]:
    response = client.post(f"/predict{query}", json=body)
    assert response.content_type == "application/json"
    return response.status_code, response.get_json()


def aapl(site: Site, **extra: Any) -> dict[str, Any]:
    return {"stock_symbol": "AAPL", "input_date": site.seed.stored_as_of[-3].isoformat(), **extra}


def test_default_and_level_80_bodies_are_the_original(client: FlaskClient, site: Site) -> None:
    status, default = predict(client, aapl(site))
    assert status == 200
    assert list(default) == DEFAULT_KEYS
    assert all(list(c) == CANDLE_KEYS for c in default["candles"])
    for candle in default["candles"]:  # the stored 80% interval
        assert candle["close_lo"] == pytest.approx(candle["close"] * 0.98, rel=SIX_DIGITS)
        assert candle["close_hi"] == pytest.approx(candle["close"] * 1.02, rel=SIX_DIGITS)
    assert predict(client, aapl(site, level=80))[1] == default
    assert predict(client, aapl(site, level="80"))[1] == default
    assert predict(client, aapl(site), "?level=80")[1] == default
    as_of = site.seed.stored_as_of[-3].isoformat()
    for query in ("", "&level=80"):
        response = client.get(f"/api/forecasts/AAPL?as_of={as_of}{query}")
        assert response.status_code == 200 and without_skill(response.get_json()) == default


@pytest.mark.parametrize("level", [50, 90])
def test_level_50_and_90_serve_the_quantile_bounds(
    client: FlaskClient, site: Site, level: int
) -> None:
    _, default = predict(client, aapl(site))
    status, body = predict(client, aapl(site, level=level))
    assert status == 200
    assert list(body) == LEVEL_KEYS
    assert body["level"] == level and body["model_mix"] == MODEL_MIX
    assert (body["ticker"], body["as_of"], body["source"]) == ("AAPL", default["as_of"], "stored")
    assert body["predictions"] == default["predictions"]
    low, high = BOUNDS[level]
    for candle, plain in zip(body["candles"], default["candles"], strict=True):
        assert list(candle) == [*CANDLE_KEYS, "quantiles"]
        assert {k: candle[k] for k in ("date", "open", "high", "low", "close")} == {
            k: plain[k] for k in ("date", "open", "high", "low", "close")
        }
        assert candle["close_lo"] == pytest.approx(candle["close"] * low, rel=SIX_DIGITS)
        assert candle["close_hi"] == pytest.approx(candle["close"] * high, rel=SIX_DIGITS)
        assert list(candle["quantiles"]) == list(QUANTILE_NAMES)
        expected = [candle["close"] * f for f in QUANTILE_FACTORS]
        assert list(candle["quantiles"].values()) == pytest.approx(expected, rel=SIX_DIGITS)
    as_of = default["as_of"]
    response = client.get(f"/api/forecasts/AAPL?as_of={as_of}&level={level}")
    assert response.status_code == 200 and without_skill(response.get_json()) == body
    assert predict(client, aapl(site), f"?level={level}")[1] == body


@pytest.mark.parametrize("level", [70, 0, "abc", 80.5, True, [50], "50.0"])
def test_other_levels_are_a_400_naming_the_allowed_ones(
    client: FlaskClient, site: Site, level: Any
) -> None:
    status, body = predict(client, aapl(site, level=level))
    assert status == 400
    assert body["error"] == {
        "code": "invalid_parameter",
        "message": "level must be one of 50, 80, 90",
    }


@pytest.mark.parametrize("query", ["level=70", "level=abc", "level=-50", "level=5%200"])
def test_bad_query_levels_are_a_400(client: FlaskClient, site: Site, query: str) -> None:
    response = client.get(f"/api/forecasts/AAPL?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_parameter"
    assert "50, 80, 90" in response.get_json()["error"]["message"]
    history = client.get(f"/api/forecasts/AAPL/history?{query}")
    assert history.status_code == 400
    status, _ = predict(client, aapl(site), f"?{query}")
    assert status == 400


def test_body_and_query_levels_must_agree(client: FlaskClient, site: Site) -> None:
    status, body = predict(client, aapl(site, level=50), "?level=90")
    assert status == 400 and body["error"]["code"] == "invalid_parameter"
    assert predict(client, aapl(site, level=50), "?level=50")[0] == 200


def test_forecast_without_quantiles_has_only_the_80_level(client: FlaskClient, site: Site) -> None:
    msft = {"stock_symbol": "MSFT", "input_date": site.seed.msft_as_of.isoformat()}
    status, body = predict(client, msft)
    assert status == 200 and list(body) == DEFAULT_KEYS
    for level in (50, 90):
        status, body = predict(client, {**msft, "level": level})
        assert status == 404
        assert body["error"]["code"] == "no_quantiles"
        assert f"no {level}% interval" in body["error"]["message"]
        response = client.get(f"/api/forecasts/MSFT?level={level}")
        assert response.status_code == 404


def test_history_default_body_is_unchanged(client: FlaskClient) -> None:
    body = client.get("/api/forecasts/AAPL/history").get_json()
    assert list(body) == [
        "ticker", "start", "end", "truncated", "forecasts", "summary", "next_cursor"
    ]  # fmt: skip
    assert all(tuple(r) == api.HISTORY_KEYS for r in body["forecasts"])
    assert all(set(s) == {"horizon", "n", "model_mae", "naive_mae", "mae_ratio", "coverage_80"}
               for s in body["summary"])  # fmt: skip
    assert body == client.get("/api/forecasts/AAPL/history?level=80").get_json()


@pytest.mark.parametrize("level", [50, 90])
def test_history_at_a_level_scores_that_interval(client: FlaskClient, level: int) -> None:
    body = client.get(f"/api/forecasts/AAPL/history?level={level}&limit=500").get_json()
    assert body["level"] == level
    low, high = BOUNDS[level]
    known = [r for r in body["forecasts"] if r["actual_close"] is not None]
    assert known and len(known) < len(body["forecasts"])
    for row in body["forecasts"]:
        assert row["close_lo"] == pytest.approx(row["close"] * low, rel=SIX_DIGITS)
        assert row["close_hi"] == pytest.approx(row["close"] * high, rel=SIX_DIGITS)
        assert row["model_mix"] == MODEL_MIX
        if row["actual_close"] is None:
            assert row["in_interval"] is None and row["winkler"] is None
            continue
        lo, hi, actual = row["close_lo"], row["close_hi"], row["actual_close"]
        assert row["in_interval"] is (lo <= actual <= hi)
        penalty = 2 / (1 - level / 100)
        expected = (hi - lo) + penalty * max(lo - actual, 0.0) + penalty * max(actual - hi, 0.0)
        assert row["winkler"] == pytest.approx(expected, abs=0.02)  # prices of 6 digits: 0.001
    for entry in body["summary"]:
        rows = [r for r in known if r["horizon"] == entry["horizon"]]
        inside = sum(r["in_interval"] for r in rows) / len(rows)
        assert entry[f"coverage_{level}"] == pytest.approx(inside)
        winkler = sum(r["winkler"] for r in rows) / len(rows)
        assert entry[f"winkler_{level}"] == pytest.approx(winkler, abs=1e-4)
        assert "coverage_80" not in entry


def test_live_forecast_carries_quantiles_and_model_mix(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live path passes the forecaster's quantiles and model mix through to the JSON."""
    import forecasting.forecast_path as path_module

    real = path_module.forecast_set
    mix = {"close": "naive", "quantiles": {"lstm": 1.0}}

    def with_quantiles(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        candles = [
            replace(c, quantiles=tuple(c.close * f for f in QUANTILE_FACTORS))
            for c in result.candles
        ]
        return replace(result, candles=candles, model_mix=mix)

    monkeypatch.setattr(path_module, "forecast_set", with_quantiles)
    client = create_app(site.config).test_client()
    status, body = predict(
        client,
        {
            "stock_symbol": "AAPL",
            "input_date": site.seed.last_session.isoformat(),
            "level": 90,
        },  # fmt: skip
    )
    assert status == 200 and body["source"] == "live"
    assert body["model_mix"] == mix
    for candle in body["candles"]:
        # prices are sent to 6 significant digits, each rounded on its own
        assert candle["close_lo"] == pytest.approx(candle["close"] * 0.97, rel=1e-5)
        assert candle["close_hi"] == pytest.approx(candle["close"] * 1.03, rel=1e-5)
        assert candle["quantiles"]["q50"] == pytest.approx(candle["close"])


def _http(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_levels_over_real_http(live_server: str, sqlite_site: Site) -> None:
    day = sqlite_site.seed.stored_as_of[-1].isoformat()
    status, default = _http(f"{live_server}/predict", {"stock_symbol": "AAPL", "input_date": day})
    assert status == 200 and list(default) == DEFAULT_KEYS
    status, fifty = _http(
        f"{live_server}/predict", {"stock_symbol": "AAPL", "input_date": day, "level": 50}
    )
    assert status == 200 and fifty["level"] == 50
    assert fifty["candles"][0]["close_lo"] > default["candles"][0]["close_lo"]
    status, ninety = _http(f"{live_server}/api/forecasts/AAPL?as_of={day}&level=90")
    assert status == 200 and ninety["candles"][0]["close_lo"] < default["candles"][0]["close_lo"]
    status, error = _http(f"{live_server}/api/forecasts/AAPL?as_of={day}&level=70")
    assert status == 400 and error["error"]["code"] == "invalid_parameter"
    status, error = _http(
        f"{live_server}/predict", {"stock_symbol": "AAPL", "input_date": day, "level": 70}
    )
    assert status == 400 and "50, 80, 90" in error["error"]["message"]
