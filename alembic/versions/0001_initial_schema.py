"""Initial schema: candles, model_versions, forecast runs, forecasts and the forecast_accuracy view.

Revision ID: 0001
Revises:
Create Date: 2024-01-01 00:00:00+00:00

The schema is spelled out here (not imported from db.models) so this revision never changes when
the models do; tests/db/test_migrations.py checks that both agree.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Identical SQL on SQLite and PostgreSQL: ABS, CASE and LEFT JOIN on (ticker, date) only.
# in_interval is 1/0 once the actual close and both interval bounds are known, else NULL.
FORECAST_ACCURACY_VIEW = """
CREATE VIEW forecast_accuracy AS
SELECT
    f.id AS forecast_id,
    f.run_id AS run_id,
    f.model_version_id AS model_version_id,
    f.ticker AS ticker,
    f.as_of_date AS as_of_date,
    f.horizon AS horizon,
    f.target_date AS target_date,
    f.open AS open,
    f.high AS high,
    f.low AS low,
    f.close AS close,
    f.close_lo AS close_lo,
    f.close_hi AS close_hi,
    a.open AS actual_open,
    a.high AS actual_high,
    a.low AS actual_low,
    a.close AS actual_close,
    ABS(f.close - a.close) AS abs_error,
    n.close AS naive_close,
    ABS(n.close - a.close) AS naive_abs_error,
    CASE
        WHEN a.close IS NULL OR f.close_lo IS NULL OR f.close_hi IS NULL THEN NULL
        WHEN a.close >= f.close_lo AND a.close <= f.close_hi THEN 1
        ELSE 0
    END AS in_interval
FROM forecasts AS f
LEFT JOIN candles AS a ON a.ticker = f.ticker AND a.session_date = f.target_date
LEFT JOIN candles AS n ON n.ticker = f.ticker AND n.session_date = f.as_of_date
"""


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create all tables, constraints, indexes and the forecast_accuracy view."""
    op.create_table(
        "candles",
        sa.Column("ticker", sa.String(20), nullable=False),
        sa.Column("session_date", sa.Date(), nullable=False),
        sa.Column("open", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("close", sa.Float(), nullable=False),
        sa.Column("volume", sa.Float(), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("fetched_at", _tz(), nullable=False),
        sa.PrimaryKeyConstraint("ticker", "session_date", name=op.f("pk_candles")),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticker", sa.String(20), nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("train_start", sa.Date(), nullable=False),
        sa.Column("train_end", sa.Date(), nullable=False),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("normalization", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("val_loss", sa.Float(), nullable=True),
        sa.Column("artifact", sa.LargeBinary(), nullable=True),
        sa.Column("artifact_path", sa.String(1024), nullable=True),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("keras_version", sa.String(32), nullable=False),
        sa.Column("tensorflow_version", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
    )
    op.create_index(
        op.f("ix_model_versions_ticker_train_end_id"),
        "model_versions",
        ["ticker", "train_end", "id"],
    )
    op.create_table(
        "forecast_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", _tz(), nullable=False),
        sa.Column("finished_at", _tz(), nullable=True),
        sa.Column("as_of_date", sa.Date(), nullable=True),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("heartbeat_at", _tz(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "\"trigger\" IN ('schedule', 'manual', 'backfill')",
            name=op.f("ck_forecast_runs_trigger"),
        ),
        sa.CheckConstraint(
            "\"status\" IN ('running', 'succeeded', 'partial', 'failed', 'interrupted', "
            "'abandoned')",
            name=op.f("ck_forecast_runs_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forecast_runs")),
    )
    op.create_index(op.f("ix_forecast_runs_status"), "forecast_runs", ["status"])
    op.create_index(op.f("ix_forecast_runs_started_at"), "forecast_runs", ["started_at"])
    op.create_table(
        "forecast_run_tickers",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("ticker", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "\"status\" IN ('running', 'succeeded', 'failed')",
            name=op.f("ck_forecast_run_tickers_status"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["forecast_runs.id"],
            name=op.f("fk_forecast_run_tickers_run_id_forecast_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_forecast_run_tickers_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("run_id", "ticker", name=op.f("pk_forecast_run_tickers")),
    )
    op.create_table(
        "forecasts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("ticker", sa.String(20), nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("horizon", sa.Integer(), nullable=False),
        sa.Column("target_date", sa.Date(), nullable=False),
        sa.Column("open", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("close", sa.Float(), nullable=False),
        sa.Column("close_lo", sa.Float(), nullable=True),
        sa.Column("close_hi", sa.Float(), nullable=True),
        sa.Column("attention", sa.JSON(), nullable=True),
        sa.Column("created_at", _tz(), nullable=False),
        sa.CheckConstraint("horizon BETWEEN 1 AND 4", name=op.f("ck_forecasts_horizon")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["forecast_runs.id"], name=op.f("fk_forecasts_run_id_forecast_runs")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_forecasts_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forecasts")),
        sa.UniqueConstraint(
            "ticker", "as_of_date", "horizon", name=op.f("uq_forecasts_ticker_asof_horizon")
        ),
    )
    op.create_index(op.f("ix_forecasts_ticker_as_of_date"), "forecasts", ["ticker", "as_of_date"])
    op.create_index(op.f("ix_forecasts_ticker_target_date"), "forecasts", ["ticker", "target_date"])
    op.execute(FORECAST_ACCURACY_VIEW)


def downgrade() -> None:
    """Drop everything upgrade() created, dependants first."""
    op.execute("DROP VIEW IF EXISTS forecast_accuracy")
    op.drop_index(op.f("ix_forecasts_ticker_target_date"), table_name="forecasts")
    op.drop_index(op.f("ix_forecasts_ticker_as_of_date"), table_name="forecasts")
    op.drop_table("forecasts")
    op.drop_table("forecast_run_tickers")
    op.drop_index(op.f("ix_forecast_runs_started_at"), table_name="forecast_runs")
    op.drop_index(op.f("ix_forecast_runs_status"), table_name="forecast_runs")
    op.drop_table("forecast_runs")
    op.drop_index(op.f("ix_model_versions_ticker_train_end_id"), table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_table("candles")
