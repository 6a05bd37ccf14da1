"""Clean numbers: volume in whole shares, prices without float32 noise, no NaN stored.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 00:00:00+00:00

Brings stored rows to what the code now writes (issue 17 items 5-7), keeping every row:
- candles.volume becomes BIGINT (rounded to whole shares);
- a candle price that went through float32 (exactly representable as float32) becomes the
  shortest decimal of that float32, 192.52999877929688 -> 192.53 (the rule of
  forecasting.numbers.strip_float32_noise at this revision);
- forecast prices and quantiles (forecasts, baseline_forecasts) are rounded to 6 significant
  digits (forecasting.numbers.SIGNIFICANT_DIGITS at this revision);
- NaN and infinity in nullable float columns become NULL (PostgreSQL stored NaN where a
  baseline has no interval; SQLite never stores NaN), and in JSON text null (SQLite only:
  PostgreSQL's json type never accepted them).
The rules are spelled out here (not imported) so this revision never changes when the code does.
SQLite rebuilds candles (batch mode), so the views over it are dropped and recreated with
revision 0003's SQL. Offline (`--sql`) output has the schema change only: rows cannot be read.
Downgrade: volume back to FLOAT; the cleaned values stay (nothing they held is lost).
"""

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from alembic import context, op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRICES = ("open", "high", "low", "close")
QUANTILE_COLUMNS = tuple(f"close_q{q:02d}" for q in (5, 10, 25, 50, 75, 90, 95))
FORECAST_PRICES = (*PRICES, "close_lo", "close_hi", *QUANTILE_COLUMNS)
DIGITS = 6
# Nullable float columns: NaN and infinity there become NULL.
NULLABLE_FLOATS = {
    "model_versions": ("val_loss",),
    "forecast_run_tickers": ("duration_s",),
    "forecasts": ("close_lo", "close_hi", *QUANTILE_COLUMNS),
    "baseline_forecasts": ("open", "high", "low", "close_lo", "close_hi", *QUANTILE_COLUMNS),
}
JSON_COLUMNS = {
    "model_versions": ("hyperparameters", "normalization", "metrics"),
    "forecasts": ("attention", "model_mix"),
}
CHUNK = 5000  # rows per executemany


def _views() -> list[str]:
    """CREATE VIEW statements of the accuracy views (unchanged since revision 0003)."""
    views = context.script.get_revision("0003").module
    return [views.FORECAST_ACCURACY_VIEW, views.BASELINE_ACCURACY_VIEW]


def _set_volume_type(new: sa.types.TypeEngine, old: sa.types.TypeEngine, using: str) -> None:
    """Change candles.volume's type; SQLite rebuilds the table, so the views go meanwhile."""
    op.execute("DROP VIEW IF EXISTS baseline_accuracy")
    op.execute("DROP VIEW IF EXISTS forecast_accuracy")
    with op.batch_alter_table("candles") as batch:
        batch.alter_column(
            "volume", type_=new, existing_type=old, existing_nullable=False, postgresql_using=using
        )
    for view in _views():
        op.execute(view)


def _without_float32_noise(value: float) -> float:
    """The shortest decimal of a float32-exact value (192.52999877929688 -> 192.53), else value."""
    with np.errstate(over="ignore"):
        single = np.float32(value)
    return float(str(single)) if float(single) == value else value


def _six_digits(value: float | None) -> float | None:
    if value is None or value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{DIGITS}g}")


def _finite_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _finite_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _finite_json_text(raw: Any) -> Any:
    """JSON text (SQLite) with NaN and infinity as null; a parsed value (PostgreSQL) as it is."""
    return json.dumps(_finite_json(json.loads(raw))) if isinstance(raw, str) else raw


def _rewrite(
    table: str,
    keys: Sequence[str],
    columns: Sequence[str],
    fix: Callable[[Any], Any],
    where: str | None = None,
) -> None:
    """Apply `fix` to `columns` of every row of `table` (or those `where` selects) and update
    the rows it changes; `keys` identify a row."""
    conn = op.get_bind()
    t = sa.table(table, *(sa.column(name) for name in (*keys, *columns)))
    query = sa.select(t)
    if where is not None:
        query = query.where(sa.text(where))
    changed = []
    for row in conn.execute(query).mappings():
        new = {name: fix(row[name]) for name in columns}
        if any(new[name] != row[name] for name in columns):
            changed.append({**{f"k_{k}": row[k] for k in keys}, **{f"v_{c}": new[c] for c in new}})
    update = (
        sa.update(t)
        .where(*(t.c[k] == sa.bindparam(f"k_{k}") for k in keys))
        .values({name: sa.bindparam(f"v_{name}") for name in columns})
    )
    for start in range(0, len(changed), CHUNK):
        conn.execute(update, changed[start : start + CHUNK])


def _clean_rows() -> None:
    """The data part of upgrade(): every stored number as the code now writes it."""
    conn = op.get_bind()
    nan, inf = float("nan"), float("inf")
    for table, columns in NULLABLE_FLOATS.items():
        for name in columns:  # NaN = NaN in PostgreSQL; SQLite binds NaN as NULL (a no-op)
            conn.execute(
                sa.text(f"UPDATE {table} SET {name} = NULL WHERE {name} IN (:nan, :inf, :ninf)"),
                {"nan": nan, "inf": inf, "ninf": -inf},
            )
    _rewrite("candles", ("ticker", "session_date"), PRICES, _without_float32_noise)
    for table in ("forecasts", "baseline_forecasts"):
        _rewrite(table, ("id",), FORECAST_PRICES, _six_digits)
    for table, columns in JSON_COLUMNS.items():
        for name in columns:
            text = f"CAST({name} AS TEXT)"
            where = f"{text} LIKE '%NaN%' OR {text} LIKE '%Infinity%'"
            _rewrite(table, ("id",), (name,), _finite_json_text, where=where)


def upgrade() -> None:
    """Volume to BIGINT (whole shares), then the rows cleaned (online only)."""
    op.execute("UPDATE candles SET volume = ROUND(volume)")
    _set_volume_type(sa.BigInteger(), sa.Float(), "round(volume)::bigint")
    if not context.is_offline_mode():
        _clean_rows()


def downgrade() -> None:
    """Volume back to FLOAT; cleaned numbers stay as they are."""
    _set_volume_type(sa.Float(), sa.BigInteger(), "volume::double precision")
