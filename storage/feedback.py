"""The group's verdict on the bot's replies: what it said, who reacted how, who answered it.

The bot records each in-character post (:func:`record_bot_reply`) with a pointer to the
stored messages it answered. Members' reactions arrive as their whole current set
(:func:`set_reactions`); a member who quotes the bot (a reply to its post) is engagement and
counts as liking it. :func:`judged_replies` sums it up per reply for retraining.

Functions take a session and never commit (the caller owns the transaction).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from storage.history import UNKNOWN_CHAT_TYPE, clip, dialect_insert
from storage.models import BotReply, Chat, Message, ReplyReaction, utcnow

LIKED, DISLIKED = "liked", "disliked"


@dataclass(frozen=True)
class JudgedReply:
    """One bot reply with the group's verdict: ``likes`` (positive reactions plus quoting
    members who did not react negatively) against ``dislikes`` (negative reactions)."""

    chat_id: int
    message_id: int
    persona: str
    text: str
    kind: str
    context_until: int | None
    context_size: int
    model: str | None
    likes: int
    dislikes: int
    quotes: int

    @property
    def verdict(self) -> str | None:
        """``liked``, ``disliked`` or None (no feedback, or as many likes as dislikes)."""
        if self.likes > self.dislikes:
            return LIKED
        if self.dislikes > self.likes:
            return DISLIKED
        return None


def record_bot_reply(
    session: Session,
    *,
    chat_id: int,
    message_id: int,
    persona: str,
    text: str,
    kind: str,
    context_until: int | None,
    context_size: int,
    model: str | None,
) -> None:
    """Remember a post the bot made as ``persona`` (idempotent on chat and message id)."""
    chat = dialect_insert(session, Chat).values(
        id=chat_id, title=None, type=UNKNOWN_CHAT_TYPE, created_at=utcnow(), allowed=False
    )
    session.execute(chat.on_conflict_do_nothing(index_elements=[Chat.id]))
    stmt = dialect_insert(session, BotReply).values(
        chat_id=chat_id,
        message_id=message_id,
        persona=clip(persona),
        text=text,
        kind=kind,
        context_until=context_until,
        context_size=context_size,
        model=model,
        created_at=utcnow(),
    )
    session.execute(
        stmt.on_conflict_do_nothing(index_elements=[BotReply.chat_id, BotReply.message_id])
    )


def set_reactions(
    session: Session,
    *,
    chat_id: int,
    message_id: int,
    member_id: int,
    reactions: Sequence[str],
    vote: int,
) -> bool:
    """Store ``member_id``'s current reactions to a bot reply (none: forget theirs).

    False when the message is not a reply the bot recorded (a reaction to someone else's
    message, or to a post from before feedback was recorded): nothing is stored.
    """
    if session.get(BotReply, (chat_id, message_id)) is None:
        return False
    key = (
        (ReplyReaction.chat_id == chat_id)
        & (ReplyReaction.message_id == message_id)
        & (ReplyReaction.member_id == member_id)
    )
    if not reactions:
        session.execute(delete(ReplyReaction).where(key))
        return True
    values = {"reactions": list(reactions), "vote": vote, "updated_at": utcnow()}
    stmt = dialect_insert(session, ReplyReaction).values(
        chat_id=chat_id, message_id=message_id, member_id=member_id, **values
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[
                ReplyReaction.chat_id,
                ReplyReaction.message_id,
                ReplyReaction.member_id,
            ],
            set_=values,
        )
    )
    return True


def reactions_of(
    session: Session, chat_id: int, message_id: int
) -> dict[int, tuple[list[str], int]]:
    """Member id -> (current reactions, vote) for one bot reply."""
    rows = session.scalars(
        select(ReplyReaction).where(
            ReplyReaction.chat_id == chat_id, ReplyReaction.message_id == message_id
        )
    )
    return {r.member_id: (list(r.reactions), r.vote) for r in rows}


def judged_replies(session: Session) -> list[JudgedReply]:
    """Every recorded bot reply with its likes, dislikes and quotes, oldest first."""
    votes: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
    for chat_id, message_id, member_id, vote in session.execute(
        select(
            ReplyReaction.chat_id,
            ReplyReaction.message_id,
            ReplyReaction.member_id,
            ReplyReaction.vote,
        )
    ):
        votes[(chat_id, message_id)][member_id] = vote
    quoters: dict[tuple[int, int], set[int]] = defaultdict(set)
    quoting = (
        select(Message.chat_id, Message.reply_to_message_id, Message.sender_id)
        .join(
            BotReply,
            (BotReply.chat_id == Message.chat_id)
            & (BotReply.message_id == Message.reply_to_message_id),
        )
        .where(~Message.from_bot, Message.sender_id.is_not(None))
    )
    for chat_id, message_id, sender_id in session.execute(quoting):
        quoters[(chat_id, message_id)].add(sender_id)
    judged = []
    for reply in session.scalars(
        select(BotReply).order_by(BotReply.created_at, BotReply.chat_id, BotReply.message_id)
    ):
        key = (reply.chat_id, reply.message_id)
        member_votes = votes.get(key, {})
        negative = {m for m, v in member_votes.items() if v < 0}
        positive = {m for m, v in member_votes.items() if v > 0}
        engaged = quoters.get(key, set())
        judged.append(
            JudgedReply(
                chat_id=reply.chat_id,
                message_id=reply.message_id,
                persona=reply.persona,
                text=reply.text,
                kind=reply.kind,
                context_until=reply.context_until,
                context_size=reply.context_size,
                model=reply.model,
                likes=len(positive | (engaged - negative)),
                dislikes=len(negative),
                quotes=len(engaged),
            )
        )
    return judged


def context_of(session: Session, reply: JudgedReply) -> list[Message]:
    """The stored messages the reply answered, oldest first (those deleted since are gone)."""
    if reply.context_until is None or reply.context_size <= 0:
        return []
    newest_first = session.scalars(
        select(Message)
        .where(Message.chat_id == reply.chat_id, Message.message_id <= reply.context_until)
        .order_by(Message.date.desc(), Message.message_id.desc())
        .limit(reply.context_size)
    ).all()
    return list(reversed(newest_first))


def feedback_digest(session: Session) -> tuple[str, int]:
    """Hash and count of the judged replies' verdicts: changes when the group reacts."""
    digest = hashlib.sha256()
    count = 0
    for reply in judged_replies(session):
        if reply.verdict is None:
            continue
        line = f"{reply.chat_id}\t{reply.message_id}\t{reply.likes}\t{reply.dislikes}\n"
        digest.update(line.encode())
        count += 1
    return digest.hexdigest(), count


def count_replies(session: Session) -> int:
    """How many bot replies are recorded."""
    return session.scalar(select(func.count()).select_from(BotReply)) or 0
