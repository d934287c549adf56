"""End to end: ``/recall TOPIC`` against the fake Bot API, with the untrained tiny model.

What it found is listed with dates under a friend's answer; nothing found says so; the
friend's answer is stored as the bot's post, the list is not.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.settings import Settings
from tests.e2e.fake_telegram import FakeChat, FakeTelegram
from tests.e2e.harness import running, until
from tests.e2e.test_bot_e2e import (
    ALICE,
    BOB,
    CAROL,
    GROUP,
    POST,
    make_settings,
    reply_to,
    stored,
)

OTHER = FakeChat(-1001111111111, "Other friends")


@pytest.fixture
def settings(
    tg: FakeTelegram, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.chdir(tmp_path)
    return make_settings(tg, tmp_path, tiny_model_dir, allowed_chat_ids=[GROUP.id, OTHER.id])


async def test_recall_lists_what_was_said_with_dates(tg: FakeTelegram, settings: Settings) -> None:
    async with running(settings) as app:
        tg.say(GROUP, BOB, "the Prague trip was amazing")
        tg.say(GROUP, CAROL, "my bike is broken again")
        tg.say(GROUP, CAROL, "I want to go back to Prague <3")
        tg.say(OTHER, BOB, "Prague is overrated")  # another chat: never recalled here
        asked = tg.say(GROUP, ALICE, "/recall prague")
        nothing = tg.say(GROUP, ALICE, "/recall skiing")
        empty = tg.say(GROUP, ALICE, "/recall")

        answer = await reply_to(tg, asked)
        match = POST.match(answer)
        assert match, answer
        assert match["name"] in {"Bob", "Carol"}  # a friend answers, not the asker
        body, _, listing = match["text"].partition("\n\n<i>found:</i>\n")
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        assert listing.split("\n") == [
            f"{today} Bob: the Prague trip was amazing",
            f"{today} Carol: I want to go back to Prague &lt;3",  # escaped
        ]
        assert await reply_to(tg, nothing) == "I don't remember anything about skiing."
        assert (await reply_to(tg, empty)).startswith("Usage: /recall")

        rows = await until(lambda: any(r[2] for r in stored(app)) and stored(app), "the post")
        (bot_post,) = [r for r in rows if r[2]]
        assert bot_post[0] == match["name"] and bot_post[1] == html.unescape(body)
        assert not any(text.startswith("/recall") for _, text, _ in rows)
    published = {c["command"] for c in tg.calls_to("setMyCommands")[0].params["commands"]}
    assert "recall" in published


async def test_recall_does_not_find_the_bots_own_posts(
    tg: FakeTelegram, settings: Settings
) -> None:
    async with running(settings):
        tg.say(GROUP, BOB, "lunch at the ramen place")
        first = tg.say(GROUP, ALICE, "/recall ramen")
        first_answer = POST.match(await reply_to(tg, first))
        assert first_answer
        again = tg.say(GROUP, ALICE, "/recall ramen")
        listing = (await reply_to(tg, again)).split("<i>found:</i>\n")[-1].split("\n")
        assert len(listing) == 1 and re.fullmatch(
            r"\d{4}-\d\d-\d\d Bob: lunch at the ramen place", listing[0]
        )
