"""storage.feedback: the bot's replies, members' current reactions, quotes, and forgetting."""

from __future__ import annotations

from sqlalchemy import orm

from storage.feedback import (
    context_of,
    feedback_digest,
    judged_replies,
    reactions_of,
    record_bot_reply,
    set_reactions,
)
from storage.history import add_message, forget_chat, forget_member, upsert_chat
from tests.storage.conftest import at

CHAT = -100123


def _setup(Session: orm.sessionmaker[orm.Session]) -> None:
    with Session.begin() as session:
        upsert_chat(session, CHAT, "Friends", "supergroup")
        for mid, (uid, name, text) in enumerate(
            [(1, "Ann", "climbing?"), (2, "Ben", "sure"), (1, "Ann", "10am?")], start=1
        ):
            add_message(
                session,
                chat_id=CHAT,
                message_id=mid,
                sender_id=uid,
                sender_name=name,
                text=text,
                date=at(mid),
            )
        record_bot_reply(
            session,
            chat_id=CHAT,
            message_id=4,
            persona="Ben",
            text="ok fine",
            kind="chat",
            context_until=2,
            context_size=2,
            model="models/m1",
        )
        add_message(  # Cat quotes the bot's reply
            session,
            chat_id=CHAT,
            message_id=5,
            sender_id=3,
            sender_name="Cat",
            text="lol",
            date=at(5),
            reply_to_message_id=4,
        )


def _react(session: orm.Session, member: int, emoji: list[str], vote: int) -> bool:
    return set_reactions(
        session, chat_id=CHAT, message_id=4, member_id=member, reactions=emoji, vote=vote
    )


def test_current_reactions_quotes_and_the_verdict(Session: orm.sessionmaker[orm.Session]) -> None:
    _setup(Session)
    with Session.begin() as session:
        assert _react(session, 1, ["👍"], 1)
        assert _react(session, 2, ["👎"], -1)
        assert _react(session, 2, ["😂"], 1)  # changed
        assert _react(session, 9, ["👎"], -1)
        assert _react(session, 9, [], 0)  # removed
        assert not set_reactions(  # Ann's own message: not a bot reply, nothing stored
            session, chat_id=CHAT, message_id=1, member_id=2, reactions=["👍"], vote=1
        )
    with Session() as session:
        assert reactions_of(session, CHAT, 4) == {1: (["👍"], 1), 2: (["😂"], 1)}
        (reply,) = judged_replies(session)
        assert (reply.likes, reply.dislikes, reply.quotes) == (3, 0, 1)  # Ann, Ben, Cat's quote
        assert reply.verdict == "liked"
        # the context is what was stored up to the pointer, not later messages
        assert [m.text for m in context_of(session, reply)] == ["climbing?", "sure"]
        before = feedback_digest(session)
    with Session.begin() as session:
        _react(session, 1, ["💩"], -1)
        _react(session, 3, ["🤮"], -1)  # Cat quoted but now dislikes: her quote no longer counts
    with Session() as session:
        (reply,) = judged_replies(session)
        assert (reply.likes, reply.dislikes) == (1, 2) and reply.verdict == "disliked"
        assert feedback_digest(session) != before


def test_forgetting_a_member_or_a_chat_takes_their_feedback(
    Session: orm.sessionmaker[orm.Session],
) -> None:
    _setup(Session)
    with Session.begin() as session:
        _react(session, 1, ["👍"], 1)
        _react(session, 2, ["👍"], 1)
        forget_member(session, 1)  # Ann opts out: her reaction and her words go
    with Session() as session:
        assert set(reactions_of(session, CHAT, 4)) == {2}
        (reply,) = judged_replies(session)
        assert [m.text for m in context_of(session, reply)] == ["sure"]
    with Session.begin() as session:
        forget_chat(session, CHAT)
    with Session() as session:
        assert judged_replies(session) == [] and reactions_of(session, CHAT, 4) == {}
