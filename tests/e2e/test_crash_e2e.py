"""End to end: the installed ``friendbot run`` is killed in the middle of a burst, and no
message Telegram was told to forget is lost.

Telegram forgets an update once the bot confirms it (the ``offset`` of its next
``getUpdates``); the fake server does the same and remembers which ids were confirmed. The bot
runs as a real process (its own networking, its own database connections) so that SIGKILL
hits it exactly as the out-of-memory killer would.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.e2e.fake_telegram import FakeChat, FakeTelegram, FakeUser

FRIENDBOT = Path(sys.executable).with_name("friendbot")
GROUP = FakeChat(-1001234567890, "Climbing friends")
PEOPLE = (FakeUser(101, "Alice", "alice"), FakeUser(102, "Bob"), FakeUser(103, "Carol"))
BURST = 1000
# SIGKILL the moment the bot has confirmed this many updates since its start: Telegram has
# just forgotten them, and the newest of them are the least likely to be committed yet.
KILL_WHEN_CONFIRMED = (1, 300, 700)
START_TIMEOUT_S = 120.0  # loading the models; a busy machine is slow to import torch


class BotProcess:
    """``friendbot run`` against the fake server, on one database, restartable."""

    def __init__(self, tg: FakeTelegram, workdir: Path, model_dir: Path) -> None:
        self.tg = tg
        self.workdir = workdir
        self.db = workdir / "friendbot.db"
        self.env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_API_BASE_URL": tg.base_url,
            "DATABASE_URL": f"sqlite:///{self.db}",
            "ALLOWED_CHAT_IDS": str(GROUP.id),
            "MODEL_DIR": str(model_dir),
            "REPLY_PROBABILITY": "0",
            "INFERENCE_THREADS": "1",
        }
        self.log: IO[bytes] = open(workdir / "bot.log", "ab")  # noqa: SIM115 - closed in close()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the bot and wait until it polls (models loaded, inbox replayed)."""
        polls = len(self.tg.calls_to("getUpdates"))
        self.proc = subprocess.Popen(
            [str(FRIENDBOT), "run"],
            cwd=self.workdir,
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(self.tg.calls_to("getUpdates")) <= polls:
            assert self.proc.poll() is None, f"the bot exited: {self.log_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the bot did not poll: {self.log_text()[-3000:]}"
            time.sleep(0.02)

    def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def log_text(self) -> str:
        self.log.flush()
        return (self.workdir / "bot.log").read_text(errors="replace")

    def stored(self) -> list[int]:
        """Message ids stored for the group (readable while the bot writes: WAL)."""
        if not self.db.exists():
            return []
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as connection:
            rows = connection.execute(
                "SELECT message_id FROM messages WHERE chat_id = ?", (GROUP.id,)
            ).fetchall()
        return [row[0] for row in rows]


def burst(tg: FakeTelegram, messages: dict[int, int], round_: int) -> None:
    """Queue BURST messages at once; ``messages`` maps update id -> message id."""
    for i in range(BURST):
        tg.say(GROUP, PEOPLE[i % 3], f"round {round_} message {i}")
        messages[tg._next_update_id - 1] = tg._next_message_id[GROUP.id] - 1


@pytest.fixture
def bot(tg: FakeTelegram, tmp_path: Path, tiny_model_dir: Path) -> Iterator[BotProcess]:
    process = BotProcess(tg, tmp_path, tiny_model_dir)
    try:
        yield process
    finally:
        process.close()


def test_sigkill_mid_burst_loses_no_confirmed_message(tg: FakeTelegram, bot: BotProcess) -> None:
    messages: dict[int, int] = {}  # update id -> message id
    rounds = []
    for round_, threshold in enumerate(KILL_WHEN_CONFIRMED):
        bot.start()  # on the same database: replays what the killed bot had fetched
        confirmed_before = len(tg.confirmed_ids())
        burst(tg, messages, round_)
        tg.wait_confirmed(confirmed_before + threshold)
        assert bot.stop(signal.SIGKILL) == -signal.SIGKILL
        rounds.append((len(tg.confirmed_ids()), len(bot.stored())))
    # A last run, stopped gracefully in the middle of one more burst: SIGTERM handles what it
    # fetched, the replayed updates first, and exits 0.
    bot.start()
    confirmed_before = len(tg.confirmed_ids())
    burst(tg, messages, len(KILL_WHEN_CONFIRMED))
    tg.wait_confirmed(confirmed_before + 300)
    assert bot.stop(signal.SIGTERM) == 0, bot.log_text()[-3000:]

    stored = bot.stored()
    confirmed = tg.confirmed_ids()
    lost = sorted(u for u in confirmed if messages[u] not in set(stored))
    assert not lost, (
        f"{len(lost)} of {len(confirmed)} confirmed messages lost, e.g. updates {lost[:5]}; "
        f"(confirmed, stored) at each kill: {rounds}"
    )
    assert len(stored) == len(set(stored))  # stored once, whatever was replayed
    assert set(stored) <= set(messages.values())
    assert "Traceback" not in bot.log_text()
