"""``friendbot doctor``: each check passing and failing, the Telegram checks against the fake
Bot API server (privacy mode on and off), and the command's exit status."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections import namedtuple
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot import doctor
from bot.cli import main
from bot.doctor import Check, Status
from bot.settings import Settings
from storage.db import make_engine, upgrade
from tests.e2e.fake_telegram import FakeChat, FakeTelegram
from training.model.model_dir import set_current
from training.settings import TrainingSettings

GROUP = FakeChat(-1001234567890, "Climbing friends")
OTHER = FakeChat(-1005555555555, "Board games")
ADMIN = 101


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


def bot_settings(tg: FakeTelegram | None = None, **extra: Any) -> Settings:
    values: dict[str, Any] = {"allowed_chat_ids": [GROUP.id], "admin_user_ids": [ADMIN]}
    if tg is not None:
        values |= {"telegram_bot_token": tg.token, "telegram_api_base_url": tg.base_url}
    values.update(extra)
    return Settings(_env_file=None, **values)


def telegram(settings: Settings) -> dict[str, Check]:
    import asyncio

    return {c.name: c for c in asyncio.run(doctor.telegram_checks(settings))}


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- who runs it -----------------------------------------------------------------------------


def test_root_is_warned_that_permission_checks_mean_little() -> None:
    assert doctor.check_user(0).status is Status.WARN
    assert "sudo -u friendbot" in doctor.check_user(0).fix
    assert doctor.check_user(1000).status is Status.OK


# --- Telegram against the fake server --------------------------------------------------------


def test_privacy_mode_off_sees_everything(tg: FakeTelegram) -> None:
    tg.add_chat(GROUP, bot_status="member")
    tg.add_chat(FakeChat(ADMIN, "Alice", "private"))
    checks = telegram(bot_settings(tg))
    assert checks["token"].status is Status.OK
    assert "@friendbot_test_bot" in checks["token"].detail
    assert checks["privacy mode"].status is Status.OK
    assert checks["privacy mode"].detail.startswith("off")
    assert checks[f"chat {GROUP.id}"].status is Status.OK
    assert "'Climbing friends', the bot is member" in checks[f"chat {GROUP.id}"].detail
    assert checks["admins"].status is Status.OK
    methods = {c.method for c in tg.calls}
    assert {"getMe", "getChat", "getChatMember"} <= methods


def test_privacy_mode_on_and_no_admin_is_the_bot_that_does_nothing(tg: FakeTelegram) -> None:
    tg.can_read_all_group_messages = False
    tg.add_chat(GROUP, bot_status="member")
    tg.add_chat(OTHER, bot_status="administrator")
    checks = telegram(bot_settings(tg, allowed_chat_ids=[GROUP.id, OTHER.id]))
    privacy = checks["privacy mode"]
    assert privacy.status is Status.WARN
    assert str(GROUP.id) in privacy.detail and str(OTHER.id) not in privacy.detail
    assert "/setprivacy" in privacy.fix and "add it again" in privacy.fix
    assert checks[f"chat {OTHER.id}"].detail.endswith("the bot is administrator")
    calls = tg.calls_to("getChatMember")
    assert {c.params["chat_id"] for c in calls} == {GROUP.id, OTHER.id}
    assert {c.params["user_id"] for c in calls} == {tg.bot.id}


def test_privacy_mode_on_is_fine_where_the_bot_is_admin(tg: FakeTelegram) -> None:
    tg.can_read_all_group_messages = False
    tg.add_chat(GROUP, bot_status="creator")
    privacy = telegram(bot_settings(tg))["privacy mode"]
    assert privacy.status is Status.OK and "admin of every allowed group" in privacy.detail


def test_reactions_need_the_bot_to_be_admin(tg: FakeTelegram) -> None:
    tg.add_chat(GROUP, bot_status="member")  # privacy mode off: sees messages, not reactions
    tg.add_chat(OTHER, bot_status="administrator")
    checks = telegram(bot_settings(tg, allowed_chat_ids=[GROUP.id, OTHER.id]))
    reactions = checks["reactions"]
    assert reactions.status is Status.WARN
    assert str(GROUP.id) in reactions.detail and str(OTHER.id) not in reactions.detail
    assert "administrator" in reactions.fix
    tg.add_chat(GROUP, bot_status="administrator")
    assert telegram(bot_settings(tg))["reactions"].status is Status.OK


def test_rejected_token_fails_without_showing_it(tg: FakeTelegram) -> None:
    token = "999:not-the-token-at-all"
    settings = bot_settings(tg, telegram_bot_token=token)
    checks = telegram(settings)
    assert list(checks) == ["token"]  # nothing else can be asked without a token
    assert checks["token"].status is Status.FAIL
    assert "rejected" in checks["token"].detail
    assert token not in checks["token"].detail and "not-the-token" not in checks["token"].fix


def test_missing_token_fails(tg: FakeTelegram) -> None:
    checks = telegram(bot_settings(tg, telegram_bot_token=None))
    assert checks["token"].status is Status.FAIL and "not set" in checks["token"].detail
    assert tg.calls == []


def test_unreachable_bot_api_fails(tg: FakeTelegram) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/bot"
    checks = telegram(bot_settings(tg, telegram_api_base_url=url))
    assert checks["token"].status is Status.FAIL
    assert f"cannot reach the Bot API at {url}" in checks["token"].detail
    assert tg.token not in checks["token"].detail


@pytest.mark.parametrize(
    ("status", "found"),
    [
        ("left", "Chat not found"),
        ("kicked", "bot was kicked"),
        ("restricted", "may not send messages"),
    ],
)
def test_a_chat_the_bot_cannot_use_is_a_warning(tg: FakeTelegram, status: str, found: str) -> None:
    tg.add_chat(GROUP, bot_status=status)
    check = telegram(bot_settings(tg))[f"chat {GROUP.id}"]
    assert check.status is Status.WARN and found in check.detail
    assert check.fix


def test_unknown_chat_and_no_chats(tg: FakeTelegram) -> None:
    check = telegram(bot_settings(tg))[f"chat {GROUP.id}"]
    assert check.status is Status.WARN and "not reachable" in check.detail
    none = telegram(bot_settings(tg, allowed_chat_ids=[]))["allowed chats"]
    assert none.status is Status.WARN and "ALLOWED_CHAT_IDS is empty" in none.detail


def test_admins_missing_or_not_reachable_privately(tg: FakeTelegram) -> None:
    tg.add_chat(GROUP)
    nobody = telegram(bot_settings(tg, admin_user_ids=[]))["admins"]
    assert nobody.status is Status.WARN and "ADMIN_USER_IDS is empty" in nobody.detail
    unstarted = telegram(bot_settings(tg))["admins"]  # no private chat with ADMIN yet
    assert unstarted.status is Status.WARN and str(ADMIN) in unstarted.detail
    assert "@friendbot_test_bot" in unstarted.fix


# --- model and ct2 ---------------------------------------------------------------------------


def test_model_in_service_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    set_current(tmp_path / "models", tiny_model_dir)
    check, resolved = doctor.check_model(tmp_path / "models" / "current")
    assert check.status is Status.OK and resolved == tiny_model_dir.resolve()
    assert f"-> {resolved}" in check.detail


def test_no_model_or_no_weights_fails(tiny_model_dir: Path, tmp_path: Path) -> None:
    check, resolved = doctor.check_model(tmp_path / "models" / "current")
    assert check.status is Status.FAIL and resolved is None
    assert "no such model directory" in check.detail and "friendbot train" in check.fix
    broken = copy_model(tiny_model_dir, tmp_path / "broken")
    (broken / "model.safetensors").unlink()
    check, _ = doctor.check_model(broken)
    assert check.status is Status.FAIL and "no model weights" in check.detail


def test_a_tokenizer_bigger_than_the_model_fails(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "mixed")
    config = json.loads((model / "config.json").read_text())
    config["vocab_size"] = 10  # the tokenizer has more
    (model / "config.json").write_text(json.dumps(config))
    check, _ = doctor.check_model(model)
    assert check.status is Status.FAIL and "different models" in check.detail


def test_bad_friendbot_json_fails(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    (model / "friendbot.json").write_text("[1, 2")
    check, _ = doctor.check_model(model)
    assert check.status is Status.FAIL and "friendbot.json: not valid JSON" in check.detail


def _fake_conversion(model: Path, *, newer: bool) -> None:
    """A ct2/model.bin older or newer than the weights (what the engine's rule looks at)."""
    (model / "ct2").mkdir()
    model_bin = model / "ct2" / "model.bin"
    model_bin.write_bytes(b"x")
    weights = (model / "model.safetensors").stat().st_mtime
    stamp = weights + 60 if newer else weights - 60
    os.utime(model_bin, (stamp, stamp))


def test_ct2_fresh_stale_and_absent(tiny_model_dir: Path, tmp_path: Path) -> None:
    plain = copy_model(tiny_model_dir, tmp_path / "plain")
    absent = doctor.check_ct2(plain, "auto")
    assert absent.status is Status.OK and "friendbot export-ct2" in absent.detail
    assert doctor.check_ct2(plain, "ct2").status is Status.FAIL
    assert doctor.check_ct2(plain, "hf").detail == "not used (INFERENCE_BACKEND=hf)"

    stale = copy_model(tiny_model_dir, tmp_path / "stale")
    _fake_conversion(stale, newer=False)
    check = doctor.check_ct2(stale, "auto")
    assert check.status is Status.WARN and "older than the model weights" in check.detail
    assert check.fix == f"friendbot export-ct2 {stale}"
    assert doctor.check_ct2(stale, "ct2").status is Status.FAIL

    fresh = copy_model(tiny_model_dir, tmp_path / "fresh")
    _fake_conversion(fresh, newer=True)
    assert doctor.check_ct2(fresh, "auto").status is Status.OK


# --- database --------------------------------------------------------------------------------


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_no_database_yet_is_fine_and_nothing_is_created(tmp_path: Path) -> None:
    check = doctor.check_database(f"sqlite:///{tmp_path / 'data' / 'friendbot.db'}")
    assert check.status is Status.OK and "created with the schema" in check.detail
    assert files_in(tmp_path) == set()


def test_current_schema_is_read_without_leaving_files(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'friendbot.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    before = files_in(tmp_path)
    check = doctor.check_database(url)
    assert check.status is Status.OK and "schema current" in check.detail
    assert files_in(tmp_path) == before  # no -wal/-shm owned by whoever ran the doctor


def test_schema_from_a_newer_friendbot_fails(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'friendbot.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    engine.dispose()
    check = doctor.check_database(url)
    assert check.status is Status.FAIL and "f00dfeed is unknown" in check.detail
    assert "pip install -U" in check.fix


def test_not_a_database_fails(tmp_path: Path) -> None:
    (tmp_path / "friendbot.db").write_bytes(b"this is not sqlite" * 100)
    check = doctor.check_database(f"sqlite:///{tmp_path / 'friendbot.db'}")
    assert check.status is Status.FAIL and "cannot read it" in check.detail


def test_database_under_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the folder should be")
    check = doctor.check_database(f"sqlite:///{tmp_path / 'data' / 'friendbot.db'}")
    assert check.status is Status.FAIL and "is a file" in check.detail


def test_database_server_down_fails_without_the_password(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    check = doctor.check_database(f"postgresql+psycopg://bot:s3cret-pw@127.0.0.1:{port}/friendbot")
    assert check.status is Status.FAIL and "cannot read it" in check.detail
    assert "s3cret-pw" not in check.detail and "***" in check.detail


def test_an_empty_database_is_created_at_start(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "friendbot.db").close()
    check = doctor.check_database(f"sqlite:///{tmp_path / 'friendbot.db'}")
    assert check.status is Status.OK and "no tables yet" in check.detail


# --- exports, schedule, disk -----------------------------------------------------------------


def test_exports_dir(tmp_path: Path) -> None:
    missing = doctor.check_exports_dir(tmp_path / "exports")
    assert missing.status is Status.WARN and missing.fix.startswith("mkdir -p")
    (tmp_path / "afile").write_text("")
    assert doctor.check_exports_dir(tmp_path / "afile").status is Status.WARN
    (tmp_path / "exports" / "2024").mkdir(parents=True)
    (tmp_path / "exports" / "2024" / "result.json").write_text("{}")
    check = doctor.check_exports_dir(tmp_path / "exports")
    assert check.status is Status.OK and check.detail.endswith("writable, 1 JSON file")


def retrain_settings(tmp_path: Path, **extra: Any) -> TrainingSettings:
    values: dict[str, Any] = {"models_dir": tmp_path / "models", "retrain_timezone": "UTC"}
    values.update(extra)
    return TrainingSettings(_env_file=None, **values)


def test_schedule_says_when_the_next_run_is(tmp_path: Path) -> None:
    settings = retrain_settings(tmp_path, retrain_cron="30 5 * * *")
    check = doctor.check_schedule(settings, now=datetime(2024, 5, 1, 4, 0, tzinfo=UTC))
    assert check.status is Status.OK
    assert check.detail.startswith("next run Wed 2024-05-01 05:30 UTC (in 1 h 30 min)")
    assert "friendbot schedule" in check.detail
    in_bot = retrain_settings(tmp_path, retrain_cron="0 3 * * mon", retrain_in_bot=True)
    check = doctor.check_schedule(in_bot, now=datetime(2024, 5, 1, 4, 0, tzinfo=UTC))  # a Wed
    assert check.detail.startswith("next run Mon 2024-05-06 03:00 UTC (in 4 d 23 h)")
    assert "inside the bot" in check.detail


def test_a_bad_schedule_blocks_only_a_bot_that_runs_it(tmp_path: Path) -> None:
    outside = doctor.check_schedule(retrain_settings(tmp_path, retrain_cron="99 * * * *"))
    assert outside.status is Status.WARN and "RETRAIN_CRON" in outside.detail
    inside = retrain_settings(tmp_path, retrain_cron="99 * * * *", retrain_in_bot=True)
    assert doctor.check_schedule(inside).status is Status.FAIL


Usage = namedtuple("Usage", "total used free")


def test_disk_space_for_the_next_training(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    empty = doctor.check_disk(models, None)  # nothing served yet, folder not made yet
    assert empty.status is Status.OK and "no model yet" in empty.detail
    set_current(models, copy_model(tiny_model_dir, models / "m1"))
    size = sum(p.stat().st_size for p in (models / "m1").rglob("*") if p.is_file())
    plenty = doctor.check_disk(models, None)
    assert plenty.status is Status.OK and "the next training needs about" in plenty.detail
    seen: list[Path] = []

    def little_free(path: Path) -> Usage:
        seen.append(Path(path))
        return Usage(10**12, 10**12 - 2 * size, 2 * size)  # less than 3x the model

    monkeypatch.setattr(doctor.shutil, "disk_usage", little_free)
    tight = doctor.check_disk(models, None)
    assert tight.status is Status.WARN and "KEEP_MODELS" in tight.fix
    assert seen == [models]


# --- the whole command -----------------------------------------------------------------------


@pytest.fixture
def deployment(
    tg: FakeTelegram, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A working directory as the deploy guide sets it up, settings in the environment."""
    monkeypatch.chdir(tmp_path)  # no developer .env
    (tmp_path / "exports").mkdir()
    set_current(tmp_path / "models", copy_model(tiny_model_dir, tmp_path / "models" / "m1"))
    tg.add_chat(GROUP, bot_status="member")
    tg.add_chat(FakeChat(ADMIN, "Alice", "private"))
    env = {
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_API_BASE_URL": tg.base_url,
        "ALLOWED_CHAT_IDS": str(GROUP.id),
        "ADMIN_USER_IDS": str(ADMIN),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'friendbot.db'}",
        "RETRAIN_TIMEZONE": "UTC",
        "COLUMNS": "200",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("MODEL_DIR", "MODELS_DIR", "EXPORTS_DIR", "RETRAIN_CRON", "RETRAIN_IN_BOT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run_doctor(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(["doctor"])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_good_setup_exits_0_even_with_warnings(
    deployment: Path, tg: FakeTelegram, capsys: pytest.CaptureFixture[str]
) -> None:
    tg.can_read_all_group_messages = False  # a warning, not a failure
    code, out = run_doctor(capsys)
    assert code == 0, out
    assert "WARN │ privacy mode" in out and "FAIL" not in out
    for name in ("token", "admins", "model", "ct2", "database", "exports", "schedule", "disk"):
        assert f"OK   │ {name}" in out, name
    assert "the bot runs, but see what to do" in out
    assert tg.token not in out and tg.token.split(":")[1] not in out
    assert not (deployment / "data").exists()  # the doctor created no database


def test_no_model_exits_1(
    deployment: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_DIR", str(deployment / "models" / "nothing-here"))
    code, out = run_doctor(capsys)
    assert code == 1
    assert "FAIL │ model" in out and "the bot cannot run" in out


def test_rejected_token_exits_1(
    deployment: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "999:wrong-token-value")
    code, out = run_doctor(capsys)
    assert code == 1 and "FAIL │ token" in out and "wrong-token-value" not in out


def test_unusable_database_exits_1(
    deployment: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (deployment / "data").write_text("a file where data/ should be")
    code, out = run_doctor(capsys)
    assert code == 1 and "FAIL │ database" in out


def test_bad_settings_exit_1_with_the_variable_named(
    deployment: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLY_PROBABILITY", "7")
    code, out = run_doctor(capsys)
    assert code == 1 and "FAIL │ settings" in out and "REPLY_PROBABILITY" in out
    monkeypatch.delenv("REPLY_PROBABILITY")
    monkeypatch.setenv("RETRAIN_TIMEZONE", "Mars/Olympus")
    code, out = run_doctor(capsys)
    assert code == 1 and "FAIL │ settings" in out and "RETRAIN_TIMEZONE" in out


def test_a_check_that_breaks_is_a_row_not_the_end_of_the_report(
    deployment: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(path: Path) -> Usage:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(doctor.shutil, "disk_usage", unreadable)
    code, out = run_doctor(capsys)
    assert code == 0, out  # the disk check is a warning at worst
    assert "WARN │ disk" in out and "could not check (PermissionError" in out
    assert "OK   │ schedule" in out and "OK   │ model" in out


def test_chat_report_fits_one_telegram_message() -> None:
    checks = [doctor.warn(f"chat {i}", "x" * 300, "y" * 300) for i in range(30)]
    body = doctor.as_text(checks)
    assert len(body) <= 4000 and body.startswith("friendbot doctor: 30 warnings")
