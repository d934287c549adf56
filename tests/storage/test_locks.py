"""Named locks across threads and processes, with takeover of dead or silent holders."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from storage.locks import (
    LockLost,
    current_holder,
    heartbeat,
    holder_is_dead,
    make_holder,
    release,
    try_acquire,
)
from storage.models import Lock, utcnow

ROOT = Path(__file__).resolve().parents[2]
NAME = "training"


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    """Run ``code`` in a fresh interpreter (its own engine and pid), stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


ACQUIRE = """
    import sys, time
    from pathlib import Path
    from storage.db import make_engine, session_factory
    from storage.locks import make_holder, try_acquire
    url, go, stop = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    Session = session_factory(make_engine(url))
    holder = make_holder()
    Session().close()
    while not go.exists():
        time.sleep(0.005)
    print(try_acquire(Session, "training", holder, stale_after_s=600), flush=True)
    while not stop.exists():  # stay alive (holding, if we won) until the parent has seen all
        time.sleep(0.01)
"""


def test_one_holder_among_racing_processes(db_url: str, engine, tmp_path: Path) -> None:
    go, stop = tmp_path / "go", tmp_path / "stop"
    children = [_python(ACQUIRE, db_url, str(go), str(stop)) for _ in range(4)]
    try:
        time.sleep(0.5)
        go.touch()
        results = [child.stdout.readline().strip() for child in children]
    finally:
        stop.touch()
        for child in children:
            child.wait(timeout=60)
    assert sorted(results) == ["False", "False", "False", "True"]
    assert all(child.returncode == 0 for child in children)


def test_lock_of_a_dead_process_is_taken_over(db_url: str, Session) -> None:
    child = _python(
        """
        import sys
        from storage.db import make_engine, session_factory
        from storage.locks import make_holder, try_acquire
        Session = session_factory(make_engine(sys.argv[1]))
        holder = make_holder()
        print(holder if try_acquire(Session, "training", holder, 600) else "-", flush=True)
        # exits without release(), as a crash would
        """,
        db_url,
    )
    dead_holder = child.stdout.readline().strip()
    assert child.wait(timeout=60) == 0
    assert dead_holder.split(":")[1] == str(child.pid)
    assert current_holder(Session, NAME) == dead_holder
    assert holder_is_dead(dead_holder)

    mine = make_holder()
    assert try_acquire(Session, NAME, mine, stale_after_s=600)  # not stale, but pid is dead
    assert current_holder(Session, NAME) == mine
    with pytest.raises(LockLost):
        heartbeat(Session, NAME, dead_holder)


def test_live_holders_keep_the_lock_and_stale_ones_lose_it(Session) -> None:
    elsewhere = f"other-host-{socket.gethostname()}:1:abc"  # pid unknowable: never "dead"
    assert not holder_is_dead(elsewhere)
    assert try_acquire(Session, NAME, elsewhere, stale_after_s=60)
    mine = make_holder()
    assert not try_acquire(Session, NAME, mine, stale_after_s=60)

    # the other host stops heartbeating for two minutes
    with Session.begin() as session:
        session.execute(update(Lock).values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    assert not try_acquire(Session, NAME, mine, stale_after_s=300)  # not yet stale for this caller
    assert try_acquire(Session, NAME, mine, stale_after_s=60)
    with pytest.raises(LockLost):
        heartbeat(Session, NAME, elsewhere)
    release(Session, NAME, elsewhere)  # the loser releasing must not free the winner's lock
    assert current_holder(Session, NAME) == mine


def test_heartbeat_reacquire_and_release(Session) -> None:
    me = make_holder()
    assert me.split(":")[:2] == [socket.gethostname(), str(os.getpid())]
    assert not holder_is_dead(me)
    assert try_acquire(Session, NAME, me, stale_after_s=1)
    assert try_acquire(Session, NAME, me, stale_after_s=1)  # re-entrant for the same holder
    assert try_acquire(Session, "other-lock", make_holder(), stale_after_s=1)  # independent

    with Session.begin() as session:
        session.execute(
            update(Lock).where(Lock.name == NAME).values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
    heartbeat(Session, NAME, me)  # fresh again: nobody may take it
    assert not try_acquire(Session, NAME, f"elsewhere:{os.getpid()}:x", stale_after_s=60)

    release(Session, NAME, me)
    assert current_holder(Session, NAME) is None
    assert try_acquire(Session, NAME, make_holder(), stale_after_s=60)
