"""The batching message writer: the bot hands messages over and never waits for the database.

A commit per message costs a disk sync each; a busy group (or a burst after the bot was
offline) outruns that while a generation also wants the CPU. So the event loop only puts
records on a queue (:meth:`MessageWriter.submit`, never blocking), and one writer thread
drains it, writing each batch in one transaction: up to ``max_batch`` records, or whatever
arrived within ``max_delay_s`` of the first one.

Nothing submitted is lost: a batch that fails is retried, and if it still fails, written one
record at a time so only a record the database refuses is dropped (and logged).

The queue also carries "this Telegram update is handled" marks (:meth:`MessageWriter.mark_handled`)
for the inbox (storage.inbox). A mark is queued after the records its update produced, so it is
committed in the same transaction as they are, or a later one: an inbox row is never marked
processed while its message is not yet on disk.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage.history import (
    UNKNOWN_CHAT_TYPE,
    add_messages,
    clip,
    dialect_insert,
    upsert_chat,
    upsert_member,
)
from storage.inbox import mark_processed
from storage.models import Chat, Member, utcnow

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.1, 0.5, 2.0)
"""Waits before retrying a batch that failed on a transient error (database locked, gone)."""


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One incoming (or sent) message with what is needed to upsert its chat and sender.

    The one record of a message for every front end (the Telegram handlers, the terminal
    chat) and for storage. The first eight fields are :func:`storage.history.add_message`'s.
    ``chat_type`` None means "don't touch the chat row" (it is created as 'unknown' if
    missing), for records whose chat details the caller does not have. Records with
    ``from_bot`` never touch ``members``: the bot posts under its friends' names.
    """

    chat_id: int
    message_id: int
    sender_id: int | None
    sender_name: str
    text: str
    date: datetime
    reply_to_message_id: int | None = None
    from_bot: bool = False
    sender_username: str | None = None
    sender_is_bot: bool = False
    chat_title: str | None = None
    chat_type: str | None = None


@dataclass(frozen=True, slots=True)
class HandledUpdate:
    """A mark: the inbox row of this Telegram update is processed (see storage.inbox)."""

    bot_id: int
    update_id: int


@dataclass(slots=True)
class WriterStats:
    """Counters since start (read them from any thread; they only grow)."""

    submitted: int = 0  # records; handled-update marks are not counted here
    stored: int = 0
    duplicates: int = 0
    opted_out: int = 0
    dropped: int = 0
    batches: int = 0


class _Signal:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_FLUSH = _Signal("FLUSH")  # commit what you have now, don't wait for max_delay_s
_STOP = _Signal("STOP")  # commit what you have and end the thread


def write_batch(session: Session, records: list[MessageRecord]) -> WriterStats:
    """Upsert the chats and senders of ``records`` and store their messages, in ``session``.

    Chats and members are upserted once per batch (the last record's details win); messages
    of opted-out members are skipped. Returns what happened, as counts.
    """
    counts = WriterStats()
    chats: dict[int, MessageRecord] = {}
    for r in records:  # the last record that carries chat details wins
        if r.chat_type is not None or r.chat_id not in chats:
            chats[r.chat_id] = r
    # Rows are locked in id order, so two writers (two processes) cannot deadlock each other.
    for _, record in sorted(chats.items()):
        _ensure_chat(session, record)
    senders = {r.sender_id: r for r in records if r.sender_id is not None and not r.from_bot}
    for sender_id, record in sorted(senders.items()):
        upsert_member(
            session, sender_id, record.sender_name, record.sender_username, record.sender_is_bot
        )
    opted_out = (
        set(
            session.scalars(
                select(Member.user_id).where(Member.opted_out, Member.user_id.in_(list(senders)))
            )
        )
        if senders
        else set()
    )
    rows = []
    for r in records:
        if r.sender_id in opted_out and not r.from_bot:
            counts.opted_out += 1
            continue
        rows.append(
            {
                "chat_id": r.chat_id,
                "message_id": r.message_id,
                "sender_id": r.sender_id,
                "sender_name": r.sender_name,
                "text": r.text,
                "date": r.date,
                "reply_to_message_id": r.reply_to_message_id,
                "from_bot": r.from_bot,
            }
        )
    counts.stored = add_messages(session, rows)
    counts.duplicates = len(rows) - counts.stored
    return counts


def _ensure_chat(session: Session, record: MessageRecord) -> None:
    if record.chat_type is not None:
        upsert_chat(session, record.chat_id, record.chat_title, record.chat_type)
        return
    stmt = dialect_insert(session, Chat).values(
        id=record.chat_id,
        title=clip(record.chat_title),
        type=UNKNOWN_CHAT_TYPE,
        created_at=utcnow(),
    )
    session.execute(stmt.on_conflict_do_nothing(index_elements=[Chat.id]))


_Item = MessageRecord | HandledUpdate


class MessageWriter:
    """A queue of :class:`MessageRecord` (and :class:`HandledUpdate` marks) drained by one
    thread, one commit per batch.

    ``start()`` once; ``submit()`` from anywhere (the event loop included); ``flush()`` when
    you must read what you submitted (from async code: ``await asyncio.to_thread(w.flush)``);
    ``close()`` at shutdown (also registered with ``atexit``, as a safety net).
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        max_batch: int = 500,
        max_delay_s: float = 0.05,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.session_factory = session_factory
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.stats = WriterStats()
        self._queue: queue.SimpleQueue[_Item | _Signal] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._queued = 0  # items (records and marks) ever queued
        self._done = 0  # items finished with: stored, duplicate, skipped, marked or dropped
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- the caller's side --------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="friendbot-message-writer", daemon=True
            )
            self._thread.start()
        atexit.register(self.close)

    def submit(self, record: MessageRecord) -> None:
        """Queue ``record`` for storage; returns at once (an unbounded queue, a short lock)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("MessageWriter is closed")
            self.stats.submitted += 1
            self._queued += 1
            self._queue.put(record)

    def mark_handled(self, bot_id: int, update_id: int) -> None:
        """Queue the mark "update ``update_id`` is handled": its inbox row is marked processed
        in the transaction of the records submitted before it (or a later one)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("MessageWriter is closed")
            self._queued += 1
            self._queue.put(HandledUpdate(bot_id, update_id))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything submitted before this call is committed (or dropped).

        Raises TimeoutError after ``timeout`` seconds, RuntimeError if the writer is not
        running while records are pending.
        """
        with self._cond:
            target = self._queued
            if self._done >= target:
                return
            if self._thread is None or not self._thread.is_alive():
                raise RuntimeError("MessageWriter is not running (call start())")
        self._queue.put(_FLUSH)
        with self._cond:
            finished = self._cond.wait_for(
                lambda: self._done >= target or not self._alive(), timeout
            )
            if not finished:
                raise TimeoutError(f"MessageWriter.flush: not committed within {timeout} s")
            if self._done < target:
                raise RuntimeError("MessageWriter thread stopped with records pending")

    def close(self, timeout: float | None = None) -> None:
        """Commit everything pending, then stop the thread; later submits raise."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            pending = self._done < self._queued
        if self._thread is None and pending:
            self.start()
        atexit.unregister(self.close)
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def __enter__(self) -> MessageWriter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._collect()
            if batch:
                self._write(batch)

    def _collect(self) -> tuple[list[_Item], bool]:
        """Block for the first item, then gather more until full, late, flushed or stopped."""
        batch: list[_Item] = []
        item = self._queue.get()
        deadline = time.monotonic() + self.max_delay_s
        while True:
            if item is _STOP:
                return batch, True
            if item is _FLUSH:
                return batch, False
            assert isinstance(item, MessageRecord | HandledUpdate)
            batch.append(item)
            if len(batch) >= self.max_batch:
                return batch, False
            remaining = deadline - time.monotonic()
            try:
                # Past the deadline, still take what is already queued (no waiting).
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                return batch, False

    def _write(self, batch: list[_Item]) -> None:
        """One transaction for the batch; retries, then record by record, so none is lost."""
        records = [item for item in batch if isinstance(item, MessageRecord)]
        handled = [(i.bot_id, i.update_id) for i in batch if isinstance(i, HandledUpdate)]
        try:
            counts = self._write_with_retries(records, handled)
            if counts is None:
                counts = self._write_one_by_one(records, handled)
        except Exception:  # never let the thread die: flush() would wait forever
            log.exception("message writer: unexpected error; %d records dropped", len(records))
            counts = WriterStats(dropped=len(records))
        with self._cond:
            for name in ("stored", "duplicates", "opted_out", "dropped"):
                setattr(self.stats, name, getattr(self.stats, name) + getattr(counts, name))
            self.stats.batches += 1
            self._done += len(batch)
            self._cond.notify_all()

    def _write_with_retries(
        self, records: list[MessageRecord], handled: list[tuple[int, int]]
    ) -> WriterStats | None:
        """The batch in one commit; None when it keeps failing (caller isolates the bad one)."""
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S)):
            time.sleep(delay)
            try:
                with self.session_factory.begin() as session:
                    counts = write_batch(session, records) if records else WriterStats()
                    mark_processed(session, handled)
                    return counts
            except OperationalError as exc:  # locked, disconnected: worth waiting for
                log.warning("message writer: batch failed (attempt %d): %s", attempt + 1, exc)
            except Exception as exc:  # a record the database refuses: find it
                log.warning("message writer: batch refused, writing one by one: %s", exc)
                return None
        return None

    def _write_one_by_one(
        self, records: list[MessageRecord], handled: list[tuple[int, int]]
    ) -> WriterStats:
        """Each record alone; the batch's updates are marked handled only if none was dropped,
        so a dropped message's update is handed over again at the next start."""
        total = WriterStats()
        for record in records:
            try:
                with self.session_factory.begin() as session:
                    counts = write_batch(session, [record])
            except Exception:
                log.exception(
                    "message writer: dropped message %s of chat %s",
                    record.message_id,
                    record.chat_id,
                )
                total.dropped += 1
                continue
            total.stored += counts.stored
            total.duplicates += counts.duplicates
            total.opted_out += counts.opted_out
        if handled and not total.dropped:
            try:
                with self.session_factory.begin() as session:
                    mark_processed(session, handled)
            except Exception:
                log.exception("message writer: %d updates stay in the inbox", len(handled))
        return total
