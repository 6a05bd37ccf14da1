"""Every integer parameter accepts ASCII digits only: a superscript ('²'), an Arabic-Indic ('٨٠')
or a full-width digit, or a number too long for int(), is a 400 (JSON for the API, the error page
for the pages), never a 500 and never read as a number. Over real HTTP, SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest

from tests.web.conftest import Site, http_request, serving

HUGE = "9" * 5000  # more digits than int() converts (sys.get_int_max_str_digits)
ODD = ["²", "¹", "٨٠", "٥", "８０", " 8 0", "+5", "-1", "1_0", "0x10"]


def call(base: str, method: str, path: str, body: bytes | None = None, **headers: str):
    """(status, content type, body) of one request."""
    status, found, raw = http_request(base, method, path, body, headers, timeout=30)
    return status, found.get("Content-Type", ""), raw


@pytest.fixture(scope="module")
def base(site: Site) -> Iterator[str]:
    """The seeded site over real HTTP (one server per backend for the module)."""
    with serving(site.app) as url:
        yield url


def _query(path: str, name: str, value: str) -> str:
    sep = "&" if "?" in path else "?"
    return f"{path}{sep}{name}={quote(value)}"


API_PARAMS = [
    ("/api/forecasts/AAPL", "level"),
    ("/api/forecasts/AAPL/history", "limit"),
    ("/api/forecasts/AAPL/history", "level"),
    ("/api/runs", "limit"),
    ("/predict", "level"),
]
PAGE_PARAMS = [("/runs", "page"), ("/tickers/AAPL", "page")]


def _predict_body(site: Site, **extra: object) -> bytes:
    day = site.seed.stored_as_of[-3].isoformat()
    return json.dumps({"stock_symbol": "AAPL", "input_date": day, **extra}).encode()


@pytest.mark.parametrize("value", [*ODD, HUGE])
@pytest.mark.parametrize(("path", "name"), API_PARAMS)
def test_api_integer_query_parameters_take_ascii_digits_only(
    base: str, site: Site, path: str, name: str, value: str
) -> None:
    method = "POST" if path == "/predict" else "GET"
    body = _predict_body(site) if method == "POST" else None
    status, kind, raw = call(base, method, _query(path, name, value), body)
    assert (status, kind) == (400, "application/json"), raw[:300]
    error = json.loads(raw)["error"]
    assert error["code"] == "invalid_parameter" and name in error["message"]


@pytest.mark.parametrize("value", [*ODD, HUGE])
def test_predict_body_level_takes_ascii_digits_only(base: str, site: Site, value: str) -> None:
    status, kind, raw = call(base, "POST", "/predict", _predict_body(site, level=value))
    assert (status, kind) == (400, "application/json"), raw[:300]
    assert json.loads(raw)["error"]["code"] == "invalid_parameter"


@pytest.mark.parametrize("value", [*ODD, "0", "abc"])
@pytest.mark.parametrize(("path", "name"), PAGE_PARAMS)
def test_page_integer_parameters_take_ascii_digits_only(
    base: str, path: str, name: str, value: str
) -> None:
    status, kind, raw = call(base, "GET", _query(path, name, value))
    assert (status, kind.split(";")[0]) == (400, "text/html"), raw[:300]
    assert b"<h1>400</h1>" in raw and f"{name} must be a whole number".encode() in raw


def test_a_page_number_too_long_for_int_is_past_the_last_page_or_out_of_range(base: str) -> None:
    status, _, raw = call(base, "GET", f"/runs?page={HUGE}")  # like any page past the last
    assert status == 200 and b'id="runs-empty"' in raw
    status, _, raw = call(base, "GET", f"/tickers/AAPL?page={HUGE}")
    assert status == 400 and b"page must be a whole number 1..1000000" in raw


@pytest.mark.parametrize("value", ["²", "٨", "８"])
def test_a_run_id_in_the_path_takes_ascii_digits_only(base: str, value: str) -> None:
    status, kind, _ = call(base, "GET", f"/runs/{quote(value)}")
    assert (status, kind.split(";")[0]) == (404, "text/html")


@pytest.mark.parametrize("length", ["²", "¹", "٣"])
def test_a_unicode_content_length_is_not_a_500(base: str, site: Site, length: str) -> None:
    """Latin-1 header bytes like \\xb2 reach the WSGI environ as '²' (str.isdigit: True)."""
    body = _predict_body(site)
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
        sock.sendall(head.encode("utf-8" if ord(length) > 255 else "latin-1") + b"\r\n" + body)
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 4") or reply.startswith(b"HTTP/1.0 4"), reply[:200]


def test_ascii_digits_still_work(base: str, site: Site) -> None:
    for method, path, body in [
        ("GET", "/api/forecasts/AAPL/history?limit=7&level=50", None),
        ("GET", "/api/runs?limit=%201%20", None),
        ("GET", "/runs?page=1", None),
        ("GET", "/tickers/AAPL?page=2", None),
        ("POST", "/predict?level=90", _predict_body(site)),
        ("POST", "/predict", _predict_body(site, level=" 50 ")),
        ("POST", "/predict", _predict_body(site, level=50)),
    ]:
        status, _, raw = call(base, method, path, body)
        assert status == 200, (path, raw[:300])


@pytest.mark.parametrize(
    "path",
    [
        "/api/candles/AAPL?start=２０２３-01-02&end=2023-02-01",
        "/api/candles/AAPL?start=2023-01-02&end=٢٠٢٣-02-01",
        "/api/forecasts/AAPL?as_of=2023-1²-01",
        "/api/forecasts/AAPL/history?start=٢٠٢٣-01-02",
        "/tickers/AAPL?as_of=2023-1²-01",
    ],
)
def test_dates_take_ascii_digits_only(base: str, path: str) -> None:
    status, _, raw = call(base, "GET", quote(path, safe="/?=&"))
    assert status == 400 and b"must be a date formatted YYYY-MM-DD" in raw, raw[:300]
