"""Run the Alembic migrations programmatically (CLI `init-db`, tests, the daemon at start-up).

The Alembic Config is built from the repo-root alembic.ini and the URL is handed to alembic/env.py
through `cfg.attributes["url"]`, so no global state or environment variable is involved.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from db.session import make_engine, sqlite_file_path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def alembic_config(url: str) -> Config:
    """An Alembic Config for `url`; leaves the application's logging configuration alone."""
    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision` (default: the latest)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at `url` down to `revision` (default: an empty schema)."""
    command.downgrade(alembic_config(url), revision)


def head() -> str | None:
    """The latest revision id of the migration scripts."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def current(url: str) -> str | None:
    """The revision the database at `url` is at, or None if it was never migrated.

    A SQLite file that does not exist yet is reported as None without creating it.
    """
    path = sqlite_file_path(url)
    if path is not None and not path.exists():
        return None
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
