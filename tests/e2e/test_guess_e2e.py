"""End to end: a /guess round in a group, against the fake Bot API with the real bot polling.

An old conversation arrives (dated days ago), a fresh one too, and a member opts out; /guess
posts an excerpt and a line with a Real / Bot keyboard; three members vote (one twice); the
bot reveals the answer; the round and its votes are stored; /guessstats and
`friendbot judge-report` report it. A round left open by a stopped bot is revealed after the
restart. The tiny untrained model writes the bot's lines: tests assert what was posted and
stored, never the text's quality.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bot.app import service_of
from bot.settings import Settings
from storage.judge import judgements
from storage.models import GuessRound, GuessVote
from tests.cli_runner import friendbot_with_bot
from tests.e2e.fake_telegram import FakeChat, FakeTelegram, FakeUser
from tests.e2e.harness import running, until

GROUP = FakeChat(-1001234567890, "Climbing friends")
ALICE = FakeUser(101, "Alice", "alice")
BOB = FakeUser(102, "Bob", "bobby")
CAROL = FakeUser(103, "Carol")
DAVE = FakeUser(104, "Dave")  # opts out
THREE_DAYS_AGO = int(time.time()) - 3 * 86400


@pytest.fixture
def settings(
    tg: FakeTelegram, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'friendbot.db'}")
    return Settings(
        _env_file=None,
        telegram_bot_token=tg.token,
        telegram_api_base_url=tg.base_url,
        database_url=f"sqlite:///{tmp_path / 'friendbot.db'}",
        allowed_chat_ids=[GROUP.id],
        admin_user_ids=[ALICE.id],
        model_dir=tiny_model_dir,
        reply_probability=0.0,
        generation_seed=7,
        max_new_tokens=6,
        guess_votes=3,
        guess_timeout=600,
        guess_cooldown=3600,
        guess_min_age=1,
    )


def converse(tg: FakeTelegram) -> int:
    """An old conversation (Dave in it), then a fresh one; returns how many messages."""
    people = [ALICE, BOB, CAROL, DAVE]
    for i in range(24):
        user = people[i % 4]
        tg.say(GROUP, user, f"old {user.first_name} line {i}", date=THREE_DAYS_AGO + 60 * i)
    for i in range(6):
        tg.say(GROUP, people[i % 2], f"fresh spoiler {i}")
    return 30


def rounds_posted(tg: FakeTelegram) -> list[dict[str, Any]]:
    """Messages the bot sent with the Real / Bot keyboard."""
    return [m for m in tg.messages_sent if "guess:" in json.dumps(m.get("reply_markup") or {})]


def answers(tg: FakeTelegram) -> list[str]:
    return [str(c.params.get("text") or "") for c in tg.calls_to("answerCallbackQuery")]


def button_data(message: dict[str, Any]) -> dict[str, str]:
    markup = message["reply_markup"]
    if isinstance(markup, str):
        markup = json.loads(markup)
    row = markup["inline_keyboard"][0]
    return {b["text"]: b["callback_data"] for b in row}


async def test_a_full_round_votes_reveal_store_and_report(
    tg: FakeTelegram, settings: Settings
) -> None:
    async with running(settings) as app:
        service = service_of(app)
        converse(tg)
        tg.say(GROUP, DAVE, "/optout")
        await until(lambda: service.is_opted_out(DAVE.id), "Dave's opt-out")
        tg.say(GROUP, BOB, "/guess")
        (posted,) = await until(lambda: rounds_posted(tg), "the round")
        text = posted["text"]
        assert text.startswith("🎭 Real or bot?")
        assert "old " in text and "Dave" not in text and "fresh spoiler" not in text
        lines = text.split("\n")
        signed = re.match(r"^(Alice|Bob|Carol): ", lines[-3])
        assert signed, text  # the line to judge, signed by a friend who did not opt out
        buttons = button_data(posted)
        assert set(buttons) == {"Real", "Bot"}

        tg.press(ALICE, posted, buttons["Real"])
        await until(lambda: len(answers(tg)) == 1, "Alice's vote answered")
        tg.press(ALICE, posted, buttons["Bot"])  # a second vote
        await until(lambda: len(answers(tg)) == 2, "the second vote answered")
        assert answers(tg) == ["Counted: Real.", "You already voted in this round."]
        tg.press(BOB, posted, buttons["Bot"])
        tg.press(CAROL, posted, buttons["Real"])
        reveal = await until(
            lambda: [p for p in tg.sent(GROUP.id) if str(p["text"]).startswith("Revealed:")],
            "the reveal",
        )
        assert len(reveal) == 1
        assert reveal[0]["reply_parameters"]["message_id"] == posted["message_id"]
        edited = tg.calls_to("editMessageReplyMarkup")
        assert edited and edited[-1].params["message_id"] == posted["message_id"]

        with service.sessions.begin() as session:
            (row,) = session.query(GuessRound).all()
            votes = {v.voter_id: v.guess_real for v in session.query(GuessVote).all()}
            by_friend = judgements(session, "friend", chat_id=GROUP.id)
        assert row.revealed_at is not None and row.posted_message_id == posted["message_id"]
        assert row.friend == signed[1] and row.chat_id == GROUP.id
        assert votes == {ALICE.id: True, BOB.id: False, CAROL.id: True}
        said = reveal[0]["text"]
        assert "Votes: 2 × Real, 1 × Bot" in said
        if row.is_bot:
            assert "It was the bot" in said and "1 of 3 guessed right; the bot fooled 2" in said
        else:
            assert f"It was real: {row.friend} said that." in said
            assert "2 of 3 guessed right" in said
        assert [j.key for j in by_friend] == [row.friend]

        tg.say(GROUP, CAROL, "/guess")  # within GUESS_COOLDOWN
        await until(
            lambda: any("next /guess in" in str(p["text"]) for p in tg.sent(GROUP.id)),
            "the cooldown answer",
        )
        tg.say(GROUP, CAROL, "/guessstats")
        stats = await until(
            lambda: [p["text"] for p in tg.sent(GROUP.id) if "Per model:" in str(p["text"])],
            "/guessstats",
        )
        side = "fool rate 67%" if row.is_bot else "real lines voted Real 67%"
        assert "1 round, 3 votes in this chat" in stats[0] and side in stats[0]
        assert len(rounds_posted(tg)) == 1

    # the same numbers from the shell, reading the database only
    code, output = friendbot_with_bot("judge-report", "--json")
    assert code == 0, output
    data = json.loads(output)
    (model,) = data["by_model"]
    side = model["fool_rate"] if row.is_bot else model["real_voted_real"]
    assert (side["real"], side["votes"]) == (2, 3) and 0 < side["low"] < 2 / 3 < side["high"]
    empty = model["real_voted_real"] if row.is_bot else model["fool_rate"]
    assert empty["votes"] == 0
    code, output = friendbot_with_bot("judge-report", "--chat", str(GROUP.id))
    assert code == 0 and f"1 round, 3 votes in chat {GROUP.id}." in output, output


async def test_an_open_round_survives_a_restart_and_times_out(
    tg: FakeTelegram, settings: Settings
) -> None:
    async with running(settings) as app:
        converse(tg)
        tg.say(GROUP, ALICE, "/guess")
        (posted,) = await until(lambda: rounds_posted(tg), "the round")
        tg.press(BOB, posted, button_data(posted)["Bot"])
        await until(lambda: answers(tg) == ["Counted: Bot."], "Bob's vote")
        service = service_of(app)
        with service.sessions.begin() as session:  # its time runs out while the bot is down
            session.execute(
                update(GuessRound).values(deadline_at=datetime.now(UTC) - timedelta(seconds=1))
            )
    assert not [p for p in tg.sent(GROUP.id) if str(p["text"]).startswith("Revealed:")]

    async with running(settings):
        reveal = await until(
            lambda: [p for p in tg.sent(GROUP.id) if str(p["text"]).startswith("Revealed:")],
            "the reveal after the restart",
        )
        assert "Votes: 0 × Real, 1 × Bot" in reveal[0]["text"]
        assert reveal[0]["reply_parameters"]["message_id"] == posted["message_id"]


async def test_a_new_group_plays_the_training_datas_held_out_part(
    tg: FakeTelegram, settings: Settings, tmp_path: Path
) -> None:
    """No stored history yet: the round comes from the model's test split, this group's rows
    only, never Dave's (opted out) lines; it is voted, revealed and stored as a reference."""
    from tests.bot.held_out_data import row, trained_on, write_dataset
    from training.model.model_dir import read_info, write_info

    people = [(ALICE, 101), (BOB, 102), (CAROL, 103), (DAVE, 104)]
    rows = []
    for i in range(12):
        (speaker, user), context = (
            people[i % 4],
            [f"{p.first_name}: held out {i}.{j}" for j, (p, _) in enumerate(people) if p != DAVE],
        )
        rows.append(row(GROUP.id, context, speaker.first_name, f"real {i}", user=user,
                        message_id=i + 1))  # fmt: skip
    rows.append(row(-1009, ["Alice: other", "Bob: chat"], "Carol", "elsewhere", user=103,
                    message_id=99))  # fmt: skip
    rows.append(row(GROUP.id, ["Dave: dave's words", "Alice: a"], "Bob", "b", user=102,
                    message_id=50))  # fmt: skip
    data = write_dataset(tmp_path / "data", rows)
    model = tmp_path / "model"
    shutil.copytree(settings.model_dir, model)
    write_info(model, {**read_info(model), "dataset": trained_on(data)})
    settings = settings.model_copy(update={"model_dir": model})

    async with running(settings) as app:
        service = service_of(app)
        tg.say(GROUP, DAVE, "/optout")
        await until(lambda: service.is_opted_out(DAVE.id), "Dave's opt-out")
        tg.say(GROUP, BOB, "/guess")
        (posted,) = await until(lambda: rounds_posted(tg), "the round")
        text = posted["text"]
        assert text.startswith("🎭 Real or bot? (from the training data")
        assert "held out" in text and "Dave" not in text and "elsewhere" not in text
        signed = re.match(r"^(Alice|Bob|Carol): ", text.split("\n")[-3])
        assert signed, text
        buttons = button_data(posted)
        for user, choice in ((ALICE, "Real"), (BOB, "Bot"), (CAROL, "Bot")):
            tg.press(user, posted, buttons[choice])
        (reveal,) = await until(
            lambda: [p for p in tg.sent(GROUP.id) if str(p["text"]).startswith("Revealed:")],
            "the reveal",
        )
        assert "Votes: 1 × Real, 2 × Bot" in reveal["text"]
        with service.sessions.begin() as session:
            (stored,) = session.query(GuessRound).all()
            votes = session.query(GuessVote).count()
        assert stored.chat_id == GROUP.id and stored.friend == signed[1] and votes == 3
        assert stored.revealed_at is not None and stored.real_message_id is None
        ref = stored.excerpt_ids
        assert ref["dataset"] == str((data / "test.parquet").resolve())
        assert rows[ref["row"]]["chat_id"] == GROUP.id and "Dave" not in ref["speakers"]
        real_line = f"{signed[1]}: {rows[ref['row']]['response'].split(': ', 1)[1]}"
        assert (real_line in text) != stored.is_bot
