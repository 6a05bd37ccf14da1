"""Corrupt or outdated model versions and stale answers, over real HTTP on SQLite and PostgreSQL.

A version that fails its checks (sha256 mismatch, truncated zip with a matching sha256, a
per-ticker network's old calibration, a global model's older calibration version) is skipped
(logged once per process): the live path falls back to the next older usable version or answers
a 503 JSON error, and the pages still render the stored data.
/predict says `stale: true` with the dates when the asked date is past the latest stored session
or the live model is older than [model] retrain_every sessions.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from db.model_store import add_model_version
from forecasting.artifact import sha256_hex
from forecasting.global_serve import GLOBAL_VERSION
from tests.web.conftest import Site, serving, state_of, writing

DEFAULT_KEYS = ["ticker", "as_of", "source", "model_version", "candles", "predictions"]


@dataclass(frozen=True)
class Broken:
    site: Site
    url: str  # base URL of the running server
    ids: dict[str, int]  # kind -> model version id


def _request(base: str, path: str, body: dict | None = None) -> tuple[int, str, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method="POST" if data else "GET")
    if data:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def predict(base: str, ticker: str, day: str) -> tuple[int, dict[str, Any]]:
    status, kind, text = _request(base, "/predict", {"stock_symbol": ticker, "input_date": day})
    assert kind.startswith("application/json"), text[:300]
    return status, json.loads(text)


def _broken_records(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    good = bytes(record["artifact"])
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    truncated = good[: len(good) // 2]
    old_calibration = {"alpha_close": [0.0] * 4}  # a per-ticker network's, before quantiles
    old_global = {**record["calibration"], "version": GLOBAL_VERSION - 1}
    return {
        # newest first: the live path meets every broken one before the good seed model
        "old_global": {**record, "train_end": date(2023, 12, 15), "calibration": old_global},
        "old_calibration": {
            **record,
            "train_end": date(2023, 11, 30),
            "calibration": old_calibration,
        },
        "truncated": {
            **record,
            "train_end": date(2023, 10, 31),
            "artifact": truncated,
            "artifact_sha256": sha256_hex(truncated),
        },
        "sha_mismatch": {**record, "train_end": date(2023, 9, 29), "artifact": bytes(flipped)},
        # MSFT's only model: a truncated zip with a matching sha256
        "msft_truncated": {
            **record,
            "ticker": "MSFT",
            "artifact": truncated,
            "artifact_sha256": sha256_hex(truncated),
        },
    }


@pytest.fixture(scope="module")
def broken(own_site: Site, model_record: dict[str, Any]) -> Iterator[Broken]:
    """The module's own seeded site plus broken newer AAPL versions and a broken only MSFT
    version, over real HTTP."""
    with writing(own_site.url) as session:
        ids = {
            kind: add_model_version(session, record=rec).id
            for kind, rec in _broken_records(model_record).items()
        }
    with serving(own_site.app) as base:
        yield Broken(own_site, base, ids)


def test_live_path_skips_broken_versions_and_falls_back(
    broken: Broken, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="web.live")
    day = broken.site.seed.last_session.isoformat()
    first = predict(broken.url, "AAPL", day)
    second = predict(broken.url, "AAPL", day)
    assert first == second
    status, body = first
    assert status == 200 and body["source"] == "live"
    assert body["model_version"] == broken.site.seed.model_id  # the older, usable version
    unusable = state_of(broken.site.app).models.unusable()
    aapl = {k: v for k, v in broken.ids.items() if not k.startswith("msft")}
    assert "sha256 mismatch" in unusable[aapl["sha_mismatch"]]
    assert "not a valid .keras archive" in unusable[aapl["truncated"]]
    assert "File not found" not in unusable[aapl["truncated"]]
    assert "older candlecast" in unusable[aapl["old_calibration"]]
    assert "older candlecast" in unusable[aapl["old_global"]]
    for version_id in aapl.values():  # logged once, however many requests
        lines = [r for r in caplog.records if f"model version {version_id} of AAPL" in r.message]
        assert len(lines) == 1 and "unusable" in lines[0].message


def test_every_version_broken_is_a_clear_503(broken: Broken) -> None:
    for _ in range(2):  # the second time from the in-process memory of unusable versions
        status, body = predict(broken.url, "MSFT", "2023-12-01")
        assert status == 503
        error = body["error"]
        assert error["code"] == "model_unavailable"
        assert "no usable model of MSFT" in error["message"]
        assert "retrain" in error["message"]


def test_ticker_pages_still_render_the_stored_data(broken: Broken) -> None:
    status, kind, page = _request(broken.url, "/tickers/AAPL")
    assert status == 200 and kind.startswith("text/html")
    stored = broken.site.seed.stored_as_of[-1].isoformat()
    assert stored in page
    # a date served live: falls back to the usable version
    status, _, page = _request(broken.url, f"/tickers/AAPL?as_of={broken.site.seed.last_session}")
    assert status == 200 and "internal server error" not in page
    # MSFT: its stored forecast renders; a date needing its broken model says why, with the chart
    status, _, page = _request(broken.url, "/tickers/MSFT")
    assert status == 200 and broken.site.seed.msft_as_of.isoformat() in page
    status, kind, page = _request(broken.url, "/tickers/MSFT?as_of=2023-12-01")
    assert status == 503 and kind.startswith("text/html")
    assert "no usable model of MSFT" in page and "plotly" in page


# --- staleness ----------------------------------------------------------------------------


@pytest.fixture
def served(site: Site) -> Iterator[str]:
    with serving(site.app) as base:
        yield base


def test_fresh_stored_answers_keep_the_default_body(served: str, site: Site) -> None:
    for day in (site.seed.stored_as_of[-1].isoformat(), "2023-12-16"):  # a session, a Saturday
        status, body = predict(served, "AAPL", day)
        assert status == 200 and body["source"] == "stored"
        assert list(body) == DEFAULT_KEYS


def test_asking_past_the_latest_session_is_stale(served: str, site: Site) -> None:
    last = site.seed.last_session.isoformat()
    status, body = predict(served, "MSFT", "2024-02-01")
    assert status == 200 and body["source"] == "stored"
    assert list(body)[: len(DEFAULT_KEYS)] == DEFAULT_KEYS
    assert body["stale"] is True
    assert body["as_of"] == body["data_through"] == site.seed.msft_as_of.isoformat()
    assert body["requested_date"] == "2024-02-01"
    assert body["model_trained_through"] is None  # stored by a run without a model version
    assert "past the latest stored session" in body["stale_reason"]
    # live: both rules at once
    status, body = predict(served, "AAPL", "2031-01-01")
    assert status == 200 and body["source"] == "live" and body["stale"] is True
    assert body["as_of"] == body["data_through"] == last
    assert body["model_trained_through"] == "2023-06-30"
    assert body["model_age_sessions"] > site.config.model.retrain_every
    assert "past the latest stored session" in body["stale_reason"]
    assert "sessions before the as-of date" in body["stale_reason"]
