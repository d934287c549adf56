"""Alembic environment: runs on the connection storage.db.upgrade() hands over.

Run from the ``alembic`` command line (writing a new revision), it connects to
``DATABASE_URL`` itself.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext

from storage.db import database_url, make_engine
from storage.models import Base, UtcDateTime
from storage.search import is_search_schema

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Write our UTC wrapper as the plain column type, so revisions do not import models."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(connection: Any) -> None:
    """Migrate on ``connection``; SQLite gets batch mode since it cannot ALTER most things."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=render_item,
        compare_type=True,
        include_name=is_search_schema,  # the full-text index is made by hand (0004_search)
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    run_migrations(connection)
else:
    engine = make_engine(database_url())
    with engine.begin() as own_connection:
        run_migrations(own_connection)
    engine.dispose()
