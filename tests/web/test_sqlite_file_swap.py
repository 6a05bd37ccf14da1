"""The web app serves the SQLite file that is at the configured path now (issue 10 item 13).

A real gunicorn server (web.serve) reads a file that is deleted, copied in again with other data
and finally moved back over: each change is seen by the very next request, a missing file is a
503 naming it (never a 500, never the deleted file's data) and the app never creates the file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from db.migrate import upgrade
from tests.web.conftest import seeded_database, web_config
from tests.web.seed import GlobalModel
from tests.web.test_serve import free_port, start_server, wait_for, write_config
from web import create_app

SHIFT = 1000.0  # the copied-in database's MSFT forecast closes are this much higher


def get(url: str) -> tuple[int, Any]:
    """(status, parsed JSON body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body.startswith(b"{") else body.decode()


@pytest.fixture(scope="module")
def databases(
    tmp_path_factory: pytest.TempPathFactory, global_model: GlobalModel
) -> tuple[Path, Path, str]:
    """Two seeded SQLite files: the original and one whose latest run succeeded and whose MSFT
    closes are SHIFT higher; plus the MSFT as-of date."""
    tmp = tmp_path_factory.mktemp("swap")
    original, other = tmp / "original.db", tmp / "other.db"
    info = seeded_database(f"sqlite:///{original}", global_model)
    shutil.copyfile(original, other)
    with sqlite3.connect(other) as conn:
        conn.execute("UPDATE forecasts SET close = close + ? WHERE ticker = 'MSFT'", (SHIFT,))
        conn.execute("UPDATE forecast_runs SET status = 'succeeded'")
    conn.close()
    return original, other, info.msft_as_of.isoformat()


def test_deleted_and_replaced_files_are_seen_by_the_next_request(
    databases: tuple[Path, Path, str], tmp_path: Path
) -> None:
    original, other, msft_as_of = databases
    live = tmp_path / "live" / "web.db"
    live.parent.mkdir()
    shutil.copyfile(original, live)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(write_config(tmp_path, f"sqlite:///{live}", port), workers=1)

    def state() -> tuple[str, float]:
        status, health = get(f"{base}/healthz")
        assert status == 200, health
        status, body = get(f"{base}/api/forecasts/MSFT?as_of={msft_as_of}")
        assert status == 200, body
        return health["latest_run"]["status"], body["candles"][0]["close"]

    try:
        wait_for(f"{base}/healthz", proc)
        run_status, close = state()
        assert run_status == "partial"

        live.unlink()
        status, health = get(f"{base}/healthz")
        assert status == 503, health
        assert health["status"] == "unavailable" and health["database"] == "unreachable"
        assert health["error"]["message"] == f"database file missing: {live}"
        status, body = get(f"{base}/api/forecasts/MSFT?as_of={msft_as_of}")
        assert status == 503 and body["error"]["code"] == "database_unavailable", body
        assert "missing" in body["error"]["message"]
        status, page = get(f"{base}/runs")
        assert status == 503 and "missing" in page
        assert not live.exists()  # a read-only app never creates the file

        shutil.copyfile(other, live)  # copied in where the deleted file was
        # prices in bodies have six significant digits
        assert state() == ("succeeded", pytest.approx(close + SHIFT, rel=1e-5))

        staged = live.with_name("web.db.new")
        shutil.copyfile(original, staged)
        os.replace(staged, live)  # moved over the file the app has open
        assert state() == ("partial", pytest.approx(close))
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    log = output.decode(errors="replace")
    assert proc.returncode == 0, log[-2000:]
    assert "Traceback" not in log, log[-3000:]
    assert "database file missing" in log


def test_a_new_file_empties_the_model_cache(tmp_path: Path) -> None:
    """Model version ids of another database may name other models: cached ones are dropped."""
    live, other = tmp_path / "web.db", tmp_path / "other.db"
    upgrade(f"sqlite:///{live}")
    shutil.copyfile(live, other)
    app = create_app(web_config(f"sqlite:///{live}", tmp_path))
    client = app.test_client()
    try:
        assert client.get("/healthz").status_code == 200
        app.extensions["candlecast"].models.put(1, "a model of the first database")
        assert client.get("/healthz").status_code == 200  # same file: the cache is kept
        assert app.extensions["candlecast"].models.get(1) is not None
        os.replace(other, live)
        assert client.get("/healthz").status_code == 200
        assert app.extensions["candlecast"].models.get(1) is None
    finally:
        app.extensions["candlecast"].engine.dispose()
