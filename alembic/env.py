"""Alembic environment for candlecast.

The database URL comes from, in order: `config.attributes["url"]` (set by db.migrate), the
command line (`alembic -x url=...`), then the project's config loader (config.toml,
CANDLECAST_CONFIG, CANDLECAST_DATABASE_URL). Engines are built by db.session.make_engine so the
SQLite pragmas apply. SQLite migrations run in batch mode with foreign keys checked afterwards.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, text

from db.models import Base
from db.session import make_engine

config = context.config
target_metadata = Base.metadata
VIEWS = frozenset({"forecast_accuracy", "baseline_accuracy"})

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """The URL to migrate: attributes["url"], then -x url=..., then the project's config."""
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return str(url)
    from jobs.config import load_config  # only when no URL was given: keeps db/ free of jobs

    return load_config().database.url


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        include_object=_include_object,
        **kwargs,
    )


def _include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Ignore the accuracy views should a backend ever reflect them as tables."""
    return not (type_ == "table" and name in VIEWS)


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`) instead of running it."""
    url = database_url()
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    if is_sqlite:
        # Batch mode recreates tables; foreign keys must be off meanwhile (and can only be switched
        # outside a transaction), then every reference is verified before we finish.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    _configure(connection=connection, render_as_batch=is_sqlite)
    with context.begin_transaction():
        context.run_migrations()
    if is_sqlite:
        violations = connection.execute(text("PRAGMA foreign_key_check")).all()
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()
        if violations:
            raise RuntimeError(f"migration left foreign key violations: {violations[:5]}")


def run_migrations_online() -> None:
    """Connect and migrate; the engine is disposed afterwards."""
    engine = make_engine(database_url())
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
