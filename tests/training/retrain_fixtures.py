"""Helpers for the retraining tests: small Telegram exports and training commands.

Not a test module: imported by tests/training/test_retrain*.py, test_scheduler.py and
tests/e2e/test_retrain_e2e.py.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

FAKE_TRAIN = Path(__file__).with_name("fake_train.py")

STYLES = {
    "Alice": ["lol {t} 😂", "omg {t} again 😂😂", "haha yes {t}"],
    "Bob": ["ok fine, {t}.", "sure. {t} works for me.", "fine by me: {t}."],
    "Carol": ["lets go {t}!!", "{t} tomorrow!!", "who is in for {t}!!"],
    "Dave": ["count me in, bringing coffee", "{t}? coffee first", "coffee and {t} then"],
}
TOPICS = ["climbing", "pizza", "the match", "board games", "hiking", "the movie", "karaoke"]


def export_dict(
    *,
    speakers: dict[str, list[str]] | None = None,
    sessions: int = 24,
    per_session: int = 10,
    start: int = 1_704_535_200,
    first_id: int = 1,
    seed: int = 0,
    chat_id: int = 1_712_345_678,
    name: str = "Test Crew",
) -> dict:
    """A single-chat Telegram Desktop export: friends with distinct styles, real session gaps."""
    rng = random.Random(seed)
    speakers = speakers or STYLES
    names = list(speakers)
    user_ids = {n: f"user{1001 + i}" for i, n in enumerate(sorted(names))}
    messages = []
    message_id = first_id
    when = start
    for _ in range(sessions):
        last = None
        for _ in range(per_session):
            sender = rng.choice([n for n in names if n != last] or names)
            text = rng.choice(speakers[sender]).format(t=rng.choice(TOPICS))
            messages.append(
                {
                    "id": message_id,
                    "type": "message",
                    "date": datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "date_unixtime": str(when),
                    "from": sender,
                    "from_id": user_ids[sender],
                    "text": text,
                    "text_entities": [{"type": "plain", "text": text}],
                }
            )
            message_id += 1
            last = sender
            when += rng.randint(20, 240)
        when += 6 * 3600  # a new session after a long gap
    return {"name": name, "type": "private_supergroup", "id": chat_id, "messages": messages}


def write_export(path: Path, export: dict) -> Path:
    """Write ``export`` as Telegram Desktop does (one-space indentation, UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(export, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def newest_date(export: dict) -> int:
    return max(int(m["date_unixtime"]) for m in export["messages"])


def fake_train_command(mode: str, *args: str) -> str:
    """RETRAIN_TRAIN_COMMAND running tests/training/fake_train.py in ``mode``."""
    import shlex

    return shlex.join([sys.executable, str(FAKE_TRAIN), mode, *args])
