"""What the bot remembers of its chats: query functions over chats, members and messages.

Every function takes a session and never commits; the caller owns the transaction
(``with Session.begin() as session:``). Upserts use the database's own ``INSERT ... ON
CONFLICT`` (SQLite and PostgreSQL) so two writers racing on the same chat or message cannot
fail each other.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.orm import Session

from storage.models import (
    NAME_LENGTH,
    BotReply,
    Chat,
    Member,
    Message,
    ReplyReaction,
    as_utc,
    utcnow,
)

UNKNOWN_CHAT_TYPE = "unknown"
"""Type of a chat row created by a flag change before any of its messages was stored."""


def clip(value: str | None, length: int = NAME_LENGTH) -> str | None:
    """``value`` cut to the column's length (a long name must not cost a message)."""
    return value if value is None or len(value) <= length else value[:length]


def dialect_insert(session: Session, model: type[Any]) -> Any:
    """A Core INSERT into ``model``'s table in the session's dialect (with ``ON CONFLICT``)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"storage: unsupported database dialect {dialect!r}")
    return insert(model.__table__)


def upsert_chat(session: Session, chat_id: int, title: str | None, type: str) -> Chat:
    """Create the chat or refresh its title and type; flags (allowed, muted) are kept."""
    values = {"title": clip(title), "type": type}
    stmt = dialect_insert(session, Chat).values(
        id=chat_id, created_at=utcnow(), allowed=False, **values
    )
    session.execute(stmt.on_conflict_do_update(index_elements=[Chat.id], set_=values))
    chat = session.get(Chat, chat_id, populate_existing=True)
    assert chat is not None
    return chat


def get_chat(session: Session, chat_id: int) -> Chat | None:
    """The stored chat, or None if the bot has never stored anything for it."""
    return session.get(Chat, chat_id)


def set_chat_flags(
    session: Session, chat_id: int, *, allowed: bool | None = None, muted: bool | None = None
) -> None:
    """Change the admin flags; a chat not stored yet is created (type 'unknown' until seen)."""
    values = {k: v for k, v in (("allowed", allowed), ("muted", muted)) if v is not None}
    if not values:
        return
    stmt = dialect_insert(session, Chat).values(
        id=chat_id, title=None, type=UNKNOWN_CHAT_TYPE, created_at=utcnow(), **values
    )
    session.execute(stmt.on_conflict_do_update(index_elements=[Chat.id], set_=values))
    session.expire_all()


def upsert_member(
    session: Session,
    user_id: int,
    display_name: str,
    username: str | None = None,
    is_bot: bool = False,
) -> Member:
    """Create the member or refresh their names; an opt-out is never touched here."""
    values = {
        "display_name": clip(display_name),
        "username": clip(username),
        "is_bot": is_bot,
        "updated_at": utcnow(),
    }
    stmt = dialect_insert(session, Member).values(user_id=user_id, opted_out=False, **values)
    session.execute(stmt.on_conflict_do_update(index_elements=[Member.user_id], set_=values))
    member = session.get(Member, user_id, populate_existing=True)
    assert member is not None
    return member


def set_opted_out(session: Session, user_id: int, opted_out: bool) -> None:
    """Record a member's choice; someone never seen gets a row so the choice is remembered.

    Opting out does not delete what is stored already: call :func:`forget_member` for that.
    """
    values = {"opted_out": opted_out, "updated_at": utcnow()}
    stmt = dialect_insert(session, Member).values(
        user_id=user_id, display_name=str(user_id), **values
    )
    session.execute(stmt.on_conflict_do_update(index_elements=[Member.user_id], set_=values))
    session.expire_all()


def opted_out_ids(session: Session) -> set[int]:
    """Telegram user ids that must never be stored or imitated."""
    return set(session.scalars(select(Member.user_id).where(Member.opted_out)))


def opted_out_members(session: Session) -> list[Member]:
    """Members who opted out, with their names (the bot must never speak as them either)."""
    return list(session.scalars(select(Member).where(Member.opted_out)))


def muted_chat_ids(session: Session) -> set[int]:
    """Chats an admin muted: messages are stored there, but the bot does not reply."""
    return set(session.scalars(select(Chat.id).where(Chat.muted)))


def bot_member_ids(session: Session) -> set[int]:
    """Senders flagged as bots: never friends the bot may speak as."""
    return set(session.scalars(select(Member.user_id).where(Member.is_bot)))


def add_message(
    session: Session,
    *,
    chat_id: int,
    message_id: int,
    sender_id: int | None,
    sender_name: str,
    text: str,
    date: datetime,
    reply_to_message_id: int | None = None,
    from_bot: bool = False,
) -> bool:
    """Store one message of a stored chat; False when (chat_id, message_id) is already there.

    Idempotent, so Telegram re-delivering an update after a restart stores nothing twice.
    The chat row must exist (``upsert_chat`` first): messages reference it.
    """
    stmt = dialect_insert(session, Message).values(
        chat_id=chat_id,
        message_id=message_id,
        sender_id=sender_id,
        sender_name=clip(sender_name),
        text=text,
        date=as_utc(date),
        reply_to_message_id=reply_to_message_id,
        from_bot=from_bot,
    )
    stmt = stmt.on_conflict_do_nothing(index_elements=[Message.chat_id, Message.message_id])
    # RETURNING, not rowcount: PostgreSQL reports rowcount -1 for an INSERT returning ids.
    return session.execute(stmt.returning(Message.id)).first() is not None


def add_messages(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store many messages in one multi-row INSERT; returns how many were new.

    ``rows`` carry :func:`add_message`'s keyword arguments. The batching writer uses this: one
    statement for a whole batch instead of a round trip per message.
    """
    if not rows:
        return 0
    params = [
        {
            "reply_to_message_id": None,
            "from_bot": False,
            **row,
            "sender_name": clip(row["sender_name"]),
            "date": as_utc(row["date"]),
        }
        for row in rows
    ]
    stmt = dialect_insert(session, Message).on_conflict_do_nothing(
        index_elements=[Message.chat_id, Message.message_id]
    )
    return len(session.execute(stmt.returning(Message.id), params).all())


def recent_messages(session: Session, chat_id: int, limit: int) -> list[Message]:
    """The chat's last ``limit`` messages, oldest first: the rolling context of a reply."""
    if limit <= 0:
        return []
    newest_first = session.scalars(
        select(Message)
        .where(Message.chat_id == chat_id)
        .order_by(Message.date.desc(), Message.message_id.desc())
        .limit(limit)
    ).all()
    return list(reversed(newest_first))


def last_message_id(session: Session, chat_id: int) -> int | None:
    """The highest stored message id of the chat (None when it has none)."""
    return session.scalar(select(func.max(Message.message_id)).where(Message.chat_id == chat_id))


def forget_chat(session: Session, chat_id: int) -> int:
    """Delete every stored message of the chat; returns how many.

    The chat row stays, so its admin flags (allowed, muted) survive an admin's ``/forget``.
    The bot's recorded replies and their reactions (storage.feedback) go too.
    """
    session.execute(delete(ReplyReaction).where(ReplyReaction.chat_id == chat_id))
    session.execute(delete(BotReply).where(BotReply.chat_id == chat_id))
    result = session.execute(delete(Message).where(Message.chat_id == chat_id))
    return result.rowcount


def forget_member(session: Session, user_id: int) -> int:
    """Delete every stored message the member wrote, in all chats; returns how many.

    The member row goes too, unless it carries an opt-out (which must outlive the data), and
    so do their reactions to the bot's replies (storage.feedback).
    """
    session.execute(delete(ReplyReaction).where(ReplyReaction.member_id == user_id))
    deleted = session.execute(delete(Message).where(Message.sender_id == user_id)).rowcount
    session.execute(delete(Member).where(Member.user_id == user_id, ~Member.opted_out))
    session.expire_all()
    return deleted


def prune_messages(
    session: Session,
    *,
    keep_per_chat: int | None = None,
    older_than: datetime | None = None,
) -> int:
    """Retention: drop messages beyond the newest ``keep_per_chat`` of each chat and those
    dated before ``older_than``; returns how many rows were deleted.

    Either limit may be None (not applied). Run it now and then (e.g. at bot start and
    daily), not per message: it scans every chat.
    """
    deleted = 0
    if older_than is not None:
        stmt = delete(Message).where(Message.date < as_utc(older_than))
        deleted += session.execute(stmt).rowcount
    if keep_per_chat is not None:
        if keep_per_chat < 0:
            raise ValueError(f"keep_per_chat must be >= 0, got {keep_per_chat}")
        rank = (
            func.row_number()
            .over(
                partition_by=Message.chat_id,
                order_by=(Message.date.desc(), Message.message_id.desc()),
            )
            .label("rank")
        )
        ranked = select(Message.id, rank).subquery()
        beyond = select(ranked.c.id).where(ranked.c.rank > keep_per_chat)
        deleted += session.execute(delete(Message).where(Message.id.in_(beyond))).rowcount
    session.expire_all()
    return deleted


def _messages_since_query(since: datetime | None, human_only: bool) -> Select[tuple[Message]]:
    opted_out = select(Member.user_id).where(Member.opted_out)
    stmt = select(Message).where(
        or_(Message.sender_id.is_(None), ~Message.sender_id.in_(opted_out))
    )
    if since is not None:
        stmt = stmt.where(Message.date >= as_utc(since))
    if human_only:
        other_bots = select(Member.user_id).where(Member.is_bot)
        stmt = stmt.where(
            ~Message.from_bot,
            or_(Message.sender_id.is_(None), ~Message.sender_id.in_(other_bots)),
        )
    return stmt.order_by(Message.chat_id, Message.date, Message.message_id)


def messages_since(
    session: Session, since: datetime | None, *, human_only: bool = True
) -> Iterator[Message]:
    """Stored messages dated at or after ``since`` (all when None), per chat in time order,
    streamed in chunks: what retraining adds to the exports.

    Opted-out members' messages are never returned. ``human_only`` (the default) also drops
    the bot's own replies and messages of members flagged ``is_bot``, so the model never
    learns from itself or other bots.
    """
    stmt = _messages_since_query(since, human_only).execution_options(yield_per=1000)
    yield from session.scalars(stmt)


def chat_stats(session: Session, chat_id: int) -> dict[str, int | str | None]:
    """Counts and dates for ``/stats`` and ``friendbot history``: messages (all, from people,
    from the bot), distinct senders, first/last message date (ISO 8601 UTC, None if empty)."""
    chat = session.get(Chat, chat_id)
    in_chat = Message.chat_id == chat_id
    total, bot, senders, first, last = session.execute(
        select(
            func.count(Message.id),
            func.count(Message.id).filter(Message.from_bot),
            func.count(func.distinct(Message.sender_id)).filter(~Message.from_bot),
            func.min(Message.date),
            func.max(Message.date),
        ).where(in_chat)
    ).one()
    return {
        "chat_id": chat_id,
        "title": chat.title if chat else None,
        "type": chat.type if chat else None,
        "messages": total,
        "human_messages": total - bot,
        "bot_messages": bot,
        "members": senders,
        "first_date": first.isoformat() if first else None,
        "last_date": last.isoformat() if last else None,
    }
