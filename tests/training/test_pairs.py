"""Conversation -> response pairs: contexts stay inside sessions and match format_turn."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from training.data.normalize import member_keys
from training.data.pairs import (
    _slices,
    build_pairs,
    context_starts,
    speaker_mask,
    window_lines,
)
from training.formatting import format_turn


def turns(rows: list[tuple[str, str]]) -> pa.Table:
    n = len(rows)
    return pa.table(
        {
            "sender": [s for s, _ in rows],
            "sender_id": [f"user{ord(s[0])}" for s, _ in rows],
            "text": [t for _, t in rows],
            "chat_id": [-100] * n,
            "message_id": list(range(1, n + 1)),
            "date": list(range(0, 10 * n, 10)),
        }
    )


def test_context_never_reaches_into_the_previous_session() -> None:
    starts = np.array([True, False, False, False, True, False, False])
    lo = context_starts(starts, context=2)
    assert lo.tolist() == [0, 0, 0, 1, 4, 4, 4]


def test_pairs_match_the_shared_text_format() -> None:
    rows = [
        ("Ann", "hey 😂 all"),
        ("Ben", "yo"),
        ("Cleo", "a much longer message than twelve bytes, with ünïcödé"),
        ("Ann", "ok"),
        ("Ben", "é"),
    ]
    t = turns(rows)
    starts = np.array([True, False, False, True, False])
    lo = context_starts(starts, context=2)
    keep = np.arange(5)
    pairs = build_pairs(t, window_lines(t), lo[keep], keep, np.array([0, 0, 0, 1, 1]))
    got = pairs.to_pylist()
    lines = [format_turn(s, x) for s, x in rows]
    expected_conversations = ["", lines[0], "\n".join(lines[0:2]), "", lines[3]]
    assert [g["conversation"] for g in got] == expected_conversations
    assert [g["response"] for g in got] == lines
    assert [g["session_id"] for g in got] == [0, 0, 0, 1, 1]
    assert pairs.schema.field("date").type == pa.timestamp("s", tz="UTC")


def test_slices_of_any_length_point_at_the_right_bytes() -> None:
    data = "ab😂cdefghijklmnöpqrstuvwxyz".encode() * 3
    rng = np.random.default_rng(0)
    start = rng.integers(0, len(data) // 2, 200)
    length = rng.integers(0, 30, 200)
    # keep slices on character boundaries so they are valid UTF-8
    text = data.decode()
    cuts = np.array([len(text[:i].encode()) for i in range(len(text) + 1)])
    start = cuts[np.searchsorted(cuts, start)]
    end = cuts[np.searchsorted(cuts, np.minimum(start + length, len(data)))]
    views = _slices(pa.py_buffer(data), start, end - start)
    assert views.to_pylist() == [data[s:e].decode() for s, e in zip(start, end, strict=True)]


def test_speakers_filter_by_name_or_id() -> None:
    t = turns([("Ann", "a"), ("Ben", "b"), ("Cleo", "c")])
    assert speaker_mask(t, None).tolist() == [True, True, True]
    assert speaker_mask(t, member_keys(["ann", "user67"])).tolist() == [True, False, True]
