"""The tables: chats, members, their messages, training runs, locks, small bot state, the
inbox of fetched Telegram updates, the friends' "real or bot?" rounds and votes, and the
group's feedback (reactions) on the bot's replies.

Ids are Telegram's (Bot API form for chats, e.g. ``-100123...`` for supergroups), so they need
64 bits. Every timestamp is a timezone-aware UTC ``datetime`` in Python whatever the backend:
SQLite has no time zones, so :class:`UtcDateTime` stores naive UTC there and hands back aware
values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAME_LENGTH = 255
"""Telegram names and titles are at most 128 characters; writers clip to this anyway."""

# Explicit constraint names, so migrations can later drop or alter them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Now, timezone-aware UTC (the only kind of datetime this package stores)."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already (the Bot API's zone)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always aware UTC in Python, stored as ``timestamptz`` or naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        # SQLite compares the stored text, so every row must be written in the same zone.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    """Declarative base: named constraints, aware UTC datetimes, JSON for ``dict`` columns."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON(),
    }


# SQLite only auto-numbers a column declared exactly INTEGER PRIMARY KEY.
_AutoId = BigInteger().with_variant(Integer(), "sqlite")


class Chat(Base):
    """A Telegram chat the bot has seen; ``allowed``/``muted`` are set by admins."""

    __tablename__ = "chats"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    title: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    type: Mapped[str] = mapped_column(String(32))
    allowed: Mapped[bool] = mapped_column(default=False, server_default=false())
    muted: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"Chat(id={self.id!r}, title={self.title!r}, type={self.type!r})"


class Member(Base):
    """A person (or bot) who wrote in a stored chat; the row also remembers an opt-out."""

    __tablename__ = "members"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    display_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    username: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    is_bot: Mapped[bool] = mapped_column(default=False, server_default=false())
    opted_out: Mapped[bool] = mapped_column(default=False, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return (
            f"Member(user_id={self.user_id!r}, display_name={self.display_name!r}, "
            f"opted_out={self.opted_out!r})"
        )


class Message(Base):
    """One text message of a chat, keyed by Telegram's (chat_id, message_id)."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("chat_id", "message_id"),
        Index(None, "chat_id", "date"),
    )

    id: Mapped[int] = mapped_column(_AutoId, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("chats.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(BigInteger)
    sender_id: Mapped[int | None] = mapped_column(BigInteger)
    sender_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    text: Mapped[str] = mapped_column(Text)
    date: Mapped[datetime]
    reply_to_message_id: Mapped[int | None] = mapped_column(BigInteger)
    from_bot: Mapped[bool] = mapped_column(default=False, server_default=false())

    def __repr__(self) -> str:
        return (
            f"Message(chat_id={self.chat_id!r}, message_id={self.message_id!r}, "
            f"sender_name={self.sender_name!r}, text={self.text[:30]!r})"
        )


class TrainingRun(Base):
    """One retraining attempt, from start to its decision (``finished_at`` None while running)."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    inputs_fingerprint: Mapped[str | None] = mapped_column(String(128))
    candidate_dir: Mapped[str | None] = mapped_column(Text)
    previous_dir: Mapped[str | None] = mapped_column(Text)
    candidate_metrics: Mapped[dict[str, Any] | None]
    current_metrics: Mapped[dict[str, Any] | None]
    decision: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(300))  # "host:pid:id" of its process

    def __repr__(self) -> str:
        return (
            f"TrainingRun(id={self.id!r}, status={self.status!r}, trigger={self.trigger!r}, "
            f"started_at={self.started_at!r})"
        )


class Lock(Base):
    """A named lock shared by every process using the database (see storage.locks)."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(300))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return (
            f"Lock(name={self.name!r}, holder={self.holder!r}, heartbeat_at={self.heartbeat_at!r})"
        )


class InboxUpdate(Base):
    """A Telegram update as fetched, kept from the moment it is fetched until it is handled.

    Telegram forgets an update once the bot's next ``getUpdates`` confirms it, so the bot
    stores each fetched batch here first (storage.inbox). ``processed_at`` is set when the
    update was handled and its message committed; the payload (message text) is then dropped
    and the row kept a while only so that a re-delivered update is recognised.
    """

    __tablename__ = "inbox"

    bot_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    payload: Mapped[dict[str, Any] | None]
    processed_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return (
            f"InboxUpdate(bot_id={self.bot_id!r}, update_id={self.update_id!r}, "
            f"processed_at={self.processed_at!r})"
        )


class BotState(Base):
    """Small persistent key/value state (e.g. the last model directory served)."""

    __tablename__ = "bot_state"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)

    def __repr__(self) -> str:
        return f"BotState(key={self.key!r}, value={self.value!r})"


class GuessRound(Base):
    """One ``/guess`` round: an excerpt of a chat, then a line signed by ``friend`` that is
    either their real next message or the model's reply (``is_bot``), chosen by ``seed``.

    Only ids are kept (the excerpt's and the real line's message ids), never the texts: a
    member's ``/optout`` deletes their messages, and a round must not keep copies of them. An
    excerpt of the training data is kept as a reference instead (storage.judge.dataset_ref).
    ``model_id`` is the served chat model's directory (resolved), so fool rates are per model.
    """

    __tablename__ = "guess_rounds"
    __table_args__ = (Index(None, "chat_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("chats.id", ondelete="CASCADE"))
    model_id: Mapped[str] = mapped_column(Text)
    friend: Mapped[str] = mapped_column(String(NAME_LENGTH))
    friend_id: Mapped[int | None] = mapped_column(BigInteger)
    is_bot: Mapped[bool] = mapped_column(Boolean)
    seed: Mapped[int] = mapped_column(BigInteger)
    excerpt_ids: Mapped[Any] = mapped_column(JSON)  # message ids, oldest first; or a dataset ref
    real_message_id: Mapped[int | None] = mapped_column(BigInteger)  # the real next line
    posted_message_id: Mapped[int | None] = mapped_column(BigInteger)
    votes_needed: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline_at: Mapped[datetime]
    revealed_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return (
            f"GuessRound(id={self.id!r}, chat_id={self.chat_id!r}, friend={self.friend!r}, "
            f"is_bot={self.is_bot!r}, revealed_at={self.revealed_at!r})"
        )


class GuessVote(Base):
    """One member's vote in a round: ``guess_real`` True for *Real*. One per member per round."""

    __tablename__ = "guess_votes"
    __table_args__ = (UniqueConstraint("round_id", "voter_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("guess_rounds.id", ondelete="CASCADE")
    )
    voter_id: Mapped[int] = mapped_column(BigInteger)
    guess_real: Mapped[bool] = mapped_column(Boolean)
    voted_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return (
            f"GuessVote(round_id={self.round_id!r}, voter_id={self.voter_id!r}, "
            f"guess_real={self.guess_real!r})"
        )


class BotReply(Base):
    """A message the bot posted in a friend's voice, with what it answered (issue 14).

    The context is kept as a pointer into ``messages`` (the newest context message and how
    many messages were read), never as a copy: a member who opts out, or an admin's
    ``/forget``, removes their words from it too. Reactions and quoting replies to this
    message are the group's verdict on it (storage.feedback).
    """

    __tablename__ = "bot_replies"

    chat_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("chats.id", ondelete="CASCADE"), primary_key=True
    )
    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    persona: Mapped[str] = mapped_column(String(NAME_LENGTH))
    text: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # "chat" (joined in) or "as" (/as NAME)
    context_until: Mapped[int | None] = mapped_column(BigInteger)
    context_size: Mapped[int] = mapped_column(Integer, default=0)
    model: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return (
            f"BotReply(chat_id={self.chat_id!r}, message_id={self.message_id!r}, "
            f"persona={self.persona!r}, text={self.text[:30]!r})"
        )


class ReplyReaction(Base):
    """One member's current reactions to one of the bot's replies, and what they mean.

    ``reactions`` is the member's latest set (Telegram sends the whole new set on every
    change); ``vote`` is +1 (liked), -1 (disliked) or 0 (neither, e.g. a custom emoji). A
    member who removes every reaction has no row.
    """

    __tablename__ = "reply_reactions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["chat_id", "message_id"],
            ["bot_replies.chat_id", "bot_replies.message_id"],
            ondelete="CASCADE",
        ),
        Index(None, "member_id"),
    )

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    member_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    reactions: Mapped[list[str]] = mapped_column(JSON)
    vote: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return (
            f"ReplyReaction(chat_id={self.chat_id!r}, message_id={self.message_id!r}, "
            f"member_id={self.member_id!r}, vote={self.vote!r})"
        )
