"""The app cannot write, validates tickers before any lookup and reports outages as 503."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from db.models import Candle
from tests.conftest import DB_BACKENDS, POSTGRES_URL
from tests.web.conftest import web_config
from web import create_app, db_session, state

INSERT = text(
    "INSERT INTO candles (ticker, session_date, open, high, low, close, volume, source, fetched_at)"
    " VALUES ('AAPL', '2024-01-02', 1, 2, 0.5, 1.5, 100, 'test', '2024-01-02 23:00:00+00:00')"
)


def test_write_through_the_app_engine_fails(migrated_url: str, make_config) -> None:
    app = create_app(make_config(migrated_url))
    try:
        with app.app_context():
            session = db_session()
            assert session.scalar(select(func.count()).select_from(Candle)) == 0
            with pytest.raises(DBAPIError, match="read-only|readonly"):
                session.execute(INSERT)
                session.commit()
            session.rollback()
            with pytest.raises(DBAPIError, match="read-only|readonly"), state().engine.begin() as c:
                c.execute(INSERT)
        with app.app_context():
            assert db_session().scalar(select(func.count()).select_from(Candle)) == 0
    finally:
        with app.app_context():
            state().engine.dispose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=DB_BACKENDS)
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL nothing answers at: a missing SQLite file, or a closed PostgreSQL port."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'missing' / 'candlecast.db'}"
    assert POSTGRES_URL is not None
    url = make_url(POSTGRES_URL).set(host="127.0.0.1", port=_closed_port())
    return url.render_as_string(hide_password=False)


def test_database_unavailable_is_503(unreachable_url: str, tmp_path: Path) -> None:
    app = create_app(web_config(unreachable_url, tmp_path))
    client = app.test_client()
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json()["database"] == "unreachable"
    for response in (
        client.post("/predict", json={"stock_symbol": "AAPL", "input_date": "2023-12-01"}),
        client.get("/api/forecasts/AAPL"),
        client.get("/api/forecasts/AAPL/history"),
        client.get("/api/runs"),
    ):
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "database_unavailable"
    page = client.get("/")
    assert page.status_code == 503 and page.content_type.startswith("text/html")
    # Input is checked before any lookup: bad input is a 400/404 even with the database down.
    bad = client.post("/predict", json={"stock_symbol": "../x", "input_date": "2023-12-01"})
    assert bad.status_code == 400
    unknown = client.post("/predict", json={"stock_symbol": "TSLA", "input_date": "2023-12-01"})
    assert unknown.status_code == 404
    assert not (tmp_path / "missing").exists()  # read-only: nothing was created
    with app.app_context():
        state().engine.dispose()


def test_unmigrated_database_is_503_not_500(db_url: str, tmp_path: Path) -> None:
    if make_url(db_url).get_backend_name() == "sqlite":
        from db.session import make_engine

        engine = make_engine(db_url)
        engine.connect().close()  # an empty database file
        engine.dispose()
    app = create_app(web_config(db_url, tmp_path))
    response = app.test_client().post(
        "/predict", json={"stock_symbol": "AAPL", "input_date": "2023-12-01"}
    )
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"
    with app.app_context():
        state().engine.dispose()


def test_app_uses_a_given_engine(migrated_url: str, make_config) -> None:
    from db.session import make_engine

    engine = make_engine(migrated_url, read_only=True)
    app = create_app(make_config(migrated_url), engine=engine)
    try:
        with app.app_context():
            assert state().engine is engine
        health = app.test_client().get("/healthz")
        assert health.status_code == 200 and health.get_json()["latest_run"] is None
    finally:
        engine.dispose()
