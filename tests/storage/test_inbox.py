"""The inbox of fetched Telegram updates, and the writer marking them handled with their
messages (issue: no message lost when the bot process dies)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, func, select

from storage.db import durable_session
from storage.inbox import mark_processed, pending_updates, prune_processed, save_fetched
from storage.models import InboxUpdate, Message, utcnow
from storage.writer import MessageRecord, MessageWriter
from tests.storage.conftest import at

BOT = 777
CHAT = -1001


def update(update_id: int, text: str = "hi") -> dict:
    return {"update_id": update_id, "message": {"message_id": update_id, "text": text}}


def record(message_id: int, **kw) -> MessageRecord:
    fields = {
        "chat_id": CHAT,
        "message_id": message_id,
        "sender_id": 1,
        "sender_name": "Friend",
        "text": f"text {message_id}",
        "date": at(message_id),
        "chat_type": "supergroup",
    } | kw
    return MessageRecord(**fields)


def test_fetched_updates_are_stored_once_and_handled_unless_processed(Session) -> None:
    with Session.begin() as session:
        assert save_fetched(session, BOT, [update(12), update(10), update(11)]) == {10, 11, 12}
    with Session.begin() as session:  # Telegram delivering 11 and 12 again, 13 is new
        mark_processed(session, [(BOT, 12)])
        assert save_fetched(session, BOT, [update(11), update(12), update(13)]) == {11, 13}
        assert save_fetched(session, BOT + 1, [update(12)]) == {12}  # another bot's ids
        assert [u["update_id"] for u in pending_updates(session, BOT)] == [10, 11, 13]
        assert pending_updates(session, BOT)[0] == update(10)


def test_processed_rows_lose_their_text_but_still_recognise_a_redelivery(Session) -> None:
    with Session.begin() as session:
        save_fetched(session, BOT, [update(1, "secret"), update(2)])
    with Session.begin() as session:
        assert mark_processed(session, [(BOT, 1), (BOT, 1), (BOT + 5, 2)]) == 1
    with Session.begin() as session:
        assert [u["update_id"] for u in pending_updates(session, BOT)] == [2]
        row = session.get(InboxUpdate, (BOT, 1))
        assert row is not None and row.payload is None and row.processed_at is not None
        assert save_fetched(session, BOT, [update(1, "secret")]) == set()


def test_prune_drops_only_rows_processed_long_ago(Session) -> None:
    with Session.begin() as session:
        save_fetched(session, BOT, [update(1), update(2)])
        mark_processed(session, [(BOT, 1)])
    with Session.begin() as session:
        assert prune_processed(session) == 0  # processed just now: kept a while
        assert prune_processed(session, older_than=utcnow() + timedelta(seconds=1)) == 1
        assert [u["update_id"] for u in pending_updates(session, BOT)] == [2]  # never pruned


def test_durable_session_commits_with_a_full_sync(engine: Engine, Session) -> None:
    with durable_session(engine) as session:
        save_fetched(session, BOT, [update(1)])
        if engine.dialect.name == "sqlite":
            assert session.connection().exec_driver_sql("PRAGMA synchronous").scalar() == 2
    with Session.begin() as session:  # committed, and the connection is back to NORMAL
        assert len(pending_updates(session, BOT)) == 1
        if engine.dialect.name == "sqlite":
            assert session.connection().exec_driver_sql("PRAGMA synchronous").scalar() == 1


def test_writer_marks_an_update_handled_with_its_message(Session) -> None:
    with Session.begin() as session:
        save_fetched(session, BOT, [update(1), update(2), update(3)])
    with MessageWriter(Session) as writer:
        writer.submit(record(1))
        writer.mark_handled(BOT, 1)
        writer.mark_handled(BOT, 2)  # a command: nothing to store
        writer.flush()
        assert writer.stats.submitted == 1 and writer.stats.stored == 1
    with Session.begin() as session:
        assert [u["update_id"] for u in pending_updates(session, BOT)] == [3]
        assert session.scalar(select(func.count()).select_from(Message)) == 1


def test_a_dropped_message_leaves_its_update_pending(Session) -> None:
    """The writer isolates a record the database refuses; the updates of that batch stay in
    the inbox, to be handed over again at the next start rather than forgotten."""
    with Session.begin() as session:
        save_fetched(session, BOT, [update(1), update(2)])
    with MessageWriter(Session, max_delay_s=0.5) as writer:
        writer.submit(record(1))
        writer.submit(record(2, text=None))  # NOT NULL: refused
        writer.mark_handled(BOT, 1)
        writer.mark_handled(BOT, 2)
        writer.flush()
        assert writer.stats.stored == 1 and writer.stats.dropped == 1
    with Session.begin() as session:
        assert [u["update_id"] for u in pending_updates(session, BOT)] == [1, 2]
