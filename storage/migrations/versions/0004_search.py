"""search: full-text index over messages (SQLite FTS5, PostgreSQL tsvector + GIN)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10

The bot's long memory and /recall search the chat's stored history (storage.search, which
holds the queries and documents the design). The index is filled for the messages already
stored and follows every insert, update and delete from then on: on SQLite an external-content
FTS5 table kept in step by triggers, on PostgreSQL a stored generated ``tsvector`` column
with a GIN index. Neither is in storage.models (storage.search.is_search_schema hides them
from schema comparisons).

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_UPGRADE = [
    # chat_id is indexed too (as the digits of the id), so a search narrows to one chat
    # inside the index instead of ranking every chat's matches.
    """CREATE VIRTUAL TABLE messages_fts USING fts5(
        text, sender_name, chat_id, content='messages', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, text, sender_name, chat_id)
        VALUES (new.id, new.text, new.sender_name, new.chat_id);
    END""",
    """CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, text, sender_name, chat_id)
        VALUES ('delete', old.id, old.text, old.sender_name, old.chat_id);
    END""",
    """CREATE TRIGGER messages_fts_au AFTER UPDATE OF text, sender_name, chat_id ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, text, sender_name, chat_id)
        VALUES ('delete', old.id, old.text, old.sender_name, old.chat_id);
        INSERT INTO messages_fts(rowid, text, sender_name, chat_id)
        VALUES (new.id, new.text, new.sender_name, new.chat_id);
    END""",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",  # the rows already stored
]
SQLITE_DOWNGRADE = [
    "DROP TRIGGER IF EXISTS messages_fts_ai",
    "DROP TRIGGER IF EXISTS messages_fts_ad",
    "DROP TRIGGER IF EXISTS messages_fts_au",
    "DROP TABLE IF EXISTS messages_fts",
]

# 'simple': no stemming, no stop words (as FTS5's unicode61). A word in the text weighs more
# (A) than the same word in the sender's name (B). Adding the column computes it for every
# stored row.
POSTGRES_UPGRADE = [
    """ALTER TABLE messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple'::regconfig, coalesce(text, '')), 'A') ||
        setweight(to_tsvector('simple'::regconfig, coalesce(sender_name, '')), 'B')
    ) STORED""",
    "CREATE INDEX ix_messages_search_vector ON messages USING gin (search_vector)",
]
POSTGRES_DOWNGRADE = [
    "DROP INDEX IF EXISTS ix_messages_search_vector",
    "ALTER TABLE messages DROP COLUMN IF EXISTS search_vector",
]


def _statements(sqlite: list[str], postgres: list[str]) -> list[str]:
    return sqlite if op.get_bind().dialect.name == "sqlite" else postgres


def upgrade() -> None:
    for statement in _statements(SQLITE_UPGRADE, POSTGRES_UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(SQLITE_DOWNGRADE, POSTGRES_DOWNGRADE):
        op.execute(statement)
