"""A large synthetic Telegram Desktop export for benchmarks, written as a stream.

The mix follows the performance notes: 3% service messages, 5% photos, 10% texts as entity
lists, 20% replies, plus a few stickers and forwards, from 24 members over a few years with
session gaps. It is written one message at a time in Telegram's one-space indentation, so a
million messages never sit in memory at once.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = [
    "hey",
    "ok",
    "lol",
    "yes",
    "no",
    "maybe",
    "tonight",
    "tomorrow",
    "game",
    "pizza",
    "beer",
    "movie",
    "train",
    "late",
    "early",
    "coffee",
    "work",
    "home",
    "gym",
    "run",
    "weekend",
    "party",
    "music",
    "band",
    "ticket",
    "trip",
    "beach",
    "rain",
    "sun",
    "cold",
    "hot",
    "call",
    "later",
    "now",
    "soon",
    "sure",
    "idk",
    "haha",
    "nice",
    "cool",
    "great",
    "sorry",
    "thanks",
    "please",
    "why",
    "what",
    "when",
    "where",
    "who",
    "how",
    "really",
    "omg",
    "wow",
    "same",
    "mood",
    "vibes",
    "plan",
    "meet",
    "park",
    "bar",
    "cafe",
    "station",
    "car",
    "bus",
    "walk",
]
EMOJI = ["😂", "🔥", "👍", "❤️", "🙈", "🎉", "😅", "🍕"]
NOT_INCLUDED = "(File not included. Change data exporting settings to download.)"


def _sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(2, 14))
    if rng.random() < 0.3:
        words.append(rng.choice(EMOJI))
    return " ".join(words)


def _message(rng: random.Random, msg_id: int, now: int, members: list[tuple[str, int]]) -> dict:
    roll = rng.random()
    name, uid = rng.choice(members)
    msg = {"id": msg_id, "type": "message", "date": _iso(now), "date_unixtime": str(now)}
    if roll < 0.03:
        msg.update(type="service", actor=name, actor_id=f"user{uid}", action="pin_message")
        msg.update(message_id=max(1, msg_id - 3), text="", text_entities=[])
        return msg
    msg["from"] = name
    msg["from_id"] = f"user{uid}"
    if rng.random() < 0.20 and msg_id > 1:
        msg["reply_to_message_id"] = msg_id - rng.randint(1, 5)
    if roll < 0.08:
        msg.update(photo=NOT_INCLUDED, width=1280, height=960)
        text: str | list = _sentence(rng) if rng.random() < 0.3 else ""
    elif roll < 0.09:
        msg.update(file=NOT_INCLUDED, media_type="sticker", sticker_emoji=rng.choice(EMOJI))
        text = ""
    elif roll < 0.10:
        msg["forwarded_from"] = "Some Channel"
        text = _sentence(rng)
    elif roll < 0.20:
        text = [_sentence(rng) + " ", {"type": "bold", "text": rng.choice(WORDS)}, " ok"]
    else:
        text = _sentence(rng)
    msg["text"] = text
    if isinstance(text, str):
        msg["text_entities"] = [{"type": "plain", "text": text}] if text else []
    else:
        msg["text_entities"] = [
            {"type": "plain", "text": p} if isinstance(p, str) else p for p in text
        ]
    return msg


def _iso(epoch: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat()


def write_export(path: Path, n_messages: int, seed: int = 0) -> Path:
    """Write a single-chat export of ``n_messages`` to ``path`` (Telegram's layout)."""
    rng = random.Random(seed)
    members = [(f"Member {i}", 5_000_000 + i) for i in range(24)]
    now = 1_600_000_000
    tmp = path.with_suffix(".partial")
    with tmp.open("w", encoding="utf-8") as out:
        out.write('{\n "name": "Synthetic Group",\n "type": "private_supergroup",\n')
        out.write(' "id": 1999888777,\n "messages": [\n')
        for msg_id in range(1, n_messages + 1):
            # Mostly seconds to minutes apart; now and then a gap of hours (a new session).
            now += rng.randint(3, 240) if rng.random() > 0.03 else rng.randint(7_200, 90_000)
            body = json.dumps(_message(rng, msg_id, now, members), ensure_ascii=False, indent=1)
            out.write("  " + body.replace("\n", "\n  "))
            out.write(",\n" if msg_id < n_messages else "\n")
        out.write(" ]\n}\n")
    tmp.replace(path)
    return path
