"""The index database: engine creation (SQLite or PostgreSQL via psycopg 3) and Alembic migrations.

The Alembic configuration is built in code (script location = this package's migrations/ folder), so
`inctrl index` migrates its database on start without an alembic.ini next to the working directory.
"""
from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def create_index_engine(url: str) -> Engine:
    """An engine for the index URL: sqlite:///file or postgresql+psycopg://user@host:port/db.

    A plain postgresql:// URL is given the psycopg (3) driver. SQLite files get WAL (the console reads
    while the indexer writes) and a busy timeout instead of failing at once on a lock.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        return create_engine(parsed, pool_pre_ping=True)
    raise ValueError(f"index database URL {parsed.render_as_string(hide_password=True)!r}: only sqlite and postgresql are supported")


def _sqlite_pragmas(connection: object, _record: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config(engine: Engine) -> Config:
    """Alembic configuration for this package's migrations, bound to the engine (no alembic.ini file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the index schema to `revision` (idempotent: an up-to-date database is left as it is)."""
    logger.info("migrating inspection index", extra={"database": engine.url.render_as_string(hide_password=True), "revision": revision})
    command.upgrade(alembic_config(engine), revision)


def current_tables(engine: Engine) -> set[str]:
    """Names of the tables present (for health checks and tests)."""
    return set(inspect(engine).get_table_names())
