"""Storage fixtures: every test runs on a temporary SQLite FILE (so WAL and file locking are
exercised) and, when ``FRIENDBOT_TEST_POSTGRES_URL`` names a server, on PostgreSQL too (each
test in its own schema, dropped afterwards). .ci/run starts a server and sets the URL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, orm
from sqlalchemy.engine import make_url

from storage.db import make_engine, session_factory, upgrade

POSTGRES_ENV = "FRIENDBOT_TEST_POSTGRES_URL"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    """A fixed timeline for tests: T0 plus ``minutes``."""
    return T0 + timedelta(minutes=minutes)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A URL to an empty database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'friendbot.db'}"
        return
    base = os.environ.get(POSTGRES_ENV, "").strip()
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set (no PostgreSQL server to test against)")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = make_engine(base)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(admin.url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the upgraded (``upgrade head``) database."""
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def Session(engine: Engine) -> orm.sessionmaker[orm.Session]:
    """The session factory, named as the docs' ``with Session.begin() as session:`` idiom."""
    return session_factory(engine)
