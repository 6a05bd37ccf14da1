"""The database's change marker (db.web_queries.change_marker): every committed write to a table
whose rows the web app shows changes it, whoever writes and however (raw SQL included)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from db.migrate import downgrade, upgrade
from db.models import (
    Base,
    BaselineForecast,
    Candle,
    Forecast,
    ForecastRun,
    ForecastRunTicker,
    ModelVersion,
)
from db.session import make_engine, make_session_factory
from db.web_queries import change_marker, change_marker_fast

# Tables no page or answer shows: writes to them need not (and do not) change the marker.
NOT_SHOWN = {"run_locks", "apscheduler_jobs", "data_changes", "global_models"}
# A raw UPDATE in place of each shown table (e.g. a pruned artifact, a run finishing).
UPDATES = {
    "candles": "UPDATE candles SET close = close * 2",
    "model_versions": "UPDATE model_versions SET artifact = NULL, artifact_path = NULL",
    "forecast_runs": "UPDATE forecast_runs SET status = 'succeeded'",
    "forecast_run_tickers": "UPDATE forecast_run_tickers SET status = 'succeeded'",
    "forecasts": "UPDATE forecasts SET close = close + 1",
    "baseline_forecasts": "UPDATE baseline_forecasts SET close = close + 1",
}
SHOWN = sorted(set(Base.metadata.tables) - NOT_SHOWN)
DAY = date(2023, 12, 29)


def test_every_table_is_classified() -> None:
    """A new table must be added to UPDATES (shown) or NOT_SHOWN, and be checked below."""
    assert sorted(UPDATES) == SHOWN


def _seed(session: Session) -> None:
    """One row in each shown table (the run still running)."""
    session.add(
        Candle(
            ticker="AAPL",
            session_date=DAY,
            open=1.0,
            high=2.0,
            low=0.5,
            close=1.5,
            volume=10.0,
            source="csv",
        )
    )
    model = ModelVersion(
        ticker="AAPL",
        train_start=date(2020, 1, 2),
        train_end=DAY,
        hyperparameters={},
        normalization={},
        metrics={},
        artifact=b"keras",
        artifact_sha256="0" * 64,
        keras_version="3",
        tensorflow_version="2",
    )
    run = ForecastRun(trigger="manual", status="running", as_of_date=DAY)
    session.add_all([model, run])
    session.flush()
    session.add(ForecastRunTicker(run_id=run.id, ticker="AAPL", status="running"))
    common = {"run_id": run.id, "ticker": "AAPL", "as_of_date": DAY, "target_date": DAY}
    prices = {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5}
    session.add(Forecast(**common, **prices, horizon=1, model_version_id=model.id))
    session.add(BaselineForecast(**common, **prices, horizon=1, model="naive"))


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    engine = make_engine(migrated_url)
    with make_session_factory(engine).begin() as session:
        _seed(session)
    try:
        yield engine
    finally:
        engine.dispose()


def marker(engine: Engine) -> object:
    """The marker as the web app reads it (a fresh connection: only committed data)."""
    with make_session_factory(engine)() as session:
        slow = change_marker(session)
    fast = change_marker_fast(engine, make_session_factory(engine))
    assert fast == slow
    return fast


def _insert_copy(table: str) -> str:
    """INSERT of a copy of the table's rows under another ticker (or a new id): raw SQL."""
    columns = [c.name for c in Base.metadata.tables[table].columns if c.name != "id"]
    values = ["'ZZZ'" if c == "ticker" else c for c in columns]
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {table}"


def _delete_copy(table: str) -> str:
    if "ticker" in Base.metadata.tables[table].columns:
        return f"DELETE FROM {table} WHERE ticker = 'ZZZ'"
    return f"DELETE FROM {table} WHERE id = (SELECT MAX(id) FROM {table})"


@pytest.mark.parametrize("table", SHOWN)
def test_every_committed_raw_write_to_a_shown_table_changes_the_marker(
    engine: Engine, table: str
) -> None:
    seen = [marker(engine)]
    for sql in (_insert_copy(table), UPDATES[table], _delete_copy(table)):
        with engine.begin() as conn:
            assert conn.execute(text(sql)).rowcount > 0, sql
        seen.append(marker(engine))
        assert seen[-1] != seen[-2], sql
    assert len(set(seen)) == len(seen)  # never back to an earlier value


def test_uncommitted_and_rolled_back_writes_do_not_change_it(engine: Engine) -> None:
    before = marker(engine)
    with engine.connect() as conn:
        conn.execute(text(_insert_copy("candles")))
        conn.execute(text(UPDATES["forecast_runs"]))
        assert marker(engine) == before  # not committed yet: other connections see the old one
        conn.rollback()
    assert marker(engine) == before


def test_writes_to_tables_no_page_shows_leave_it(engine: Engine) -> None:
    before = marker(engine)
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO run_locks (name, token, host, pid, acquired_at, heartbeat_at) "
                "VALUES ('nightly', 't', 'h', 1, :now, :now)"
            ),
            {"now": now},
        )
        conn.execute(text("UPDATE run_locks SET heartbeat_at = :now"), {"now": now})
    assert marker(engine) == before


def test_a_transaction_of_many_writes_is_one_change(engine: Engine) -> None:
    """Many statements in one transaction: the marker moves once, at commit."""
    before = marker(engine)
    with engine.begin() as conn:
        for table in SHOWN:
            conn.execute(text(UPDATES[table]))
    after = marker(engine)
    assert after != before


def test_emptying_a_table_changes_it(engine: Engine, db_backend: str) -> None:
    """TRUNCATE on PostgreSQL; on SQLite a DELETE without WHERE (its truncate optimisation)."""
    sql = (
        "TRUNCATE baseline_forecasts"
        if db_backend == "postgresql"
        else "DELETE FROM baseline_forecasts"
    )
    before = marker(engine)
    with engine.begin() as conn:
        conn.execute(text(sql))
    assert marker(engine) != before


def test_the_marker_never_repeats_across_a_rebuilt_schema(migrated_url: str) -> None:
    """downgrade base + upgrade: ids restart at 1, the marker does not repeat."""
    seen = []
    for _ in range(3):
        engine = make_engine(migrated_url)
        try:
            with make_session_factory(engine).begin() as session:
                _seed(session)
            seen.append(marker(engine))
        finally:
            engine.dispose()
        downgrade(migrated_url, "base")
        upgrade(migrated_url)
    assert len(set(seen)) == 3


def test_concurrent_writers_queue_and_both_count(engine: Engine) -> None:
    """A second writer waits for the first to commit (PostgreSQL: on the data_changes row, taken
    before any other row; SQLite: the database lock), then commits: no deadlock, no error."""
    before = marker(engine)
    first = engine.connect()
    try:
        first.execute(text(UPDATES["forecasts"]))  # holds the marker row until it commits
        done = threading.Event()
        errors: list[BaseException] = []

        def second() -> None:
            try:
                with engine.begin() as conn:
                    conn.execute(text(UPDATES["candles"]))
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert not done.wait(0.3)  # queued behind the first writer
        first.commit()
        assert done.wait(10) and errors == []
        thread.join()
    finally:
        first.close()
    assert marker(engine) != before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT close FROM candles")).scalar_one() == 3.0  # 1.5 * 2
