"""model_versions.calibration: each version's calibration in its own JSON column.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 14:30:00+00:00

Until now the calibration (with the HAR-range fit, the gate and, for a global network, its
universe) was stored inside `normalization` under the key "calibration". Upgrade moves each row's
normalization["calibration"] into the new column and removes the key; a row without the key keeps
its normalization and gets NULL. Downgrade puts every non-NULL calibration back under the key and
drops the column. A JSON null stays a JSON null (the column holds 'null', not SQL NULL), so
nothing is lost either way. The rows are moved in Python through parameterised statements, so
offline (`--sql`) output cannot carry them: this revision refuses to run offline.
On SQLite batch mode may rebuild model_versions (dropping the column does), which drops its
data-change triggers: they are created again with revision 0006's code, as 0006 did after its
own rebuild.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "calibration"
CHUNK = 1000  # rows per executemany

model_versions = sa.table(
    "model_versions",
    sa.column("id", sa.Integer()),
    sa.column("normalization", sa.JSON()),
    sa.column("calibration", sa.JSON()),  # JSON(): Python None binds as JSON 'null'
)
columns = model_versions.c


def _refuse_offline() -> None:
    if context.is_offline_mode():
        raise RuntimeError(
            "revision 0007 moves each model version's calibration between JSON columns and "
            "cannot be rendered as SQL (--sql): run it online (candlecast db upgrade/downgrade)"
        )


def _sqlite_triggers() -> None:
    """Revision 0005's triggers on model_versions again (a batch rebuild drops them)."""
    context.script.get_revision("0006").module._sqlite_triggers()


def _update(values: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """Set the columns `values` of the rows given by id (`k_id`), `v_<column>` their values."""
    update = (
        sa.update(model_versions)
        .where(columns.id == sa.bindparam("k_id"))
        .values({name: sa.bindparam(f"v_{name}") for name in values})
    )
    conn = op.get_bind()
    for start in range(0, len(rows), CHUNK):
        conn.execute(update, rows[start : start + CHUNK])


def upgrade() -> None:
    _refuse_offline()
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column(KEY, sa.JSON(), nullable=True))
    moved = []
    for row in op.get_bind().execute(sa.select(columns.id, columns.normalization)):
        if isinstance(row.normalization, dict) and KEY in row.normalization:
            rest = dict(row.normalization)
            calibration = rest.pop(KEY)
            moved.append({"k_id": row.id, "v_normalization": rest, f"v_{KEY}": calibration})
    _update(("normalization", KEY), moved)
    _sqlite_triggers()


def downgrade() -> None:
    _refuse_offline()
    # SQL NULL: the key was absent; a JSON null ('null', not NULL) goes back as the key's value
    query = sa.select(columns.id, columns.normalization, columns.calibration).where(
        columns.calibration.is_not(None)
    )
    back = [
        {"k_id": row.id, "v_normalization": {**row.normalization, KEY: row.calibration}}
        for row in op.get_bind().execute(query)
    ]
    _update(("normalization",), back)
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column(KEY)
    _sqlite_triggers()
