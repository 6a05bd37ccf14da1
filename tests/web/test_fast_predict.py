"""web.fast_predict: a repeated POST /predict body answered before Flask, exactly as Flask would."""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.web.conftest import Site, serving, state_of, web_config
from web import create_app
from web.cache import response_cache


def request(base: str, method: str, path: str, body: str | None = None) -> tuple[int, dict, bytes]:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def predict_count(base: str) -> float:
    """candlecast_http_requests_total for POST /predict 200, from GET /metrics."""
    status, _, text = request(base, "GET", "/metrics")
    assert status == 200
    pattern = (
        r'^candlecast_http_requests_total\{endpoint="/predict",method="POST",status="200"\} (\S+)$'
    )
    found = re.search(pattern, text.decode(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_repeated_body_is_answered_before_flask_with_the_same_bytes_and_headers(
    site: Site, tmp_path: Path
) -> None:
    app = create_app(web_config(site.url, tmp_path, web={"change_check_ms": 60_000}))
    with app.app_context():
        response_cache().recent_s = 0.0  # a file seeded moments ago may be trusted here
    fast = app.wsgi_app
    inner = fast.wsgi_app  # type: ignore[attr-defined]
    flask_calls: list[str] = []

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        flask_calls.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    fast.wsgi_app = counting  # type: ignore[attr-defined]
    day = site.seed.stored_as_of[6].isoformat()
    body = json.dumps({"stock_symbol": "AAPL", "input_date": day})
    try:
        with serving(app) as base:
            first = request(base, "POST", "/predict", body)
            assert first[0] == 200 and json.loads(first[2])["source"] == "stored"
            assert flask_calls == ["/predict"]
            second = request(base, "POST", "/predict", body)
            assert flask_calls == ["/predict"]  # answered before Flask
            assert second[0] == 200 and second[2] == first[2]
            drop = {"Date"}
            assert {k: v for k, v in second[1].items() if k not in drop} == {
                k: v for k, v in first[1].items() if k not in drop
            }
            assert predict_count(base) == 2.0  # counted like any other /predict

            spaced = body.replace(":", ": ")  # the same question, other bytes: Flask again
            third = request(base, "POST", "/predict", spaced)
            assert third[2] == first[2] and flask_calls.count("/predict") == 2
            with_level = request(base, "POST", "/predict?level=50", body)
            assert json.loads(with_level[2])["level"] == 50
            assert flask_calls.count("/predict") == 3
            bad = json.dumps({"stock_symbol": "AAPL", "input_date": "2023-02-30"})
            for _ in range(2):  # a 400 is never kept: Flask answers it each time
                assert request(base, "POST", "/predict", bad)[0] == 400
            assert flask_calls.count("/predict") == 5
            assert request(base, "POST", "/predict", spaced)[2] == first[2]
            assert flask_calls.count("/predict") == 5  # the spaced body is known now too
    finally:
        state_of(app).engine.dispose()


def test_with_the_check_due_the_request_goes_to_flask(site: Site, tmp_path: Path) -> None:
    """change_check_ms = 0 (a check is always due): every request checks the marker in Flask."""
    app = create_app(web_config(site.url, tmp_path, web={"change_check_ms": 0}))
    client = app.test_client()
    fast = app.wsgi_app
    inner = fast.wsgi_app  # type: ignore[attr-defined]
    calls: list[int] = []

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        calls.append(1)
        return inner(environ, start_response)

    fast.wsgi_app = counting  # type: ignore[attr-defined]
    body = {"stock_symbol": "AAPL", "input_date": site.seed.stored_as_of[6].isoformat()}
    try:
        answers = [client.post("/predict", json=body).get_data() for _ in range(3)]
        assert len(set(answers)) == 1 and len(calls) == 3
    finally:
        state_of(app).engine.dispose()
