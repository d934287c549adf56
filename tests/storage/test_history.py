"""Query functions of storage.history, on SQLite (file) and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select

from storage.history import (
    add_message,
    chat_stats,
    forget_chat,
    forget_member,
    get_chat,
    messages_since,
    opted_out_ids,
    prune_messages,
    recent_messages,
    set_chat_flags,
    set_opted_out,
    upsert_chat,
    upsert_member,
)
from storage.models import Member, Message
from tests.storage.conftest import T0, at

CHAT = -1001234567890  # supergroups have 64-bit Bot API ids
OTHER = -42


def _add(session, message_id: int, *, chat: int = CHAT, sender: int | None = 1, **kw) -> bool:
    fields = {
        "sender_name": f"user{sender}",
        "text": f"message {message_id}",
        "date": at(message_id),
    } | kw
    return add_message(session, chat_id=chat, message_id=message_id, sender_id=sender, **fields)


def test_upsert_chat_refreshes_details_and_keeps_flags(Session) -> None:
    with Session.begin() as session:
        chat = upsert_chat(session, CHAT, "Climbers", "supergroup")
        assert (chat.id, chat.title, chat.allowed, chat.muted) == (CHAT, "Climbers", False, False)
        set_chat_flags(session, CHAT, allowed=True, muted=True)
    with Session.begin() as session:
        chat = upsert_chat(session, CHAT, "Climbers 2", "supergroup")
        assert (chat.title, chat.allowed, chat.muted) == ("Climbers 2", True, True)
        set_chat_flags(session, CHAT, muted=False)
    with Session() as session:
        chat = get_chat(session, CHAT)
        assert chat is not None and (chat.allowed, chat.muted) == (True, False)
        assert chat.created_at.tzinfo is not None
        assert get_chat(session, OTHER) is None
        assert "Climbers 2" in repr(chat)


def test_set_chat_flags_creates_an_unknown_chat(Session) -> None:
    with Session.begin() as session:
        set_chat_flags(session, OTHER, muted=True)
    with Session.begin() as session:
        chat = get_chat(session, OTHER)
        assert chat is not None and (chat.type, chat.muted, chat.allowed) == (
            "unknown",
            True,
            False,
        )
        assert upsert_chat(session, OTHER, "Later seen", "group").muted is True


def test_opt_out_survives_member_upserts(Session) -> None:
    with Session.begin() as session:
        member = upsert_member(session, 7, "Hugo", "hugo")
        assert (member.display_name, member.username, member.opted_out) == ("Hugo", "hugo", False)
        set_opted_out(session, 7, True)
        set_opted_out(session, 8, True)  # never seen: remembered anyway
        upsert_member(session, 7, "Hugo B.", None)
    with Session.begin() as session:
        assert opted_out_ids(session) == {7, 8}
        hugo = session.get(Member, 7)
        assert (hugo.display_name, hugo.username, hugo.opted_out) == ("Hugo B.", None, True)
        set_opted_out(session, 7, False)
    with Session() as session:
        assert opted_out_ids(session) == {8}


def test_names_longer_than_the_column_are_clipped(Session) -> None:
    with Session.begin() as session:
        upsert_chat(session, CHAT, "t" * 1000, "group")
        member = upsert_member(session, 1, "n" * 1000)
        assert len(member.display_name) == 255
        assert _add(session, 1, sender_name="s" * 1000)
    with Session() as session:
        assert len(get_chat(session, CHAT).title) == 255
        assert len(recent_messages(session, CHAT, 1)[0].sender_name) == 255


def test_add_message_is_idempotent_and_keeps_utc(Session) -> None:
    paris = timezone(timedelta(hours=2))
    with Session.begin() as session:
        upsert_chat(session, CHAT, "g", "supergroup")
        assert _add(session, 1, date=datetime(2024, 5, 1, 14, 0, tzinfo=paris), text="héllo 😂")
        assert not _add(session, 1, text="re-delivered")
    with Session() as session:
        [message] = recent_messages(session, CHAT, 10)
        assert message.text == "héllo 😂"
        assert message.date == T0 and message.date.tzinfo is not None
        assert message.date.utcoffset() == timedelta(0)


def test_recent_messages_is_the_last_n_oldest_first(Session) -> None:
    with Session.begin() as session:
        upsert_chat(session, CHAT, "g", "supergroup")
        upsert_chat(session, OTHER, "h", "group")
        for message_id in (5, 1, 4, 2, 3):  # arrival order does not matter, dates do
            _add(session, message_id)
        _add(session, 99, chat=OTHER)
    with Session() as session:
        last3 = recent_messages(session, CHAT, 3)
        assert [m.message_id for m in last3] == [3, 4, 5]
        assert [m.message_id for m in recent_messages(session, CHAT, 100)] == [1, 2, 3, 4, 5]
        assert recent_messages(session, CHAT, 0) == []
    # objects stay readable after the session closed (expire_on_commit=False)
    assert last3[-1].text == "message 5"


def test_forget_chat_deletes_messages_but_keeps_flags(Session) -> None:
    with Session.begin() as session:
        upsert_chat(session, CHAT, "g", "supergroup")
        upsert_chat(session, OTHER, "h", "group")
        set_chat_flags(session, CHAT, allowed=True)
        for i in range(4):
            _add(session, i)
        _add(session, 1, chat=OTHER)
    with Session.begin() as session:
        assert forget_chat(session, CHAT) == 4
    with Session() as session:
        assert recent_messages(session, CHAT, 10) == []
        assert get_chat(session, CHAT).allowed is True
        assert len(recent_messages(session, OTHER, 10)) == 1


def test_forget_member_everywhere_and_keeps_an_opt_out(Session) -> None:
    with Session.begin() as session:
        upsert_chat(session, CHAT, "g", "supergroup")
        upsert_chat(session, OTHER, "h", "group")
        for user in (1, 2, 3):
            upsert_member(session, user, f"user{user}")
        _add(session, 1, sender=1)
        _add(session, 2, sender=2)
        _add(session, 3, sender=1, chat=OTHER)
        _add(session, 4, sender=3)
        set_opted_out(session, 3, True)
    with Session.begin() as session:
        assert forget_member(session, 1) == 2
        assert forget_member(session, 3) == 1
    with Session() as session:
        assert session.get(Member, 1) is None
        assert session.get(Member, 3).opted_out is True  # the choice outlives the data
        assert [m.sender_id for m in recent_messages(session, CHAT, 10)] == [2]


def test_prune_by_count_per_chat_and_by_age(Session) -> None:
    with Session.begin() as session:
        upsert_chat(session, CHAT, "g", "supergroup")
        upsert_chat(session, OTHER, "h", "group")
        for i in range(10):
            _add(session, i)
        for i in range(3):
            _add(session, 100 + i, chat=OTHER)
    with Session.begin() as session:
        assert prune_messages(session) == 0
        assert prune_messages(session, keep_per_chat=4) == 6  # OTHER has only 3
    with Session.begin() as session:
        assert [m.message_id for m in recent_messages(session, CHAT, 100)] == [6, 7, 8, 9]
        assert len(recent_messages(session, OTHER, 100)) == 3
        # older_than: messages dated before minute 8 go (6, 7 of CHAT; OTHER's are at 100+)
        assert prune_messages(session, older_than=at(8)) == 2
    with Session.begin() as session:
        assert [m.message_id for m in recent_messages(session, CHAT, 100)] == [8, 9]
        # by age: 8, 9 and 100 go; then by count OTHER keeps only 102
        assert prune_messages(session, keep_per_chat=1, older_than=at(101)) == 4
        assert [m.message_id for m in session.scalars(select(Message))] == [102]


def test_messages_since_excludes_bots_and_opted_out(Session) -> None:
    with Session.begin() as session:
        upsert_chat(session, CHAT, "g", "supergroup")
        upsert_chat(session, OTHER, "h", "group")
        upsert_member(session, 1, "Ann")
        upsert_member(session, 2, "Ben")
        upsert_member(session, 50, "OtherBot", is_bot=True)
        _add(session, 1, sender=1)
        _add(session, 2, sender=2)
        _add(session, 3, sender=99, from_bot=True)  # our own reply
        _add(session, 4, sender=50)  # another bot
        _add(session, 5, sender=None)  # anonymous admin / channel post
        _add(session, 6, sender=1, chat=OTHER)
        set_opted_out(session, 2, True)
    with Session() as session:
        human = [(m.chat_id, m.message_id) for m in messages_since(session, None)]
        assert human == [(CHAT, 1), (CHAT, 5), (OTHER, 6)]  # by chat id, then date
        since = [m.message_id for m in messages_since(session, at(5))]
        assert since == [5, 6]  # at or after minute 5
        everything = {m.message_id for m in messages_since(session, None, human_only=False)}
        assert everything == {1, 3, 4, 5, 6}  # never the opted-out member


def test_chat_stats(Session) -> None:
    with Session.begin() as session:
        upsert_chat(session, CHAT, "Climbers", "supergroup")
        _add(session, 1, sender=1)
        _add(session, 2, sender=2)
        _add(session, 3, sender=1)
        _add(session, 4, sender=99, from_bot=True)
    with Session() as session:
        stats = chat_stats(session, CHAT)
        empty = chat_stats(session, OTHER)
    assert stats == {
        "chat_id": CHAT,
        "title": "Climbers",
        "type": "supergroup",
        "messages": 4,
        "human_messages": 3,
        "bot_messages": 1,
        "members": 2,
        "first_date": at(1).isoformat(),
        "last_date": at(4).isoformat(),
    }
    assert empty["messages"] == 0 and empty["first_date"] is None and empty["title"] is None
    assert at(1).tzinfo is UTC
