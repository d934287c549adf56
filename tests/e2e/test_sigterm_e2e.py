"""End to end: ``systemctl stop`` (SIGTERM) in the middle of a burst loses nothing stored.

A real ``friendbot run`` process polls the fake Bot API while a thread pushes a burst of group
messages (some mentioning the bot, so generations are running). SIGTERM arrives mid-burst.
Telegram forgets an update once the bot asks for the next offset, so every message the fake
server saw confirmed must be in the database after the process exits, and it must exit 0
(systemd counts anything else as a failure).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.e2e.fake_telegram import FakeChat, FakeTelegram, FakeUser

GROUP = FakeChat(-1001234567890, "Climbing friends")
FRIENDS = [FakeUser(101, "Alice", "alice"), FakeUser(102, "Bob", "bobby"), FakeUser(103, "Carol")]
BURST = 400


def confirmed_offset(tg: FakeTelegram) -> int:
    """The highest offset the bot passed to getUpdates: every update below it is confirmed."""
    return max((int(c.params.get("offset") or 0) for c in tg.calls_to("getUpdates")), default=0)


def test_sigterm_mid_burst_stores_every_confirmed_message_and_exits_0(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    db = tmp_path / "friendbot.db"
    with FakeTelegram() as tg:
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "TELEGRAM_BOT_TOKEN": tg.token,
            "TELEGRAM_API_BASE_URL": tg.base_url,
            "ALLOWED_CHAT_IDS": str(GROUP.id),
            "DATABASE_URL": f"sqlite:///{db}",
            "MODEL_DIR": str(tiny_model_dir),
            "EXPORTS_DIR": str(tmp_path / "exports"),
            "REPLY_PROBABILITY": "0",
            "MAX_NEW_TOKENS": "32",
        }
        bot = subprocess.Popen(
            [str(Path(sys.executable).with_name("friendbot")), "run"],
            cwd=tmp_path,  # no developer .env
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            started = tg.wait_for(
                lambda: tg.calls_to("getUpdates") or bot.poll() is not None, 120, "polling"
            )
            assert bot.poll() is None and started, bot.communicate()[0]
            pushed: list[dict] = []
            update_ids: dict[int, int] = {}  # message id -> update id

            def burst() -> None:
                for i in range(BURST):
                    user = FRIENDS[i % len(FRIENDS)]
                    text = f"@{tg.bot.username} hi {i}" if i % 25 == 0 else f"message {i}"
                    message = tg.say(GROUP, user, text)
                    pushed.append(message)
                    update_ids[message["message_id"]] = tg._next_update_id - 1
                    time.sleep(0.005)

            feeder = threading.Thread(target=burst)
            feeder.start()
            tg.wait_for(lambda: confirmed_offset(tg) > 100, timeout=60, what="a part confirmed")
            bot.send_signal(signal.SIGTERM)
            feeder.join()
            try:
                output, _ = bot.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                bot.kill()
                output = bot.communicate()[0]
                raise AssertionError(
                    f"still running 60 s after SIGTERM:\n{output[-3000:]}"
                ) from None
        finally:
            if bot.poll() is None:
                bot.kill()
                bot.communicate()
        offset = confirmed_offset(tg)

    assert bot.returncode == 0, output
    assert "Traceback" not in output, output
    confirmed = {m["message_id"] for m in pushed if update_ids[m["message_id"]] < offset}
    assert 100 <= len(confirmed) < BURST  # SIGTERM came mid-burst
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT message_id FROM messages WHERE chat_id = ?", (GROUP.id,))
        stored = {row[0] for row in rows}
    missing = sorted(confirmed - stored)
    assert not missing, f"{len(missing)} confirmed messages lost, e.g. {missing[:5]}\n{output}"
    assert not list(tmp_path.glob("**/*.tmp")) and not list(tmp_path.glob("**/.*partial*"))
