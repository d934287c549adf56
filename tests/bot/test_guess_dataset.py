"""/guess from the training data: which dataset, which rows, and when (only without history).

The rounds run over real storage with a scripted model whose friendbot.json names a small
dataset written here; the terminal test prepares the shipped sample export, as
``friendbot demo`` (``make run``) does in a fresh setup.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.guess import FROM_DATASET, GuessGame, Refused
from bot.guess_dataset import Unavailable, load_held_out, pick_held_out
from bot.local_chat import LOCAL_CHAT_ID, LOCAL_USER_ID, LocalChat
from bot.service import FriendBot
from bot.settings import Settings
from storage.history import add_message, set_opted_out, upsert_chat, upsert_member
from storage.judge import round_source
from storage.models import GuessRound, GuessVote
from tests.bot.held_out_data import row, trained_on, write_dataset
from tests.bot.scripted_engine import ScriptedEngine, served

CHAT = -1001
OTHER_CHAT = -1002
BOT_LINE = "i am definitely a human"
ROBO = 99  # a bot member of the chat


def held_out_rows() -> list[dict[str, Any]]:
    """Rows of CHAT that qualify (1, 2, 3: cut after Cy's line), rows that must never play
    (Cy opted out: by name in 4, as a renamed "Cyrus" with her id in 5; a bot in 6; a
    placeholder sender in 7; too recent in 8; too little context in 9), and another chat's."""
    recent = datetime.now(UTC) - timedelta(hours=1)
    return [
        row(CHAT, ["Ann: a1", "Ben: b1"], "Dee", "d1", user=4, message_id=10),
        row(CHAT, ["Ben: b2", "Ann: a2", "Dee: d2"], "Ann", "a3", user=1, message_id=20),
        row(
            CHAT, ["Ann: x", "Cy: secret", "Ben: b4", "Dee: d4"], "Ben", "b5", user=2, message_id=30
        ),
        row(CHAT, ["Ann: a6", "Ben: b6"], "Cy", "cy's own line", user=3, message_id=40),
        row(CHAT, ["Ann: a7", "Ben: b7"], "Cyrus", "cyrus line", user=3, message_id=50),
        row(CHAT, ["Ann: a8", "Ben: b8"], "Robo", "beep", user=ROBO, message_id=60),
        row(CHAT, ["Ann: a9", "Ben: b9"], "The Group", "g9", user=None, message_id=70),
        row(CHAT, ["Ann: a10", "Ben: b10"], "Dee", "spoiler", user=4, message_id=80, date=recent),
        row(CHAT, ["Cyrus: hm", "Ann: a11"], "Ben", "b11", user=2, message_id=90),
        row(OTHER_CHAT, ["Ann: e1", "Ben: e2"], "Dee", "elsewhere", user=4, message_id=10),
    ]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data", held_out_rows())


# --- which dataset ---------------------------------------------------------------------------


def test_the_models_own_dataset_only_while_unchanged(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split = load_held_out({"dataset": trained_on(dataset)})
    assert split.file == (dataset / "test.parquet").resolve() and len(split) == 10
    assert split.chats() == {CHAT, OTHER_CHAT}

    # an older friendbot.json has only the path as given: relative to the working directory
    monkeypatch.chdir(tmp_path)
    record = trained_on(dataset)
    relative = {"path": "data", "fingerprint": record["fingerprint"]}
    assert len(load_held_out({"dataset": relative})) == 10
    moved = {**record, "dir": str(tmp_path / "gone")}  # "dir" first, then "path"
    assert len(load_held_out({"dataset": moved})) == 10

    with pytest.raises(Unavailable, match="names no dataset"):
        load_held_out({})
    with pytest.raises(Unavailable, match="not there any more"):
        load_held_out({"dataset": {"path": str(tmp_path / "gone"), "fingerprint": "x"}})
    # prepared again since training: its test split may hold lines the model learned
    shutil.copy(dataset / "validation.parquet", dataset / "train.parquet")
    with pytest.raises(Unavailable, match="changed since the model was trained"):
        load_held_out({"dataset": record})


# --- which rows ------------------------------------------------------------------------------


def test_held_out_rows_follow_the_rules(dataset: Path) -> None:
    split = load_held_out({"dataset": trained_on(dataset)})
    seen = set()
    for seed in range(200):
        picked = pick_held_out(
            split,
            CHAT,
            blocked_names=["Cy", "cy_user"],
            blocked_ids={3},
            bot_ids={ROBO},
            before=datetime.now(UTC) - timedelta(days=2),
            rng=random.Random(seed),
            size=4,
            min_context=2,
        )
        assert picked is not None
        seen.add((picked.row, picked.lines, picked.friend, picked.friend_id, picked.line))
    assert seen == {
        (0, (("Ann", "a1"), ("Ben", "b1")), "Dee", 4, "d1"),
        (1, (("Ben", "b2"), ("Ann", "a2"), ("Dee", "d2")), "Ann", 1, "a3"),
        (2, (("Ben", "b4"), ("Dee", "d4")), "Ben", 2, "b5"),  # never across Cy's line
    }
    nothing = pick_held_out(
        split, -5, blocked_names=[], blocked_ids=set(), bot_ids=set(),
        before=datetime.now(UTC), rng=random.Random(0), size=4, min_context=2,
    )  # fmt: skip
    assert nothing is None


# --- the game: history first, the training data only without it ------------------------------


def settings_for(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'guess.db'}",
        generation_seed=5,
        guess_votes=2,
        guess_min_age=1,
    )


def start_bot(tmp_path: Path, info: dict[str, Any]) -> FriendBot:
    engine = ScriptedEngine(lambda prompt: [BOT_LINE], info=info)
    bot = FriendBot(settings_for(tmp_path), loader=served(engine))
    bot.start()
    return bot


@pytest.fixture
def service(tmp_path: Path, dataset: Path) -> Iterator[FriendBot]:
    bot = start_bot(tmp_path, {"dataset": trained_on(dataset)})
    with bot.sessions.begin() as session:
        for user_id, name, username in ((1, "Ann", None), (2, "Ben", None), (3, "Cy", "cy_user"),
                                        (4, "Dee", None)):  # fmt: skip
            upsert_member(session, user_id, name, username)
        upsert_member(session, ROBO, "Robo", is_bot=True)
        set_opted_out(session, 3, True)
    bot._load_flags()
    yield bot
    bot.stop()


def add_history(service: FriendBot, days_ago: float, first_id: int) -> None:
    now = datetime.now(UTC)
    with service.sessions.begin() as session:
        upsert_chat(session, CHAT, "Friends", "supergroup")
        for i in range(6):
            sender_id, name = ((1, "Ann"), (2, "Ben"))[i % 2]
            add_message(
                session, chat_id=CHAT, message_id=first_id + i, sender_id=sender_id,
                sender_name=name, text=f"stored line {i}",
                date=now - timedelta(days=days_ago, minutes=10 - i),
            )  # fmt: skip


async def play(game: GuessGame, chat_id: int = CHAT) -> tuple[Any, GuessRound]:
    view = await game.start(chat_id, cooldown=False)
    await game.reveal(view.round_id)
    with game.service.sessions.begin() as session:
        stored = session.get(GuessRound, view.round_id)
        assert stored is not None
        session.expunge(stored)
    return view, stored


async def test_the_training_data_plays_only_when_history_has_no_excerpt(
    service: FriendBot,
) -> None:
    game = GuessGame(service)
    add_history(
        service, days_ago=0.01, first_id=500
    )  # stored, but too recent to show: no excerpt yet
    for _ in range(12):
        view, stored = await play(game)
        shown = view.text()
        assert shown.startswith(f"Real or bot? ({FROM_DATASET})")
        for never in ("Cy", "secret", "beep", "g9", "spoiler", "elsewhere", "stored line"):
            assert never not in shown
        assert round_source(stored) == "dataset" and stored.real_message_id is None
        ref = stored.excerpt_ids
        assert ref["dataset"] == str(game._split().file) and ref["row"] in (0, 1, 2)
        assert ref["speakers"] == list(dict.fromkeys(s for s, _ in view.lines))
        assert stored.friend == view.friend
        assert stored.friend_id == {"Dee": 4, "Ann": 1, "Ben": 2}[stored.friend]
        assert view.line == BOT_LINE if stored.is_bot else view.line in ("d1", "a3", "b5")

    add_history(
        service, days_ago=3, first_id=600
    )  # now the chat has an old conversation of its own
    for _ in range(6):
        view, stored = await play(game)
        assert round_source(stored) == "history" and isinstance(stored.excerpt_ids, list)
        assert all(text.startswith("stored line") for _, text in view.lines)
        assert FROM_DATASET not in view.html()


async def test_without_either_the_refusal_says_why(tmp_path: Path) -> None:
    bot = start_bot(tmp_path, {"dataset": {"path": str(tmp_path / "gone"), "fingerprint": "x"}})
    try:
        with pytest.raises(Refused, match=r"Not enough history.*not there any more"):
            await GuessGame(bot).start(CHAT)
        with pytest.raises(Refused, match="no excerpt of this chat"):
            bot.models.current.chat.info["dataset"] = trained_on(
                write_dataset(tmp_path / "d2", held_out_rows())
            )
            await GuessGame(bot).start(-7)
    finally:
        bot.stop()


async def test_opting_out_forgets_training_data_rounds_too(service: FriendBot) -> None:
    game = GuessGame(service)
    rounds: dict[int, GuessRound] = {}
    for voter in range(8):
        view, stored = await play(game)
        rounds[stored.id] = stored
        with service.sessions.begin() as session:
            session.add(GuessVote(round_id=stored.id, voter_id=100 + voter, guess_real=True))
    about_ann = {rid for rid, r in rounds.items() if r.friend == "Ann"}
    showed_ann = {rid for rid, r in rounds.items() if "Ann" in r.excerpt_ids["speakers"]}
    assert about_ann and showed_ann - about_ann

    await service.opt_out(1, "Ann", "ann_b")
    with service.sessions.begin() as session:
        left = {r.id: r.excerpt_ids for r in session.query(GuessRound).all()}
    assert set(left) == set(rounds) - about_ann  # the rounds judging her lines are gone
    for rid, ref in left.items():
        if rid in showed_ann:  # rounds that showed her lines keep no pointer to them
            assert ref == {"dataset": rounds[rid].excerpt_ids["dataset"],
                           "fingerprint": rounds[rid].excerpt_ids["fingerprint"],
                           "forgotten": True}  # fmt: skip
        else:
            assert ref == rounds[rid].excerpt_ids
    # and she never appears in a round again
    for _ in range(8):
        view, _ = await play(game)
        assert "Ann" not in view.text()


# --- the terminal in a fresh setup: the sample chat's test split -----------------------------


async def test_a_fresh_terminal_plays_the_sample_chats_held_out_part(tmp_path: Path) -> None:
    from training.data.options import PrepareOptions
    from training.data.prepare import prepare

    sample = Path(__file__).resolve().parents[2] / "examples" / "sample_chat" / "result.json"
    data = tmp_path / "data" / "sample"
    prepare([sample], data, PrepareOptions(progress=False))
    bot = start_bot(tmp_path, {"dataset": trained_on(data)})
    shown: list[tuple[str | None, str]] = []
    feed = iter(["/guess", "r", "/guess", "b", "/guessstats", None])

    async def read_line() -> str | None:
        return next(feed, None)

    try:
        await LocalChat(bot, you="Me").run(read_line, lambda who, text: shown.append((who, text)))
    finally:
        bot.stop()
    notes = [text for who, text in shown if who is None]
    assert sum(text.startswith(f"Real or bot? ({FROM_DATASET})\n") for text in notes) == 2
    assert sum(text.startswith("Revealed:") for text in notes) == 2
    assert any("2 rounds, 2 votes in this chat" in text for text in notes)
    with bot.sessions.begin() as session:
        stored = session.query(GuessRound).all()
        votes = session.query(GuessVote).all()
    assert [r.chat_id for r in stored] == [LOCAL_CHAT_ID] * 2
    assert all(r.excerpt_ids["dataset"] == str((data / "test.parquet").resolve()) for r in stored)
    assert {v.voter_id for v in votes} == {LOCAL_USER_ID}


async def test_the_terminal_needs_a_chat_id_when_the_data_holds_several(
    service: FriendBot,
) -> None:
    shown: list[str] = []
    feed = iter(["/guess", None])

    async def read_line() -> str | None:
        return next(feed, None)

    await LocalChat(service, you="Me").run(read_line, lambda who, text: shown.append(text))
    assert any("holds 2 chats" in text and "--chat-id" in text for text in shown)
    # with --chat-id, the terminal plays that chat of the data as the group would
    feed = iter(["/guess", "b", None])
    await LocalChat(service, you="Me", chat_id=OTHER_CHAT).run(
        read_line, lambda who, text: shown.append(text)
    )
    round_text = next(text for text in shown if text.startswith("Real or bot? ("))
    assert "Ann: e1" in round_text and "Dee: " in round_text
