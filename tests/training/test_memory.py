"""``prepare --memory``: what a pair may remember, and training and evaluation reading it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from training.data.messages import ChatMessage
from training.data.pairs import PAIR_SCHEMA
from training.data.prepare import PrepareOptions, prepare
from training.model.evaluate import evaluate_loss
from training.model.finetune import TrainConfig, train
from training.model.tasks import chat_examples, chat_prompt, load_chat, read_chat_split

CHAT = -1001
SESSIONS = 40
DAY = 86400
MARK = re.compile(r"mark(\d+)")


def word(k: int) -> str:
    """A search word only session ``k`` states (and the next session asks about)."""
    return "topic" + "".join("abcdefghij"[int(d)] for d in f"{k:03d}")


def asked(k: int) -> int:
    """Which session's word session ``k`` asks about: the previous one's. So a session's own
    word is also found *later* (in the next session), which memory must never use."""
    return k - 1


def chat_messages() -> list[ChatMessage]:
    """Sessions a day apart: Ann states a fact, Ben asks about another session's word, Ann
    answers. Every text carries ``mark<session>`` so a remembered line names its session."""
    messages = []
    for k in range(SESSIONS):
        start = 1_700_000_000 + k * DAY
        texts = [
            ("Ann", "user1", f"fact {word(k)} mark{k}"),
            ("Ben", "user2", f"remember {word(asked(k)) if k else 'nothing'} mark{k}"),
            ("Ann", "user1", f"reply mark{k}"),
        ]
        for i, (sender, sender_id, text) in enumerate(texts):
            mid = k * 10 + i + 1
            messages.append(ChatMessage(CHAT, mid, sender, sender_id, start + 60 * i, text))
    return messages


def split_of_session(data: dict[str, pd.DataFrame]) -> dict[int, str]:
    return {
        int(MARK.search(response).group(1)): split
        for split, frame in data.items()
        for response in frame["response"]
    }


def read_all(out: Path) -> dict[str, pd.DataFrame]:
    return {s: pd.read_parquet(out / f"{s}.parquet") for s in ("train", "validation", "test")}


@pytest.fixture(scope="module")
def with_memory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("memory") / "data"
    prepare([], out, PrepareOptions(memory=True), extra_messages=chat_messages())
    return out


def test_memory_comes_only_from_earlier_training_sessions(with_memory: Path) -> None:
    data = read_all(with_memory)
    split = split_of_session(data)
    assert {"train", "validation", "test"} <= set(split.values())
    remembered = 0
    for frame in data.values():
        for response, memory, voice in zip(
            frame["response"], frame["memory"], frame["voice"], strict=True
        ):
            k = int(MARK.search(response).group(1))
            for line in [*memory, *voice]:
                j = int(MARK.search(line).group(1))
                # never the pair's own session (its context window), nothing later,
                # never a validation or test session, whatever the pair's own split
                assert j < k and split[j] == "train", (response, line)
                remembered += 1
    assert remembered > SESSIONS  # not vacuous


def test_a_held_out_session_that_would_match_best_is_not_used(with_memory: Path) -> None:
    data = read_all(with_memory)
    split = split_of_session(data)
    everything = pd.concat(data.values())
    answers = everything[everything["response"].str.startswith("Ann: reply")]
    found, withheld = 0, 0
    for response, memory in zip(answers["response"], answers["memory"], strict=True):
        k = int(MARK.search(response).group(1))
        if k == 0:
            assert len(memory) == 0  # nothing earlier
            continue
        fact = f"fact {word(asked(k))} mark{asked(k)}"
        if split[asked(k)] == "train":  # the best match comes last (least relevant first)
            assert memory[-1].endswith(f"Ann: {fact}"), (response, list(memory))
            assert memory[-1].startswith("memory: 2023-")
            found += 1
        else:  # that message is the only (so best) match, but it is held out
            assert not any(word(asked(k)) in line for line in memory), (response, list(memory))
            withheld += 1
    assert found and withheld


def test_voice_lines_are_the_responders_own_earlier_messages(with_memory: Path) -> None:
    train = read_all(with_memory)["train"]
    ben = train[train["sender"] == "Ben"].iloc[-1]
    assert len(ben["voice"]) == 2
    assert all(line.startswith("voice: remember topic") for line in ben["voice"])


def test_stats_record_the_memory(with_memory: Path) -> None:
    stats = json.loads((with_memory / "stats.json").read_text())
    assert stats["memory"]["memory_lines"] == 3 and stats["memory"]["voice_lines"] == 2
    assert stats["options"]["memory"] is True


def test_without_memory_the_pairs_are_the_same_as_before(with_memory: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    stats = prepare([], plain, PrepareOptions(), extra_messages=chat_messages())
    assert stats.memory is None
    for split in ("train", "validation", "test"):
        assert pq.read_schema(plain / f"{split}.parquet").names == PAIR_SCHEMA.names
        base = pd.read_parquet(plain / f"{split}.parquet")
        extended = pd.read_parquet(with_memory / f"{split}.parquet")
        pd.testing.assert_frame_equal(base, extended[PAIR_SCHEMA.names])
    assert load_chat(plain).memory is None


def test_prompts_carry_memory_and_voice_only_asked_for_a_persona() -> None:
    row = {
        "conversation": "Ann: hi\nBen: prague?",
        "response": "Ann: yes",
        "sender": "Ann",
        "memory": ["memory: 2024-01-02 Ann: prague was great"],
        "voice": ["voice: omg yes"],
    }
    (example,) = chat_examples([row])
    assert example.source == "memory: 2024-01-02 Ann: prague was great\nAnn: hi\nBen: prague?"
    assert example.alt == (
        "voice: omg yes\nmemory: 2024-01-02 Ann: prague was great\nAnn: hi\nBen: prague?\n"
        "reply as Ann:"
    )
    assert chat_prompt({**row, "memory": [], "voice": []}) == "Ann: hi\nBen: prague?"


def test_training_with_memory_records_it_and_evaluation_uses_it(
    with_memory: Path, tmp_path: Path
) -> None:
    rows = read_chat_split(with_memory, "train")
    assert any(row["memory"] for row in rows)
    config = {"max_steps": 2, "eval_every": 2, "token_budget": 512, "tiny_vocab": 120,
              "max_source_length": 64, "progress": False, "min_examples": 1}  # fmt: skip
    model = train(TrainConfig(data=with_memory, out=tmp_path / "m", **config))
    info = json.loads((model / "friendbot.json").read_text())
    assert info["memory"] == {"memory_lines": 3, "voice_lines": 2}

    plain = tmp_path / "plain"
    prepare([], plain, PrepareOptions(), extra_messages=chat_messages())
    plain_model = train(TrainConfig(data=plain, out=tmp_path / "p", **config))
    assert "memory" not in json.loads((plain_model / "friendbot.json").read_text())
    # a model trained without memory is evaluated without it: the same loss on both datasets
    loss = evaluate_loss(plain_model, plain, "test")
    assert evaluate_loss(plain_model, with_memory, "test") == loss
    # one trained with it reads the memory lines: its loss depends on them
    assert evaluate_loss(model, with_memory, "test") != evaluate_loss(model, plain, "test")
