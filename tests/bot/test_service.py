"""FriendBot: storage, opt-out, commands and in-character replies, with a scripted model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import pytest

from bot.policy import Decision
from bot.replies import SHRUG, Reply, UsageError
from bot.service import FriendBot
from bot.settings import Settings
from storage.history import recent_messages
from storage.writer import MessageRecord
from tests.bot.scripted_engine import ScriptedEngine, served

GROUP = -1001
ALICE, BOB, CAROL = 11, 12, 13
NAMES = {ALICE: "Alice", BOB: "Bob", CAROL: "Carol"}


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'bot.db'}",
        "allowed_chat_ids": [GROUP],
        "admin_user_ids": [ALICE],
        "reply_probability": 0.0,
        "generation_seed": 1,
        "max_input_chars": 40,
        "reply_candidates": 3,  # the scripted outputs below are written for three samples
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def chat_engine() -> ScriptedEngine:
    return ScriptedEngine(["Bob: sounds good", "Alice: me too"])


@pytest.fixture
def bot(tmp_path: Path, chat_engine: ScriptedEngine) -> Iterator[FriendBot]:
    service = FriendBot(make_settings(tmp_path), loader=served(chat_engine))
    service.start()
    yield service
    service.stop()


_ids = count(1)


def say(
    bot: FriendBot, user: int | None, text: str, *, addressed: bool = False, **fields: object
) -> Decision:
    name = NAMES.get(user, "Someone") if user is not None else "Channel"
    return bot.observe(
        MessageRecord(
            chat_id=fields.pop("chat_id", GROUP),  # type: ignore[arg-type]
            message_id=next(_ids),
            sender_id=user,
            sender_name=name,
            text=text,
            date=datetime.now(UTC),
            chat_title="Friends",
            chat_type="supergroup",
            **fields,  # type: ignore[arg-type]
        ),
        addressed=addressed,
    )


def stored(bot: FriendBot, chat_id: int = GROUP) -> list[tuple[str, str, bool]]:
    bot.writer.flush()
    with bot.sessions.begin() as session:
        return [(m.sender_name, m.text, m.from_bot) for m in recent_messages(session, chat_id, 100)]


async def test_messages_are_stored_and_addressed_ones_answered(bot: FriendBot) -> None:
    assert say(bot, BOB, "anyone up for climbing?") is Decision.IGNORE
    assert say(bot, ALICE, "@bot what do you say", addressed=True) is Decision.PROMPTED
    assert stored(bot) == [
        ("Bob", "anyone up for climbing?", False),
        ("Alice", "@bot what do you say", False),
    ]


async def test_reply_uses_the_training_format_and_avoids_the_asker(
    bot: FriendBot, chat_engine: ScriptedEngine
) -> None:
    say(bot, BOB, "anyone up for climbing?")
    say(bot, ALICE, "me!  \n at 10?", addressed=True)
    reply = await bot.reply_in_character(GROUP, "Alice")
    assert reply == Reply("Bob", "sounds good")
    assert chat_engine.prompts == ["Bob: anyone up for climbing?\nAlice: me! at 10?"]
    assert chat_engine.calls[0]["num_return_sequences"] == 3  # REPLY_CANDIDATES
    # the loop guards reach the engine with the shared defaults
    assert chat_engine.calls[0]["no_repeat_ngram_size"] == 3
    assert chat_engine.calls[0]["repetition_penalty"] == 1.2
    assert chat_engine.threads and all(t.startswith("generate") for t in chat_engine.threads)


async def test_history_size_limits_the_context(tmp_path: Path, chat_engine: ScriptedEngine) -> None:
    service = FriendBot(make_settings(tmp_path, history_size=2), loader=served(chat_engine))
    service.start()
    try:
        for i in range(5):
            say(service, BOB if i % 2 else ALICE, f"message {i}")
        await service.reply_in_character(GROUP, "Alice")
        assert chat_engine.prompts[0] == "Bob: message 3\nAlice: message 4"
    finally:
        service.stop()


async def test_unusable_speaker_falls_back_to_a_persona(tmp_path: Path) -> None:
    engine = ScriptedEngine(
        lambda p: ["Stranger: hi"] if "reply as" not in p else ["whatever: yes"]
    )
    service = FriendBot(make_settings(tmp_path), loader=served(engine))
    service.start()
    try:
        say(service, BOB, "hello")
        say(service, ALICE, "hi bot", addressed=True)
        reply = await service.reply_in_character(GROUP, "Alice")
        assert reply == Reply("Bob", "yes")
        assert engine.prompts[-1] == "Bob: hello\nAlice: hi bot\nreply as Bob:"
    finally:
        service.stop()


async def test_empty_output_shrugs_when_asked_and_stays_quiet_otherwise(tmp_path: Path) -> None:
    engine = ScriptedEngine([""])
    service = FriendBot(make_settings(tmp_path), loader=served(engine))
    service.start()
    try:
        say(service, BOB, "hello")
        assert await service.reply_in_character(GROUP, "Alice") == Reply("Bob", SHRUG)
        assert await service.reply_in_character(GROUP, "Alice", prompted=False) is None
        # empty samples are retried as beams (sample=False) before giving up
        assert [c["sample"] for c in engine.calls[:2]] == [True, False]
    finally:
        service.stop()


async def test_opt_out_deletes_and_stops_storing_and_imitating(
    bot: FriendBot, chat_engine: ScriptedEngine
) -> None:
    say(bot, CAROL, "carol's first message")
    say(bot, BOB, "hello")
    deleted = await bot.opt_out(CAROL, "Carol", "carol_c")
    assert deleted == 1
    say(bot, CAROL, "not to be stored")
    assert [row[0] for row in stored(bot)] == ["Bob"]
    chat_engine.outputs = ["Carol: imitated", "carol_c: still her", "Bob: fine"]
    assert await bot.reply_in_character(GROUP, "Alice") == Reply("Bob", "fine")
    with pytest.raises(UsageError, match="opted out"):
        await bot.reply_as(GROUP, ["carol", "hi"], "Alice")
    await bot.opt_in(CAROL, "Carol", "carol_c")
    say(bot, CAROL, "back again")
    assert stored(bot)[-1] == ("Carol", "back again", False)


async def test_opt_out_survives_a_restart(tmp_path: Path, chat_engine: ScriptedEngine) -> None:
    first = FriendBot(make_settings(tmp_path), loader=served(chat_engine))
    first.start()
    await first.opt_out(CAROL, "Carol", None)
    await first.set_muted(GROUP, True)
    first.stop()
    second = FriendBot(make_settings(tmp_path), loader=served(chat_engine))
    second.start()
    try:
        assert second.is_opted_out(CAROL) and second.is_muted(GROUP)
        say(second, CAROL, "hidden")
        assert stored(second) == []
        assert say(second, BOB, "@bot?", addressed=True) is Decision.IGNORE  # muted
    finally:
        second.stop()


async def test_reply_as_names_the_persona_and_adds_the_text(
    bot: FriendBot, chat_engine: ScriptedEngine
) -> None:
    say(bot, BOB, "hello")
    chat_engine.outputs = ["Alice: wrong name, right words"]
    reply = await bot.reply_as(GROUP, ["bob", "how", "was", "it?"], "Alice")
    assert reply == Reply("Bob", "wrong name, right words")
    assert chat_engine.prompts[-1] == "Bob: hello\nAlice: how was it?\nreply as Bob:"
    with pytest.raises(UsageError, match="at most 40"):
        await bot.reply_as(GROUP, ["Bob", "x" * 41], "Alice")


async def test_paraphrase_uses_the_task_model(tmp_path: Path, chat_engine: ScriptedEngine) -> None:
    paraphraser = ScriptedEngine(["See you soon", "see you soon", "Bye for now", "good bye"])
    service = FriendBot(make_settings(tmp_path), loader=served(chat_engine, paraphrase=paraphraser))
    service.start()
    try:
        options = await service.paraphrase("good bye", "Alice")
        assert options == ["See you soon", "Bye for now"]
        assert paraphraser.prompts == ["Paraphrase: good bye"]
        assert chat_engine.prompts == []
        with pytest.raises(UsageError, match="Usage: /paraphrase"):
            await service.paraphrase("  ", "Alice")
        with pytest.raises(UsageError, match="too long"):
            await service.paraphrase("y" * 41, "Alice")
        assert len(paraphraser.prompts) == 1  # bad input never reaches the model
    finally:
        service.stop()


async def test_joke_is_told_by_a_friend(tmp_path: Path, chat_engine: ScriptedEngine) -> None:
    joker = ScriptedEngine(["Why did the cat sit on the computer? To keep an eye on the mouse."])
    service = FriendBot(make_settings(tmp_path), loader=served(chat_engine, joke=joker))
    service.start()
    try:
        with pytest.raises(UsageError, match="don't know anyone"):
            await service.joke(GROUP, "", "Alice")
        say(service, BOB, "hello")
        say(service, ALICE, "hi")
        reply = await service.joke(GROUP, "cats", "Alice")
        assert reply.speaker == "Bob" and reply.text.startswith("Why did the cat")
        assert joker.prompts == ["Tell me a joke about cats"]
    finally:
        service.stop()


async def test_joke_with_the_chat_model_fallback(
    bot: FriendBot, chat_engine: ScriptedEngine
) -> None:
    say(bot, BOB, "hello")
    reply = await bot.joke(GROUP, "", "Alice")
    assert reply.speaker == "Bob"
    assert chat_engine.prompts[-1] == "Bob: hello\nAlice: tell us a joke\nreply as Bob:"


async def test_bot_posts_are_stored_as_the_bot(bot: FriendBot) -> None:
    say(bot, BOB, "hello")
    bot.record_sent(Reply("Bob", "as bob"), chat_id=GROUP, message_id=999, bot_id=4242)
    assert stored(bot)[-1] == ("Bob", "as bob", True)
    stats = await bot.stats(GROUP)
    assert stats["messages"] == 2 and stats["bot_messages"] == 1 and stats["members"] == 1


async def test_forget_and_stats(bot: FriendBot) -> None:
    for i in range(3):
        say(bot, BOB, f"m{i}")
    say(bot, BOB, "other chat", chat_id=-2002)
    assert (await bot.stats(GROUP))["messages"] == 3
    assert await bot.forget(GROUP) == 3
    assert stored(bot) == [] and len(stored(bot, -2002)) == 1


async def test_reload_swaps_models(tmp_path: Path) -> None:
    engines = [ScriptedEngine(["Bob: old"], name="old"), ScriptedEngine(["Bob: new"], name="new")]
    loads = iter(engines)

    def loader(previous: object) -> object:
        return served(next(loads))(None)

    service = FriendBot(make_settings(tmp_path), loader=loader)  # type: ignore[arg-type]
    service.start()
    try:
        say(service, BOB, "hello")
        assert (await service.reply_in_character(GROUP, "Alice")).text == "old"
        models = await service.reload()
        assert models.chat.model_dir.name == "new" and service.models.reloads == 1
        assert (await service.reply_in_character(GROUP, "Alice")).text == "new"
    finally:
        service.stop()


async def test_retention_prunes_at_start(tmp_path: Path, chat_engine: ScriptedEngine) -> None:
    first = FriendBot(make_settings(tmp_path), loader=served(chat_engine))
    first.start()
    old = datetime.now(UTC) - timedelta(days=40)
    for i in range(3):
        first.observe(MessageRecord(GROUP, 100 + i, BOB, "Bob", f"old {i}", old))
    say(first, BOB, "recent")
    first.stop()
    second = FriendBot(
        make_settings(tmp_path, history_retention_days=30), loader=served(chat_engine)
    )
    second.start()
    try:
        assert stored(second) == [("Bob", "recent", False)]
    finally:
        second.stop()


async def test_never_speaks_as_a_deleted_account_or_a_chat(tmp_path: Path) -> None:
    """An older model lists "Deleted Account" among its speakers and the model names it; an
    anonymous admin's post is stored under the group's (negative) id: neither is a friend."""
    engine = ScriptedEngine(
        lambda p: (
            ["Deleted Account: could be good", "Someone: admin notice"]
            if "reply as" not in p
            else ["could be good"]
        ),
        info={"speakers": ["Deleted Account", "Bob", "deleted  account"]},
    )
    service = FriendBot(make_settings(tmp_path), loader=served(engine))
    service.start()
    try:
        say(service, GROUP, "admin notice")  # an anonymous admin: the group's sender_chat
        say(service, -1001234, "posted as the linked channel")
        say(service, ALICE, "hi bot", addressed=True)
        _, friends = await service.context(GROUP)
        assert friends.known == ("Alice", "Bob")
        for _ in range(5):
            reply = await service.reply_in_character(GROUP, "Alice")
            assert reply == Reply("Bob", "could be good")
        joke = await service.joke(GROUP, "", "Alice")
        assert joke.speaker == "Bob"
    finally:
        service.stop()


async def test_loop_guards_and_candidates_come_from_the_settings(
    tmp_path: Path, chat_engine: ScriptedEngine
) -> None:
    settings = make_settings(
        tmp_path, no_repeat_ngram_size=0, repetition_penalty=1.0, reply_candidates=5
    )
    service = FriendBot(settings, loader=served(chat_engine))
    service.start()
    try:
        say(service, BOB, "anyone up for climbing?")
        await service.reply_in_character(GROUP, "Alice")
    finally:
        service.stop()
    call = chat_engine.calls[0]
    assert (call["no_repeat_ngram_size"], call["repetition_penalty"]) == (0, 1.0)
    assert call["num_return_sequences"] == 5
