"""The bot and ``prepare --memory`` remember the same things from the same history.

A model is trained on the memory lines ``prepare --memory`` wrote and then served with the
lines the bot finds in its database; if the two picked differently, the model would read at
serving time something it was never trained on. Here one made-up chat is prepared with
``--memory``, its training sessions are stored in a bot database, and for every pair the
bot's memory and voice lines for the pair's context must be the pair's ``memory`` and
``voice`` columns, line for line, in order.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from bot.memory import Candidates, Window, remembered, voice_of
from storage.db import make_engine, session_factory, upgrade
from storage.history import add_messages, upsert_chat, upsert_member
from storage.models import Message
from training.data.memory import MEMORY_LINES, VOICE_LINES
from training.data.messages import ChatMessage
from training.data.prepare import PrepareOptions, prepare

CHAT = -1001
SESSIONS = 36
DAY = 86400
FRIENDS = {"user1": "Hugo", "user2": "Mia", "user3": "Zoë", "user4": "Bob"}
# a few words nearly every message uses, many that come and go, accents, a friend's name,
# repeated messages (equal scores: the newer must win on both sides)
COMMON = ["pizza", "tonight", "weekend"]
TOPICS = [
    "prague", "bridge", "bike", "chain", "tyre", "climbing", "gym", "café", "cafe", "zürich",
    "train", "ticket", "concert", "guitar", "exam", "physics", "garden", "tomatoes", "movie",
    "sequel", "hugo", "camping", "tent", "rain", "paris", "museum", "recipe", "lasagne",
]  # fmt: skip


def chat_messages() -> list[ChatMessage]:
    rng = random.Random(7)
    messages, mid = [], 0
    for k in range(SESSIONS):
        start = 1_700_000_000 + k * DAY
        for i in range(rng.randint(3, 6)):
            mid += 1
            sender_id = rng.choice(list(FRIENDS))
            words = rng.sample(TOPICS, rng.randint(1, 4)) + rng.sample(COMMON, rng.randint(0, 2))
            if rng.random() < 0.3:  # a word said twice weighs more
                words.append(words[0])
            rng.shuffle(words)
            text = " ".join(words)
            if messages and rng.random() < 0.25:  # said before, word for word: scores tie
                text = rng.choice(messages).text
            messages.append(
                ChatMessage(CHAT, mid, FRIENDS[sender_id], sender_id, start + 60 * i, text)
            )
    return messages


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ChatMessage]]:
    out = tmp_path_factory.mktemp("same-memory") / "data"
    messages = chat_messages()
    prepare([], out, PrepareOptions(memory=True), extra_messages=messages)
    return out, messages


def test_the_bot_gives_the_memory_prepare_trained_with(
    prepared: tuple[Path, list[ChatMessage]], tmp_path: Path
) -> None:
    out, messages = prepared
    pairs = pd.concat(
        [
            pd.read_parquet(out / f"{s}.parquet").assign(split=s)
            for s in ("train", "validation", "test")
        ]
    )
    by_id = {m.message_id: m for m in messages}
    session_of = {m.message_id: (m.date - 1_700_000_000) // DAY for m in messages}
    train_sessions = {session_of[int(i)] for i in pairs[pairs.split == "train"].message_id}
    assert 0 < len(train_sessions) < SESSIONS  # some sessions are held out

    # the bot's database: the training sessions (what prepare's memory may come from)
    engine = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    upgrade(engine)
    Session = session_factory(engine)
    with Session.begin() as session:
        upsert_chat(session, CHAT, "Friends", "supergroup")
        for sender_id, name in FRIENDS.items():
            upsert_member(session, int(sender_id[4:]), name)
        add_messages(
            session,
            [
                {
                    "chat_id": CHAT,
                    "message_id": m.message_id,
                    "sender_id": int(m.sender_id[4:]),
                    "sender_name": m.sender,
                    "text": m.text,
                    "date": datetime.fromtimestamp(m.date, UTC),
                }
                for m in messages
                if session_of[m.message_id] in train_sessions
            ],
        )

    compared = with_memory = with_found_voice = 0
    for pair in pairs.itertuples():
        response = by_id[int(pair.message_id)]
        k = session_of[response.message_id]
        context = [
            m
            for m in messages
            if session_of[m.message_id] == k and m.message_id < response.message_id
        ]
        with Session.begin() as session:
            stored = session.query(Message).filter(
                Message.chat_id == CHAT, Message.message_id.in_([m.message_id for m in context])
            )
            rows = sorted(stored, key=lambda m: m.message_id)
            if pair.split == "train":
                window = Window.of(CHAT, rows, rows)  # the bot's own path, from its database
            else:  # a held-out session is not stored: the same window, built by hand
                assert rows == []
                window = hand_window(context)
            candidates = Candidates.search(session, window)
            memory = remembered(candidates, MEMORY_LINES)
            sender_id = int(response.sender_id[4:])
            voice = voice_of(session, window, candidates, sender_id, VOICE_LINES)
            own = candidates.best(VOICE_LINES, sender_id)
        assert memory == list(pair.memory), (pair.split, response, window.terms)
        assert voice == list(pair.voice), (pair.split, response, window.terms)
        compared += 1
        with_memory += len(memory) == MEMORY_LINES
        with_found_voice += bool(own)
    assert compared == len(pairs) > 60
    assert with_memory > compared // 2 and with_found_voice > compared // 3


def hand_window(context: list[ChatMessage]) -> Window:
    from training.formatting import memory_terms

    return Window(
        chat_id=CHAT,
        message_ids=tuple(m.message_id for m in context),
        start=datetime.fromtimestamp(context[0].date, UTC),
        terms=tuple(memory_terms(" ".join(m.text for m in context))),
    )
