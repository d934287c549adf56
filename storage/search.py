"""Full-text search over a chat's stored history: the bot's long memory and ``/recall``.

The index lives in the database the bot already has, so long memory costs no new server:

- **SQLite**: an FTS5 table ``messages_fts`` over ``messages.text`` and ``sender_name``,
  *external content* (it stores only the index, the text stays in ``messages``), kept in step
  by triggers on ``messages``: every insert (the batching writer's multi-row ``INSERT`` too),
  update and delete (``/forget``, ``/optout``, retention, a chat's cascade) reaches it inside
  the same transaction.
- **PostgreSQL**: a stored generated ``tsvector`` column ``messages.search_vector`` with a GIN
  index: the server computes it on every insert and update, and a deleted row takes its entry
  with it.

Both are created (and filled for the rows already stored) by the migration ``0004_search``.
Neither is part of ``storage.models``: they are backend-specific, so :func:`is_search_schema`
tells Alembic's schema comparison to leave them alone.

Words are matched as they are (no stemming, case and accents folded): chats mix languages and
spellings, and the words worth searching for (names, places, things) are the ones stemming
helps least. A search is the OR of its terms within one chat (SQLite indexes the chat id
too): the database finds the chat's newest matches (:func:`search_candidates`), the caller's
rule ranks them (:data:`Ranker`). The bot passes ``training.memory_search``'s rule and terms
(``training.formatting.memory_terms``), the ones ``prepare --memory`` trains with; storage
does not import training.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from storage.models import as_utc

FTS_TABLE = "messages_fts"
"""SQLite: the FTS5 table (its shadow tables are ``messages_fts_*``)."""
SEARCH_COLUMN = "search_vector"
"""PostgreSQL: the generated ``tsvector`` column of ``messages``."""
SEARCH_INDEX = "ix_messages_search_vector"
"""PostgreSQL: the GIN index on it."""
TEXT_SEARCH_CONFIG = "simple"
"""PostgreSQL's configuration without stemming or stop words, like FTS5's unicode61."""
MAX_TERMS = 32
"""More terms than this are dropped (a search is for a topic, not a document)."""
_WORD = re.compile(r"[^\W_]+")  # letters and digits: a word to both FTS5 and PostgreSQL


@dataclass(frozen=True, slots=True)
class FoundMessage:
    """One stored message a search found; ``rank`` is higher for a better match."""

    message_id: int
    sender_id: int | None
    sender_name: str
    text: str
    date: datetime
    rank: float


def is_search_schema(name: str | None, type_: str, parent_names: object = None) -> bool:
    """False for the search index's own objects, True for everything else.

    An Alembic ``include_name`` hook: the FTS5 tables and the generated column are made by the
    migration, not by the models, so a schema comparison must neither report them nor offer
    to drop them (``storage/migrations/env.py`` and the schema test both use it).
    """
    if name is None:
        return True
    if type_ == "table":
        return not (name == FTS_TABLE or name.startswith(f"{FTS_TABLE}_"))
    if type_ == "column":
        return name != SEARCH_COLUMN
    if type_ == "index":
        return name != SEARCH_INDEX
    return True


def search_words(terms: Iterable[str]) -> list[str]:
    """The distinct words of ``terms``, lower-cased, in order; anything but letters and digits
    separates words, so nothing a user typed can reach the query syntax."""
    words: list[str] = []
    for term in terms:
        for word in _WORD.findall(term.casefold()):
            if word not in words:
                words.append(word)
    return words[:MAX_TERMS]


Ranker = Callable[[Sequence[str], Sequence[FoundMessage]], Sequence[float]]
"""Scores for the candidates (higher: better), given the search words: the caller's rule
(the bot passes ``training.memory_search``'s, the one ``prepare --memory`` trains with)."""


def search_messages(
    session: Session,
    chat_id: int,
    terms: Sequence[str],
    *,
    rank: Ranker,
    candidates: int,
    before: datetime | None = None,
    exclude_message_ids: Iterable[int] = (),
    sender_id: int | None = None,
    limit: int = 5,
) -> list[FoundMessage]:
    """The chat's stored messages matching any of ``terms``, best first, at most ``limit``.

    :func:`search_candidates` (``candidates`` of them), scored by ``rank``, then (with
    ``sender_id``) only that member's: a friend's voice is picked from the same candidates as
    the chat's memory, with the same scores. ``rank`` is stable: equal scores keep the
    candidates' order, newest first.
    """
    words = search_words(terms)
    if not words or limit <= 0:
        return []
    found = search_candidates(
        session,
        chat_id,
        words,
        before=before,
        exclude_message_ids=exclude_message_ids,
        limit=candidates,
    )
    return best_of(found, rank(words, found), limit, sender_id)


def best_of(
    found: Sequence[FoundMessage], scores: Sequence[float], limit: int, sender_id: int | None
) -> list[FoundMessage]:
    """The ``limit`` best-scored of ``found`` (of ``sender_id`` only, unless None), best
    first, each with its score as ``rank``; equal scores keep ``found``'s order."""
    order = sorted(range(len(found)), key=lambda i: -scores[i])
    picked = [i for i in order if sender_id is None or found[i].sender_id == sender_id]
    return [replace(found[i], rank=float(scores[i])) for i in picked[:limit]]


def search_candidates(
    session: Session,
    chat_id: int,
    terms: Sequence[str],
    *,
    limit: int,
    before: datetime | None = None,
    exclude_message_ids: Iterable[int] = (),
) -> list[FoundMessage]:
    """The chat's stored messages matching any of ``terms``, newest first (``rank`` 0:
    unranked), that may be memory: for each word, its ``limit // words`` newest matches.

    Per word, so that a rare word's old mention is found although common words were said
    many times since (one newest-``limit`` over all words would be all common words).

    Only messages of ``chat_id``, never the bot's own posts (``from_bot``) nor those of
    members flagged as bots, never an opted-out member's (their rows are deleted when they
    opt out; this is the safety net). ``before``: only messages dated strictly earlier (the
    bot's memory is the past of its context window); ``exclude_message_ids``: Telegram ids
    never to return (the window itself). The matches are those stored before the first
    message at ``before``, taken then filtered, so the cost stays flat however big the
    history grows. No ranking in the database: SQLite's bm25 counts every message of the
    chat for the chat filter's weight on every search (12 of its 19 ms over a million
    messages), and the caller ranks by its own rule anyway.
    """
    words = search_words(terms)
    if not words or limit <= 0:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":  # the chat's id as FTS5 indexed it: its digits
        queries = [f'chat_id : "{abs(chat_id)}" AND {{text sender_name}} : "{w}"' for w in words]
        arm, search = _SQLITE_ARM, _SQLITE_SEARCH
    elif dialect == "postgresql":
        queries, arm, search = [f"'{w}'" for w in words], _POSTGRES_ARM, _POSTGRES_SEARCH
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"storage: unsupported database dialect {dialect!r}")
    filters = []
    params: dict[str, object] = {f"q{i}": q for i, q in enumerate(queries)}
    params |= {"chat_id": chat_id, "per_word": max(1, limit // len(words))}  # as in training
    if before is not None:
        filters.append("AND m.date < :before")
        before_utc = as_utc(before)
        params["before"] = before_utc.replace(tzinfo=None) if dialect == "sqlite" else before_utc
    excluded = sorted(set(exclude_message_ids))
    if excluded:
        filters.append("AND m.message_id NOT IN :excluded")
        params["excluded"] = excluded
    bound = ""
    if before is not None:
        # candidates from before the chat's first message at ``before`` (ids grow as messages
        # are stored); the date filter above stays the rule, this only keeps later matches
        # from using up the budget
        bound = f"AND {'rowid' if dialect == 'sqlite' else 'id'} < {_FIRST_ID_AT}"
    arms = "\nUNION\n".join(arm.format(i=i, bound=bound) for i in range(len(queries)))
    statement = text(search.format(arms=arms, filters="\n".join(filters)))
    if excluded:
        statement = statement.bindparams(bindparam("excluded", expanding=True))
    rows = session.execute(statement, params).all()
    return [
        FoundMessage(
            message_id=row.message_id,
            sender_id=row.sender_id,
            sender_name=row.sender_name,
            text=row.text,
            date=_as_datetime(row.date),
            rank=0.0,
        )
        for row in rows
    ]


def _as_datetime(value: datetime | str) -> datetime:
    """A raw (text) query gets SQLite's stored text back: parse it, as the models' type does."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)


# The row id of the chat's first message at or after ``before`` (none: past every id).
_FIRST_ID_AT = """COALESCE((SELECT id FROM messages WHERE chat_id = :chat_id AND date >= :before
    ORDER BY date, id LIMIT 1), 9223372036854775807)"""

# Members who opted out or are bots: their messages are never memory.
_NOT_MEMORY = "SELECT user_id FROM members WHERE opted_out OR is_bot"

# Each word's newest matches in the chat (before the window), together, then filtered.
_SQLITE_ARM = f"""SELECT id FROM (
    SELECT rowid AS id FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q{{i}} {{bound}}
    ORDER BY rowid DESC LIMIT :per_word)"""
_SQLITE_SEARCH = f"""
SELECT m.message_id, m.sender_id, m.sender_name, m.text, m.date
FROM ({{arms}}) AS f JOIN messages AS m ON m.id = f.id
WHERE m.chat_id = :chat_id
  AND NOT m.from_bot
  AND (m.sender_id IS NULL OR m.sender_id NOT IN ({_NOT_MEMORY}))
  {{filters}}
ORDER BY m.id DESC
"""

_POSTGRES_ARM = f"""(SELECT id FROM messages
    WHERE {SEARCH_COLUMN} @@ to_tsquery('{TEXT_SEARCH_CONFIG}', :q{{i}}) AND chat_id = :chat_id
    {{bound}} ORDER BY id DESC LIMIT :per_word)"""
_POSTGRES_SEARCH = f"""
SELECT m.message_id, m.sender_id, m.sender_name, m.text, m.date
FROM ({{arms}}) AS f JOIN messages AS m ON m.id = f.id
WHERE NOT m.from_bot
  AND (m.sender_id IS NULL OR m.sender_id NOT IN ({_NOT_MEMORY}))
  {{filters}}
ORDER BY m.id DESC
"""
