"""Long memory in the bot's prompts (bot.memory) and /recall, with a scripted model.

The model's friendbot.json decides: with ``"memory"`` the prompt carries memory lines (older
messages of this chat matching the context, strictly before the context window) and voice
lines for the persona; without it, the prompt is exactly the old one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.memory import (
    MEMORY_KEY,
    Candidates,
    Memory,
    MemorySpec,
    Window,
    memory_spec,
    remembered,
)
from bot.replies import UsageError
from bot.service import FriendBot
from storage.history import recent_messages
from storage.writer import MessageRecord
from tests.bot.scripted_engine import ScriptedEngine, served
from tests.bot.test_service import make_settings
from training.formatting import MEMORY_PREFIX, VOICE_PREFIX

GROUP, OTHER = -1001, -1002
ALICE, BOB, CAROL = 11, 12, 13
NAMES = {ALICE: "Alice", BOB: "Bob", CAROL: "Carol"}
T0 = datetime(2026, 10, 1, 18, 0, tzinfo=UTC)
WITH_MEMORY = {MEMORY_KEY: {"memory_lines": 3, "voice_lines": 2}}

# Weeks ago, then a fresh context of HISTORY_SIZE=4 lines about Prague and bikes.
OLD = [
    (BOB, "Prague trip was amazing, the bridge at night"),
    (CAROL, "my bike has a flat tyre again"),
    (ALICE, "anyone seen my keys"),
    (BOB, "I fixed my bike chain with a shoelace"),
    (CAROL, "Prague beer is cheap"),
]
CONTEXT = [
    (ALICE, "remember Prague?"),
    (CAROL, "which bridge was it"),
    (BOB, "still riding that bike"),
    (
        ALICE,
        "what do you think",
    ),
]


def record(message_id: int, sender: int, text: str, date: datetime, chat: int = GROUP):
    return MessageRecord(
        chat_id=chat,
        message_id=message_id,
        sender_id=sender,
        sender_name=NAMES[sender],
        text=text,
        date=date,
        chat_title="Friends",
        chat_type="supergroup",
    )


def fill(bot: FriendBot) -> None:
    for i, (sender, text) in enumerate(OLD, 1):
        bot.observe(record(i, sender, text, T0 + timedelta(days=i)))
    bot.observe(record(50, BOB, "Prague Prague bike bridge", T0, chat=OTHER))  # another chat
    for i, (sender, text) in enumerate(CONTEXT, 100):
        bot.observe(record(i, sender, text, T0 + timedelta(days=30, minutes=i)))


def start(tmp_path: Path, engine: ScriptedEngine, **settings: object) -> FriendBot:
    values = {"history_size": 4, "allowed_chat_ids": [GROUP, OTHER], **settings}
    bot = FriendBot(make_settings(tmp_path, **values), loader=served(engine))
    bot.start()
    return bot


@pytest.fixture
def memory_bot(tmp_path: Path) -> Iterator[tuple[FriendBot, ScriptedEngine]]:
    engine = ScriptedEngine(["Bob: sure"], info=WITH_MEMORY)
    bot = start(tmp_path, engine)
    fill(bot)
    yield bot, engine
    bot.stop()


def lines_with(prompt: str, prefix: str) -> list[str]:
    return [line for line in prompt.split("\n") if line.startswith(prefix)]


def test_memory_spec_reads_friendbot_json() -> None:
    assert memory_spec(WITH_MEMORY) == MemorySpec(3, 2)
    assert memory_spec({MEMORY_KEY: {"memory_lines": 4}}) == MemorySpec(4, 0)
    for bad in (
        {},
        {MEMORY_KEY: True},
        {MEMORY_KEY: {"memory_lines": -1}},
        {MEMORY_KEY: {"memory_lines": "3"}},
        {MEMORY_KEY: {"memory_lines": 0}},
    ):
        assert memory_spec(bad) is None, bad


async def test_prompt_carries_memory_lines_before_the_context(memory_bot) -> None:
    bot, engine = memory_bot
    reply = await bot.reply_in_character(GROUP, "Alice")
    assert reply is not None and reply.speaker == "Bob"
    prompt = engine.prompts[0]
    lines = prompt.split("\n")
    memory = lines_with(prompt, MEMORY_PREFIX)
    assert 1 <= len(memory) <= 3
    assert lines[: len(memory)] == memory  # before the context
    assert lines[len(memory) :] == [f"{NAMES[s]}: {t}" for s, t in CONTEXT]
    # the most relevant last (next to the context), dated, never from the other chat
    assert memory[-1].startswith(f"{MEMORY_PREFIX} 2026-10-0")
    assert any("Prague trip was amazing" in line for line in memory)
    assert not any("keys" in line or "Prague Prague" in line for line in memory)
    assert lines_with(prompt, VOICE_PREFIX) == []  # the model picks who speaks: no persona yet


async def test_memory_never_holds_the_context_or_anything_after_it(tmp_path: Path) -> None:
    engine = ScriptedEngine(["Bob: ok"], info=WITH_MEMORY)
    bot = start(tmp_path, engine)
    try:
        fill(bot)
        bot.writer.flush()
        with bot.sessions.begin() as session:
            history = recent_messages(session, GROUP, 100)
        # a window in the middle: OLD[3:5]; earlier and later messages both match its words
        middle = history[3:5]
        window = Window.of(GROUP, middle, history[:5])
        assert {"bike", "prague"} <= set(window.terms)
        with bot.sessions.begin() as session:
            found = remembered(Candidates.search(session, window), 10)
        assert sorted(found) == [
            f"{MEMORY_PREFIX} 2026-10-02 Bob: Prague trip was amazing, the bridge at night",
            f"{MEMORY_PREFIX} 2026-10-03 Carol: my bike has a flat tyre again",
        ]
        # and the bot's own prompt: none of the context lines appear as memory
        await bot.reply_in_character(GROUP, "Alice")
        memory = lines_with(engine.prompts[-1], MEMORY_PREFIX)
        assert memory and not any(text in line for line in memory for _, text in CONTEXT)
    finally:
        bot.stop()


async def test_a_persona_gets_voice_lines_of_their_own_past(memory_bot) -> None:
    bot, engine = memory_bot
    reply = await bot.reply_as(GROUP, ["Carol", "and", "you?"], "Alice")
    assert reply.speaker == "Carol"
    prompt = engine.prompts[-1]
    voice = lines_with(prompt, VOICE_PREFIX)
    assert voice and len(voice) <= 2
    assert set(voice) <= {f"{VOICE_PREFIX} {t}" for s, t in OLD if s == CAROL}
    assert lines_with(prompt, MEMORY_PREFIX)
    assert prompt.split("\n")[-1] == "reply as Carol:"


async def test_a_model_trained_without_memory_gets_the_old_prompt(tmp_path: Path) -> None:
    for engine, settings in (
        (ScriptedEngine(["Bob: sure"]), {}),
        (ScriptedEngine(["Bob: sure"], info=WITH_MEMORY), {"long_memory": False}),
    ):
        bot = start(tmp_path / str(len(settings)), engine, **settings)
        try:
            fill(bot)
            await bot.reply_in_character(GROUP, "Alice")
            await bot.reply_as(GROUP, ["Carol"], "Alice")
        finally:
            bot.stop()
        assert engine.prompts[0] == "\n".join(f"{NAMES[s]}: {t}" for s, t in CONTEXT)
        for prompt in engine.prompts:
            assert not lines_with(prompt, MEMORY_PREFIX) and not lines_with(prompt, VOICE_PREFIX)


async def test_recall_finds_with_dates_and_answers_in_character(memory_bot) -> None:
    bot, engine = memory_bot
    found = await bot.recall(GROUP, "Prague", "Alice")
    lines = found.found_lines()
    assert lines[:2] == [
        "2026-10-02 Bob: Prague trip was amazing, the bridge at night",
        "2026-10-06 Carol: Prague beer is cheap",
    ]
    assert "2026-10-31 Alice: remember Prague?" in lines  # the whole chat, oldest first
    assert all("Prague Prague" not in line for line in lines)  # not the other chat
    assert found.reply is not None and found.reply.speaker in {"Bob", "Carol"}
    prompt = engine.prompts[-1]
    assert prompt.split("\n")[-2:] == [
        "Alice: remember Prague?",
        f"reply as {found.reply.speaker}:",
    ]
    assert any("Prague trip" in line for line in lines_with(prompt, MEMORY_PREFIX))
    nothing = await bot.recall(GROUP, "skiing", "Alice")
    assert nothing.found == [] and nothing.reply is None
    with pytest.raises(UsageError):
        await bot.recall(GROUP, "  ", "Alice")


async def test_recall_without_memory_training_lists_but_keeps_the_prompt_plain(
    tmp_path: Path,
) -> None:
    engine = ScriptedEngine(["Carol: yes!"])
    bot = start(tmp_path, engine)
    try:
        fill(bot)
        found = await bot.recall(GROUP, "bike", "Alice")
    finally:
        bot.stop()
    assert [line[11:] for line in found.found_lines()] == [
        "Carol: my bike has a flat tyre again",
        "Bob: I fixed my bike chain with a shoelace",
        "Bob: still riding that bike",
    ]
    assert found.reply is not None
    assert not lines_with(engine.prompts[-1], MEMORY_PREFIX)


def test_memory_off_builds_the_plain_prompt() -> None:
    assert Memory.off().prompt(["A: hi"], "Bob") == "A: hi\nreply as Bob:"
