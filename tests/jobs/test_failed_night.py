"""Issue 11 acceptance: a night whose every file is broken is visible everywhere an operator looks.

`candlecast run-once` (a real process, JSON logs) over a CSV folder of broken files exits 4; then
`candlecast status` exits 1 naming the run, /readyz (real HTTP) is degraded with the same reason,
/metrics shows the failed run, and the local webhook receiver got exactly one message naming the
failed tickers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.config import DATABASE_URL_ENV, load_config
from tests.jobs.conftest import write_config
from tests.jobs.test_alerts import receiver  # noqa: F401 - the webhook receiver fixture
from tests.jobs.test_one_line_errors import candlecast
from tests.web.conftest import serving, state_of
from tests.web.test_readyz_metrics import get, sample, scrape
from web import create_app

TICKERS = ["AAPL", "MSFT"]


@pytest.mark.slow
def test_a_failed_night_shows_in_status_readyz_metrics_and_one_alert(
    tmp_path: Path,
    migrated_url: str,
    receiver,  # noqa: F811
    monkeypatch,
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "AAPL.csv").write_bytes(b"")
    (broken / "MSFT.csv").write_bytes(bytes(range(256)) * 4)
    config_path = write_config(
        tmp_path / "night.toml",
        migrated_url,
        {
            "data": {"provider": "csv", "csv_dir": str(broken)},
            "tickers": {"symbols": TICKERS},
            "alerts": {"webhook_url": receiver.url},
            "logging": {"format": "json"},
        },
    )

    run = candlecast(config_path, "run-once")
    assert run.returncode == 4, run.stderr[-3000:]
    records = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert records and all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    assert all(r["ts"].endswith("Z") for r in records)

    assert len(receiver.posts) == 1
    alert = receiver.bodies[0]
    assert alert["status"] == "failed"
    assert [f["ticker"] for f in alert["failed"]] == TICKERS
    run_id = alert["run_id"]

    status = candlecast(config_path, "status")
    assert status.returncode == 1, status.stdout + status.stderr
    assert f"degraded: latest finished run {run_id} (manual" in status.stdout
    assert "is failed" in status.stdout

    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    app = create_app(load_config(str(config_path)))
    try:
        with serving(app) as base:
            code, _, body = get(f"{base}/readyz")
            samples = scrape(base)
    finally:
        state_of(app).engine.dispose()
    verdict = json.loads(body)
    assert code == 503 and verdict["status"] == "degraded"
    assert any(f"run {run_id} (manual" in r and "is failed" in r for r in verdict["reasons"])
    assert sample(samples, "candlecast_last_run_id") == run_id
    assert sample(samples, "candlecast_last_run_status", status="failed") == 1
    assert sample(samples, "candlecast_last_run_tickers", status="failed") == 2
    assert sample(samples, "candlecast_last_run_tickers", status="succeeded") in (0, None)
