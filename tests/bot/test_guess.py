"""/guess without Telegram: the excerpt rules, the game over real storage, the terminal round,
the fool-rate arithmetic and the retraining gate's rule."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.guess import GuessGame, Refused, pick_excerpt
from bot.local_chat import LOCAL_USER_ID, LocalChat
from bot.service import FriendBot
from bot.settings import Settings
from storage.history import add_message, set_opted_out, upsert_chat, upsert_member
from storage.judge import Judgement, Rate, judgements, wilson
from storage.models import GuessRound, GuessVote
from tests.bot.scripted_engine import ScriptedEngine, served
from training.retrain.pipeline import _not_judged_yet

CHAT = -1001
OTHER_CHAT = -1002
OLD = datetime.now(UTC) - timedelta(days=5)
BOT_LINE = "i am definitely a human"


def msg(i: int, sender_id: int | None, name: str, text: str, *, minutes: float = 0, **kw):  # type: ignore[no-untyped-def]
    return SimpleNamespace(
        message_id=i,
        sender_id=sender_id,
        sender_name=name,
        text=text,
        date=OLD + timedelta(minutes=minutes or i),
        from_bot=kw.get("from_bot", False),
    )


# --- picking an excerpt ----------------------------------------------------------------------


def test_excerpts_never_cross_the_bot_another_bot_or_a_pause() -> None:
    messages = [
        msg(1, 1, "Ann", "a1"),
        msg(2, 2, "Ben", "b2"),
        msg(3, 1, "Ann", "a3"),
        msg(4, 777, "Ann", "the bot's post as Ann", from_bot=True),
        msg(5, 1, "Ann", "a5"),
        msg(6, 2, "Ben", "b6"),
        msg(7, None, "Deleted Account", "d7"),  # context, but nobody to imitate
        msg(8, 1, "Ann", "a8"),
        msg(9, 9, "Robo", "beep"),  # another bot
        msg(10, 2, "Ben", "b10", minutes=500),
        msg(11, 1, "Ann", "a11", minutes=501),
        msg(12, -100, "The Group", "g12", minutes=502),  # the chat posting as itself
        msg(13, 2, "Ben", "b13", minutes=503),
        msg(14, 1, "Ann", "a14", minutes=700),  # after a long pause: a new conversation
    ]
    seen = set()
    for seed in range(300):
        excerpt = pick_excerpt(messages, set(), {9}, random.Random(seed))
        assert excerpt is not None
        seen.add((tuple(m.message_id for m in excerpt.context), excerpt.target.message_id))
    assert seen == {((1, 2), 3), ((5, 6, 7), 8), ((10, 11, 12), 13)}


def test_stretches_that_qualify() -> None:
    messages = [
        msg(1, 1, "Ann", "a1"),
        msg(2, 2, "Ben", "b2"),
        msg(3, 1, "Ann", "a3"),
        msg(4, 3, "Cy", "c4"),  # opted out: breaks the conversation
        msg(5, 1, "Ann", "a5"),
        msg(6, 2, "Ben", "b6"),
        msg(7, 1, "Ann", "a7"),
        msg(8, 2, "Ben", "b8"),
        msg(9, 1, "Ann", "a9"),
        msg(10, 2, "Ben", "b10"),
        msg(11, 1, "Ann", "a11"),
    ]
    seen = set()
    for seed in range(400):
        excerpt = pick_excerpt(messages, {3}, set(), random.Random(seed), size=4)
        assert excerpt is not None
        seen.add((tuple(m.message_id for m in excerpt.context), excerpt.target.message_id))
    assert seen == {
        ((1, 2), 3),
        ((5, 6), 7),
        ((5, 6, 7), 8),
        ((5, 6, 7, 8), 9),
        ((6, 7, 8, 9), 10),
        ((7, 8, 9, 10), 11),
    }
    assert pick_excerpt(messages[:2], set(), set(), random.Random(0)) is None


# --- the fool rate ---------------------------------------------------------------------------


def test_wilson_interval() -> None:
    low, high = wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(0, 4)
    assert low == 0.0 and 0.4 < high < 0.5
    assert Rate(3, 4).text().startswith("75% (95% CI ")
    assert Rate(0, 0).text() == "no votes"


# --- the game over real storage --------------------------------------------------------------


def settings_for(tmp_path: Path, **extra: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'guess.db'}",
        "generation_seed": 11,
        "guess_votes": 2,
        "guess_cooldown": 600,
        "guess_min_age": 1,
    }
    values.update(extra)
    return Settings(_env_file=None, **values)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[FriendBot]:
    engine = ScriptedEngine(lambda prompt: [BOT_LINE])
    bot = FriendBot(settings_for(tmp_path), loader=served(engine))
    bot.start()
    yield bot
    bot.stop()


def seed_history(service: FriendBot) -> None:
    """An old conversation in CHAT with Cy (who opted out without deleting) in the middle,
    a fresh one (too new to show), and a conversation in another chat."""
    now = datetime.now(UTC)
    with service.sessions.begin() as session:
        upsert_chat(session, CHAT, "Friends", "supergroup")
        upsert_chat(session, OTHER_CHAT, "Others", "supergroup")
        for user_id, name in ((1, "Ann"), (2, "Ben"), (3, "Cy"), (4, "Dee")):
            upsert_member(session, user_id, name)
        set_opted_out(session, 3, True)
        people = [(1, "Ann"), (2, "Ben"), (3, "Cy"), (4, "Dee")]
        for i in range(40):
            sender_id, name = people[i % 4]
            add_message(
                session, chat_id=CHAT, message_id=i + 1, sender_id=sender_id, sender_name=name,
                text=f"old line {i} from {name}", date=now - timedelta(days=3, minutes=60 - i),
            )  # fmt: skip
        for i in range(10):
            sender_id, name = people[i % 2]
            add_message(
                session, chat_id=CHAT, message_id=100 + i, sender_id=sender_id, sender_name=name,
                text=f"fresh spoiler {i}", date=now - timedelta(minutes=30 - i),
            )  # fmt: skip
            add_message(
                session, chat_id=OTHER_CHAT, message_id=i + 1, sender_id=sender_id,
                sender_name=name, text=f"elsewhere {i}", date=now - timedelta(days=4, minutes=i),
            )  # fmt: skip
    service._load_flags()


async def test_rounds_show_only_old_lines_of_this_chat_and_never_an_opted_out_member(
    service: FriendBot,
) -> None:
    seed_history(service)
    game = GuessGame(service)
    kinds = set()
    for _ in range(30):
        view = await game.start(CHAT, cooldown=False)
        shown = view.text()
        assert "Cy" not in shown and "fresh spoiler" not in shown and "elsewhere" not in shown
        assert all(text.startswith("old line") for _, text in view.lines)
        assert view.friend in ("Ann", "Ben", "Dee")
        assert view.line == BOT_LINE or view.line.startswith("old line")
        with service.sessions.begin() as session:
            row = session.get(GuessRound, view.round_id)
            assert row is not None and row.chat_id == CHAT and row.model_id == "/models/scripted"
            assert row.is_bot == (view.line == BOT_LINE)
            kinds.add(row.is_bot)
        assert await game.reveal(view.round_id) is not None
    assert kinds == {True, False}  # 50/50, both seen


async def test_votes_cooldown_and_reveal(service: FriendBot) -> None:
    seed_history(service)
    game = GuessGame(service)
    view = await game.start(CHAT)
    with pytest.raises(Refused, match="still open"):
        await game.start(CHAT)
    assert await game.vote(view.round_id, CHAT, 1, real=True) is False
    with pytest.raises(Refused, match="already voted"):
        await game.vote(view.round_id, CHAT, 1, real=False)
    with pytest.raises(Refused, match="opted out"):
        await game.vote(view.round_id, CHAT, 3, real=False)
    with pytest.raises(Refused, match="gone"):
        await game.vote(view.round_id, OTHER_CHAT, 2, real=False)
    assert await game.vote(view.round_id, CHAT, 2, real=False) is True  # GUESS_VOTES=2
    reveal = await game.reveal(view.round_id)
    assert reveal is not None and (reveal.real_votes, reveal.bot_votes) == (1, 1)
    assert await game.reveal(view.round_id) is None  # once
    with pytest.raises(Refused, match="over"):
        await game.vote(view.round_id, CHAT, 4, real=True)
    with pytest.raises(Refused, match="next /guess in"):
        await game.start(CHAT)  # GUESS_COOLDOWN counts from the last start
    with service.sessions.begin() as session:
        votes = session.query(GuessVote).filter_by(round_id=view.round_id).count()
        by_model = judgements(session, "model", chat_id=CHAT)
    assert votes == 2
    (judged,) = by_model
    side = judged.fooled if reveal.is_bot else judged.real_as_real
    assert (side.real, side.votes) == (1, 2)
    stats = await game.stats(CHAT)
    assert "1 round, 2 votes in this chat" in stats and "scripted: fool rate" in stats


async def test_no_old_history_is_refused(service: FriendBot) -> None:
    with pytest.raises(Refused, match="Not enough history"):
        await GuessGame(service).start(CHAT)


async def test_a_terminal_round_is_voted_by_you(service: FriendBot) -> None:
    seed_history(service)
    shown: list[tuple[str | None, str]] = []
    feed = iter(["/guess", "maybe", "b", "/guessstats", None])

    async def read_line() -> str | None:
        return next(feed, None)

    chat = LocalChat(service, you="Me", chat_id=CHAT)
    await chat.run(read_line, lambda who, text: shown.append((who, text)))
    notes = [text for who, text in shown if who is None]
    assert any(text.startswith("Real or bot?\n") for text in notes)
    assert notes.count("Real or bot? (r/b)") == 2  # "maybe" is asked again
    revealed = [text for text in notes if text.startswith("Revealed:")]
    assert len(revealed) == 1
    with service.sessions.begin() as session:
        (vote,) = session.query(GuessVote).all()
        row = session.get(GuessRound, vote.round_id)
    assert vote.voter_id == LOCAL_USER_ID and vote.guess_real is False
    assert ("1 of 1 guessed right" in revealed[0]) == row.is_bot
    assert any("Per friend:" in text for text in notes)


# --- the retraining gate ---------------------------------------------------------------------


def test_the_fool_rate_gate_waits_for_votes_only_when_on() -> None:
    served_model = Path("/models/current")
    judged = Judgement("m", fooled=Rate(4, 9), real_as_real=Rate(5, 8), rounds=6)
    assert _not_judged_yet(0, served_model, None) is None  # off
    assert _not_judged_yet(10, None, None) is None  # nothing served: nothing to judge
    assert _not_judged_yet(9, served_model, judged) is None
    waiting = _not_judged_yet(10, served_model, judged)
    assert waiting and "9 of the 10 /guess votes" in waiting
    assert "0 of the 10" in (_not_judged_yet(10, served_model, None) or "")
    again = Judgement.from_dict(judged.to_dict())
    assert again.summary() == judged.summary()


async def test_opting_out_deletes_the_members_votes_and_the_rounds_about_them(
    service: FriendBot,
) -> None:
    seed_history(service)
    game = GuessGame(service)
    friends: dict[int, int] = {}  # round id -> the friend's id
    for voter in (1, 2, 4):
        view = await game.start(CHAT, cooldown=False)
        await game.vote(view.round_id, CHAT, voter, real=True)
        await game.vote(view.round_id, CHAT, 4 if voter != 4 else 2, real=False)
        await game.reveal(view.round_id)
        with service.sessions.begin() as session:
            friends[view.round_id] = session.get(GuessRound, view.round_id).friend_id
    await service.opt_out(2, "Ben", None)
    with service.sessions.begin() as session:
        rounds = {r.id for r in session.query(GuessRound).all()}
        voters = {v.voter_id for v in session.query(GuessVote).all()}
    assert rounds == {rid for rid, friend in friends.items() if friend != 2}
    assert 2 not in voters
