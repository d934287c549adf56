"""End to end: the real bot (python-telegram-bot's own networking, polling) against a fake Bot
API server on 127.0.0.1, with the untrained tiny model and a temporary SQLite database.

Tests assert what the bot sent and stored, never the quality of the (random-weight) text.
Deterministic: REPLY_PROBABILITY=0 and a fixed GENERATION_SEED.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any, TypeVar

import pytest
from telegram.ext import Application

from bot.app import run_bot, service_of
from bot.settings import Settings
from storage.db import durable_session, make_engine, upgrade
from storage.history import get_chat, recent_messages
from storage.inbox import save_fetched
from tests.e2e.fake_telegram import FakeChat, FakeTelegram, FakeUser
from tests.e2e.harness import running, until
from training.errors import InputError

T = TypeVar("T")

GROUP = FakeChat(-1001234567890, "Climbing friends")
ALICE = FakeUser(101, "Alice", "alice")  # the admin
BOB = FakeUser(102, "Bob", "bobby")
CAROL = FakeUser(103, "Carol")
POST = re.compile(r"^<b>(?P<name>[^<]+)</b>: (?P<text>.+)$", re.S)


@pytest.fixture
def settings(
    tg: FakeTelegram, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.chdir(tmp_path)  # nothing from a developer's .env
    return make_settings(tg, tmp_path, tiny_model_dir)


def make_settings(tg: FakeTelegram, tmp_path: Path, model_dir: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram_bot_token": tg.token,
        "telegram_api_base_url": tg.base_url,
        "database_url": f"sqlite:///{tmp_path / 'friendbot.db'}",
        "allowed_chat_ids": [GROUP.id],
        "admin_user_ids": [ALICE.id],
        "model_dir": model_dir,
        "reply_probability": 0.0,
        "generation_seed": 7,
        "max_new_tokens": 6,
    }
    values.update(extra)
    return Settings(_env_file=None, **values)


def replies_to(tg: FakeTelegram, message: dict[str, Any]) -> list[dict[str, Any]]:
    """What the bot sent in reply to ``message``."""
    return [
        p
        for p in tg.sent(message["chat"]["id"])
        if (p.get("reply_parameters") or {}).get("message_id") == message["message_id"]
    ]


async def reply_to(tg: FakeTelegram, message: dict[str, Any], timeout: float = 30.0) -> str:
    sent = await until(lambda: replies_to(tg, message), f"a reply to {message['text']!r}", timeout)
    assert len(sent) == 1, sent
    return str(sent[0]["text"])


def stored(application: Application, chat_id: int = GROUP.id) -> list[tuple[str, str, bool]]:
    service = service_of(application)
    service.writer.flush(timeout=30)
    with service.sessions.begin() as session:
        rows = recent_messages(session, chat_id, 10_000)
        return [(m.sender_name, m.text, m.from_bot) for m in rows]


def mention(text: str = "what do you think?") -> str:
    return f"@friendbot_test_bot {text}"


async def test_mention_gets_an_in_character_reply(tg: FakeTelegram, settings: Settings) -> None:
    async with running(settings) as app:
        tg.say(GROUP, BOB, "climbing tomorrow?")
        tg.say(GROUP, CAROL, "maybe, if it's dry")
        asked = tg.say(GROUP, ALICE, mention())
        await reply_to(tg, asked)
        post = replies_to(tg, asked)[0]
        assert post["parse_mode"] == "HTML"
        match = POST.match(post["text"])
        assert match, post["text"]
        speaker = match["name"]
        assert speaker in {"Bob", "Carol"}  # a friend from the chat, not the asker
        # "typing..." was shown before the reply
        typing = tg.calls_to("sendChatAction")
        assert typing and typing[0].params == {"chat_id": GROUP.id, "action": "typing"}
        assert typing[0].at <= tg.calls_to("sendMessage")[0].at
        rows = await until(lambda: len(stored(app)) == 4 and stored(app), "the post to be stored")
        assert rows[:3] == [
            ("Bob", "climbing tomorrow?", False),
            ("Carol", "maybe, if it's dry", False),
            ("Alice", mention(), False),
        ]
        assert rows[3][0] == speaker and rows[3][2] is True  # the bot's post, as that friend
        assert len(rows) == 4
    assert len(tg.sent()) == 1  # nothing unprompted (REPLY_PROBABILITY=0)
    published = {c["command"] for c in tg.calls_to("setMyCommands")[0].params["commands"]}
    assert {"paraphrase", "joke", "as", "optout", "help"} <= published


async def test_commands_paraphrase_joke_as_help(tg: FakeTelegram, settings: Settings) -> None:
    async with running(settings) as app:
        tg.say(GROUP, BOB, "good morning everyone")
        tg.say(GROUP, CAROL, "morning!")
        para = tg.say(GROUP, ALICE, "/paraphrase see you at the crag at ten")
        empty = tg.say(GROUP, ALICE, "/paraphrase")
        quoted = tg.say(
            GROUP,
            ALICE,
            "/paraphrase",
            reply_to={
                "message_id": 1,
                "date": 0,
                "chat": GROUP.to_dict(),
                "from": BOB.to_dict(),
                "text": "good morning",
            },
        )
        long = tg.say(GROUP, ALICE, "/paraphrase " + "very " * 100)
        joke = tg.say(GROUP, ALICE, "/joke@friendbot_test_bot climbing")
        as_bob = tg.say(GROUP, ALICE, "/as bob how was the climb?")
        helped = tg.say(GROUP, CAROL, "/help")

        paraphrased = await reply_to(tg, para)
        assert not POST.match(paraphrased)  # rewordings are not posted as a friend
        lines = paraphrased.split("\n")  # 1-3 rewordings, numbered when more than one
        assert 1 <= len(lines) <= 3 and all(lines)
        assert len(lines) == 1 or all(f.startswith(f"{n}. ") for n, f in enumerate(lines, 1))
        assert (await reply_to(tg, empty)).startswith("Usage: /paraphrase")
        assert not (await reply_to(tg, quoted)).startswith("Usage")
        assert "too long" in await reply_to(tg, long)
        told = POST.match(await reply_to(tg, joke))
        assert told and told["name"] in {"Bob", "Carol"}  # told by a friend, not the asker
        answered = POST.match(await reply_to(tg, as_bob))
        assert answered and answered["name"] == "Bob"
        assert "/paraphrase" in await reply_to(tg, helped)

        rows = await until(
            lambda: sum(r[2] for r in stored(app)) == 2 and stored(app), "the posts to be stored"
        )
        assert not any(text.startswith("/") for _, text, _ in rows)  # commands are not chat
        bot_rows = [name for name, _, from_bot in rows if from_bot]
        assert sorted(bot_rows) == sorted([told["name"], "Bob"])  # the joke and /as are history


async def test_opt_out_and_back_in(tg: FakeTelegram, settings: Settings) -> None:
    async with running(settings) as app:
        tg.say(GROUP, BOB, "hello")
        tg.say(GROUP, CAROL, "carol was here")
        out = tg.say(GROUP, CAROL, "/optout")
        assert "deleted 1 stored message" in await reply_to(tg, out)
        tg.say(GROUP, CAROL, "this must not be stored")
        refused = tg.say(GROUP, ALICE, "/as Carol say something")
        assert "opted out" in await reply_to(tg, refused)
        for _ in range(3):
            asked = tg.say(GROUP, ALICE, mention())
            match = POST.match(await reply_to(tg, asked))
            assert match and match["name"] != "Carol"
        assert not any(name == "Carol" for name, _, _ in stored(app))
        back = tg.say(GROUP, CAROL, "/optin")
        assert "again" in await reply_to(tg, back)
        tg.say(GROUP, CAROL, "I'm back")
        barrier = tg.say(GROUP, BOB, "/help")
        await reply_to(tg, barrier)
        assert ("Carol", "I'm back", False) in stored(app)


async def test_chats_not_allowed_get_nothing(tg: FakeTelegram, settings: Settings) -> None:
    stranger = FakeChat(-1009999999999, "Strangers")
    private = FakeChat(BOB.id, None, "private")
    async with running(settings) as app:
        for chat in (stranger, private):
            tg.say(chat, BOB, "hello bot")
            tg.say(chat, BOB, mention())
            for command in ("/start", "/help", "/joke", "/paraphrase hi", "/optout", "/stats"):
                tg.say(chat, ALICE, command)
        asked = tg.say(GROUP, ALICE, mention())  # processed after all of the above
        await reply_to(tg, asked)
        assert tg.sent(stranger.id) == [] and tg.sent(private.id) == []
        assert all(c.params.get("chat_id") == GROUP.id for c in tg.calls_to("sendChatAction"))
        assert stored(app, stranger.id) == [] and stored(app, private.id) == []
        with service_of(app).sessions.begin() as session:
            assert get_chat(session, stranger.id) is None
        assert not service_of(app).is_opted_out(ALICE.id)  # the /optout elsewhere did nothing


async def test_burst_while_generating(
    tg: FakeTelegram, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(settings) as app:
        engine = service_of(app).models.current.chat
        entered, release = threading.Event(), threading.Event()

        def held(generate: Any) -> Any:
            def held_generate(*args: Any, **kwargs: Any) -> Any:
                entered.set()
                release.wait(60)
                return generate(*args, **kwargs)

            return held_generate

        # replies are the best of k candidates (generate_scored); commands use generate
        for name in ("generate", "generate_scored"):
            monkeypatch.setattr(engine, name, held(getattr(engine, name)))
        try:
            tg.say(GROUP, BOB, "warming up")
            asked = tg.say(GROUP, ALICE, mention("give me a long answer"))
            await until(entered.is_set, "the generation to start")
            people = (ALICE, BOB, CAROL)
            for i in range(1000):
                tg.say(GROUP, people[i % 3], f"burst message {i}")
            helped = tg.say(GROUP, BOB, "/help")
            counted = tg.say(GROUP, ALICE, "/stats")
            assert "/joke" in await reply_to(tg, helped)
            stats = await reply_to(tg, counted)
            # the generation is still running, yet every message so far is committed
            assert not release.is_set() and replies_to(tg, asked) == []
            assert "messages: 1002" in stats and "generations_in_flight: 1" in stats
        finally:
            release.set()
        assert POST.match(await reply_to(tg, asked))
        rows = await until(lambda: len(stored(app)) == 1003 and stored(app), "the post stored")
        burst = [text for _, text, _ in rows if text.startswith("burst message")]
        assert burst == [f"burst message {i}" for i in range(1000)]  # all, in order, none lost
        assert len(rows) == 1000 + 2 + 1


async def test_failed_generation_is_logged_and_the_bot_carries_on(
    tg: FakeTelegram,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # PTB logs its API URL (with the token) at DEBUG
    async with running(settings) as app:
        engine = service_of(app).models.current.chat
        failures = [RuntimeError("the model fell over")]

        def flaky(generate: Any) -> Any:
            def flaky_generate(*args: Any, **kwargs: Any) -> Any:
                if failures:
                    raise failures.pop()
                return generate(*args, **kwargs)

            return flaky_generate

        for name in ("generate", "generate_scored"):  # best of k, or one plain sample
            monkeypatch.setattr(engine, name, flaky(getattr(engine, name)))
        tg.say(GROUP, BOB, "hi")
        first = tg.say(GROUP, ALICE, mention())
        await until(
            lambda: any("the model fell over" in r.getMessage() for r in caplog.records),
            "the error to be logged",
        )
        second = tg.say(GROUP, ALICE, mention("still there?"))
        assert POST.match(await reply_to(tg, second))
        assert replies_to(tg, first) == []
        tg.fail("sendMessage")  # Telegram refusing a message is survived too
        third = tg.say(GROUP, ALICE, "/help")
        fourth = tg.say(GROUP, ALICE, "/help")
        await reply_to(tg, fourth)
        assert replies_to(tg, third) == []
        await until(lambda: len(stored(app)) == 4, "3 human messages + 1 reply stored")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "bot.handlers"]
    assert len(errors) == 2
    assert tg.token not in caplog.text
    assert tg.token.split(":")[1] not in caplog.text


async def test_slow_generation_times_out_politely(
    tg: FakeTelegram, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = make_settings(tg, tmp_path, tiny_model_dir, generation_timeout=0.5)
    release = threading.Event()
    try:
        async with running(settings) as app:
            engine = service_of(app).models.current.chat
            generate = engine.generate
            monkeypatch.setattr(
                engine, "generate", lambda *a, **k: release.wait(30) and generate(*a, **k)
            )
            tg.say(GROUP, BOB, "hello")
            joke = tg.say(GROUP, ALICE, "/joke")
            assert "took too long" in await reply_to(tg, joke)
            helped = tg.say(GROUP, ALICE, "/help")
            await reply_to(tg, helped)
            release.set()
    finally:
        release.set()


async def test_admin_commands(tg: FakeTelegram, settings: Settings) -> None:
    async with running(settings) as app:
        tg.say(GROUP, BOB, "hello")
        refused = tg.say(GROUP, BOB, "/mute")
        assert "Only the bot's admins" in await reply_to(tg, refused)
        muted = tg.say(GROUP, ALICE, "/mute")
        assert "Muted" in await reply_to(tg, muted)
        ignored = tg.say(GROUP, BOB, mention())
        await reply_to(tg, tg.say(GROUP, ALICE, "/help"))  # a barrier: the mention was handled
        assert replies_to(tg, ignored) == []
        await reply_to(tg, tg.say(GROUP, ALICE, "/unmute"))
        answered = tg.say(GROUP, BOB, mention())
        assert POST.match(await reply_to(tg, answered))
        reloaded = tg.say(GROUP, ALICE, "/reload")
        assert (await reply_to(tg, reloaded)).startswith("Reloaded.")
        assert service_of(app).models.reloads == 1
        answered_again = tg.say(GROUP, BOB, mention("and now?"))
        assert POST.match(await reply_to(tg, answered_again))
        await until(lambda: len(stored(app)) == 6, "3 messages + 3 posts stored")
        forgotten = tg.say(GROUP, ALICE, "/forget")
        assert "deleted 6 stored messages" in await reply_to(tg, forgotten)
        assert stored(app) == []


async def test_restart_keeps_history(tg: FakeTelegram, settings: Settings) -> None:
    async with running(settings) as app:
        tg.say(GROUP, BOB, "before the restart")
        await reply_to(tg, tg.say(GROUP, ALICE, mention()))
        await until(lambda: len(stored(app)) == 3, "2 messages + 1 reply stored")
    tg.say(GROUP, CAROL, "said while the bot was down")
    async with running(settings) as app:
        asked = tg.say(GROUP, ALICE, mention("did you miss us?"))
        assert POST.match(await reply_to(tg, asked))
        rows = await until(lambda: len(stored(app)) == 6 and stored(app), "everything stored")
        texts = [text for _, text, from_bot in rows if not from_bot]
        assert texts == [
            "before the restart",
            mention(),
            "said while the bot was down",
            mention("did you miss us?"),
        ]
        assert sum(from_bot for _, _, from_bot in rows) == 2
    assert len(tg.sent()) == 2  # nothing answered twice after the restart


async def test_updates_stored_before_a_crash_are_handled_once(
    tg: FakeTelegram, settings: Settings
) -> None:
    """As after a SIGKILL: the inbox holds updates the killed bot fetched but never handled,
    and Telegram, never told to forget them, delivers them again. Each is handled once."""
    tg.say(GROUP, BOB, "said just before the crash")
    asked = tg.say(GROUP, ALICE, mention("still there?"))
    engine = make_engine(settings.database_url)
    upgrade(engine)
    with durable_session(engine) as session:  # what the killed bot's getUpdates stored
        save_fetched(session, tg.bot.id, tg.queued())
    engine.dispose()
    async with running(settings) as app:
        assert POST.match(await reply_to(tg, asked))
        await reply_to(tg, tg.say(GROUP, ALICE, "/help"))  # a barrier: everything before handled
        texts = [text for _, text, from_bot in stored(app) if not from_bot]
        assert texts == ["said just before the crash", mention("still there?")]
        service = service_of(app)
        await until(lambda: not service.unhandled_updates(tg.bot.id), "all marked handled")
    assert len(replies_to(tg, asked)) == 1  # the re-delivered mention is not answered twice
    assert tg.pending_updates() == 0


async def test_updates_are_not_confirmed_until_stored(
    tg: FakeTelegram,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running(settings) as app:
        service = service_of(app)
        store = service.store_fetched
        attempts: list[int] = []

        def failing_once(bot_id: int, updates: list[dict[str, Any]]) -> set[int]:
            attempts.append(len(tg.confirmed_ids()))
            if len(attempts) == 1:
                raise OSError("disk full")
            return store(bot_id, updates)

        monkeypatch.setattr(service, "store_fetched", failing_once)
        said = tg.say(GROUP, BOB, "hello")
        await until(lambda: stored(app), "the message stored after the retry")
        assert attempts[:2] == [0, 0]  # not confirmed while it could not be stored
        await reply_to(tg, tg.say(GROUP, ALICE, "/help"))
        assert [text for _, text, _ in stored(app)] == [said["text"]]
    assert "could not store 1 fetched updates" in caplog.text


def test_a_rejected_token_is_one_clear_error(
    tg: FakeTelegram, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = make_settings(tg, tmp_path, tiny_model_dir, telegram_bot_token="999:not-the-token")
    with pytest.raises(InputError, match="TELEGRAM_BOT_TOKEN: Telegram rejected the token"):
        run_bot(settings)
    assert [c.method for c in tg.calls] == []  # the fake answered 401 before any API method
