"""End to end: retraining while the real bot runs against the fake Telegram server.

An admin drops a new export in the folder and sends /retrain; a real ``friendbot retrain``
child trains the tiny model (in a grandchild), the candidate is promoted, the bot's watcher
swaps it in, and the next reply comes from it. The new export is a chat where everyone only
ever says "zzz": a model trained on it says "zzz", while the untrained model served before
cannot (its vocabulary has no "z"), so the reply text tells which model answered.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.app import service_of
from bot.settings import Settings
from tests.e2e.fake_telegram import FakeChat, FakeTelegram, FakeUser
from tests.e2e.harness import running, until
from tests.training.retrain_fixtures import export_dict, fake_train_command, write_export
from training.model.model_dir import resolve_current, set_current

T = TypeVar("T")

GROUP = FakeChat(-1001234567890, "Climbing friends")
ADMIN = FakeUser(101, "Alice", "alice")
BOB = FakeUser(102, "Bob", "bobby")
ADMIN_DM = FakeChat(ADMIN.id, None, "private")
ZZZ = {"Alice": ["zzz"], "Bob": ["zzz"], "Carol": ["zzz"]}
TRAIN_ARGS = "--max-steps 10 --token-budget 1024 --tiny-vocab 300 --eval-every 100 --no-progress"


@pytest.fixture
def workspace(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Path]:
    """An install serving the untrained demo model, retraining settings in the environment."""
    monkeypatch.chdir(tmp_path)  # no developer .env
    models = tmp_path / "models"
    demo = shutil.copytree(tiny_model_dir, models / "demo")
    set_current(models, demo)
    env = {
        "EXPORTS_DIR": tmp_path / "exports",
        "MODELS_DIR": models,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'friendbot.db'}",
        "RETRAIN_WORK_DIR": tmp_path / "work",
        "RETRAIN_TRAIN_ARGS": TRAIN_ARGS,
        "RETRAIN_TOLERANCE": "0",
        "RETRAIN_EXPORT_CT2": "never",
        "RETRAIN_WATCH_INTERVAL_S": "0.2",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    (tmp_path / "exports").mkdir()
    return {"root": tmp_path, "models": models, "demo": demo, "exports": tmp_path / "exports"}


def bot_settings(tg: FakeTelegram, root: Path) -> Settings:
    return Settings(
        _env_file=None,
        telegram_bot_token=tg.token,
        telegram_api_base_url=tg.base_url,
        database_url=f"sqlite:///{root / 'friendbot.db'}",
        allowed_chat_ids=[GROUP.id],
        admin_user_ids=[ADMIN.id],
        model_dir=root / "models" / "current",
        reply_probability=0.0,
        generation_seed=7,
        max_new_tokens=8,
    )


def texts(tg: FakeTelegram, chat_id: int) -> list[str]:
    return [str(p["text"]) for p in tg.sent(chat_id)]


def reply_text(tg: FakeTelegram, message: dict[str, Any]) -> str | None:
    for params in tg.sent(message["chat"]["id"]):
        if (params.get("reply_parameters") or {}).get("message_id") == message["message_id"]:
            return str(params["text"])
    return None


async def answer(tg: FakeTelegram, chat: FakeChat, user: FakeUser, text: str) -> str:
    """Send ``text`` and wait for the bot's reply to it."""
    asked = tg.say(chat, user, text)
    return await until(lambda: reply_text(tg, asked), f"a reply to {text!r}", timeout=60)


async def result_of_retrain(tg: FakeTelegram, chat: FakeChat, before: int) -> str:
    """The bot's 'Retraining run #N: ...' answer posted after message number ``before``."""

    def posted() -> str | None:
        new = texts(tg, chat.id)[before:]
        return next((t for t in new if t.startswith("Retraining run #")), None)

    return await until(posted, "the retraining result", timeout=240)


async def test_new_export_is_trained_promoted_and_served_by_the_running_bot(
    tg: FakeTelegram, workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = workspace["root"]
    async with running(bot_settings(tg, root)) as app:
        service = service_of(app)
        tg.say(GROUP, BOB, "morning all")
        before = await answer(tg, GROUP, BOB, "@friendbot_test_bot what's the plan?")
        assert "zzz" not in before
        assert service.models.current.chat.model_dir == workspace["demo"].resolve()

        # the admin drops a new export and asks for a run now
        write_export(workspace["exports"] / "result.json", export_dict(speakers=ZZZ, sessions=12))
        sent_before = len(texts(tg, GROUP.id))
        started = await answer(tg, GROUP, ADMIN, "/retrain")
        assert started.startswith("Retraining started")
        # the bot keeps answering while the child trains
        meanwhile = tg.say(GROUP, BOB, "@friendbot_test_bot still there?")
        result = await result_of_retrain(tg, GROUP, sent_before)
        assert reply_text(tg, meanwhile) is not None
        posted = texts(tg, GROUP.id)
        assert posted.index(reply_text(tg, meanwhile)) < posted.index(result)

        assert "promoted" in result.splitlines()[0], result
        assert "candidate: retrain-" in result and "current: demo" in result
        new_model = resolve_current(workspace["models"])
        assert new_model != workspace["demo"].resolve()
        await until(lambda: service.models.current.chat.model_dir == new_model, "the hot swap", 30)
        after = await answer(tg, GROUP, BOB, "@friendbot_test_bot and now?")
        assert after.endswith(": zzz"), after

        # admins hear about it privately, and /runs lists it
        notice = await until(
            lambda: [t for t in texts(tg, ADMIN.id) if t.startswith("Run #1 ")], "the notice"
        )
        assert "promoted" in notice[0] and "loss" in notice[0]
        in_dm = len(texts(tg, ADMIN.id))
        tg.say(ADMIN_DM, ADMIN, "/runs")  # private chats get unquoted answers
        runs = await until(lambda: texts(tg, ADMIN.id)[in_dm:], "the answer to /runs")
        assert runs[0].startswith("Run #1 (manual") and "promoted" in runs[0]

        # nothing new: skipped
        sent_before = len(texts(tg, GROUP.id))
        await answer(tg, GROUP, ADMIN, "/retrain")
        result = await result_of_retrain(tg, GROUP, sent_before)
        assert "skipped" in result and "unchanged since run #1" in result

        # a crash in training: failed, recorded, and the promoted model still answers
        monkeypatch.setenv("RETRAIN_TRAIN_COMMAND", fake_train_command("crash"))
        sent_before = len(texts(tg, GROUP.id))
        await answer(tg, GROUP, ADMIN, "/retrain force")
        result = await result_of_retrain(tg, GROUP, sent_before)
        assert "failed" in result and "exit status 3" in result
        assert resolve_current(workspace["models"]) == new_model
        after = await answer(tg, GROUP, BOB, "@friendbot_test_bot you ok?")
        assert after.endswith(": zzz")
        assert service.models.current.chat.model_dir == new_model

        # non-admins cannot start runs
        denied = await answer(tg, GROUP, BOB, "/retrain")
        assert "Only the bot's admins" in denied


async def test_the_schedule_runs_inside_the_bot(
    tg: FakeTelegram,
    workspace: dict[str, Path],
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RETRAIN_IN_BOT: the bot's own scheduler fires, a child retrains, admins are told."""
    from datetime import UTC, datetime

    from bot.retrain_hooks import HOOKS_KEY
    from training.retrain.scheduler import JOB_ID

    monkeypatch.setenv("RETRAIN_IN_BOT", "true")
    monkeypatch.setenv("RETRAIN_CRON", "0 4 * * *")
    monkeypatch.setenv("RETRAIN_TRAIN_COMMAND", fake_train_command("copy", str(tiny_model_dir)))
    write_export(workspace["exports"] / "crew.json", export_dict(sessions=8))
    async with running(bot_settings(tg, workspace["root"])) as app:
        hooks = app.bot_data[HOOKS_KEY]
        scheduler = await until(lambda: hooks.scheduler, "the scheduler to start")
        job = scheduler.get_job(JOB_ID)
        assert (job.next_run_time.hour, job.next_run_time.minute) == (4, 0)
        job.modify(next_run_time=datetime.now(UTC))  # 04:00 is now
        scheduler.wakeup()

        notice = await until(
            lambda: [t for t in texts(tg, ADMIN.id) if t.startswith("Run #1 (schedule")],
            "the scheduled run's notice",
            timeout=120,
        )
        assert "promoted" in notice[0]
        new_model = resolve_current(workspace["models"])
        await until(
            lambda: service_of(app).models.current.chat.model_dir == new_model, "the hot swap"
        )
    assert hooks.scheduler is None  # stopped with the bot
    assert not scheduler.running
