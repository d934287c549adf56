"""Long memory: how long retrieval takes over a big stored history, and what it adds to a reply.

Fills a database with ``--messages`` (default 1,000,000) chat messages spread over
``--chats`` chats, through storage's own insert (so the full-text index is maintained as the
bot's writer maintains it), then times ``storage.search.search_messages`` the way the bot
calls it (the newest ``CANDIDATES`` matches, ranked by ``training.memory_search``):

- ``memory``: the terms of a 10-message context window (``training.formatting.memory_terms``),
  strictly before the window, the window excluded, 5 results;
- ``voice``: the same terms, one sender's messages only, 3 results;
- ``recall``: one or two topic words over the whole chat (``/recall TOPIC``).

Texts: ``--texts DIR`` takes the messages of a prepared dataset (``DIR/*.parquet``, the
``response`` column), repeated as needed, so word frequencies are a real chat's; without it a
Zipf-distributed made-up vocabulary is used. The database is kept (``--workdir``) and reused
when it already holds the messages. ``--postgres URL`` also runs the retrieval on PostgreSQL.

``--reply`` times the bot's whole reply (``FriendBot.reply_in_character``, an untrained tiny
model built here) with memory off and on, alternating, over the same database.

    python bench/memory_latency.py --texts /path/to/data --workdir /tmp/memory-bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.memory import rank
from storage.db import make_engine, session_factory, upgrade
from storage.history import add_messages, upsert_chat, upsert_member
from storage.models import Message
from storage.search import search_messages
from training.formatting import memory_terms
from training.memory_search import CANDIDATES, TERMS

T0 = datetime(2022, 1, 1, tzinfo=UTC)
MEMBERS = 24
BATCH = 5000
WINDOW = 10


@dataclass(frozen=True)
class Query:
    kind: str
    chat_id: int
    terms: list[str]
    before: datetime | None
    exclude: list[int]
    sender_id: int | None
    limit: int


# --- texts --------------------------------------------------------------------------------------


def real_texts(data_dir: Path) -> list[str]:
    """The message texts of a prepared dataset (``Sender: text`` responses, sender cut off)."""
    import pandas as pd

    texts: list[str] = []
    for path in sorted(data_dir.glob("*.parquet")):
        for response in pd.read_parquet(path, columns=["response"])["response"]:
            texts.append(str(response).partition(": ")[2] or str(response))
    if not texts:
        raise SystemExit(f"{data_dir}: no *.parquet with a response column")
    return texts


def zipf_texts(n: int, seed: int) -> list[str]:
    """Made-up messages whose word frequencies fall off as a chat's do (Zipf, s = 1.1)."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ra", "tu", "ne", "so", "vi", "pe", "da", "gu", "re", "zo"]
    vocab = sorted(
        {"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(40_000)}, key=len
    )
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(vocab))]
    return [" ".join(rng.choices(vocab, weights, k=rng.randint(2, 14))) for _ in range(n)]


# --- the database -------------------------------------------------------------------------------


def fill(engine: Engine, n: int, chats: int, texts: list[str], seed: int) -> float:
    """Store ``n`` messages (round-robin over ``chats``, a minute apart per chat); seconds."""
    Session = session_factory(engine)
    rng = random.Random(seed)
    started = time.perf_counter()
    with Session.begin() as session:
        for c in range(chats):
            upsert_chat(session, chat_id(c), f"chat {c}", "supergroup")
        for m in range(1, MEMBERS + 1):
            upsert_member(session, m, f"Friend {m}")
    for start in range(0, n, BATCH):
        rows = []
        for i in range(start, min(n, start + BATCH)):
            c, k = i % chats, i // chats
            rows.append(
                {
                    "chat_id": chat_id(c),
                    "message_id": k + 1,
                    "sender_id": sender_of(k, c),
                    "sender_name": f"Friend {sender_of(k, c)}",
                    "text": texts[rng.randrange(len(texts))],
                    "date": T0 + timedelta(minutes=k),
                }
            )
        with Session.begin() as session:
            add_messages(session, rows)
        if start and start % 100_000 == 0:
            print(f"  {start:,} stored", file=sys.stderr)
    return time.perf_counter() - started


def chat_id(c: int) -> int:
    return -1_000_000_000_000 - c


def sender_of(k: int, c: int) -> int:
    return 1 + (k * 7 + c) % MEMBERS


def count(Session: sessionmaker[Session]) -> int:
    with Session() as session:
        return session.scalar(select(func.count(Message.id))) or 0


def ready_database(url: str, n: int, chats: int, texts: Callable[[], list[str]], seed: int):
    """An upgraded database holding ``n`` messages (filled now unless it already does)."""
    engine = make_engine(url)
    upgrade(engine)
    Session = session_factory(engine)
    have = count(Session)
    fill_s = None
    if have != n:
        if have:
            raise SystemExit(f"{url}: holds {have:,} messages, not {n:,}: use a fresh --workdir")
        print(f"storing {n:,} messages in {chats} chats ...", file=sys.stderr)
        fill_s = fill(engine, n, chats, texts(), seed)
    return engine, Session, fill_s


# --- queries ------------------------------------------------------------------------------------


def queries(Session: sessionmaker[Session], n: int, per_chat: int, seed: int) -> Iterator[Query]:
    """Bot-shaped searches at random points of the first chat's history."""
    rng = random.Random(seed)
    chat = chat_id(0)
    with Session() as session:
        for i in range(n):
            end = rng.randrange(WINDOW + 1, per_chat)
            window = list(
                session.scalars(
                    select(Message)
                    .where(Message.chat_id == chat, Message.message_id.between(end - WINDOW, end))
                    .order_by(Message.message_id)
                )
            )
            terms = memory_terms(" ".join(m.text for m in window), limit=TERMS)
            before, ids = window[0].date, [m.message_id for m in window]
            kind = ("memory", "voice", "recall")[i % 3]
            if kind == "memory":
                yield Query(kind, chat, terms, before, ids, None, 5)
            elif kind == "voice":
                yield Query(kind, chat, terms, before, ids, window[-1].sender_id, 3)
            else:
                yield Query(kind, chat, terms[:2], None, [], None, 5)


def time_queries(Session: sessionmaker[Session], qs: list[Query]) -> dict[str, dict[str, float]]:
    """p50/p95 milliseconds per kind (wall, and CPU of this thread: the machine is shared);
    each search in its own session, as the bot does it."""
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    found: dict[str, list[int]] = {}
    for q in qs:
        started, started_cpu = time.perf_counter(), time.thread_time()
        with Session.begin() as session:
            hits = search_messages(
                session,
                q.chat_id,
                q.terms,
                rank=rank,
                candidates=CANDIDATES,
                before=q.before,
                exclude_message_ids=q.exclude,
                sender_id=q.sender_id,
                limit=q.limit,
            )
        times.setdefault(q.kind, []).append((time.perf_counter() - started) * 1000)
        cpu.setdefault(q.kind, []).append((time.thread_time() - started_cpu) * 1000)
        found.setdefault(q.kind, []).append(len(hits))
    return {
        kind: {
            "n": len(ms),
            "p50_ms": percentile(ms, 0.50),
            "p95_ms": percentile(ms, 0.95),
            "mean_ms": statistics.fmean(ms),
            "cpu_p50_ms": percentile(cpu[kind], 0.50),
            "cpu_p95_ms": percentile(cpu[kind], 0.95),
            "mean_found": statistics.fmean(found[kind]),
        }
        for kind, ms in times.items()
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- a whole reply, memory off and on -------------------------------------------------------------


def reply_latency(url: str, rounds: int, workdir: Path) -> dict[str, dict[str, float]]:
    """Seconds per ``reply_in_character`` on the first chat, memory off / on alternating."""
    from bot.memory import MEMORY_KEY
    from bot.service import FriendBot
    from bot.settings import Settings
    from training.model.model_dir import read_info, write_info

    model_dirs = {}
    for mode in ("off", "on"):
        path = workdir / f"tiny-{mode}"
        if not path.exists():
            build_tiny(path)
        info = {k: v for k, v in read_info(path).items() if k != "format"}
        info.pop(MEMORY_KEY, None)
        if mode == "on":
            info[MEMORY_KEY] = {"memory_lines": 4, "voice_lines": 2}
        write_info(path, info)
        model_dirs[mode] = path

    async def measure() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"off": [], "on": []}
        bots = {}
        for mode, path in model_dirs.items():
            settings = Settings(
                _env_file=None,
                database_url=url,
                model_dir=path,
                allowed_chat_ids=[chat_id(0)],
                generation_seed=1,
                max_new_tokens=24,
                inference_threads=1,
            )
            bot = FriendBot(settings)
            await asyncio.to_thread(bot.start)
            bots[mode] = bot
        try:
            for _ in range(rounds):
                for mode, bot in bots.items():
                    started = time.perf_counter()
                    await bot.reply_in_character(chat_id(0), "Friend 1")
                    times[mode].append(time.perf_counter() - started)
        finally:
            for bot in bots.values():
                await asyncio.to_thread(bot.stop)
        return times

    times = asyncio.run(measure())
    return {
        mode: {
            "n": len(s),
            "p50_ms": percentile(s, 0.5) * 1000,
            "p95_ms": percentile(s, 0.95) * 1000,
        }
        for mode, s in times.items()
    }


def build_tiny(path: Path) -> None:
    """An untrained tiny chat model (as the tests build one): latency, not quality."""
    from training.model.model_dir import write_info
    from training.model.tiny import TinyShape, build_model, train_tokenizer

    lines = [f"Friend {i}: {t}" for i, t in enumerate(zipf_texts(2000, 1))]
    tokenizer = train_tokenizer(lines, vocab_size=800)
    model = build_model(tokenizer, TinyShape(d_model=64, d_ff=128, num_heads=2, d_kv=32))
    path.mkdir(parents=True)
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    speakers = [f"Friend {m}" for m in range(1, MEMBERS + 1)]
    info = {"base_model": "tiny", "task": "chat", "speakers": speakers}
    write_info(path, {**info, "max_source_length": 256, "max_target_length": 32})


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--chats", type=int, default=10, help="chats the messages spread over")
    parser.add_argument("--queries", type=int, default=600, help="searches timed (3 kinds)")
    parser.add_argument("--texts", type=Path, default=None, help="a prepared dataset directory")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/friendbot-memory-bench"))
    parser.add_argument("--postgres", default=None, help="also on this PostgreSQL URL")
    parser.add_argument("--reply", type=int, default=0, help="time N replies, memory off/on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    args.workdir.mkdir(parents=True, exist_ok=True)
    source = str(args.texts) if args.texts else "zipf"
    texts = (lambda: real_texts(args.texts)) if args.texts else (lambda: zipf_texts(50_000, 0))
    tag = f"{args.messages}-{args.chats}-{args.texts.name if args.texts else 'zipf'}"
    urls = {"sqlite": f"sqlite:///{args.workdir / f'memory-{tag}.db'}"}
    if args.postgres:
        urls["postgresql"] = args.postgres
    report: dict[str, object] = {
        "messages": args.messages,
        "chats": args.chats,
        "texts": source,
        "load_before": os.getloadavg()[0],
    }
    for backend, url in urls.items():
        engine, Session, fill_s = ready_database(url, args.messages, args.chats, texts, args.seed)
        qs = list(queries(Session, args.queries, args.messages // args.chats, args.seed + 1))
        time_queries(Session, qs[: len(qs) // 10])  # warm the caches
        report[backend] = {"fill_s": fill_s, **time_queries(Session, qs)}
        if args.reply and backend == "sqlite":
            report["reply"] = reply_latency(url, args.reply, args.workdir)
        engine.dispose()
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
