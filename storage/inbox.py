"""The inbox: Telegram updates stored the moment they are fetched, so a crash loses none.

Telegram forgets an update once the bot confirms it, and the bot confirms a batch simply by
asking for the next one (the ``offset`` of its next ``getUpdates``). Between that moment and
the commit of the messages the batch holds, a killed process would lose them for good. So each
fetched batch is stored here, in one durable transaction, before anyone sees it; a row is
marked processed in the same transaction that commits its message (the writer does both, see
storage.writer); at start, rows still unprocessed are handed to the bot again.

A processed row keeps only its ids, for :data:`KEEP_PROCESSED`: long enough to recognise an
update Telegram delivers again (it keeps unconfirmed ones for 24 hours), short enough not to
grow. The payload, which holds message text, is dropped as soon as the update is handled, so an
opt-out or ``/forget`` leaves no copy of the text behind here.

Functions take a session and never commit, like the rest of the package.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, null, select, update
from sqlalchemy.orm import Session

from storage.history import dialect_insert
from storage.models import InboxUpdate, utcnow

KEEP_PROCESSED = timedelta(days=2)
"""How long a processed row is kept to recognise a re-delivered update (Telegram: 24 h)."""


def save_fetched(session: Session, bot_id: int, updates: Sequence[Mapping[str, Any]]) -> set[int]:
    """Store fetched updates (Bot API JSON, each with its ``update_id``) not stored yet;
    returns the ids of those still to handle: new, or stored earlier and not processed.

    An update already processed is a re-delivery (Telegram was not told in time that it may
    forget it) and must not be handled twice: its id is not returned.
    """
    if not updates:
        return set()
    now = utcnow()
    ids = sorted({int(u["update_id"]) for u in updates})
    rows = [
        {"bot_id": bot_id, "update_id": int(u["update_id"]), "received_at": now, "payload": dict(u)}
        for u in updates
    ]
    stmt = dialect_insert(session, InboxUpdate).on_conflict_do_nothing(
        index_elements=[InboxUpdate.bot_id, InboxUpdate.update_id]
    )
    session.execute(stmt, rows)
    unprocessed = select(InboxUpdate.update_id).where(
        InboxUpdate.bot_id == bot_id,
        InboxUpdate.update_id.in_(ids),
        InboxUpdate.processed_at.is_(None),
    )
    return set(session.scalars(unprocessed))


def pending_updates(session: Session, bot_id: int) -> list[dict[str, Any]]:
    """Stored updates not processed yet, oldest first: what a restarted bot must handle."""
    stmt = (
        select(InboxUpdate.payload)
        .where(InboxUpdate.bot_id == bot_id, InboxUpdate.processed_at.is_(None))
        .order_by(InboxUpdate.update_id)
    )
    return [dict(payload) for payload in session.scalars(stmt) if payload is not None]


def mark_processed(session: Session, handled: Iterable[tuple[int, int]]) -> int:
    """Mark ``(bot_id, update_id)`` pairs handled and drop their payloads; returns rows changed."""
    by_bot: dict[int, list[int]] = {}
    for bot_id, update_id in handled:
        by_bot.setdefault(bot_id, []).append(update_id)
    changed = 0
    now = utcnow()
    for bot_id, update_ids in sorted(by_bot.items()):
        stmt = (
            update(InboxUpdate)
            .where(
                InboxUpdate.bot_id == bot_id,
                InboxUpdate.update_id.in_(sorted(set(update_ids))),
                InboxUpdate.processed_at.is_(None),
            )
            .values(processed_at=now, payload=null())
        )
        changed += session.execute(stmt).rowcount
    return changed


def prune_processed(session: Session, older_than: datetime | None = None) -> int:
    """Delete rows processed before ``older_than`` (default: :data:`KEEP_PROCESSED` ago)."""
    cutoff = older_than if older_than is not None else utcnow() - KEEP_PROCESSED
    stmt = delete(InboxUpdate).where(
        InboxUpdate.processed_at.is_not(None), InboxUpdate.processed_at < cutoff
    )
    return session.execute(stmt).rowcount
