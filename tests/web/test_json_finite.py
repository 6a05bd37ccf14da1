"""JSON bodies are strict JSON: a stored NaN/inf is served as null, never as NaN/Infinity.

The job never stores such a forecast (Forecast.check_finite), but the web app must not trust that:
rows written by an older version or by hand are seeded here straight into the database and
/predict is called over real HTTP; bodies are parsed with a parser that rejects NaN/Infinity.
(SQLite stores a NaN as NULL, so NaN is covered by the provider test rather than through the DB.)
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from tests.web.conftest import Site, serving, writing
from web import FiniteJSONProvider

INF = float("inf")
NAN = float("nan")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def strict_loads(body: str) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity."""
    return json.loads(body, parse_constant=_reject_constant)


@pytest.fixture(scope="module")
def bad_site(own_site: Site) -> Site:
    """A seeded site whose oldest AAPL forecast holds inf and -inf (its own database)."""
    as_of = own_site.seed.stored_as_of[0]
    with writing(own_site.url) as session:
        for horizon, values in {
            1: {"high": INF},
            2: {"close_hi": INF, "low": -INF},
            3: {"close": INF},
        }.items():
            # Raw SQL, as by hand: the models store NaN and infinity as NULL.
            assignments = ", ".join(f"{name} = :{name}" for name in values)
            session.execute(
                text(
                    f"UPDATE forecasts SET {assignments} WHERE ticker = 'AAPL' "
                    "AND as_of_date = :as_of AND horizon = :horizon"
                ),
                {**values, "as_of": as_of, "horizon": horizon},
            )
    return own_site


@pytest.fixture(scope="module")
def bad_server(bad_site: Site) -> Iterator[str]:
    """bad_site's app served over real HTTP on a free loopback port."""
    with serving(bad_site.app) as base:
        yield base


def post_predict(base: str, body: dict[str, Any], query: str = "") -> tuple[int, str, str]:
    request = urllib.request.Request(
        f"{base}/predict{query}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        response = urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()
    with response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_predict_serves_stored_inf_and_nan_as_null(bad_server: str, bad_site: Site) -> None:
    as_of = bad_site.seed.stored_as_of[0]
    status, content_type, body = post_predict(
        bad_server, {"stock_symbol": "AAPL", "input_date": as_of.isoformat()}
    )
    assert (status, content_type) == (200, "application/json"), body
    assert "Infinity" not in body and "NaN" not in body
    data = strict_loads(body)
    assert data["as_of"] == as_of.isoformat() and data["source"] == "stored"
    first, second, third, fourth = data["candles"]
    assert first["high"] is None
    assert second["close_hi"] is None and second["low"] is None
    # Finite values around the bad ones are served unchanged.
    assert isinstance(first["close"], float) and math.isfinite(first["close"])
    assert third["close"] is None and data["predictions"][third["date"]] is None
    assert fourth["high"] >= fourth["close"] > 0


def test_predict_at_level_90_serves_stored_inf_as_null(bad_server: str, bad_site: Site) -> None:
    as_of = bad_site.seed.stored_as_of[0]
    status, _, body = post_predict(
        bad_server, {"stock_symbol": "AAPL", "input_date": as_of.isoformat()}, "?level=90"
    )
    assert status == 200
    data = strict_loads(body)
    third = data["candles"][2]
    assert third["close"] is None and data["predictions"][third["date"]] is None
    assert third["quantiles"]["q50"] is not None and math.isfinite(third["quantiles"]["q50"])


def test_provider_turns_every_non_finite_float_into_null() -> None:
    app = Flask("finite-test")
    app.json = FiniteJSONProvider(app)
    with app.app_context():
        body = app.json.dumps({"a": INF, "b": [NAN, 1.5, (2.0, -INF)], "c": {"d": NAN}, "e": 3})
        assert strict_loads(body) == {
            "a": None,
            "b": [None, 1.5, [2.0, None]],
            "c": {"d": None},
            "e": 3,
        }
        assert strict_loads(app.json.dumps([0.1, "x", None])) == [0.1, "x", None]
