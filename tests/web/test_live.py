"""Live fallback: same numbers as the forecasting package, nothing written, models cached (LRU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select

from db.models import Forecast
from db.repository import load_candles
from db.session import make_engine, make_session_factory
from tests.web.conftest import Site
from tests.web.seed import bundled_candles
from web import create_app, state
from web import live as live_module
from web.live import ModelCache


def test_cache_is_a_bounded_lru() -> None:
    cache = ModelCache(maxsize=2)
    cache.put(1, "a")
    cache.put(2, "b")
    assert cache.get(1) == "a"  # 1 becomes the most recently used
    cache.put(3, "c")
    assert cache.keys() == [1, 3] and len(cache) == 2
    assert cache.get(2) is None
    with pytest.raises(ValueError):
        ModelCache(maxsize=0)


def test_cache_loads_each_key_once_under_concurrency() -> None:
    cache = ModelCache(maxsize=8)
    calls: list[int] = []

    def loader() -> str:
        calls.append(1)
        time.sleep(0.05)
        return "model"

    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_load(7, loader)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["model"] * 8 and len(calls) == 1


def _count_forecasts(url: str) -> int:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return session.scalar(select(func.count()).select_from(Forecast)) or 0
    finally:
        engine.dispose()


def test_live_matches_forecasting_and_writes_nothing(
    site: Site, model_record: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from forecasting.artifact import trained_from_record
    from forecasting.forecast_path import UseModel, forecast_set

    app = create_app(site.config)  # a fresh app: empty model cache
    loads: list[int] = []
    real_load = live_module.load_trained

    def counting_load(session: Any, version_id: int) -> Any:
        loads.append(version_id)
        return real_load(session, version_id)

    monkeypatch.setattr(live_module, "load_trained", counting_load)
    before = _count_forecasts(site.url)
    client = app.test_client()
    day = site.seed.last_session.isoformat()
    first = client.post("/predict", json={"stock_symbol": "AAPL", "input_date": day})
    started = time.perf_counter()
    second = client.post("/predict", json={"stock_symbol": "AAPL", "input_date": day})
    warm_seconds = time.perf_counter() - started
    assert first.status_code == second.status_code == 200
    assert first.get_json() == second.get_json()
    assert first.get_json()["source"] == "live"
    assert loads == [site.seed.model_id]  # the second request used the cached model
    assert warm_seconds < 2.0
    with app.app_context():
        assert state().models.keys() == [site.seed.model_id]
        state().engine.dispose()
    assert _count_forecasts(site.url) == before  # nothing written

    engine = make_engine(site.url, read_only=True)
    try:
        with make_session_factory(engine)() as session:
            candles = load_candles(session, ticker="AAPL")
    finally:
        engine.dispose()

    def universe(tickers: list[str], end: date, rows: int) -> dict[str, pd.DataFrame]:
        """The fit's universe (AAPL and MSFT) from the bundled candles, not the database."""
        return {t: bundled_candles(t).loc[: pd.Timestamp(end)].tail(rows) for t in tickers}

    trained = trained_from_record(model_record)
    assert trained.calibration["universe"] == ["AAPL", "MSFT"]
    assert trained.train_end < site.seed.last_session  # so the forecast reads MSFT's candles
    expected = forecast_set(
        "AAPL", site.seed.last_session, UseModel(trained), candles=candles, universe=universe
    )
    # the network's share shows in every number compared below but the open (the last close):
    # HAR-range alone would not tell whether the web loads and feeds the network right
    har = expected.components["har_range"]
    for key in ("high", "low", "close", "close_lo", "close_hi"):
        assert [getattr(c, key) for c in expected.candles] != pytest.approx(
            [getattr(c, key) for c in har], rel=1e-5
        ), key
    got = first.get_json()["candles"]
    for want, have in zip(expected.candles, got, strict=True):
        assert have["date"] == want.date.isoformat()
        for key in ("open", "high", "low", "close", "close_lo", "close_hi"):
            assert have[key] == pytest.approx(getattr(want, key), rel=1e-5)


def test_stored_requests_never_import_tensorflow(sqlite_site: Site, tmp_path: Path) -> None:
    probe = (
        "import json, sys\n"
        "from tests.web.conftest import web_config\n"
        "from web import create_app\n"
        "from pathlib import Path\n"
        "app = create_app(web_config(sys.argv[1], Path(sys.argv[2])))\n"
        "c = app.test_client()\n"
        "r = c.post('/predict', json={'stock_symbol': 'AAPL', 'input_date': sys.argv[3]})\n"
        "pages = [c.get(p).status_code for p in ('/', '/tickers/AAPL', '/runs', '/healthz')]\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(json.dumps([r.get_json()['source'], pages, heavy]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    day = sqlite_site.seed.stored_as_of[-1].isoformat()
    result = subprocess.run(
        [sys.executable, "-c", probe, sqlite_site.url, str(tmp_path), day],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    source, pages, heavy = json.loads(result.stdout.strip().splitlines()[-1])
    assert source == "stored" and pages == [200, 200, 200, 200]
    assert heavy == []


def test_too_little_history_is_a_404(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    def short_history(session: Any, **kwargs: Any) -> Any:
        return load_candles(session, **kwargs).iloc[-10:]

    monkeypatch.setattr(live_module, "load_candles", short_history)
    response = site.app.test_client().post(
        "/predict",
        json={"stock_symbol": "AAPL", "input_date": site.seed.last_session.isoformat()},
    )
    assert response.status_code == 404
    error = response.get_json()["error"]
    assert error["code"] == "no_forecast" and "sessions" in error["message"]
