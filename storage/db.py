"""Engine, sessions and schema upgrades for any SQLAlchemy URL (SQLite by default).

SQLite is the default because the bot should run with nothing else installed. It is tuned on
every new connection: WAL so the bot's reads never wait for the writer, foreign keys (SQLite
leaves them off), a busy timeout so a second process waits for a lock instead of failing at
once, and ``synchronous=NORMAL`` (durable at each WAL checkpoint; a power cut may lose the last
few commits but never corrupts the file; measured about 1.4x the writes of ``FULL``).

PostgreSQL works by URL (``postgresql+psycopg://user:pass@host/db``).

Commands that only read (``friendbot history``, ``friendbot runs``) open the database with
:func:`open_existing` instead: it creates, migrates and writes nothing, and turns every way a
database can be unusable (missing, empty, damaged, another schema version, unreachable) into
one :class:`~storage.errors.StorageError` line.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from storage.errors import StorageError

DEFAULT_DATABASE_URL = "sqlite:///data/friendbot.db"
"""Relative to the working directory, like every default path of the project."""

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long an SQLite connection waits for another writer before 'database is locked'."""

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""

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
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection holds the lock it needs.

    SQLite answers this pragma "database is locked" at once, without calling the busy
    handler, when another connection is converting the same fresh file or is inside its first
    write (a bot and a scheduler starting together on a new database: the race
    ``tests/storage/test_db.py`` runs). Waiting as long as any other lock would is what a
    user expects, so retry for up to the busy timeout, then give up with SQLite's error.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


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


@contextmanager
def durable_session(engine: Engine) -> Iterator[Session]:
    """A transaction that is on disk when the block ends, power cut included.

    Everyday commits use SQLite's ``synchronous=NORMAL`` (see above): a power cut may lose the
    last ones. For the few writes that must survive it (the inbox of fetched Telegram updates,
    which Telegram forgets once confirmed) this connection syncs at commit (``FULL``), which
    also makes every earlier commit in the log durable. PostgreSQL commits are durable anyway.
    """
    with engine.connect() as connection:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:  # outside any transaction, where SQLite applies it
            connection.exec_driver_sql("PRAGMA synchronous=FULL")
            connection.commit()
        try:
            with Session(bind=connection, expire_on_commit=False) as session, session.begin():
                yield session
        finally:
            if sqlite:
                _back_to_normal_sync(connection)


def _back_to_normal_sync(connection: Any) -> None:
    """Reset the pragma; a connection that cannot be reset is dropped, never raised about
    (the transaction it served is committed: failing now would hide that)."""
    try:
        connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
        connection.commit()
    except DBAPIError:
        connection.invalidate()


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

    A database whose schema is newer than this version knows (written by a newer friendbot)
    is refused with a :class:`StorageError` rather than touched, as is one that cannot be
    reached or written.
    """
    from alembic import command

    config = alembic_config(engine)
    try:
        with engine.connect() as connection:
            backend = engine.dialect.name
            if backend == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif backend == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
                )
            _refuse_unknown_revision(connection, _where(engine.url))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()
    except DBAPIError as exc:
        raise storage_error(engine.url, exc) from None


def head_revision() -> str:
    """The schema version this code writes and expects (the newest migration)."""
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }


def _current_revision(connection: Any) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _refuse_unknown_revision(connection: Any, where: str) -> None:
    current = _current_revision(connection)
    if current is not None and current not in _known_revisions():
        raise StorageError(
            f"{where}: database schema version {current} is newer than this friendbot knows "
            f"(up to {head_revision()}); upgrade friendbot to use it"
        )


# --- opening a database only to read it --------------------------------------------------------


def open_existing(url: str | URL) -> Engine:
    """An engine on an existing friendbot database at the current schema version, for
    commands that only read: nothing is created, migrated or written, and every problem is one
    :class:`StorageError` line (missing, empty, damaged, another version, unreachable).

    SQLite files are opened read-only; one without a write-ahead log (nobody is writing it)
    is opened ``immutable``, so reading it leaves no ``-wal``/``-shm`` files behind and works in
    a read-only directory. PostgreSQL sessions are made read-only. Read through
    :func:`reading`, which keeps errors met while reading to one line as well.
    """
    try:
        parsed = _normalize_url(url)
    except ArgumentError:
        raise StorageError(
            "DATABASE_URL: not a database URL (e.g. sqlite:///data/friendbot.db or "
            "postgresql://user:password@host/db)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        engine = _open_sqlite_readonly(parsed)
    else:
        try:
            engine = create_engine(parsed, poolclass=NullPool)
        except (ImportError, NoSuchModuleError):
            raise StorageError(
                f"DATABASE_URL: {_where(parsed)}: no driver for this database installed "
                "(friendbot works with SQLite and PostgreSQL)"
            ) from None
        if engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _read_only_postgres)
    try:
        _check_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


@contextmanager
def reading(engine: Engine) -> Iterator[Session]:
    """A session on ``engine`` (from :func:`open_existing`); database errors met inside the
    block (a damaged page found late) become one :class:`StorageError` line."""
    try:
        with Session(engine) as session:
            yield session
    except DBAPIError as exc:
        raise storage_error(engine.url, exc) from None


def storage_error(url: URL, exc: DBAPIError) -> StorageError:
    """``exc`` as one line naming the database and what is wrong with it."""
    where = _where(url)
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
    lowered = reason.lower()
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return StorageError(f"{where}: the database file is damaged ({reason})")
    if "readonly" in lowered or "read-only" in lowered:
        return StorageError(f"{where}: cannot write the database ({reason})")
    if (
        url.get_backend_name() != "sqlite"
        and isinstance(exc.orig, Exception)
        and ("connect" in lowered or "connection" in lowered)
    ):
        return StorageError(f"{where}: cannot connect to the database server ({reason})")
    return StorageError(f"{where}: cannot use the database ({reason})")


def _where(url: URL) -> str:
    """How a message names the database: the SQLite file's path, else the URL sans password."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return str(url.database)
    return url.render_as_string(hide_password=True)


def _open_sqlite_readonly(url: URL) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise StorageError(f"DATABASE_URL: {url}: not a database file to read")
    path = Path(database).expanduser()
    missing = (
        f"{path}: no friendbot database here (check DATABASE_URL; `friendbot run` and "
        "`friendbot retrain` create it)"
    )
    if not path.exists():
        raise StorageError(missing)
    if path.is_dir():
        raise StorageError(f"{path}: is a directory, not a database file")
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StorageError(f"{path}: cannot read the database file ({exc.strerror})") from None
    if not header:
        raise StorageError(f"{path}: empty file, not a friendbot database")
    if header != SQLITE_HEADER:
        raise StorageError(f"{path}: not an SQLite database file")
    # Nobody writing (no -wal): immutable, so SQLite creates no side files and takes no locks.
    writing = Path(f"{path}-wal").exists()
    uri = f"file:{quote(str(path.absolute()))}?mode=ro" + ("" if writing else "&immutable=1")

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        connection.execute("PRAGMA query_only=ON")
        return connection

    # The URL only names the database in messages; ``creator`` makes the connections.
    return create_engine(url, creator=connect, poolclass=NullPool)


def _read_only_postgres(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    finally:
        cursor.close()
    dbapi_connection.commit()


def _check_schema(engine: Engine) -> None:
    """Refuse a database that is empty, not friendbot's, or of another schema version."""
    where = _where(engine.url)
    try:
        with engine.connect() as connection:
            current = _current_revision(connection)
            tables = inspect(connection).get_table_names() if current is None else []
    except DBAPIError as exc:
        raise storage_error(engine.url, exc) from None
    head = head_revision()
    if current is None:
        what = "an empty database" if not tables else "not a friendbot database (no schema version)"
        raise StorageError(f"{where}: {what}; `friendbot run` and `friendbot retrain` create one")
    if current == head:
        return
    if current not in _known_revisions():
        raise StorageError(
            f"{where}: database schema version {current} is newer than this friendbot knows "
            f"(up to {head}); upgrade friendbot to read it"
        )
    raise StorageError(
        f"{where}: database schema version {current} is older than this friendbot's ({head}); "
        "start `friendbot run` or `friendbot retrain` once to upgrade it"
    )
