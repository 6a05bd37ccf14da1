"""SQLAlchemy 2.0 typed models of candlecast's schema.

Table and column names are a public contract (analysts query them with plain SQL); change them only
with a migration. The schema itself is created by Alembic (alembic/versions), never by create_all
in production; `tests/db/test_migrations.py` checks that these models and the migrations agree.
"""

from __future__ import annotations

import math
import os
import socket
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_TRIGGERS: tuple[str, ...] = ("schedule", "manual", "backfill")
RUN_STATUSES: tuple[str, ...] = (
    "running",
    "succeeded",
    "partial",
    "failed",
    "interrupted",
    "abandoned",
)
FINISHED_RUN_STATUSES: tuple[str, ...] = tuple(s for s in RUN_STATUSES if s != "running")
TICKER_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed")
# forecasting.forecast_set.HORIZON's steps (db.models stays free of forecasting imports; a test
# checks they agree)
HORIZONS: tuple[int, ...] = (1, 2, 3, 4)
# Close price quantiles at forecasting.quantiles.QUANTILE_LEVELS (0.05 .. 0.95), in that order.
QUANTILE_COLUMNS: tuple[str, ...] = (
    "close_q05",
    "close_q10",
    "close_q25",
    "close_q50",
    "close_q75",
    "close_q90",
    "close_q95",
)


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime (the default of every timestamp)."""
    return datetime.now(UTC)


def _in_list(column: str, values: tuple[str, ...]) -> str:
    """SQL text `"column" IN ('a', 'b')` for a CHECK constraint over fixed, trusted literals."""
    literals = ", ".join(f"'{v}'" for v in values)
    return f'"{column}" IN ({literals})'


class UtcDateTime(TypeDecorator[datetime]):
    """DateTime(timezone=True) that only accepts aware datetimes and always returns aware UTC.

    SQLite has no time zone support: values are stored as naive UTC text and tagged UTC on the way
    back. PostgreSQL returns timestamptz in the session time zone; we normalise to UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: candlecast stores timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinite float (in dicts and lists, at any depth) made None.

    JSON has no NaN: PostgreSQL's json type refuses it, and SQLite would store text that other
    JSON readers reject.
    """
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class FiniteJSON(TypeDecorator[Any]):
    """JSON that writes NaN and infinity as null (finite_json), on every database alike."""

    impl = JSON
    cache_ok = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Python None is JSON 'null' or SQL NULL as the JSON type says (none_as_null).
        self.should_evaluate_none = self.impl_instance.should_evaluate_none

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return finite_json(value)


class FiniteFloat(TypeDecorator[float]):
    """Float that stores NaN and infinity as NULL on every database.

    SQLite turns NaN into NULL by itself while PostgreSQL stores it, so SQL over the same run
    would answer differently (a NaN bound makes an interval score NaN instead of NULL).
    """

    impl = Float
    cache_ok = True

    def process_bind_param(self, value: float | None, dialect: Dialect) -> float | None:
        if value is None or math.isfinite(value):
            return value
        return None


class Base(DeclarativeBase):
    """Declarative base; its MetaData carries the constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: FiniteJSON()}


class Candle(Base):
    """One daily OHLCV session of one ticker."""

    __tablename__ = "candles"

    ticker: Mapped[str] = mapped_column(String(20), primary_key=True)
    session_date: Mapped[date] = mapped_column(Date, primary_key=True)
    open: Mapped[float] = mapped_column(FiniteFloat)
    high: Mapped[float] = mapped_column(FiniteFloat)
    low: Mapped[float] = mapped_column(FiniteFloat)
    close: Mapped[float] = mapped_column(FiniteFloat)
    volume: Mapped[int] = mapped_column(BigInteger)  # shares; an integer since revision 0004
    source: Mapped[str] = mapped_column(String(20))
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)


class GlobalModel(Base):
    """One fit of the global network: the night's model of every ticker. Each ticker's model
    version points to it (and holds the shared `.keras` bytes)."""

    __tablename__ = "global_models"
    __table_args__ = (
        CheckConstraint("kind IN ('full', 'warm')", name="kind"),
        Index("ix_global_models_train_end", "train_end"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    train_start: Mapped[date] = mapped_column(Date)
    train_end: Mapped[date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(10))  # "full" or "warm" (from parent_id's weights)
    reason: Mapped[str] = mapped_column(String(200))  # why a full refit, or "warm start"
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("global_models.id"))
    tickers: Mapped[Any] = mapped_column(JSON)
    hyperparameters: Mapped[dict[str, Any]]
    gate: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    artifact_sha256: Mapped[str] = mapped_column(String(64))


class ModelVersion(Base):
    """A trained model: its hyperparameters, normalisation statistics, calibration, metrics and
    .keras bytes.

    `artifact` is deferred (loaded on first access, inside a session) so listing versions is cheap.
    """

    __tablename__ = "model_versions"
    __table_args__ = (Index("ix_model_versions_ticker_train_end_id", "ticker", "train_end", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticker: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    train_start: Mapped[date] = mapped_column(Date)
    train_end: Mapped[date] = mapped_column(Date)
    hyperparameters: Mapped[dict[str, Any]]
    normalization: Mapped[dict[str, Any]]
    # the served forecast's calibration (HAR-range fit, gate, ...); NULL: none stored
    calibration: Mapped[dict[str, Any] | None]
    metrics: Mapped[dict[str, Any]]
    val_loss: Mapped[float | None] = mapped_column(FiniteFloat)
    artifact: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    artifact_path: Mapped[str | None] = mapped_column(String(1024))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    keras_version: Mapped[str] = mapped_column(String(32))
    tensorflow_version: Mapped[str] = mapped_column(String(32))
    # the global fit this version serves from (NULL: a per-ticker network)
    global_model_id: Mapped[int | None] = mapped_column(ForeignKey("global_models.id"))


class ForecastRun(Base):
    """One execution of the forecasting pipeline (nightly, manual or backfill)."""

    __tablename__ = "forecast_runs"
    __table_args__ = (
        CheckConstraint(_in_list("trigger", RUN_TRIGGERS), name="trigger"),
        CheckConstraint(_in_list("status", RUN_STATUSES), name="status"),
        Index("ix_forecast_runs_status", "status"),
        Index("ix_forecast_runs_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    as_of_date: Mapped[date | None] = mapped_column(Date)
    trigger: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="running")
    host: Mapped[str] = mapped_column(String(255), default=socket.gethostname)
    pid: Mapped[int] = mapped_column(Integer, default=os.getpid)
    heartbeat_at: Mapped[datetime | None]
    message: Mapped[str | None] = mapped_column(Text)

    tickers: Mapped[list[ForecastRunTicker]] = relationship(
        back_populates="run",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ForecastRunTicker.ticker",
    )


class ForecastRunTicker(Base):
    """The outcome of one ticker within one run."""

    __tablename__ = "forecast_run_tickers"
    __table_args__ = (CheckConstraint(_in_list("status", TICKER_STATUSES), name="status"),)

    run_id: Mapped[int] = mapped_column(
        ForeignKey("forecast_runs.id", ondelete="CASCADE"), primary_key=True
    )
    ticker: Mapped[str] = mapped_column(String(20), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="running")
    error: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float | None] = mapped_column(FiniteFloat)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))

    run: Mapped[ForecastRun] = relationship(back_populates="tickers")


class CloseQuantiles:
    """Mixin: the close price quantiles (QUANTILE_COLUMNS), NULL when the model made none."""

    close_q05: Mapped[float | None] = mapped_column(FiniteFloat)
    close_q10: Mapped[float | None] = mapped_column(FiniteFloat)
    close_q25: Mapped[float | None] = mapped_column(FiniteFloat)
    close_q50: Mapped[float | None] = mapped_column(FiniteFloat)
    close_q75: Mapped[float | None] = mapped_column(FiniteFloat)
    close_q90: Mapped[float | None] = mapped_column(FiniteFloat)
    close_q95: Mapped[float | None] = mapped_column(FiniteFloat)


class Forecast(CloseQuantiles, Base):
    """One forecast candle: `horizon` sessions after `as_of_date`, dated `target_date`."""

    __tablename__ = "forecasts"
    __table_args__ = (
        UniqueConstraint(
            "ticker", "as_of_date", "horizon", name="uq_forecasts_ticker_asof_horizon"
        ),
        CheckConstraint("horizon BETWEEN 1 AND 4", name="horizon"),
        Index("ix_forecasts_ticker_as_of_date", "ticker", "as_of_date"),
        Index("ix_forecasts_ticker_target_date", "ticker", "target_date"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("forecast_runs.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    ticker: Mapped[str] = mapped_column(String(20))
    as_of_date: Mapped[date] = mapped_column(Date)
    horizon: Mapped[int] = mapped_column(Integer)
    target_date: Mapped[date] = mapped_column(Date)
    open: Mapped[float] = mapped_column(FiniteFloat)
    high: Mapped[float] = mapped_column(FiniteFloat)
    low: Mapped[float] = mapped_column(FiniteFloat)
    close: Mapped[float] = mapped_column(FiniteFloat)
    close_lo: Mapped[float | None] = mapped_column(FiniteFloat)
    close_hi: Mapped[float | None] = mapped_column(FiniteFloat)
    attention: Mapped[Any | None] = mapped_column(FiniteJSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Which model(s) produced the numbers, e.g. {"close": "naive", "range": "har_range"}; None is
    # stored as SQL NULL (not JSON 'null') so `model_mix IS NULL` finds forecasts without one.
    model_mix: Mapped[dict[str, Any] | None] = mapped_column(FiniteJSON(none_as_null=True))


class BaselineForecast(CloseQuantiles, Base):
    """One baseline model's forecast candle (naive, rw20, ewma, garch, ...), scored like forecasts.

    `model` is a free string (the set of baselines belongs to forecasting/ and grows there).
    """

    __tablename__ = "baseline_forecasts"
    __table_args__ = (
        UniqueConstraint(
            "ticker",
            "as_of_date",
            "horizon",
            "model",
            name="uq_baseline_forecasts_ticker_asof_horizon_model",
        ),
        CheckConstraint("horizon BETWEEN 1 AND 4", name="horizon"),
        Index("ix_baseline_forecasts_ticker_as_of_date", "ticker", "as_of_date"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("forecast_runs.id"))
    ticker: Mapped[str] = mapped_column(String(20))
    as_of_date: Mapped[date] = mapped_column(Date)
    horizon: Mapped[int] = mapped_column(Integer)
    target_date: Mapped[date] = mapped_column(Date)
    model: Mapped[str] = mapped_column(String(32))
    open: Mapped[float | None] = mapped_column(FiniteFloat)
    high: Mapped[float | None] = mapped_column(FiniteFloat)
    low: Mapped[float | None] = mapped_column(FiniteFloat)
    close: Mapped[float] = mapped_column(FiniteFloat)
    close_lo: Mapped[float | None] = mapped_column(FiniteFloat)
    close_hi: Mapped[float | None] = mapped_column(FiniteFloat)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunLock(Base):
    """A lease that makes nightly runs exclusive on databases without advisory locks (SQLite).

    The holder refreshes heartbeat_at; a lease whose holder process is gone (same host) or whose
    heartbeat is older than the lease time may be taken over. `token` makes take-over atomic.
    """

    __tablename__ = "run_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[str] = mapped_column(String(36))
    run_id: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


# The scheduler daemon's persistent job store (APScheduler's SQLAlchemyJobStore layout; the
# job_state column holds JSON written by jobs/jobstore.py, never a pickle).
apscheduler_jobs = Table(
    "apscheduler_jobs",
    Base.metadata,
    Column("id", String(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)

# One row (id 1): `version` is a random number that triggers (migration 0004) replace in every
# transaction writing a table whose rows the web app shows; the web cache's change marker.
data_changes = Table(
    "data_changes",
    Base.metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)
