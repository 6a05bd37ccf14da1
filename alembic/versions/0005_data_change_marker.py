"""data_changes: a version the database replaces at every write to a table the web app shows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-13 00:00:00+00:00

One row (id 1) holds `version`, a random 64-bit number. Triggers on each table whose rows a page
or answer shows replace it with a new random number in the writing transaction, so every
committed write changes it (inserts, updates in place, deletes, TRUNCATE; raw SQL as well as the
app's own writes) and a rolled-back one does not. The web app's response cache keys on it
(db.web_queries.change_marker). Random rather than a counter: neither a rebuilt schema
(downgrade base + upgrade: ids restart) nor writes after a restored backup bring back a version
an old ETag was made from.

SQLite: AFTER INSERT/UPDATE/DELETE triggers per row (~1 us a row). PostgreSQL: one BEFORE
statement trigger per table (TRUNCATE included) calling candlecast_data_changed(), which updates
the row once per transaction (the first write of a transaction takes the row lock, so concurrent
writers queue there before locking any other row: no lock-order deadlock between them).

A SQLite batch migration that recreates one of these tables drops its triggers: such a migration
must create them again (tests/db/test_change_marker.py fails at head otherwise).
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The tables whose rows a page or an answer shows (run_locks and apscheduler_jobs are not).
SHOWN_TABLES = (
    "candles",
    "model_versions",
    "forecast_runs",
    "forecast_run_tickers",
    "forecasts",
    "baseline_forecasts",
)
SQLITE_EVENTS = ("INSERT", "UPDATE", "DELETE")
PG_FUNCTION = "candlecast_data_changed"
PG_TRIGGER = "data_changed"

# Once per transaction and schema: the setting remembers the last (transaction, schema) bumped;
# it is transaction-local and undone by a rollback to a savepoint like the update itself. The
# table is the one in the schema of the table written. Not SECURITY DEFINER: a role that writes
# a shown table needs UPDATE on data_changes too (without it its write fails, never goes unseen).
PG_FUNCTION_SQL = f"""
CREATE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    mark text := txid_current()::text || ' ' || TG_TABLE_SCHEMA;
BEGIN
    IF current_setting('candlecast.data_changed', true) IS DISTINCT FROM mark THEN
        EXECUTE format('UPDATE %I.data_changes SET version = $1 WHERE id = 1', TG_TABLE_SCHEMA)
            USING floor((random() - 0.5) * 18e18)::bigint;
        PERFORM set_config('candlecast.data_changed', mark, true);
    END IF;
    RETURN NULL;
END
$$
"""


def _sqlite_trigger(table: str, event: str) -> str:
    return (
        f"CREATE TRIGGER data_changed_{table}_{event.lower()} AFTER {event} ON {table} "
        "BEGIN UPDATE data_changes SET version = random() WHERE id = 1; END"
    )


def upgrade() -> None:
    table = op.create_table(
        "data_changes",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_data_changes_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_changes")),
    )
    op.bulk_insert(table, [{"id": 1, "version": secrets.randbits(63)}])
    if op.get_context().dialect.name == "postgresql":
        op.execute(sa.text(PG_FUNCTION_SQL))
        for name in SHOWN_TABLES:
            op.execute(
                f"CREATE TRIGGER {PG_TRIGGER} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE "
                f"ON {name} FOR EACH STATEMENT EXECUTE PROCEDURE {PG_FUNCTION}()"
            )
    else:
        for name in SHOWN_TABLES:
            for event in SQLITE_EVENTS:
                op.execute(_sqlite_trigger(name, event))


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for name in SHOWN_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {PG_TRIGGER} ON {name}")
        op.execute(f"DROP FUNCTION IF EXISTS {PG_FUNCTION}()")
    else:
        for name in SHOWN_TABLES:
            for event in SQLITE_EVENTS:
                op.execute(f"DROP TRIGGER IF EXISTS data_changed_{name}_{event.lower()}")
    op.drop_table("data_changes")
