"""Web test fixtures: one tiny model, one seeded read-only database and app per backend.

The app never writes, so the seeded database (SQLite, and PostgreSQL when
CANDLECAST_TEST_POSTGRES_URL is set) is built once per session and shared by the client tests.
Tests about writes and outages use the function-scoped fixtures of tests/conftest.py instead.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import http.client
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from werkzeug.serving import BaseWSGIServer, make_server

from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from jobs.config import DATABASE_URL_ENV, Config, config_from_dict
from tests.conftest import DB_BACKENDS, POSTGRES_URL
from tests.web.seed import MODEL_AS_OF, TICKERS, Seed, bundled_candles, seed
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


@pytest.fixture(scope="session")
def model_record() -> dict[str, Any]:
    """A tiny AAPL model (trained once per session) as a model_versions record."""
    from forecasting.artifact import trained_to_record
    from forecasting.params import ModelParams
    from forecasting.train import train_model

    params = ModelParams(window=20, units=4, epochs=1, patience=1)
    trained = train_model(
        bundled_candles("AAPL"), params, ticker="AAPL", as_of=MODEL_AS_OF, history_years=2
    )
    return trained_to_record(trained)


@contextmanager
def site_database(backend: str, tmp: Path, name: str) -> Iterator[str]:
    """An empty database URL for a site: a SQLite file `tmp/name`, or a fresh PostgreSQL schema
    (dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / name}"
        return
    assert POSTGRES_URL is not None
    schema = f"w_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql("SET lock_timeout = '10s'")
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


def _seeded_site(backend: str, tmp: Path, record: dict[str, Any]) -> Iterator[Site]:
    with site_database(backend, tmp, "web.db") as url:
        upgrade(url)
        writer = make_engine(url)
        try:
            with make_session_factory(writer).begin() as session:
                info = seed(session, model_record=record)
        finally:
            writer.dispose()
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


@pytest.fixture(scope="session", params=DB_BACKENDS)
def site(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    model_record: dict[str, Any],
) -> Iterator[Site]:
    """The seeded database and its app, once per backend."""
    tmp = tmp_path_factory.mktemp(f"site-{request.param}")
    yield from _seeded_site(request.param, tmp, model_record)


@pytest.fixture(scope="session")
def sqlite_site(
    tmp_path_factory: pytest.TempPathFactory, model_record: dict[str, Any]
) -> Iterator[Site]:
    """A seeded SQLite site (browser and server tests)."""
    yield from _seeded_site("sqlite", tmp_path_factory.mktemp("site-browser"), model_record)


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


def http_get(
    base: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one GET of `path` on the server at `base`, over real HTTP."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


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
