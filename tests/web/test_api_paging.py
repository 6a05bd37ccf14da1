"""History paging (keyset cursor), prices to 6 significant digits, stale flags on stored answers."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.web.conftest import Site

HISTORY = "/api/forecasts/AAPL/history"
PRICE_KEYS = (
    "open", "high", "low", "close", "close_lo", "close_hi", "actual_open", "actual_high",
    "actual_low", "actual_close", "abs_error", "naive_close", "naive_abs_error",
)  # fmt: skip


def get_json(client: FlaskClient, url: str) -> tuple[int, dict[str, Any]]:
    response = client.get(url)
    assert response.content_type == "application/json"
    return response.status_code, response.get_json()


def assert_six_digits(value: Any) -> None:
    """`value` is None or a float with at most 6 significant digits."""
    if value is not None:
        assert isinstance(value, int | float)
        assert float(f"{value:.6g}") == value, value


def walk(client: FlaskClient, query: str, limit: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        url = f"{HISTORY}?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        status, body = get_json(client, url)
        assert status == 200
        assert len(body["forecasts"]) <= limit
        rows.extend(body["forecasts"])
        cursor = body["next_cursor"]
        assert body["truncated"] is (cursor is not None)
        if cursor is None:
            return rows
        assert len(body["forecasts"]) == limit  # only the last page is short
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("limit", [1, 7, 40])
def test_cursor_walks_every_row_once_in_order(client: FlaskClient, site: Site, limit: int) -> None:
    _, whole = get_json(client, f"{HISTORY}?limit=500")
    assert whole["next_cursor"] is None and whole["truncated"] is False
    expected = [(r["as_of_date"], r["horizon"]) for r in whole["forecasts"]]
    assert len(expected) == 4 * len(site.seed.stored_as_of)
    assert expected == sorted(expected, key=lambda k: (-int(k[0].replace("-", "")), k[1]))
    rows = walk(client, "", limit)
    assert [(r["as_of_date"], r["horizon"]) for r in rows] == expected
    assert rows == whole["forecasts"]


def test_paging_keeps_filters_and_summary(client: FlaskClient, site: Site) -> None:
    stored = site.seed.stored_as_of
    query = f"&start={stored[3]}&end={stored[12]}&level=90"
    rows = walk(client, query, 6)
    assert {r["as_of_date"] for r in rows} == {d.isoformat() for d in stored[3:13]}
    assert len(rows) == 40 and all("winkler" in r for r in rows)
    _, first = get_json(client, f"{HISTORY}?limit=6{query}")
    _, second = get_json(client, f"{HISTORY}?limit=6{query}&cursor={first['next_cursor']}")
    assert first["summary"] == second["summary"] and first["summary"]


def test_limit_default_and_bounds(client: FlaskClient) -> None:
    status, body = get_json(client, HISTORY)
    assert status == 200 and len(body["forecasts"]) == 100
    assert body["truncated"] is True and isinstance(body["next_cursor"], str)
    status, body = get_json(client, f"{HISTORY}?limit=500")
    assert status == 200 and len(body["forecasts"]) == 120
    for bad in ("0", "501", "-1", "abc", "1.5", "1e2"):
        status, body = get_json(client, f"{HISTORY}?limit={bad}")
        assert status == 400, bad
        assert body["error"]["code"] == "invalid_parameter" and "500" in body["error"]["message"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!!",
        "%00%ff",
        _b64(b"not json"),
        _b64(b'{"as_of": "2023-12-01"}'),
        _b64(b'["2023-13-01", 1]'),
        _b64(b'["2023-12-01", 9]'),
        _b64(b'["2023-12-01", true]'),
        _b64(b'["2023-12-01"]'),
        _b64(b"\xff\xfe"),
    ],
)
def test_bad_cursor_is_a_json_400(client: FlaskClient, cursor: str) -> None:
    status, body = get_json(client, f"{HISTORY}?cursor={cursor}")
    assert status == 400
    assert body == {"error": {"code": "invalid_cursor", "message": body["error"]["message"]}}


def test_prices_have_six_significant_digits(client: FlaskClient, site: Site) -> None:
    day = site.seed.stored_as_of[-3].isoformat()
    bodies = [
        client.post("/predict", json={"stock_symbol": "AAPL", "input_date": day}).get_json(),
        client.get(f"/api/forecasts/AAPL?as_of={day}").get_json(),
        client.get(f"/api/forecasts/AAPL?as_of={day}&level=90").get_json(),
        client.get(f"/api/forecasts/AAPL?as_of={site.seed.last_session}").get_json(),  # live
    ]
    for body in bodies:
        for candle in body["candles"]:
            for key in ("open", "high", "low", "close", "close_lo", "close_hi"):
                assert_six_digits(candle[key])
            for value in (candle.get("quantiles") or {}).values():
                assert_six_digits(value)
        for value in body["predictions"].values():
            assert_six_digits(value)
    for level in (80, 50):
        _, history = get_json(client, f"{HISTORY}?limit=500&level={level}")
        for row in history["forecasts"]:
            for key in (*PRICE_KEYS, "winkler") if level != 80 else PRICE_KEYS:
                assert_six_digits(row[key])


def test_stored_answer_past_the_data_is_stale(client: FlaskClient, site: Site) -> None:
    """MSFT's only stored forecast is as of its last session: a date two months later gets it
    with the staleness fields, from the database and again from the cache."""
    asked = "2024-03-01"
    for _ in range(2):
        for response in (
            client.post("/predict", json={"stock_symbol": "MSFT", "input_date": asked}),
            client.get(f"/api/forecasts/MSFT?as_of={asked}"),
        ):
            body = response.get_json()
            assert response.status_code == 200 and body["source"] == "stored"
            assert body["as_of"] == site.seed.msft_as_of.isoformat()
            assert body["stale"] is True
            assert body["requested_date"] == asked
            assert body["data_through"] == site.seed.msft_as_of.isoformat()
            assert "past the latest stored session" in body["stale_reason"]
    fresh = client.post(
        "/predict", json={"stock_symbol": "MSFT", "input_date": site.seed.msft_as_of.isoformat()}
    ).get_json()
    assert fresh["source"] == "stored" and "stale" not in fresh
    latest = client.get("/api/forecasts/MSFT").get_json()  # as of today: long past the data
    assert latest["stale"] is True and latest["data_through"] == site.seed.msft_as_of.isoformat()
