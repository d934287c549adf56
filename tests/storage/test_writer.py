"""The batching MessageWriter: bursts, concurrent readers, a locked database, bad records."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import func, select

from storage.history import opted_out_ids, recent_messages, set_opted_out
from storage.models import Chat, Member, Message
from storage.writer import MessageRecord, MessageWriter
from tests.storage.conftest import at

CHAT = -1001


def record(message_id: int, sender: int = 1, **kw) -> MessageRecord:
    fields = {
        "chat_id": CHAT,
        "message_id": message_id,
        "sender_id": sender,
        "sender_name": f"Friend {sender}",
        "text": f"text {message_id}",
        "date": at(message_id / 60),
        "chat_title": "Friends",
        "chat_type": "supergroup",
    } | kw
    return MessageRecord(**fields)


def count(Session) -> int:
    with Session() as session:
        return session.scalar(select(func.count()).select_from(Message))


def test_burst_from_threads_while_a_reader_reads(Session) -> None:
    """1000 messages from 4 threads, another session reading the last 10 all along."""
    writer = MessageWriter(Session, max_batch=100)
    writer.start()
    stop = threading.Event()
    seen: list[list[int]] = []
    reader_errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                with Session() as session:
                    seen.append([m.message_id for m in recent_messages(session, CHAT, 10)])
        except BaseException as exc:  # pragma: no cover - reported below
            reader_errors.append(exc)

    def producer(start: int) -> None:
        for message_id in range(start, 1000, 4):  # ids interleave across the threads
            writer.submit(record(message_id, sender=message_id % 7))

    reading = threading.Thread(target=reader)
    reading.start()
    producers = [threading.Thread(target=producer, args=(i,)) for i in range(4)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    writer.flush(timeout=120)
    stop.set()
    reading.join()
    writer.close()

    assert reader_errors == []
    assert count(Session) == 1000
    with Session() as session:
        stored = set(session.scalars(select(Message.message_id)))
        assert stored == set(range(1000))
        assert [m.message_id for m in recent_messages(session, CHAT, 10)] == list(range(990, 1000))
        assert session.scalar(select(func.count()).select_from(Member)) == 7
        assert session.get(Chat, CHAT).title == "Friends"
    assert writer.stats.stored == 1000 and writer.stats.dropped == 0
    assert writer.stats.batches < 1000  # batched, not a commit per message
    assert seen and all(ids == sorted(ids) and len(ids) <= 10 for ids in seen)


def test_submit_never_waits_for_a_locked_database(Session, engine) -> None:
    """Another connection holds a write lock: submit() returns at once, flush() then stores all."""
    writer = MessageWriter(Session, max_delay_s=0.01)
    writer.start()
    blocker = engine.raw_connection()
    cursor = blocker.cursor()
    if engine.dialect.name == "sqlite":
        cursor.execute("BEGIN IMMEDIATE")  # SQLite's database-wide write lock
    else:
        cursor.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
    try:
        for i in range(200):
            writer.submit(record(i))  # would hang the test if it waited for the lock
        with pytest.raises(TimeoutError):
            writer.flush(timeout=0.3)
        assert writer.stats.stored == 0
    finally:
        blocker.rollback()
        blocker.close()
    writer.flush(timeout=60)
    writer.close()
    assert count(Session) == 200


async def test_submit_from_the_event_loop(Session) -> None:
    with MessageWriter(Session) as writer:
        for i in range(300):
            writer.submit(record(i))
        await asyncio.to_thread(writer.flush, 60)
        assert writer.stats.stored == 300
        writer.submit(record(0, text="telegram re-delivered it"))  # same (chat, message_id)
    assert writer.stats.duplicates == 1
    assert count(Session) == 300
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(record(1000))


def test_a_bad_record_costs_only_itself(Session) -> None:
    with MessageWriter(Session, max_delay_s=0.2) as writer:
        writer.submit(record(1))
        writer.submit(record(2, text=None))  # NOT NULL: the database refuses it
        writer.submit(record(3))
        writer.flush(timeout=60)
    assert writer.stats.stored == 2 and writer.stats.dropped == 1
    with Session() as session:
        assert [m.message_id for m in recent_messages(session, CHAT, 10)] == [1, 3]


def test_opted_out_members_are_not_stored(Session) -> None:
    with Session.begin() as session:
        set_opted_out(session, 2, True)
    with MessageWriter(Session) as writer:
        writer.submit(record(1, sender=1))
        writer.submit(record(2, sender=2))
        writer.submit(record(3, sender=99, from_bot=True, sender_name="Friend 2"))
    with Session() as session:
        messages = recent_messages(session, CHAT, 10)
        assert [m.message_id for m in messages] == [1, 3]
        assert messages[1].from_bot
        assert session.get(Member, 99) is None  # the bot posting as a friend is no member
        assert opted_out_ids(session) == {2}
    assert writer.stats.opted_out == 1


def test_records_without_chat_details_leave_the_chat_alone(Session) -> None:
    with MessageWriter(Session) as writer:
        writer.submit(record(1, chat_id=-7, chat_type=None, chat_title=None))
        writer.flush(timeout=60)
        with Session() as session:
            assert session.get(Chat, -7).type == "unknown"
        writer.submit(record(2, chat_id=-7, chat_title="Named", chat_type="group"))
        writer.submit(record(3, chat_id=-7, chat_type=None))  # e.g. the bot's own reply
    with Session() as session:
        chat = session.get(Chat, -7)
        assert (chat.title, chat.type) == ("Named", "group")


def test_close_stores_records_submitted_before_start(Session) -> None:
    writer = MessageWriter(Session)
    writer.submit(record(1))
    writer.close()
    assert count(Session) == 1
