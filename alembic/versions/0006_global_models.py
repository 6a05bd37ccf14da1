"""global_models: one row per fit of the global network; model versions point to theirs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 00:00:00+00:00

A night with [model] scope = "global" fits one network over every ticker and stores one model
version per ticker (each with the shared `.keras` bytes, so pruning, the live fallback and
`candlecast forecast` work per ticker as before). The fit itself is a `global_models` row: its
kind ("full" or "warm"), why (`reason`), the fit it warm-started from (`parent_id`), the gate,
the tickers and the metrics; `model_versions.global_model_id` points to it (NULL for a
per-ticker network). On SQLite the column is added in batch mode, which rebuilds
model_versions: its data-change triggers (revision 0005) are created again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sqlite_triggers() -> None:
    """Revision 0005's triggers on model_versions (a batch rebuild drops them)."""
    if op.get_context().dialect.name != "sqlite":
        return
    for event in ("INSERT", "UPDATE", "DELETE"):
        op.execute(f"DROP TRIGGER IF EXISTS data_changed_model_versions_{event.lower()}")
        op.execute(
            f"CREATE TRIGGER data_changed_model_versions_{event.lower()} AFTER {event} ON "
            "model_versions BEGIN UPDATE data_changes SET version = random() WHERE id = 1; END"
        )


def upgrade() -> None:
    op.create_table(
        "global_models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("train_start", sa.Date(), nullable=False),
        sa.Column("train_end", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("tickers", sa.JSON(), nullable=False),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("gate", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.CheckConstraint("kind IN ('full', 'warm')", name=op.f("ck_global_models_kind")),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["global_models.id"],
            name=op.f("fk_global_models_parent_id_global_models"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_global_models")),
    )
    op.create_index("ix_global_models_train_end", "global_models", ["train_end"])
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("global_model_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_model_versions_global_model_id_global_models"),
            "global_models",
            ["global_model_id"],
            ["id"],
        )
    _sqlite_triggers()


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint(
            op.f("fk_model_versions_global_model_id_global_models"), type_="foreignkey"
        )
        batch.drop_column("global_model_id")
    _sqlite_triggers()
    op.drop_index("ix_global_models_train_end", table_name="global_models")
    op.drop_table("global_models")
