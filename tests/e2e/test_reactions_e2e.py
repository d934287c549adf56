"""End to end: the group reacts to the bot's replies (issue 14), through the fake Bot API.

Reactions arrive as Telegram sends them (``message_reaction``, only because the bot asks for
it in ``allowed_updates``), each carrying the member's whole new set: given, changed,
removed, unknown and custom emoji, a message the bot does not know, a chat it does not serve.
A member's reply that quotes the bot counts as liking it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from telegram.ext import Application

from bot.app import service_of
from bot.settings import Settings
from storage.feedback import judged_replies, reactions_of
from storage.models import BotReply
from tests.e2e.fake_telegram import FakeChat, FakeTelegram, FakeUser
from tests.e2e.harness import running, until
from tests.e2e.test_bot_e2e import ALICE, BOB, CAROL, GROUP, make_settings, mention, reply_to

DAVE = FakeUser(104, "Dave")
ELSEWHERE = FakeChat(-1009999999999, "Not ours")


@pytest.fixture
def settings(
    tg: FakeTelegram, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.chdir(tmp_path)
    return make_settings(tg, tmp_path, tiny_model_dir)


def reactions(app: Application, message_id: int) -> dict[int, tuple[list[str], int]]:
    with service_of(app).sessions() as session:
        return reactions_of(session, GROUP.id, message_id)


def recorded(app: Application, message_id: int) -> BotReply | None:
    with service_of(app).sessions() as session:
        return session.get(BotReply, (GROUP.id, message_id))


async def bot_reply(app: Application, tg: FakeTelegram, asked: dict[str, Any]) -> dict[str, Any]:
    """The bot's answer to ``asked`` as Telegram delivered it, once it is recorded."""
    await reply_to(tg, asked)
    message = next(m for m in reversed(tg.messages_sent) if m["chat"]["id"] == GROUP.id)
    await until(lambda: recorded(app, message["message_id"]), "the reply to be recorded")
    return message


async def test_reactions_to_the_bots_reply_are_stored(tg: FakeTelegram, settings: Settings) -> None:
    async with running(settings) as app:
        tg.say(GROUP, BOB, "climbing tomorrow?")
        tg.say(GROUP, CAROL, "maybe, if it's dry")
        asked = tg.say(GROUP, ALICE, mention())
        sent = await bot_reply(app, tg, asked)
        mid = sent["message_id"]
        reply = recorded(app, mid)
        assert reply is not None and reply.kind == "chat"
        assert reply.persona in {"Bob", "Carol"} and sent["text"].startswith(reply.persona)
        assert reply.context_until == asked["message_id"] and reply.context_size == 3
        assert reply.model and Path(reply.model).name == Path(settings.model_dir).name

        tg.react(GROUP, BOB, mid, ["👍"])  # positive
        tg.react(GROUP, CAROL, mid, ["💩"])  # negative
        tg.react(GROUP, ALICE, mid, ["🤔"], custom=("5368324170671202286",))  # neither
        await until(lambda: len(reactions(app, mid)) == 3, "three members' reactions")
        assert reactions(app, mid) == {
            BOB.id: (["👍"], 1),
            CAROL.id: (["💩"], -1),
            ALICE.id: (sorted(["🤔", "custom:5368324170671202286"]), 0),
        }

        tg.react(GROUP, CAROL, mid, ["❤"], old=["💩"])  # changed (Telegram's heart has no FE0F)
        tg.react(GROUP, BOB, mid, [], old=["👍"])  # removed
        tg.react(GROUP, DAVE, mid, ["👎", "😂", "🔥"])  # more positive than negative: a like
        await until(
            lambda: BOB.id not in reactions(app, mid) and DAVE.id in reactions(app, mid),
            "the changed reactions",
        )
        assert reactions(app, mid) == {
            CAROL.id: (["❤"], 1),
            ALICE.id: (sorted(["🤔", "custom:5368324170671202286"]), 0),
            DAVE.id: (sorted(["👎", "😂", "🔥"]), 1),
        }

        # Not a bot reply, not an allowed chat: dropped, and the bot carries on.
        tg.react(GROUP, BOB, asked["message_id"], ["👍"])
        tg.react(ELSEWHERE, BOB, mid, ["👍"])
        later = tg.say(GROUP, CAROL, mention("still there?"))
        await reply_to(tg, later)
        assert reactions(app, asked["message_id"]) == {}
        assert BOB.id not in reactions(app, mid)
    assert "message_reaction" in (tg.allowed_updates or [])


async def test_a_reply_quoting_the_bot_counts_as_liked(
    tg: FakeTelegram, settings: Settings
) -> None:
    async with running(settings) as app:
        tg.say(GROUP, BOB, "pizza tonight?")
        tg.say(GROUP, CAROL, "always")
        asked = tg.say(GROUP, ALICE, mention("who is in?"))
        sent = await bot_reply(app, tg, asked)
        mid = sent["message_id"]
        quoting = tg.say(GROUP, DAVE, "haha exactly", reply_to=sent)
        await reply_to(tg, quoting)  # a reply to the bot addresses it, too
        tg.react(GROUP, CAROL, mid, ["👎"])
        await until(lambda: reactions(app, mid), "Carol's reaction")
        service = service_of(app)
        service.writer.flush(timeout=30)
        with service.sessions() as session:
            judged = {r.message_id: r for r in judged_replies(session)}
    assert judged[mid].quotes == 1
    assert (judged[mid].likes, judged[mid].dislikes) == (1, 1)  # Dave's quote, Carol's 👎
    assert judged[mid].verdict is None


async def test_an_opted_out_member_leaves_no_reaction(tg: FakeTelegram, settings: Settings) -> None:
    async with running(settings) as app:
        tg.say(GROUP, BOB, "morning")
        asked = tg.say(GROUP, ALICE, mention())
        mid = (await bot_reply(app, tg, asked))["message_id"]
        tg.react(GROUP, CAROL, mid, ["👍"])
        await until(lambda: reactions(app, mid), "Carol's reaction")
        optout = tg.say(GROUP, CAROL, "/optout")
        await reply_to(tg, optout)
        assert reactions(app, mid) == {}  # deleted with her messages
        tg.react(GROUP, CAROL, mid, ["🔥"])
        tg.react(GROUP, BOB, mid, ["🔥"])
        await until(lambda: reactions(app, mid), "Bob's reaction")
        assert set(reactions(app, mid)) == {BOB.id}


def test_the_fake_sends_reactions_only_when_asked_for(tg: FakeTelegram) -> None:
    tg.react(GROUP, BOB, 1, ["👍"])
    tg.say(GROUP, BOB, "hello")
    status, body = tg.handle("getUpdates", {"timeout": 0})  # Telegram's default: no reactions
    assert status == 200 and [list(u)[1] for u in body["result"]] == ["message"]
    tg.react(GROUP, BOB, 1, ["👎"])
    _, body = tg.handle("getUpdates", {"allowed_updates": ["message", "message_reaction"]})
    assert [list(u)[1] for u in body["result"]] == ["message", "message_reaction"]
