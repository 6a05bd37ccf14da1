"""Close quantiles and model mix on forecasts, baseline_forecasts, interval scores in the views.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 00:00:00+00:00

Spelled out here (not imported from db.models) so this revision never changes when the models do;
tests/db/test_migrations.py checks that both agree. The view SQL is identical on SQLite and
PostgreSQL (ABS, CASE, LEFT JOIN and float arithmetic only).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUANTILE_COLUMNS = (
    "close_q05",
    "close_q10",
    "close_q25",
    "close_q50",
    "close_q75",
    "close_q90",
    "close_q95",
)

# The forecast_accuracy view of revision 0001, restored by downgrade().
FORECAST_ACCURACY_VIEW_0001 = """
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


def _in_interval(lo: str, hi: str, name: str) -> str:
    """1/0 once the actual close and both bounds are known (bounds inclusive), else NULL."""
    return f"""    CASE
        WHEN a.close IS NULL OR f.{lo} IS NULL OR f.{hi} IS NULL THEN NULL
        WHEN a.close >= f.{lo} AND a.close <= f.{hi} THEN 1
        ELSE 0
    END AS {name}"""


def _winkler(lo: str, hi: str, penalty: str, name: str) -> str:
    """Winkler interval score (hi - lo) + 2/alpha * miss distance; `penalty` is 2/alpha."""
    return f"""    CASE
        WHEN a.close IS NULL OR f.{lo} IS NULL OR f.{hi} IS NULL THEN NULL
        WHEN a.close < f.{lo} THEN (f.{hi} - f.{lo}) + {penalty} * (f.{lo} - a.close)
        WHEN a.close > f.{hi} THEN (f.{hi} - f.{lo}) + {penalty} * (a.close - f.{hi})
        ELSE f.{hi} - f.{lo}
    END AS {name}"""


def _accuracy_view(name: str, table: str, id_column: str, own_columns: Sequence[str]) -> str:
    """CREATE VIEW `name` over `table` (alias f) joined to the actual and the as-of candle."""
    columns = [
        f"    f.id AS {id_column}",
        *(f"    f.{c} AS {c}" for c in own_columns),
        *(
            f"    f.{c} AS {c}"
            for c in ("ticker", "as_of_date", "horizon", "target_date", "open", "high", "low")
        ),
        "    f.close AS close",
        "    f.close_lo AS close_lo",
        "    f.close_hi AS close_hi",
        *(f"    a.{c} AS actual_{c}" for c in ("open", "high", "low", "close")),
        "    ABS(f.close - a.close) AS abs_error",
        "    n.close AS naive_close",
        "    ABS(n.close - a.close) AS naive_abs_error",
        _in_interval("close_lo", "close_hi", "in_interval"),
        *(f"    f.{c} AS {c}" for c in QUANTILE_COLUMNS),
    ]
    if table == "forecasts":
        columns.append("    f.model_mix AS model_mix")
    columns += [
        _in_interval("close_q25", "close_q75", "in_interval_50"),
        _in_interval("close_q05", "close_q95", "in_interval_90"),
        # 2/alpha with alpha = 0.5, 0.2, 0.1
        _winkler("close_q25", "close_q75", "4.0", "winkler_50"),
        _winkler("close_lo", "close_hi", "10.0", "winkler_80"),
        _winkler("close_q05", "close_q95", "20.0", "winkler_90"),
        "    ABS(f.high - a.high) AS high_abs_error",
        "    ABS(f.low - a.low) AS low_abs_error",
    ]
    body = ",\n".join(columns)
    return f"""
CREATE VIEW {name} AS
SELECT
{body}
FROM {table} AS f
LEFT JOIN candles AS a ON a.ticker = f.ticker AND a.session_date = f.target_date
LEFT JOIN candles AS n ON n.ticker = f.ticker AND n.session_date = f.as_of_date
"""


FORECAST_ACCURACY_VIEW = _accuracy_view(
    "forecast_accuracy", "forecasts", "forecast_id", ("run_id", "model_version_id")
)
BASELINE_ACCURACY_VIEW = _accuracy_view(
    "baseline_accuracy", "baseline_forecasts", "baseline_forecast_id", ("run_id", "model")
)


def upgrade() -> None:
    """Add the forecast columns and baseline_forecasts; recreate forecast_accuracy, add a view."""
    op.execute("DROP VIEW IF EXISTS forecast_accuracy")
    with op.batch_alter_table("forecasts") as batch:
        for name in QUANTILE_COLUMNS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch.add_column(sa.Column("model_mix", sa.JSON(), nullable=True))
    op.create_table(
        "baseline_forecasts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("ticker", sa.String(20), nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("horizon", sa.Integer(), nullable=False),
        sa.Column("target_date", sa.Date(), nullable=False),
        sa.Column("model", sa.String(32), nullable=False),
        sa.Column("open", sa.Float(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("close", sa.Float(), nullable=False),
        sa.Column("close_lo", sa.Float(), nullable=True),
        sa.Column("close_hi", sa.Float(), nullable=True),
        *(sa.Column(name, sa.Float(), nullable=True) for name in QUANTILE_COLUMNS),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("horizon BETWEEN 1 AND 4", name=op.f("ck_baseline_forecasts_horizon")),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["forecast_runs.id"],
            name=op.f("fk_baseline_forecasts_run_id_forecast_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_baseline_forecasts")),
        sa.UniqueConstraint(
            "ticker",
            "as_of_date",
            "horizon",
            "model",
            name=op.f("uq_baseline_forecasts_ticker_asof_horizon_model"),
        ),
    )
    op.create_index(
        op.f("ix_baseline_forecasts_ticker_as_of_date"),
        "baseline_forecasts",
        ["ticker", "as_of_date"],
    )
    op.execute(FORECAST_ACCURACY_VIEW)
    op.execute(BASELINE_ACCURACY_VIEW)


def downgrade() -> None:
    """Back to revision 0002: the views first (SQLite's batch rename checks them), then tables."""
    op.execute("DROP VIEW IF EXISTS baseline_accuracy")
    op.execute("DROP VIEW IF EXISTS forecast_accuracy")
    op.drop_index(op.f("ix_baseline_forecasts_ticker_as_of_date"), table_name="baseline_forecasts")
    op.drop_table("baseline_forecasts")
    with op.batch_alter_table("forecasts") as batch:
        batch.drop_column("model_mix")
        for name in reversed(QUANTILE_COLUMNS):
            batch.drop_column(name)
    op.execute(FORECAST_ACCURACY_VIEW_0001)
