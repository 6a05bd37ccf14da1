"""API errors are JSON {"error": {"code", "message"}} with the right status, never HTML or 500."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.web.conftest import Site


def error_of(response: TestResponse, status: int) -> str:
    """Assert a JSON error with `status`; return its code."""
    assert response.status_code == status, response.data[:300]
    assert response.content_type == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return body["error"]["code"]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"AAPL"', "application/json"),
        (b"null", "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),  # nested beyond the recursion limit
        (b"stock_symbol=AAPL&input_date=2023-12-01", "application/x-www-form-urlencoded"),
    ],
)
def test_predict_malformed_body(client: FlaskClient, data: bytes, content_type: str) -> None:
    response = client.post("/predict", data=data, content_type=content_type)
    assert error_of(response, 400) == "malformed_json"


@pytest.mark.parametrize(
    "body",
    [{}, {"stock_symbol": "AAPL"}, {"input_date": "2023-12-01"}, {"symbol": "AAPL", "date": "x"}],
)
def test_predict_missing_field(client: FlaskClient, body: dict) -> None:
    assert error_of(client.post("/predict", json=body), 400) == "missing_field"


@pytest.mark.parametrize(
    "day",
    ["2023-13-01", "2023-02-30", "01/12/2023", "20231201", "2023-12-01T00:00", "", None, 20231201,
     ["2023-12-01"], "2023-W48-5", " 2023-12-01", "２０２３-１２-０１", "0000-01-01",
     "2023-12-01\n"],
)  # fmt: skip
def test_predict_bad_date(client: FlaskClient, day: object) -> None:
    response = client.post("/predict", json={"stock_symbol": "AAPL", "input_date": day})
    assert error_of(response, 400) == "invalid_date"


@pytest.mark.parametrize(
    "symbol",
    ["../../etc/passwd", "AA PL", "A" * 16, "", None, 42, ["AAPL"], "AAPL;DROP TABLE candles",
     "AAPL'--", "%00", "ÄAPL"],
)  # fmt: skip
def test_predict_invalid_ticker_syntax(client: FlaskClient, symbol: object) -> None:
    response = client.post("/predict", json={"stock_symbol": symbol, "input_date": "2023-12-01"})
    assert error_of(response, 400) == "invalid_ticker"


@pytest.mark.parametrize("symbol", ["TSLA", "BRK-B", "ZZZZ"])
def test_predict_unknown_ticker(client: FlaskClient, symbol: str) -> None:
    response = client.post("/predict", json={"stock_symbol": symbol, "input_date": "2023-12-01"})
    assert error_of(response, 404) == "unknown_ticker"


def test_predict_oversized_body(client: FlaskClient) -> None:
    body = b'{"stock_symbol": "AAPL", "input_date": "2023-12-01", "pad": "' + b"x" * 20_000 + b'"}'
    response = client.post("/predict", data=body, content_type="application/json")
    assert error_of(response, 413) == "payload_too_large"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/predict"),
        ("PUT", "/predict"),
        ("DELETE", "/api/forecasts/AAPL"),
        ("POST", "/api/forecasts/AAPL/history"),
        ("POST", "/api/runs"),
        ("POST", "/healthz"),
        ("POST", "/readyz"),
        ("POST", "/metrics"),
    ],
)
def test_wrong_method(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method)
    assert error_of(response, 405) == "method_not_allowed"
    assert response.headers["Allow"]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/forecasts/TSLA", 404, "unknown_ticker"),
        ("/api/forecasts/tsla/history", 404, "unknown_ticker"),
        ("/api/forecasts/A%20B", 400, "invalid_ticker"),
        ("/api/forecasts/..%2F..%2Fetc", 404, "not_found"),
        ("/api/forecasts/AAPL?as_of=yesterday", 400, "invalid_date"),
        ("/api/forecasts/AAPL/history?start=2023-01-32", 400, "invalid_date"),
        ("/api/forecasts/AAPL/history?start=2023-12-02&end=2023-12-01", 400, "invalid_date"),
        ("/api/forecasts/AAPL?as_of=2001-01-01", 404, "no_data"),
        ("/api/runs?limit=0", 400, "invalid_parameter"),
        ("/api/runs?limit=abc", 400, "invalid_parameter"),
        ("/api/runs?limit=100000", 400, "invalid_parameter"),
        ("/api/nope", 404, "not_found"),
    ],
)
def test_get_errors(client: FlaskClient, path: str, status: int, code: str) -> None:
    assert error_of(client.get(path), status) == code


def test_pages_errors_are_html(client: FlaskClient) -> None:
    for path, status in [("/tickers/TSLA", 404), ("/tickers/a%20b", 400), ("/nope", 404)]:
        response = client.get(path)
        assert response.status_code == status
        assert response.content_type.startswith("text/html")
        assert b"<!doctype html>" in response.data
    bad_date = client.get("/tickers/AAPL?as_of=not-a-date")
    assert bad_date.status_code == 400 and b"as_of must be a date" in bad_date.data


def test_no_500_for_fuzzed_bodies(client: FlaskClient, site: Site) -> None:
    bodies = [
        {"stock_symbol": "AAPL", "input_date": "9999-12-31"},
        {"stock_symbol": "AAPL", "input_date": "0001-01-01"},
        {"stock_symbol": "^GSPC", "input_date": "2023-12-01"},
        {"stock_symbol": "AAPL", "input_date": "2023-12-01", "extra": {"nested": [1, 2]}},
        {"stock_symbol": {"$ne": 1}, "input_date": "2023-12-01"},
        {"stock_symbol": "AAPL", "input_date": True},
        {"stock_symbol": "AAPL", "input_date": 1.5e308},
    ]
    for body in bodies:
        response = client.post("/predict", json=body)
        assert response.status_code in (200, 400, 404), (body, response.data[:200])
        assert response.content_type == "application/json"
