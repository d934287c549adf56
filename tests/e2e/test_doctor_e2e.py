"""End to end: an admin asks the running bot ``/doctor`` (in the group, and privately), with
privacy mode off and on, against the fake Bot API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.settings import Settings
from tests.e2e.fake_telegram import FakeChat, FakeTelegram
from tests.e2e.harness import running, until
from tests.e2e.test_bot_e2e import ALICE, BOB, GROUP, make_settings, reply_to


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        server.add_chat(GROUP, bot_status="member")
        yield server


@pytest.fixture
def settings(
    tg: FakeTelegram, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.chdir(tmp_path)  # nothing from a developer's .env
    return make_settings(tg, tmp_path, tiny_model_dir)


def lines(report: str) -> dict[str, str]:
    """Check name -> its line (the mark, the name, what was found)."""
    found = {}
    for line in report.splitlines()[1:]:
        if not line.startswith(" ") and ": " in line:
            name = line.split(" ", 1)[1].split(": ", 1)[0]
            found[name] = line
    return found


async def test_doctor_with_privacy_mode_off(tg: FakeTelegram, settings: Settings) -> None:
    async with running(settings):
        refused = tg.say(GROUP, BOB, "/doctor")
        assert await reply_to(tg, refused) == "Only the bot's admins can use /doctor."
        asked = tg.say(GROUP, ALICE, "/doctor")
        report = await reply_to(tg, asked, timeout=60)
    assert report.startswith("friendbot doctor: ")
    rows = lines(report)
    assert rows["token"].startswith("✅") and "@friendbot_test_bot" in rows["token"]
    assert rows["privacy mode"].startswith("✅ privacy mode: off")
    chat = rows[f"chat {GROUP.id}"]
    assert chat.startswith("✅") and "'Climbing friends', the bot is member" in chat
    assert rows["model"].startswith("✅") and rows["database"].startswith("✅")
    assert "/setprivacy" not in report
    assert rows["reactions"].startswith("⚠️ reactions: not received in")  # no admin rights
    assert "make the bot an administrator" in report
    assert tg.token not in report
    published = {c["command"] for c in tg.calls_to("setMyCommands")[0].params["commands"]}
    assert "doctor" in published


async def test_doctor_with_privacy_mode_on_in_a_private_chat(
    tg: FakeTelegram, settings: Settings
) -> None:
    tg.can_read_all_group_messages = False
    alice_private = FakeChat(ALICE.id, None, "private")
    bob_private = FakeChat(BOB.id, None, "private")
    async with running(settings):
        tg.say(bob_private, BOB, "/doctor")  # not an admin: private chats are ignored
        tg.say(alice_private, ALICE, "/doctor")
        sent = await until(lambda: tg.sent(alice_private.id), "the report", timeout=60)
        report = str(sent[0]["text"])
    rows = lines(report)
    assert rows["privacy mode"].startswith("⚠️ privacy mode: on")
    assert str(GROUP.id) in rows["privacy mode"]
    fix = report.split(rows["privacy mode"], 1)[1].splitlines()[1]
    assert fix.strip().startswith("→ @BotFather: /setprivacy")
    assert "warning" in report.splitlines()[0]
    assert tg.sent(bob_private.id) == []
