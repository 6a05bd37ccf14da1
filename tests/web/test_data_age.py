"""The age of the stored candles on the index and in /readyz (issue 20 item 8), over real HTTP.

The seed's newest candle is 2023-12-29, hundreds of sessions before today: stale under the
default `[schedule] data_stale_after_sessions` (5); 0 turns the readiness reason off.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from forecasting.calendar import sessions_between
from tests.web.conftest import Site, http_get, serving, state_of, web_config
from web import create_app


def test_stale_candles_are_a_readiness_reason_and_an_index_warning(site: Site) -> None:
    behind = sessions_between(date(2023, 12, 29), datetime.now(UTC).date())
    assert behind > 5
    with serving(site.app) as base:
        status, _, body = http_get(base, "/readyz")
        index = http_get(base, "/")[2].decode()
    verdict = json.loads(body)
    assert status == 503 and verdict["status"] == "degraded"
    reason = next(r for r in verdict["reasons"] if r.startswith("the data is stale"))
    assert "2023-12-29" in reason and f"{behind} sessions ago" in reason
    assert verdict["data"] == {
        "as_of": "2023-12-29",
        "sessions_behind": behind,
        "tickers": ["AAPL", "MSFT"],
        "stale_after_sessions": 5,
        "stale": True,
    }
    line = index.split('id="data-age"', 1)[1].split("</p>", 1)[0]
    assert f"Data as of 2023-12-29: {behind} sessions ago" in line
    assert "The candles are stale" in line
    assert '<p id="data-age" class="notice"' in index  # shown as a warning


def test_zero_turns_the_readiness_reason_and_the_warning_off(site: Site, tmp_path) -> None:
    app = create_app(web_config(site.url, tmp_path, schedule={"data_stale_after_sessions": 0}))
    try:
        with serving(app) as base:
            verdict = json.loads(http_get(base, "/readyz")[2])
            index = http_get(base, "/")[2].decode()
    finally:
        state_of(app).engine.dispose()
    assert not any(r.startswith("the data is stale") for r in verdict.get("reasons", []))
    assert verdict["data"]["stale"] is False and verdict["data"]["as_of"] == "2023-12-29"
    line = index.split('id="data-age"', 1)[1].split("</p>", 1)[0]
    assert "Data as of 2023-12-29" in line and "stale" not in line
