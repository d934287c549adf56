"""The shipped sample export: reproducible, realistic, and learnable (who speaks how)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from training.data.export import iter_chat_messages

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "examples" / "sample_chat" / "result.json"


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(SAMPLE.read_text(encoding="utf-8"))


def test_generator_reproduces_the_shipped_file(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "generate_sample", ROOT / "examples" / "generate_sample.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["generate_sample"] = module  # its dataclasses look themselves up there
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        del sys.modules["generate_sample"]
    text = json.dumps(module.generate(), ensure_ascii=False, indent=1) + "\n"
    assert text == SAMPLE.read_text(encoding="utf-8")
    assert SAMPLE.stat().st_size < 5_000_000


def test_sample_has_every_quirk(raw: dict) -> None:
    messages = raw["messages"]
    assert 5000 <= len(messages) <= 7000
    kinds = Counter()
    for m in messages:
        kinds["service"] += m["type"] == "service"
        kinds["entity list"] += isinstance(m.get("text"), list)
        kinds["sticker"] += m.get("media_type") == "sticker"
        kinds["photo"] += "photo" in m
        kinds["reply"] += "reply_to_message_id" in m
        kinds["forward"] += "forwarded_from" in m
        kinds["via_bot"] += "via_bot" in m
        kinds["deleted account"] += m["type"] == "message" and m["from"] is None
        kinds["edited"] += "edited" in m
    assert all(kinds[k] >= 5 for k in kinds), kinds
    days = (int(messages[-1]["date_unixtime"]) - int(messages[0]["date_unixtime"])) / 86400
    assert days > 90


def test_each_friend_has_a_distinct_voice() -> None:
    texts: dict[str, list[str]] = defaultdict(list)
    for m in iter_chat_messages(SAMPLE):
        texts[m.sender].append(m.text)
    friends = {name for name, t in texts.items() if len(t) > 500}
    assert friends == {"Alice", "Bob", "Carol", "Dmitri", "Erin"}

    def share(name: str, test: object) -> float:
        return sum(map(test, texts[name])) / len(texts[name])  # type: ignore[arg-type]

    def words(name: str) -> float:
        return statistics.mean(len(t.split()) for t in texts[name])

    assert share("Dmitri", lambda t: t.upper() == t) > 0.85  # shouts (but #matchday)
    assert share("Bob", lambda t: t.lower() == t and "!" not in t) > 0.9 and words("Bob") < 2.5
    assert words("Carol") > 12 and share("Carol", lambda t: t[:1].isupper()) > 0.9
    assert share("Alice", lambda t: any(e in t for e in "😂🔥✨💃🎶")) > 0.8
    assert share("Erin", lambda t: "?" in t) > 0.8


def test_who_answers_whom_is_a_habit() -> None:
    follows: dict[str, Counter[str]] = defaultdict(Counter)
    for prev, this in itertools.pairwise(iter_chat_messages(SAMPLE)):
        if this.date - prev.date < 3600:
            follows[prev.sender][this.sender] += 1
    usual = {"Alice": "Bob", "Bob": "Dmitri", "Carol": "Erin", "Dmitri": "Carol", "Erin": "Alice"}
    for speaker, responder in usual.items():
        top, count = follows[speaker].most_common(1)[0]
        assert top == responder
        assert count / sum(follows[speaker].values()) > 0.5
