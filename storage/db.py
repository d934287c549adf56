"""Engine, sessions and schema upgrades for any SQLAlchemy URL (SQLite by default).

SQLite is the default because the bot should run with nothing else installed. It is tuned on
every new connection: WAL so the bot's reads never wait for the writer, foreign keys (SQLite
leaves them off), a busy timeout so a second process waits for a lock instead of failing at
once, and ``synchronous=NORMAL`` (durable at each WAL checkpoint; a power cut may lose the last
few commits but never corrupts the file; measured about 1.4x the writes of ``FULL``).

PostgreSQL works by URL (``postgresql+psycopg://user:pass@host/db``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DATABASE_URL = "sqlite:///data/friendbot.db"
"""Relative to the working directory, like every default path of the project."""

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long an SQLite connection waits for another writer before 'database is locked'."""

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Any constant works; it only has to be the same for every process migrating one database.
_PG_MIGRATION_LOCK_KEY = 0x66_72_69_65_6E_64  # "friend"


def database_url(environ: os._Environ[str] | dict[str, str] | None = None) -> str:
    """``DATABASE_URL`` from the environment, else the SQLite default.

    Every entry point (bot, retraining, scheduler) reads the URL through this, so they all
    meet in the same database without passing it around.
    """
    env = os.environ if environ is None else environ
    return env.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL


def _normalize_url(url: str | URL) -> URL:
    """Map the bare ``postgresql://``/``postgres://`` forms to the installed driver (psycopg 3).

    SQLAlchemy would pick psycopg2 for a bare URL, which we do not depend on; people paste
    URLs from hosting dashboards in that form.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """Connection pragmas; they are per connection, so a connect event sets them every time."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An Engine for ``url``; SQLite files get their directory created and the pragmas above.

    Extra keyword arguments go to ``create_engine`` (e.g. ``echo=True``).
    """
    parsed = _normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # pysqlite's own timeout is a busy handler too; keep it in step with the pragma.
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    # A long-running bot outlives server restarts and idle-connection reapers.
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for ``with Session.begin() as session:`` blocks.

    ``expire_on_commit=False`` so rows returned inside the block (the recent messages the bot
    formats into a prompt) stay readable after it commits and closes.
    """
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine | None = None) -> Any:
    """The Alembic configuration for the migrations shipped in this package (no .ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        # Escape '%' for ConfigParser interpolation (URL-encoded passwords contain it).
        url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
        config.set_main_option("sqlalchemy.url", url)
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic ``upgrade head``); the app calls it at start.

    The whole upgrade is one transaction holding a database-wide lock (SQLite ``BEGIN
    IMMEDIATE``, a PostgreSQL advisory lock), so a bot and a scheduler starting together on a
    fresh database do not both try to create the tables: the second waits, then finds the
    schema current and does nothing.
    """
    from alembic import command

    config = alembic_config(engine)
    with engine.connect() as connection:
        backend = engine.dialect.name
        if backend == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif backend == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()
