"""Telegram glue: who addressed the bot, how a message becomes a MessageRecord, the wiring,
and the token kept out of logs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from telegram import Chat, Message, MessageEntity, User
from telegram.ext import CommandHandler, MessageHandler

from bot.app import MENU, RedactToken, build_application, protect_token_in_logs
from bot.handlers import SERVICE_KEY, is_addressed, message_record
from bot.settings import Settings
from training.errors import InputError

BOT = User(id=999, first_name="Friendbot", is_bot=True, username="friends_bot")
ALICE = User(id=1, first_name="Alice", last_name="Liddell", is_bot=False, username="alice")
GROUP = Chat(id=-100123, type=Chat.SUPERGROUP, title="Friends")
TOKEN = "123456:SECRET-token-value"


def msg(text: str, *, entities=(), reply_to: Message | None = None, user=ALICE, **kw) -> Message:
    return Message(
        message_id=10,
        date=datetime(2024, 5, 1, tzinfo=UTC),
        chat=GROUP,
        from_user=user,
        text=text,
        entities=list(entities),
        reply_to_message=reply_to,
        **kw,
    )


def mention(text: str, word: str) -> MessageEntity:
    start = text.index(word)
    return MessageEntity(MessageEntity.MENTION, start, len(word))


def test_mention_of_the_bot_addresses_it_in_any_case() -> None:
    text = "hey @Friends_Bot what's up"
    assert is_addressed(msg(text, entities=[mention(text, "@Friends_Bot")]), BOT.id, "friends_bot")


def test_mention_after_emoji_counts_utf16_offsets() -> None:
    text = "😂😂 @friends_bot"
    entity = MessageEntity(MessageEntity.MENTION, 5, 12)  # two emoji are 4 UTF-16 units
    assert is_addressed(msg(text, entities=[entity]), BOT.id, "friends_bot")


def test_other_mentions_and_plain_text_do_not_address_it() -> None:
    text = "@alice look, friends_bot is here"
    assert not is_addressed(msg(text, entities=[mention(text, "@alice")]), BOT.id, "friends_bot")


def test_text_mention_and_reply_to_the_bot_address_it() -> None:
    entity = MessageEntity(MessageEntity.TEXT_MENTION, 0, 9, user=BOT)
    assert is_addressed(msg("Friendbot come here", entities=[entity]), BOT.id, "friends_bot")
    bots_message = msg("<b>Bob</b>: hi", user=BOT)
    assert is_addressed(msg("haha yes", reply_to=bots_message), BOT.id, "friends_bot")
    alices_message = msg("earlier")
    assert not is_addressed(msg("haha yes", reply_to=alices_message), BOT.id, "friends_bot")


def test_message_record_carries_sender_chat_and_reply() -> None:
    earlier = msg("earlier")
    incoming = message_record(msg("hi all", reply_to=earlier), BOT.id)
    assert incoming.chat_id == GROUP.id and incoming.chat_type == "supergroup"
    assert incoming.chat_title == "Friends"
    assert incoming.sender_id == 1 and incoming.sender_name == "Alice Liddell"
    assert incoming.sender_username == "alice" and not incoming.sender_is_bot
    assert incoming.reply_to_message_id == 10 and not incoming.from_bot


def test_anonymous_admin_speaks_as_the_chat() -> None:
    anon = User(id=1087968824, first_name="Group", is_bot=True, username="GroupAnonymousBot")
    incoming = message_record(msg("admins here", user=anon, sender_chat=GROUP), BOT.id)
    assert incoming.sender_id == GROUP.id and incoming.sender_name == "Friends"
    assert not incoming.sender_is_bot  # a person, so it may be answered


def test_other_bots_are_flagged() -> None:
    other = User(id=5, first_name="Spam", is_bot=True)
    assert message_record(msg("buy now", user=other), BOT.id).sender_is_bot


def settings(tmp_path: Path, **extra: object) -> Settings:
    values: dict[str, object] = {
        "telegram_bot_token": TOKEN,
        "database_url": f"sqlite:///{tmp_path / 'x.db'}",
        "allowed_chat_ids": [GROUP.id],
    }
    values.update(extra)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_build_needs_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="TELEGRAM_BOT_TOKEN"):
        build_application(settings(tmp_path, telegram_bot_token=None))


def test_every_command_is_wired_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # extensions read .env: not a developer's
    application = build_application(
        settings(tmp_path, telegram_api_base_url="http://127.0.0.1:9/bot")
    )
    assert application.bot.base_url == f"http://127.0.0.1:9/bot{TOKEN}"
    assert application.bot_data[SERVICE_KEY].settings.allowed_chat_ids == {GROUP.id}
    core = application.handlers[0]
    commands = [c for h in core if isinstance(h, CommandHandler) for c in h.commands]
    expected = {"start", "help", "paraphrase", "joke", "as", "recall", "optout", "optin"}
    expected |= {"reload", "stats", "forget", "mute", "unmute", "doctor"}
    assert sorted(commands) == sorted(expected)
    assert {c.command for c in MENU} <= set(commands)
    assert sum(isinstance(h, MessageHandler) for h in core) == 2
    assert application.error_handlers
    # generation never blocks the update queue
    blocking = {c: h.block for h in core if isinstance(h, CommandHandler) for c in h.commands}
    assert not blocking["paraphrase"] and not blocking["joke"] and not blocking["as"]


def test_token_is_redacted_from_log_output(caplog: pytest.LogCaptureFixture) -> None:
    redact = RedactToken(TOKEN)
    caplog.handler.addFilter(redact)
    try:
        log = logging.getLogger("test.redact")
        with caplog.at_level(logging.INFO):
            log.info("POST https://api.telegram.org/bot%s/getUpdates", TOKEN)
            try:
                raise ConnectionError(f"cannot reach /bot{TOKEN}/getMe")
            except ConnectionError:
                log.exception("network")
        text = caplog.text
        assert TOKEN not in text
        assert "/bot<TOKEN>/getUpdates" in text and "/bot<TOKEN>/getMe" in text
    finally:
        caplog.handler.removeFilter(redact)


def test_protect_quiets_httpx_request_lines() -> None:
    protect_token_in_logs(TOKEN)
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
