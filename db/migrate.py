"""Run the Alembic migrations programmatically (CLI `db upgrade`, tests, the daemon at start-up).

The Alembic Config is built from alembic.ini and alembic/ as installed with the package (the
`candlecast_files` data package, see db/packaged.py: site-packages/candlecast_files in an installed
wheel, the repository root in a checkout) and the URL is handed to alembic/env.py
through `cfg.attributes["url"]`, so no global state or environment variable is involved.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from db.packaged import FILES_PACKAGE, files_dir
from db.session import make_engine, sqlite_file_path


def migrations_home() -> Path:
    """The installed directory holding alembic.ini and alembic/ (the repository root in a checkout).

    Raises RuntimeError when the installation lacks them (an editable install made before they were
    packaged: run `pip install -e .` again).
    """
    home = files_dir("alembic.ini")
    if home is None or not (home / "alembic" / "env.py").is_file():
        raise RuntimeError(
            f"the migrations (alembic.ini, alembic/) are not installed with candlecast "
            f"(package {FILES_PACKAGE}): reinstall it"
        )
    return home


def alembic_config(url: str) -> Config:
    """An Alembic Config for `url`; leaves the application's logging configuration alone."""
    home = migrations_home()
    cfg = Config(str(home / "alembic.ini"))
    cfg.set_main_option("script_location", str(home / "alembic"))
    # The ini prepends its own directory to sys.path for the `alembic` command run from a
    # checkout; here the packages are importable already and sys.path is left alone.
    cfg.set_main_option("prepend_sys_path", "")
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
