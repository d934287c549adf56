"""Engine setup, pragmas and migrations."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from storage.db import (
    DEFAULT_DATABASE_URL,
    alembic_config,
    database_url,
    make_engine,
    open_existing,
    reading,
    session_factory,
    upgrade,
)
from storage.errors import StorageError
from storage.history import add_message, get_chat, upsert_chat
from storage.models import Base, Message
from storage.search import is_search_schema
from tests.storage.conftest import T0


def test_sqlite_file_gets_its_directory_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "bot.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 30_000
        assert pragma("synchronous") == 1  # NORMAL
    engine.dispose()
    assert path.exists()


def test_database_url_reads_environment() -> None:
    assert database_url({}) == DEFAULT_DATABASE_URL == "sqlite:///data/friendbot.db"
    assert database_url({"DATABASE_URL": "  "}) == DEFAULT_DATABASE_URL
    assert database_url({"DATABASE_URL": "sqlite:///x.db"}) == "sqlite:///x.db"


def test_bare_postgres_url_uses_psycopg3() -> None:
    for url in ("postgresql://u:p@127.0.0.1/db", "postgres://u:p@127.0.0.1/db"):
        engine = make_engine(url)
        assert engine.url.drivername == "postgresql+psycopg"
        engine.dispose()


def test_migration_produces_exactly_the_models_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_name": is_search_schema,  # as env.py: the index is not in the models
            },
        )
        assert compare_metadata(context, Base.metadata) == []
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert context.get_current_revision() == head
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    Session = session_factory(engine)
    with Session.begin() as session:
        upsert_chat(session, -100, "group", "supergroup")
    upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM chats")).scalar() == 1


def upgrade_together(url: str, processes: int = 3) -> list[BaseException]:
    """Upgrade ``url`` from ``processes`` engines at once; the errors they raised."""
    engines = [make_engine(url) for _ in range(processes)]
    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        try:
            upgrade(engine)
        except BaseException as exc:  # pragma: no cover - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    return errors


def test_concurrent_upgrades_of_a_fresh_database(db_url: str) -> None:
    """A bot and a scheduler starting together: both upgrades succeed, tables made once."""
    assert upgrade_together(db_url) == []
    engine = make_engine(db_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()


def test_many_starts_on_fresh_sqlite_files_never_see_locked(tmp_path: Path) -> None:
    """Switching a fresh file to WAL answers "database is locked" without waiting (SQLite does
    not call the busy handler there); before the retry this failed about one round in 17."""
    for round_ in range(30):
        url = f"sqlite:///{tmp_path / f'fresh{round_}.db'}"
        assert upgrade_together(url) == [], f"round {round_}"


def test_foreign_keys_are_enforced_and_cascade(Session) -> None:
    with pytest.raises(IntegrityError), Session.begin() as session:
        add_message(
            session, chat_id=-5, message_id=1, sender_id=1, sender_name="A", text="x", date=T0
        )
    with Session.begin() as session:
        upsert_chat(session, -5, "g", "group")
        add_message(
            session, chat_id=-5, message_id=1, sender_id=1, sender_name="A", text="x", date=T0
        )
    with Session.begin() as session:
        session.execute(text("DELETE FROM chats WHERE id = -5"))
    with Session() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0


def test_migrations_ship_inside_the_package() -> None:
    """Every file upgrade() needs is in a package or matches package-data, so a wheel has it."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    includes = config["packages"]["find"]["include"]
    patterns = config["package-data"]["*"]
    migrations = root / "storage" / "migrations"
    needed = [*migrations.glob("*.*"), *(migrations / "versions").glob("*.py")]
    assert any(p.name.startswith("0001_") for p in needed)
    for path in needed:
        package = ".".join(path.parent.relative_to(root).parts)
        # setuptools' find_packages: a directory with __init__.py matching an include pattern
        assert (path.parent / "__init__.py").exists(), f"{package} has no __init__.py"
        assert any(fnmatch.fnmatch(package, p) for p in includes), package
        assert path.suffix == ".py" or any(fnmatch.fnmatch(path.name, p) for p in patterns), path


def test_upgrade_refuses_a_newer_schema_and_leaves_it_alone(engine: Engine) -> None:
    """A database a newer friendbot migrated: one clear line, not Alembic's traceback."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(StorageError, match=r"schema version 0099 is newer than this friendbot"):
        upgrade(engine)
    with engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == "0099"


def test_open_existing_reads_and_never_writes(engine: Engine, db_url: str) -> None:
    Session = session_factory(engine)
    with Session.begin() as session:
        upsert_chat(session, -5, "g", "group")
    readonly = open_existing(db_url)
    try:
        with reading(readonly) as session:
            assert get_chat(session, -5) is not None
        refused = pytest.raises(StorageError, match="cannot write the database")
        with refused, reading(readonly) as session:
            upsert_chat(session, -6, "h", "group")
            session.commit()
    finally:
        readonly.dispose()
    with Session() as session:
        assert get_chat(session, -6) is None


def test_open_existing_refuses_an_empty_database(db_url: str) -> None:
    """Nothing migrated: a fresh PostgreSQL schema (or SQLite file) is not a friendbot one."""
    if db_url.startswith("sqlite"):
        make_engine(db_url).dispose()  # the file exists but holds nothing
        Path(make_url(db_url).database).write_bytes(b"")
    with pytest.raises(StorageError, match="empty"):
        open_existing(db_url)
