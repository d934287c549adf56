"""Ordering, de-duplication, sessions, bursts and the session split."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from training.data.normalize import SCHEMA
from training.data.sessions import (
    SPLITS,
    assign_splits,
    dedup_and_order,
    merge_bursts,
    session_starts,
)


def table(rows: list[tuple[int, int, int, str, str]]) -> pa.Table:
    """(chat, message id, date, sender, text) rows in the normalized schema."""
    return pa.Table.from_pylist(
        [
            {
                "chat_id": c,
                "message_id": m,
                "date": d,
                "sender": s,
                "sender_id": f"user{ord(s[0])}",
                "text": t,
                "reply_to": None,
            }
            for c, m, d, s, t in rows
        ],
        schema=SCHEMA,
    )


def test_duplicates_dropped_first_copy_wins_and_rows_ordered() -> None:
    first = [(-100, 1, 10, "Ann", "a"), (-100, 2, 20, "Ben", "b"), (-100, 3, 30, "Ann", "old")]
    second = [(-100, 3, 30, "Ann", "new"), (-100, 4, 40, "Ben", "d"), (-5, 1, 5, "Cy", "x")]
    merged, duplicates = dedup_and_order(pa.concat_tables([table(first), table(second)]))
    assert duplicates == 1
    got = [(r["chat_id"], r["message_id"], r["text"]) for r in merged.to_pylist()]
    assert got == [(-100, 1, "a"), (-100, 2, "b"), (-100, 3, "old"), (-100, 4, "d"), (-5, 1, "x")]


def test_ordered_by_time_not_by_id() -> None:
    # pre-migration messages of a supergroup have negative ids; time decides the order
    rows = [
        (-100, 5, 50, "Ann", "late"),
        (-100, -7, 10, "Ben", "early"),
        (-100, 6, 50, "Ann", "tie"),
    ]
    merged, duplicates = dedup_and_order(table(rows))
    assert duplicates == 0
    assert [r["text"] for r in merged.to_pylist()] == ["early", "late", "tie"]


def test_a_session_starts_at_a_gap_of_at_least_the_limit() -> None:
    chat = np.array([1, 1, 1, 1, 2, 2])
    date = np.array([0, 100, 7300, 14499, 14500, 14501])
    starts = session_starts(chat, date, gap_seconds=7200)
    # 100 -> 7300 is exactly 7200 s: new session; 7300 -> 14499 is 7199 s: same session;
    # a new chat always starts a session
    assert starts.tolist() == [True, False, True, False, True, False]


def test_bursts_of_one_sender_merge_into_a_turn() -> None:
    rows = [
        (-1, 1, 0, "Ann", "so"),
        (-1, 2, 5, "Ann", "about tonight"),
        (-1, 3, 100, "Ann", "anyone?"),  # 95 s later: too late for a burst of 30 s
        (-1, 4, 110, "Ben", "me"),
        (-1, 5, 112, "Ben", "and Cy"),
        (-1, 6, 9000, "Ben", "morning"),  # next session: never merged across
    ]
    t = table(rows)
    starts = session_starts(np.full(6, -1), np.array([r[2] for r in rows]), 7200)
    turns, turn_starts = merge_bursts(t, starts, 30)
    assert [r["text"] for r in turns.to_pylist()] == [
        "so about tonight",
        "anyone?",
        "me and Cy",
        "morning",
    ]
    assert [r["message_id"] for r in turns.to_pylist()] == [1, 3, 4, 6]  # the first's id
    assert turn_starts.tolist() == [True, False, False, True]


def test_split_is_deterministic_and_seeded() -> None:
    chat = np.full(500, -100123)
    first = np.arange(500) * 7 + 1
    a = assign_splits(chat, first, (0.8, 0.1, 0.1), seed=0).labels
    b = assign_splits(chat, first, (0.8, 0.1, 0.1), seed=0).labels
    c = assign_splits(chat, first, (0.8, 0.1, 0.1), seed=1).labels
    assert (a == b).all() and not (a == c).all()
    shares = np.bincount(a, minlength=3) / 500
    assert abs(shares[0] - 0.8) < 0.06 and abs(shares[1] - 0.1) < 0.04


def test_split_is_stable_when_more_sessions_arrive() -> None:
    chat = np.full(300, -100123)
    first = np.arange(300) * 3 + 1
    before = assign_splits(chat[:200], first[:200], (0.8, 0.1, 0.1), seed=0).labels
    after = assign_splits(chat, first, (0.8, 0.1, 0.1), seed=0).labels
    assert (after[:200] == before).all()  # an old test session never moves into training


def test_small_chats_still_get_every_split() -> None:
    for n in (3, 4, 5, 8):
        plan = assign_splits(np.full(n, -1), np.arange(n) + 1, (0.8, 0.1, 0.1), seed=0)
        counts = plan.counts()
        assert set(counts) == set(SPLITS)
        assert all(v >= 1 for v in counts.values()), (n, counts)
        assert sum(counts.values()) == n
