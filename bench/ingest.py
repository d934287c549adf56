"""Messages stored per second under a burst: MessageWriter vs a commit per message.

A burst of messages from one group (20 members) arrives on one producer thread (the bot's
event loop) while a second thread does the bot's rolling "last 10 messages" read in a loop.

- baseline: what a handler doing its own ``with Session.begin():`` per message costs: the
  producer stores each message (chat + member upsert, insert) in its own transaction;
- writer: the producer only calls ``MessageWriter.submit``; the writer thread commits a batch
  at a time; the clock stops when ``flush()`` returns (everything committed).

Both run in the same process on fresh databases, one after the other, ``--rounds`` times
alternating. Reported: stored messages/s (median over rounds), the time the producer (event
loop) is held per message (p50/p99), and the reads/s the concurrent reader got. Target: the
writer stores >= 500 messages/s on the 2-core machine.

    .venv/bin/python bench/ingest.py                   # 5,000 messages, SQLite file, 3 rounds
    .venv/bin/python bench/ingest.py --full            # 50,000 messages
    .venv/bin/python bench/ingest.py --url postgresql+psycopg://user:pw@127.0.0.1/db
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, session_factory, upgrade
from storage.history import recent_messages
from storage.models import Base, Message
from storage.writer import MessageRecord, MessageWriter, write_batch

CHAT_ID = -1001234567890
MEMBERS = 20
WORDS = [
    "hey",
    "ok",
    "lol",
    "yes",
    "no",
    "maybe",
    "tonight",
    "game",
    "pizza",
    "beer",
    "movie",
    "late",
    "coffee",
    "gym",
    "run",
    "party",
]


@dataclass
class Result:
    mode: str
    messages: int
    seconds: float
    held_us: list[float]  # per message, how long the producer (event loop) was busy
    reads: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def burst(n: int, seed: int = 0) -> list[MessageRecord]:
    """``n`` chat messages a second apart from ``MEMBERS`` people, like a busy group."""
    rng = random.Random(seed)
    start = datetime(2024, 6, 1, tzinfo=UTC)
    records = []
    for i in range(n):
        sender = rng.randrange(MEMBERS)
        records.append(
            MessageRecord(
                chat_id=CHAT_ID,
                message_id=i + 1,
                sender_id=1000 + sender,
                sender_name=f"Friend {sender}",
                text=" ".join(rng.choices(WORDS, k=rng.randint(3, 15))),
                date=start + timedelta(seconds=i),
                reply_to_message_id=i if i and rng.random() < 0.2 else None,
                sender_username=f"friend{sender}",
                chat_title="The group",
                chat_type="supergroup",
            )
        )
    return records


def fresh_database(url: str | None, workdir: Path, name: str) -> Engine:
    """An empty, upgraded database: a new SQLite file, or the given URL with tables reset."""
    engine = make_engine(url or f"sqlite:///{workdir / name}.db")
    if url:
        Base.metadata.drop_all(engine)
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade(engine)
    return engine


def with_reader(Session: sessionmaker[Session], body: Callable[[], list[float]]) -> tuple:
    """Run ``body`` while another thread reads the chat's last 10 messages in a loop."""
    stop = threading.Event()
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            with Session() as session:
                recent_messages(session, CHAT_ID, 10)
            reads += 1

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    start = time.perf_counter()
    held = body()
    seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    return seconds, held, reads


def run_baseline(Session: sessionmaker[Session], records: list[MessageRecord]) -> Result:
    def body() -> list[float]:
        held = []
        for record in records:
            t = time.perf_counter()
            with Session.begin() as session:
                write_batch(session, [record])
            held.append((time.perf_counter() - t) * 1e6)
        return held

    seconds, held, reads = with_reader(Session, body)
    return Result("commit per message", len(records), seconds, held, reads)


def run_writer(
    Session: sessionmaker[Session], records: list[MessageRecord], max_batch: int
) -> Result:
    writer = MessageWriter(Session, max_batch=max_batch)
    writer.start()

    def body() -> list[float]:
        held = []
        for record in records:
            t = time.perf_counter()
            writer.submit(record)
            held.append((time.perf_counter() - t) * 1e6)
        writer.flush()
        return held

    seconds, held, reads = with_reader(Session, body)
    writer.close()
    assert writer.stats.dropped == 0
    return Result(f"MessageWriter (batch <= {max_batch})", len(records), seconds, held, reads)


def count(Session: sessionmaker[Session]) -> int:
    with Session() as session:
        return session.scalar(select(func.count()).select_from(Message)) or 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages in the burst")
    parser.add_argument("--full", action="store_true", help="50,000 messages")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode")
    parser.add_argument("--max-batch", type=int, default=500, help="MessageWriter max_batch")
    parser.add_argument("--url", default=None, help="database URL (default: temp SQLite file)")
    args = parser.parse_args()
    n = 50_000 if args.full else args.messages
    records = burst(n)

    results: dict[str, list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="friendbot-ingest-") as tmp:
        for round_ in range(args.rounds):
            for mode in ("baseline", "writer"):
                engine = fresh_database(args.url, Path(tmp), f"{mode}-{round_}")
                Session = session_factory(engine)
                if mode == "baseline":
                    result = run_baseline(Session, records)
                else:
                    result = run_writer(Session, records, args.max_batch)
                assert count(Session) == n, f"{mode}: stored {count(Session)} of {n}"
                results.setdefault(result.mode, []).append(result)
                engine.dispose()

    backend = make_engine(args.url).dialect.name if args.url else "sqlite (file, WAL)"
    table = Table(title=f"Storing a burst of {n:,} messages, {backend}, median of {args.rounds}")
    for column in ("path", "msg/s", "vs baseline", "event loop held p50", "p99", "reads/s"):
        table.add_column(column, justify="left" if column == "path" else "right")
    baseline_rate = None
    for mode, runs in results.items():
        rate = statistics.median(r.rate for r in runs)
        baseline_rate = baseline_rate or rate
        held = [h for r in runs for h in r.held_us]
        reads = statistics.median(r.reads / r.seconds for r in runs)
        table.add_row(
            mode,
            f"{rate:,.0f}",
            f"{rate / baseline_rate:.1f}x",
            f"{percentile(held, 0.5):,.1f} us",
            f"{percentile(held, 0.99):,.1f} us",
            f"{reads:,.0f}",
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
