"""End to end: an admin sends the bot an export from their phone, and retrains from the chat.

The real bot polls the fake Bot API: a document message -> getFile -> the download from the
fake server's file URL -> the export checked and filed in EXPORTS_DIR -> the summary with a
*Retrain now* / *Later* keyboard -> the button's callback query -> a retraining run recorded
-> its outcome posted in the admin's chat.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.app import service_of
from bot.settings import Settings
from bot.upload import NOT_ADMIN
from tests.e2e.fake_telegram import FakeChat, FakeTelegram, FakeUser
from tests.e2e.harness import running, until
from tests.training.retrain_fixtures import export_dict, fake_train_command, newest_date
from training.model.model_dir import set_current

GROUP = FakeChat(-1001234567890, "Climbing friends")
ADMIN = FakeUser(101, "Alice", "alice")
BOB = FakeUser(102, "Bob", "bobby")
ADMIN_DM = FakeChat(ADMIN.id, None, "private")
BOB_DM = FakeChat(BOB.id, None, "private")
START = 1_764_000_000  # 2025-11-24 16:00 UTC


@pytest.fixture
def root(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An install serving the tiny model; retraining copies it (no real training)."""
    monkeypatch.chdir(tmp_path)  # no developer .env
    models = tmp_path / "models"
    set_current(models, shutil.copytree(tiny_model_dir, models / "demo"))
    env = {
        "EXPORTS_DIR": tmp_path / "exports",
        "MODELS_DIR": models,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'friendbot.db'}",
        "RETRAIN_WORK_DIR": tmp_path / "work",
        "RETRAIN_EXPORT_CT2": "never",
        "RETRAIN_TOLERANCE": "1",
        "RETRAIN_WATCH_INTERVAL_S": "0.2",
        "RETRAIN_TRAIN_COMMAND": fake_train_command("copy", str(tiny_model_dir)),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return tmp_path


def bot_settings(tg: FakeTelegram, root: Path) -> Settings:
    return Settings(
        _env_file=None,
        telegram_bot_token=tg.token,
        telegram_api_base_url=tg.base_url,
        telegram_api_base_file_url=tg.base_file_url,
        database_url=f"sqlite:///{root / 'friendbot.db'}",
        exports_dir=root / "exports",
        allowed_chat_ids=[GROUP.id],
        admin_user_ids=[ADMIN.id],
        model_dir=root / "models" / "current",
        reply_probability=0.0,
    )


def export_bytes(sessions: int) -> bytes:
    export = export_dict(sessions=sessions, per_session=10, start=START)
    return json.dumps(export, ensure_ascii=False, indent=1).encode()


def last_day(sessions: int) -> str:
    """The UTC day of the newest message: part of the name the export is filed under."""
    newest = newest_date(export_dict(sessions=sessions, per_session=10, start=START))
    return datetime.fromtimestamp(newest, UTC).strftime("%Y-%m-%d")


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def texts(tg: FakeTelegram, chat_id: int) -> list[str]:
    return [str(p["text"]) for p in tg.sent(chat_id)]


async def next_answer(tg: FakeTelegram, chat_id: int, before: int, skip: str = "Got ") -> str:
    """The first message to ``chat_id`` after number ``before`` that is not the 'Got …' note."""

    def found() -> str | None:
        return next((t for t in texts(tg, chat_id)[before:] if not t.startswith(skip)), None)

    return await until(found, "the bot's answer", timeout=60)


async def upload(tg: FakeTelegram, chat: FakeChat, user: FakeUser, name: str, data: bytes,
                 **extra: Any) -> str:  # fmt: skip
    before = len(texts(tg, chat.id))
    tg.send_document(chat, user, name, data, **extra)
    return await next_answer(tg, chat.id, before)


def filed(root: Path) -> list[str]:
    """Everything in EXPORTS_DIR, hidden leftovers included."""
    return sorted(p.name for p in (root / "exports").iterdir())


def keyboard_message(tg: FakeTelegram, chat_id: int) -> dict[str, Any]:
    return [m for m in tg.messages_sent if m["chat"]["id"] == chat_id and "reply_markup" in m][-1]


async def test_an_admin_uploads_json_and_zip_and_gets_a_summary(
    tg: FakeTelegram, root: Path
) -> None:
    async with running(bot_settings(tg, root)) as app:
        from storage.history import set_opted_out

        with service_of(app).sessions.begin() as session:
            set_opted_out(session, 1001, True)  # Alice of the export (sender id user1001)

        first, first_name = export_bytes(sessions=6), f"test-crew-{last_day(6)}.json"
        summary = await upload(tg, ADMIN_DM, ADMIN, "result.json", first)
        lines = summary.splitlines()
        assert lines[0] == f"Saved {first_name}", summary
        assert lines[1] == "Chat: Test Crew (private supergroup)"
        assert lines[2] == f"Messages: 60 from 2025-11-24 to {last_day(6)}"
        assert lines[3].startswith("Speakers: 4: ")
        assert "New: the first export of this chat here" in summary
        assert "Opted out, their messages will be left out: Alice (" in summary
        assert filed(root) == [first_name]
        assert (root / "exports" / first_name).read_bytes() == first
        buttons = keyboard_message(tg, ADMIN.id)["reply_markup"]["inline_keyboard"][0]
        assert [(b["text"], b["callback_data"]) for b in buttons] == [
            ("Retrain now", "retrain:now"),
            ("Later", "retrain:later"),
        ]
        assert tg.calls_to("getFile") and tg.calls_to("file")

        # the same file again: recognised, not duplicated
        again = await upload(tg, ADMIN_DM, ADMIN, "result.json", first)
        assert again.startswith(f"Already have {first_name}")
        assert filed(root) == [first_name]

        # a later export of the folder, zipped as people do: 20 new messages, last ones on the
        # same day, so the name is taken by another file: never overwritten, a suffix instead
        assert last_day(8) == last_day(6)
        later, later_name = export_bytes(sessions=8), f"test-crew-{last_day(8)}-2.json"
        archive = zipped(
            {
                "ChatExport_2025-11-26/result.json": later,
                "ChatExport_2025-11-26/photos/photo_1.jpg": b"\xff\xd8 not really a photo",
            }
        )
        summary = await upload(tg, ADMIN_DM, ADMIN, "ChatExport.zip", archive)
        assert summary.startswith(f"Saved {later_name}"), summary
        assert "Messages: 80 " in summary
        assert f"New since {first_name}: 20 messages" in summary
        assert filed(root) == sorted([first_name, later_name])
        assert (root / "exports" / later_name).read_bytes() == later


async def test_what_is_refused_leaves_nothing_behind(tg: FakeTelegram, root: Path) -> None:
    async with running(bot_settings(tg, root)):
        # not an admin: a polite no, and the file is never even fetched
        before = len(texts(tg, BOB.id))
        tg.send_document(BOB_DM, BOB, "result.json", export_bytes(sessions=2))
        assert await next_answer(tg, BOB.id, before) == NOT_ADMIN
        assert not tg.calls_to("getFile")

        too_big = await upload(
            tg, ADMIN_DM, ADMIN, "result.json", b"{}", file_size=3 * 1024**3
        )  # more than even a local Bot API server serves: refused before asking
        assert too_big.startswith("3072 MB is too big") and "20 MB" in too_big
        assert not tg.calls_to("getFile")
        cloud_refused = await upload(
            tg, ADMIN_DM, ADMIN, "result.json", b"{}", file_size=25 * 1024**2
        )  # what the cloud Bot API answers above 20 MB
        assert cloud_refused.startswith("25 MB is too big"), cloud_refused

        not_export = await upload(tg, ADMIN_DM, ADMIN, "result.json", b'{"hello": "world"}')
        assert not_export.startswith("result.json: ") and "\n" not in not_export
        assert "messages" in not_export, not_export
        not_json = await upload(tg, ADMIN_DM, ADMIN, "result.json", b"\x00\x01 binary junk")
        assert not_json.startswith("result.json: ") and "\n" not in not_json
        wrong_kind = await upload(tg, ADMIN_DM, ADMIN, "notes.txt", b"hello")
        assert wrong_kind.startswith("notes.txt: not a .json or .zip file")

        escape = zipped({"../../evil/result.json": export_bytes(sessions=2)})
        traversal = await upload(tg, ADMIN_DM, ADMIN, "export.zip", escape)
        assert traversal.startswith("export.zip: refused, an entry points outside"), traversal
        bomb = zipped({"ChatExport/result.json": b" " * (50 * 1024 * 1024)})
        bombed = await upload(tg, ADMIN_DM, ADMIN, "export.zip", bomb)
        assert "zip bomb" in bombed, bombed
        two = zipped({"a/result.json": b"{}", "b/result.json": b"{}"})
        assert "2 result.json files" in await upload(tg, ADMIN_DM, ADMIN, "two.zip", two)
        assert "not a valid zip" in await upload(tg, ADMIN_DM, ADMIN, "x.zip", b"PK junk")

        assert filed(root) == []  # no export, no temporary folder left
        assert not (root / "evil").exists()


async def test_retrain_now_runs_and_posts_the_outcome(tg: FakeTelegram, root: Path) -> None:
    async with running(bot_settings(tg, root)) as app:
        await upload(tg, ADMIN_DM, ADMIN, "result.json", export_bytes(sessions=8))
        offer = keyboard_message(tg, ADMIN.id)

        # someone else pressing the button (a forwarded message) starts nothing
        tg.press(BOB, offer, "retrain:now")
        await until(lambda: tg.calls_to("answerCallbackQuery"), "the refusal")
        assert "Only the bot's admins" in tg.calls_to("answerCallbackQuery")[0].params["text"]

        before = len(texts(tg, ADMIN.id))
        tg.press(ADMIN, offer, "retrain:now")
        started = await next_answer(tg, ADMIN.id, before)
        assert started.startswith("Retraining started")
        edits = tg.calls_to("editMessageReplyMarkup")
        assert edits and edits[0].params["message_id"] == offer["message_id"]

        def outcome() -> str | None:
            new = texts(tg, ADMIN.id)[before:]
            return next((t for t in new if t.startswith("Retraining run #")), None)

        result = await until(outcome, "the run's outcome", timeout=180)
        assert result.startswith("Retraining run #1: promoted"), result
        assert "candidate: " in result and "loss" in result

        from storage.runs import recent_runs

        with service_of(app).sessions() as session:
            runs = recent_runs(session, 5)
        assert [(r.trigger, r.status) for r in runs] == [("manual", "promoted")]

        # Later: the keyboard goes, nothing runs
        await upload(tg, ADMIN_DM, ADMIN, "result.json", export_bytes(sessions=9))
        before = len(texts(tg, ADMIN.id))
        tg.press(ADMIN, keyboard_message(tg, ADMIN.id), "retrain:later")
        assert (await next_answer(tg, ADMIN.id, before)).startswith("OK. The next scheduled")
        with service_of(app).sessions() as session:
            assert len(recent_runs(session, 5)) == 1
