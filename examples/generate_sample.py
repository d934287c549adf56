"""Generate examples/sample_chat/result.json: a synthetic group chat in Telegram Desktop's format.

Five friends talk for about seven months. Each has a strong, consistent voice so a small model
can learn who speaks how, and the order of speakers follows fixed habits so it can learn who
answers whom:

| friend | voice | usually answered by |
|---|---|---|
| Alice  | short, lowercase, "omg"/"literally", always 😂🔥✨ emoji, music | Bob |
| Bob    | one to four words, lowercase, no punctuation, no emoji, games | Dmitri |
| Carol  | long, proper sentences, plans and logistics, hiking | Erin |
| Dmitri | SHOUTS, "bro"/"mate", !!!, ⚽, football | Carol |
| Erin   | asks questions, "hmm"/"tbh", 🍕🥑, food | Alice |

A sixth member, who later deleted their account, appears early with ``"from": null``. The file
also carries everything the parser must cope with: text as a string and as an entity list,
``text_entities``, stickers (with ``sticker_emoji``), photos with and without captions, voice
messages, replies, forwarded messages, ``via_bot`` messages, edits, reactions, a poll and
service messages. Sessions are separated by gaps of hours to days.

Deterministic: the same seed writes the same bytes. Run from the repo root::

    python examples/generate_sample.py            # writes examples/sample_chat/result.json
    python examples/generate_sample.py --out x.json --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

CHAT_NAME = "Weekend Crew"
CHAT_ID = 1712345678  # bare peer id, as Telegram writes it; the Bot API id is -1001712345678
# `date` is the exporting machine's local time without an offset; this one ran at UTC+1.
EXPORT_TZ = timezone(timedelta(hours=1))
START = datetime(2024, 1, 6, 10, 0, tzinfo=UTC)
NOT_INCLUDED = "(File not included. Change data exporting settings to download.)"

TOPICS: dict[str, list[str]] = {
    "music": [
        "the new album",
        "the gig on friday",
        "that vinyl shop",
        "the festival lineup",
        "the jazz bar",
        "the playlist",
    ],
    "games": [
        "the new zelda",
        "mario kart night",
        "the steam sale",
        "elden ring",
        "the board game cafe",
        "fifa",
    ],
    "football": [
        "the derby",
        "the match tonight",
        "the transfer news",
        "the champions league",
        "five a side",
        "the new striker",
    ],
    "food": ["ramen", "the thai place", "tacos", "that pizza spot", "pho", "brunch", "the bakery"],
    "hiking": [
        "the ridge trail",
        "the lake loop",
        "the climbing gym",
        "the cabin trip",
        "the sunrise hike",
        "the waterfall walk",
    ],
    "movies": [
        "dune",
        "the new pixar film",
        "the horror movie",
        "the cinema downtown",
        "the documentary",
        "movie night",
    ],
}
TOPIC_WORDS = list(TOPICS)
DAYS = ["saturday", "sunday", "friday", "tomorrow", "tonight", "next week"]
TIMES = ["10", "11", "2", "6", "7", "8"]


@dataclass
class Friend:
    """One member: who they are in the export, their habits, and how they write."""

    name: str
    user_id: int
    handle: str
    topics: list[str]
    answered_by: dict[str, float]  # who tends to reply to this friend
    openers: list[str]
    replies: list[str]
    emoji: list[str] = field(default_factory=list)
    emoji_rate: float = 0.0


FRIENDS: list[Friend] = [
    Friend(
        name="Alice",
        user_id=1001,
        handle="alice_w",
        topics=["music", "movies"],
        answered_by={"Bob": 0.72, "Erin": 0.12, "Dmitri": 0.08, "Carol": 0.08},
        openers=[
            "omg did u hear {thing}",
            "guys {thing} literally tonight",
            "ok {thing} is so good",
            "who's coming to {thing}",
            "literally obsessed with {thing}",
            "omg {thing} omg",
            "new obsession: {thing}",
        ],
        replies=[
            "omg yes",
            "lol same",
            "literally me",
            "haha no way",
            "omg {thing}!!",
            "i'm in lol",
            "stoppp",
            "that's so cute",
            "lol ok {day} then",
            "ahh i love {thing}",
            "omg wait really",
            "hahaha",
            "yesss",
        ],
        emoji=["😂", "🔥", "✨", "😂😂", "💃", "🎶"],
        emoji_rate=0.95,
    ),
    Friend(
        name="Bob",
        user_id=1002,
        handle="bob_k",
        topics=["games"],
        answered_by={"Dmitri": 0.72, "Alice": 0.12, "Carol": 0.08, "Erin": 0.08},
        openers=["anyone up for {thing}", "{thing} later", "playing {thing}", "{thing} tonight?"],
        replies=[
            "ok",
            "yeah",
            "sure",
            "k",
            "nah",
            "idk",
            "maybe",
            "fine",
            "ok {day}",
            "same",
            "yeah ok",
            "busy",
            "lol",
            "cool",
            "works for me",
            "nope",
        ],
    ),
    Friend(
        name="Carol",
        user_id=1003,
        handle="carol_p",
        topics=["hiking", "food"],
        answered_by={"Erin": 0.72, "Alice": 0.12, "Dmitri": 0.08, "Bob": 0.08},
        openers=[
            "Quick planning question: who is free for {thing} on {day}?",
            "I was thinking we could do {thing} on {day}. I can drive if someone brings snacks.",
            "Reminder that {thing} is on {day} at {time}. Please let me know by tonight.",
            "I booked {thing} for {day}, so we are set. Bring water and good shoes.",
        ],
        replies=[
            "That works for me. I will bring the car and pick everyone up at {time}.",
            "Good point. Let us meet at the station at {time} and decide from there.",
            "I checked the weather and {day} looks fine, so {thing} should be great.",
            "Honestly, I would prefer {day}, because the weekend is already quite full.",
            "Sounds good. I will make a list so nobody forgets anything this time.",
            "Let us keep it simple: {thing} first, then food afterwards.",
            "I agree. Could someone confirm the numbers so I can book a table?",
            "Fair enough. We can move it to {day} if that is easier for everyone.",
        ],
    ),
    Friend(
        name="Dmitri",
        user_id=1004,
        handle="dima_fc",
        topics=["football"],
        answered_by={"Carol": 0.72, "Alice": 0.12, "Bob": 0.08, "Erin": 0.08},
        openers=[
            "BRO DID YOU SEE {THING}!!!",
            "{THING} TONIGHT MATE!!!",
            "WHO'S WATCHING {THING}!!",
            "MATE {THING} IS UNREAL!!!",
        ],
        replies=[
            "BRO YES!!!",
            "MATE NO WAY!!!",
            "LET'S GOOO!!!",
            "WHAT A GOAL BRO!!",
            "BRO {THING} THOUGH!!!",
            "I'M IN MATE!!!",
            "HAHA CLASSIC BRO!!",
            "NO CHANCE MATE!!",
            "BRO COME ON!!!",
            "{DAY} IT IS MATE!!!",
        ],
        emoji=["⚽", "⚽⚽", "🏆", "💪"],
        emoji_rate=0.7,
    ),
    Friend(
        name="Erin",
        user_id=1005,
        handle="erin_eats",
        topics=["food"],
        answered_by={"Alice": 0.72, "Carol": 0.12, "Bob": 0.08, "Dmitri": 0.08},
        openers=[
            "hmm has anyone tried {thing}?",
            "tbh i could go for {thing} right now, anyone?",
            "hmm what about {thing} on {day}?",
            "ok but is {thing} actually good?",
        ],
        replies=[
            "hmm should we get {thing} after?",
            "tbh that sounds nice, what time?",
            "hmm wait, who's bringing snacks?",
            "ooh can we do {thing} instead?",
            "tbh i'm hungry already, {thing}?",
            "hmm {day} maybe? or is that too late?",
            "wait is it vegetarian friendly?",
            "tbh yes, but what about {thing}?",
        ],
        emoji=["🍕", "🥑", "🍜", "😋"],
        emoji_rate=0.6,
    ),
]
BY_NAME = {f.name: f for f in FRIENDS}
GONE = Friend(  # left early and deleted their account: `"from": null` in the export
    name="Frank",
    user_id=1006,
    handle="frank_z",
    topics=["movies"],
    answered_by={"Alice": 0.4, "Bob": 0.3, "Carol": 0.3},
    openers=["anyone seen {thing}?", "thinking about {thing}"],
    replies=["fair", "hm ok", "not sure about {thing}", "could be good"],
)
FORWARD_SOURCES = [
    ("Football Daily", "channel1500100200"),
    ("Foodie Finds", "channel1500300400"),
    ("Gig Alerts", "channel1500500600"),
]


class Writer:
    """Appends messages in Telegram Desktop's key order and keeps track of ids and time."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.messages: list[dict] = []
        self.next_id = 1
        self.now = START

    def _base(self, kind: str) -> dict:
        msg = {
            "id": self.next_id,
            "type": kind,
            "date": self.now.astimezone(EXPORT_TZ).replace(tzinfo=None).isoformat(),
            "date_unixtime": str(int(self.now.timestamp())),
        }
        self.next_id += 1
        return msg

    def service(self, actor: Friend, action: str, **extra: object) -> dict:
        msg = self._base("service")
        msg.update({"actor": actor.name, "actor_id": f"user{actor.user_id}", "action": action})
        msg.update(extra)
        msg.update({"text": "", "text_entities": []})
        self.messages.append(msg)
        return msg

    def message(
        self,
        sender: Friend,
        text: str | list,
        *,
        deleted: bool = False,
        reply_to: int | None = None,
        **media: object,
    ) -> dict:
        msg = self._base("message")
        if self.rng.random() < 0.03 and isinstance(text, str) and text:
            edited = self.now + timedelta(seconds=self.rng.randint(5, 120))
            msg["edited"] = edited.astimezone(EXPORT_TZ).replace(tzinfo=None).isoformat()
            msg["edited_unixtime"] = str(int(edited.timestamp()))
        msg["from"] = None if deleted else sender.name
        msg["from_id"] = f"user{sender.user_id}"
        for key in ("forwarded_from", "forwarded_from_id", "via_bot"):
            if key in media:
                msg[key] = media.pop(key)
        if reply_to is not None:
            msg["reply_to_message_id"] = reply_to
        msg.update(media)
        msg["text"] = text
        msg["text_entities"] = text_entities(text)
        if self.rng.random() < 0.04 and text:
            msg["reactions"] = [
                {
                    "type": "emoji",
                    "count": self.rng.randint(1, 3),
                    "emoji": self.rng.choice(["👍", "😂", "❤"]),
                }
            ]
        self.messages.append(msg)
        return msg


def text_entities(text: str | list) -> list[dict]:
    """The ``text_entities`` list Telegram writes next to ``text``: plain runs made explicit."""
    if isinstance(text, str):
        return [{"type": "plain", "text": text}] if text else []
    return [{"type": "plain", "text": part} if isinstance(part, str) else part for part in text]


def fill(template: str, rng: random.Random, topic: str) -> str:
    """Fill a template's slots from the session's topic; {THING}/{DAY} are the shouted forms."""
    thing, day, time = rng.choice(TOPICS[topic]), rng.choice(DAYS), rng.choice(TIMES)
    return template.format(thing=thing, THING=thing.upper(), day=day, DAY=day.upper(), time=time)


def compose(friend: Friend, rng: random.Random, topic: str, opener: bool) -> str:
    """One line in ``friend``'s voice about ``topic``."""
    text = fill(rng.choice(friend.openers if opener else friend.replies), rng, topic)
    if friend.emoji and rng.random() < friend.emoji_rate:
        text = f"{text} {rng.choice(friend.emoji)}"
    return text


def with_entities(friend: Friend, text: str, rng: random.Random, addressee: Friend) -> str | list:
    """Sometimes turn a plain line into Telegram's mixed list of strings and entity objects."""
    roll = rng.random()
    if roll > 0.12:
        return text
    if friend.name == "Carol":
        if rng.random() < 0.5:
            return [
                text + " Route: ",
                {
                    "type": "link",
                    "text": "https://maps.example.com/trail/" + str(rng.randint(100, 999)),
                },
                "",
            ]
        return [text + " Questions: ", {"type": "email", "text": "carol.p@example.com"}, ""]
    if friend.name == "Dmitri":
        return [text + " ", {"type": "hashtag", "text": "#matchday"}]
    if friend.name == "Erin":
        first, _, rest = text.partition(" ")
        return [{"type": "bold", "text": first}, " " + rest] if rest else text
    return [{"type": "mention", "text": "@" + addressee.handle}, " " + text]


def next_speaker(prev: Friend, rng: random.Random, active: list[Friend]) -> Friend:
    """Who answers ``prev``: mostly their usual responder, sometimes someone else present."""
    names = [n for n in prev.answered_by if BY_NAME.get(n) in active] or [
        f.name for f in active if f is not prev
    ]
    weights = [prev.answered_by.get(n, 0.05) for n in names]
    return BY_NAME.get(rng.choices(names, weights)[0], prev)


def session(w: Writer, rng: random.Random, index: int, n_sessions: int) -> None:
    """One conversation: an opener, then a chain of replies a few seconds to minutes apart."""
    frank_era = index < n_sessions // 8
    active = FRIENDS if not frank_era else [*FRIENDS, GONE]
    starter = rng.choice(FRIENDS)
    topic = rng.choice(starter.topics if rng.random() < 0.8 else TOPIC_WORDS)
    length = rng.randint(8, 30)
    prev: Friend | None = None
    prev_id: int | None = None
    for turn in range(length):
        speaker = starter if prev is None else next_speaker(prev, rng, active)
        if frank_era and prev is not None and rng.random() < 0.08:
            speaker = GONE
        w.now += timedelta(seconds=rng.randint(8, 400) if turn else 0)
        reply_to = prev_id if prev is not None and rng.random() < 0.2 else None
        kind = rng.random()
        deleted = speaker is GONE
        if kind < 0.04 and prev is not None:  # a sticker in reply: its emoji carries the meaning
            emoji = rng.choice(speaker.emoji or ["👍", "😅"])
            msg = w.message(
                speaker,
                "",
                deleted=deleted,
                reply_to=reply_to,
                file=NOT_INCLUDED,
                file_name="sticker.webp",
                thumbnail=NOT_INCLUDED,
                media_type="sticker",
                sticker_emoji=emoji,
                width=512,
                height=512,
            )
        elif kind < 0.07:  # a photo, captioned half the time
            caption = (
                compose(speaker, rng, topic, opener=prev is None) if rng.random() < 0.5 else ""
            )
            msg = w.message(
                speaker,
                caption,
                deleted=deleted,
                reply_to=reply_to,
                photo=NOT_INCLUDED,
                width=1280,
                height=960,
            )
        elif kind < 0.085:  # voice message: no text at all
            msg = w.message(
                speaker,
                "",
                deleted=deleted,
                reply_to=reply_to,
                file=NOT_INCLUDED,
                media_type="voice_message",
                mime_type="audio/ogg",
                duration_seconds=rng.randint(3, 40),
            )
        elif kind < 0.10:  # forwarded post: not the sender's own words
            source, source_id = rng.choice(FORWARD_SOURCES)
            msg = w.message(
                speaker,
                f"{source}: {fill('big news about {thing}', rng, topic)}",
                deleted=deleted,
                forwarded_from=source,
                forwarded_from_id=source_id,
            )
        elif kind < 0.11:  # inline bot result: not the sender's own words
            msg = w.message(
                speaker,
                "",
                deleted=deleted,
                via_bot="@gif",
                file=NOT_INCLUDED,
                media_type="animation",
                mime_type="video/mp4",
                width=320,
                height=240,
            )
        else:
            addressee = prev or rng.choice(FRIENDS)
            text = compose(speaker, rng, topic, opener=prev is None)
            msg = w.message(
                speaker,
                with_entities(speaker, text, rng, addressee),
                deleted=deleted,
                reply_to=reply_to,
            )
        prev, prev_id = speaker, msg["id"]
    if rng.random() < 0.05:
        w.now += timedelta(seconds=30)
        w.service(rng.choice(FRIENDS), "pin_message", message_id=prev_id)


def generate(seed: int = 2024, n_sessions: int = 320) -> dict:
    """The whole chat object: a single-chat export as Telegram Desktop writes it."""
    rng = random.Random(seed)
    w = Writer(rng)
    founder = BY_NAME["Carol"]
    w.service(founder, "create_group", title=CHAT_NAME, members=["Alice", "Bob", "Dmitri"])
    w.now += timedelta(minutes=2)
    w.service(founder, "invite_members", members=["Erin", None])  # null: a deleted invitee
    w.now += timedelta(minutes=1)
    w.service(GONE, "join_group_by_link", inviter="Carol")
    w.now += timedelta(hours=3)
    for index in range(n_sessions):
        session(w, rng, index, n_sessions)
        if index == n_sessions // 2:
            w.now += timedelta(minutes=5)
            poll = {
                "question": "Cabin trip in June?",
                "closed": True,
                "total_voters": 5,
                "answers": [
                    {"text": "Yes", "voters": 4, "chosen": False},
                    {"text": "No", "voters": 1, "chosen": False},
                ],
            }
            w.message(founder, "", poll=poll)
        # A real gap: between 3 hours and 2 days, at a daytime hour most of the time.
        w.now += timedelta(hours=rng.choice([3, 5, 8, 14, 20, 26, 44]), minutes=rng.randint(0, 59))
    return {"name": CHAT_NAME, "type": "private_supergroup", "id": CHAT_ID, "messages": w.messages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "sample_chat" / "result.json"
    )
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--sessions", type=int, default=320)
    args = parser.parse_args()
    chat = generate(args.seed, args.sessions)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Telegram Desktop indents with one space and writes UTF-8 as is.
    text = json.dumps(chat, ensure_ascii=False, indent=1) + "\n"
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}: {len(chat['messages'])} messages, {len(text.encode()) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
