"""Named locks shared by every process using the database (one training run at a time).

A lock is a row in ``locks``. Each call runs in its own short transaction, so what it does is
visible to other processes at once. A holder proves it is alive with :func:`heartbeat`; a lock
whose holder stopped heartbeating for ``stale_after_s``, or whose holder's pid is dead on this
host, is taken over: a crashed trainer never blocks retraining forever.

Holders are ``"host:pid:uuid"`` strings (:func:`make_holder`); the pid check only applies when
the host part is this machine's hostname. Staleness compares wall clocks, so machines sharing
one database need synchronized clocks (NTP) and a ``stale_after_s`` well above the heartbeat
interval.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.history import dialect_insert
from storage.models import Lock, utcnow


class LockLost(RuntimeError):
    """The lock is no longer ours: someone took it over (our heartbeat had gone stale)."""


def make_holder(pid: int | None = None) -> str:
    """A holder id unique to this process and call: ``host:pid:uuid``."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}:{uuid.uuid4().hex}"


def holder_is_dead(holder: str) -> bool:
    """True only when ``holder`` names this host and its pid no longer exists."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


def try_acquire(
    session_factory: sessionmaker[Session], name: str, holder: str, stale_after_s: float
) -> bool:
    """Take lock ``name`` for ``holder``; True if it is now ours (also when it already was).

    Never waits: False means someone alive holds it. Taking over a stale or dead holder is a
    compare-and-swap on the row, so of several processes racing for it exactly one wins.
    """
    now = utcnow()
    with session_factory.begin() as session:
        # The INSERT comes first so the transaction is a write transaction from its start
        # (SQLite: no read-then-upgrade that could fail with SQLITE_BUSY).
        stmt = dialect_insert(session, Lock).values(
            name=name, holder=holder, acquired_at=now, heartbeat_at=now
        )
        inserted = session.execute(
            stmt.on_conflict_do_nothing(index_elements=[Lock.name]).returning(Lock.name)
        )
        if inserted.first() is not None:
            return True
        current = session.execute(
            select(Lock.holder, Lock.heartbeat_at).where(Lock.name == name)
        ).one_or_none()
        if current is None:  # released between our INSERT and SELECT: try once more
            retry = stmt.on_conflict_do_nothing().returning(Lock.name)
            return session.execute(retry).first() is not None
        old_holder, old_heartbeat = current
        if old_holder == holder:
            session.execute(update(Lock).where(Lock.name == name).values(heartbeat_at=now))
            return True
        stale = now - old_heartbeat > timedelta(seconds=stale_after_s)
        if not (stale or holder_is_dead(old_holder)):
            return False
        taken = session.execute(
            update(Lock)
            .where(Lock.name == name, Lock.holder == old_holder)
            .values(holder=holder, acquired_at=now, heartbeat_at=now)
        )
        return taken.rowcount == 1


def heartbeat(session_factory: sessionmaker[Session], name: str, holder: str) -> None:
    """Tell the others ``holder`` is alive; raises :class:`LockLost` if it no longer holds it."""
    with session_factory.begin() as session:
        result = session.execute(
            update(Lock)
            .where(Lock.name == name, Lock.holder == holder)
            .values(heartbeat_at=utcnow())
        )
        if result.rowcount != 1:
            raise LockLost(f"lock {name!r} is no longer held by {holder}")


def release(session_factory: sessionmaker[Session], name: str, holder: str) -> None:
    """Give the lock back; a no-op when ``holder`` does not hold it (already taken over)."""
    with session_factory.begin() as session:
        session.execute(delete(Lock).where(Lock.name == name, Lock.holder == holder))


def current_holder(session_factory: sessionmaker[Session], name: str) -> str | None:
    """Who holds ``name`` right now (for status displays), or None."""
    with session_factory() as session:
        return session.scalar(select(Lock.holder).where(Lock.name == name))
