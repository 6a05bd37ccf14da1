"""The forecast_accuracy and baseline_accuracy VIEWs (migration 0003) described for typed SELECTs.

They live in a MetaData of their own so create_all/autogenerate never treat them as tables. Both
views have the same score columns: actuals, errors, the naive baseline, coverage of the 50/80/90%
intervals and their Winkler scores (see alembic/versions/0003_*.py for the SQL).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Date, Float, Integer, MetaData, String, Table

from db.models import QUANTILE_COLUMNS

VIEWS_METADATA = MetaData()

_PRICES = ("open", "high", "low", "close", "close_lo", "close_hi")


def _score_columns() -> list[Column[Any]]:
    """The columns both accuracy views share after their own leading ones (same order)."""
    return [
        *(Column(f"actual_{name}", Float) for name in ("open", "high", "low", "close")),
        Column("abs_error", Float),
        Column("naive_close", Float),
        Column("naive_abs_error", Float),
        Column("in_interval", Integer),
        *(Column(name, Float) for name in QUANTILE_COLUMNS),
    ]


def _interval_score_columns() -> list[Column[Any]]:
    return [
        Column("in_interval_50", Integer),
        Column("in_interval_90", Integer),
        *(Column(f"winkler_{level}", Float) for level in (50, 80, 90)),
        Column("high_abs_error", Float),
        Column("low_abs_error", Float),
    ]


forecast_accuracy = Table(
    "forecast_accuracy",
    VIEWS_METADATA,
    Column("forecast_id", Integer),
    Column("run_id", Integer),
    Column("model_version_id", Integer),
    Column("ticker", String(20)),
    Column("as_of_date", Date),
    Column("horizon", Integer),
    Column("target_date", Date),
    *(Column(name, Float) for name in _PRICES),
    *_score_columns(),
    Column("model_mix", JSON),
    *_interval_score_columns(),
)

baseline_accuracy = Table(
    "baseline_accuracy",
    VIEWS_METADATA,
    Column("baseline_forecast_id", Integer),
    Column("run_id", Integer),
    Column("model", String(32)),
    Column("ticker", String(20)),
    Column("as_of_date", Date),
    Column("horizon", Integer),
    Column("target_date", Date),
    *(Column(name, Float) for name in _PRICES),
    *_score_columns(),
    *_interval_score_columns(),
)
