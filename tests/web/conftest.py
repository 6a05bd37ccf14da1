"""Web test fixtures: one tiny global model, one seeded read-only database and app per backend.

The app never writes, so the seeded database (SQLite, and PostgreSQL when
CANDLECAST_TEST_POSTGRES_URL is set) is built once per session and shared by the client tests.
Tests about writes and outages use the function-scoped fixtures of tests/conftest.py instead.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.serving import BaseWSGIServer, make_server

from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from forecasting.params import ModelParams
from jobs.config import DATABASE_URL_ENV, Config, config_from_dict
from tests.conftest import DB_BACKENDS, empty_database
from tests.web.seed import (
    FIT_TICKERS,
    MODEL_AS_OF,
    TICKERS,
    GlobalModel,
    Seed,
    bundled_candles,
    seed,
)
from web import create_app, state


@dataclass(frozen=True)
class Site:
    """A seeded database with an app on it."""

    backend: str
    url: str
    config: Config
    app: Flask
    seed: Seed


def web_config(url: str, tmp: Path, **sections: dict[str, Any]) -> Config:
    """A validated config for the web tests (CANDLECAST_DATABASE_URL ignored).

    `[web]` keeps the production defaults (change_check_ms 50) unless given: a test that
    writes and then must see its commit on the very next request passes change_check_ms = 0
    and says why.
    """
    raw: dict[str, dict[str, Any]] = {
        "database": {"url": url},
        "tickers": {"symbols": list(TICKERS)},
    }
    raw.update(sections)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(DATABASE_URL_ENV, raising=False)
        return config_from_dict(raw, base_dir=tmp)


# The smallest global fit of FIT_TICKERS' candles up to MODEL_AS_OF: one epoch of a 4-unit
# network (tests/jobs TINY_MODEL), window 20 as the stored forecasts' attention (ATTENTION_WINDOW).
TINY_PARAMS = ModelParams(window=20, units=4, epochs=1, patience=1, batch_size=64)
# The gate the tiny fit is served with: the network's weight 0.5 in every horizon's quantiles and
# high/low. One epoch's gate mostly stays closed (on AAPL+MSFT it opened only the 4th high/low),
# and then a live forecast is HAR-range alone: blind to how the web loads and feeds the network.
OPEN_GATE = {"blend": [0.5] * TINY_PARAMS.horizon, "blend_hl": [0.5] * TINY_PARAMS.horizon}


@pytest.fixture(scope="session")
def global_model() -> GlobalModel:
    """A tiny global fit over FIT_TICKERS to MODEL_AS_OF (fitted once per session), stored the
    way jobs.global_fit.global_records stores the night's, with its gate set to OPEN_GATE."""
    from forecasting.global_net import fit_global, required_sessions
    from forecasting.global_store import storable_fit

    end = pd.Timestamp(MODEL_AS_OF)
    histories = {t: bundled_candles(t).loc[:end] for t in FIT_TICKERS}
    assert min(len(c) for c in histories.values()) >= required_sessions(TINY_PARAMS)
    fit = fit_global(histories, TINY_PARAMS)
    assert fit.kind == "full" and fit.train_end == MODEL_AS_OF
    fit.gate = OPEN_GATE
    stored = storable_fit(fit, histories, reason="first fit", last_full=fit.train_end)
    assert sorted(stored.records) == sorted(FIT_TICKERS)
    return GlobalModel(row=stored.row | {"parent_id": None}, records=stored.records)


@pytest.fixture(scope="session")
def model_record(global_model: GlobalModel) -> dict[str, Any]:
    """The seed's AAPL model: its version of the tiny global fit, as a model_versions record
    (without ``global_model_id``: the fit's row id differs per database, see Seed)."""
    return global_model.records["AAPL"]


@contextmanager
def writing(url: str) -> Iterator[Session]:
    """One transaction on the database at `url`, through an engine of its own (disposed after)."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


def seeded_database(url: str, fitted: GlobalModel) -> Seed:
    """Migrate the empty database at `url` and seed it (tests.web.seed) with `fitted`."""
    upgrade(url)
    with writing(url) as session:
        info = seed(session, global_model=fitted)
    return info


def _seeded_site(backend: str, tmp: Path, fitted: GlobalModel) -> Iterator[Site]:
    with empty_database(backend, tmp / "web.db", "w") as url:
        info = seeded_database(url, fitted)
        config = web_config(url, tmp)
        app = create_app(config)
        app.config["TESTING"] = True
        try:
            yield Site(backend=backend, url=url, config=config, app=app, seed=info)
        finally:
            state_of(app).engine.dispose()


def state_of(app: Flask) -> Any:
    with app.app_context():
        return state()


def _site_fixture(name: str, scope: Literal["session", "module"], doc: str) -> Any:
    """A fixture `name` of `scope`: a seeded database and its app, once per backend."""

    def fixture(
        request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory,
        global_model: GlobalModel,
    ) -> Iterator[Site]:
        tmp = tmp_path_factory.mktemp(f"{name}-{request.param}")
        yield from _seeded_site(request.param, tmp, global_model)

    fixture.__doc__ = doc
    return pytest.fixture(name=name, scope=scope, params=DB_BACKENDS)(fixture)


site = _site_fixture("site", "session", "The seeded database and its app, once per backend.")
own_site = _site_fixture(
    "own_site",
    "module",
    "A seeded database and its app of the module's own, once per backend: for a module that "
    "writes to it (the shared `site` is read-only).",
)


@pytest.fixture(scope="session")
def sqlite_site(
    tmp_path_factory: pytest.TempPathFactory, global_model: GlobalModel
) -> Iterator[Site]:
    """A seeded SQLite site (browser and server tests)."""
    yield from _seeded_site("sqlite", tmp_path_factory.mktemp("site-browser"), global_model)


@pytest.fixture
def client(site: Site) -> FlaskClient:
    return site.app.test_client()


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """`app` over real HTTP on a free loopback port (werkzeug, a thread); yields its base URL."""
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="web-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def without_skill(body: dict[str, Any]) -> dict[str, Any]:
    """An /api/forecasts body without its `skill` object: the /predict body."""
    return {k: v for k, v in body.items() if k != "skill"}


def http_request(
    base: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request to the server at `base`, over real HTTP."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def http_get(
    base: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one GET of `path` on the server at `base`, over real HTTP."""
    return http_request(base, "GET", path, headers=headers)


@pytest.fixture(scope="session")
def live_server(sqlite_site: Site) -> Iterator[str]:
    """The SQLite site served over real HTTP on a free loopback port."""
    with serving(sqlite_site.app) as base:
        yield base


# Debian's chromium, driven headless by playwright (never a downloaded browser).
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install -y chromium"
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()
