"""Order messages, drop duplicates, cut conversations into sessions and sessions into splits.

Everything here works on whole columns (numpy / Arrow): a million messages take a fraction
of a second, and nothing depends on Python objects per message.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.data.columns import as_numpy, bool_array, int_array, string_scalar
from training.data.messages import SKIP_CODES
from training.data.normalize import SkippedIds

SPLITS = ("train", "validation", "test")


def drop_later_copies(
    table: pa.Table, source: np.ndarray, skipped: SkippedIds, skipped_source: np.ndarray
) -> tuple[pa.Table, Counter[str]]:
    """Keep each (chat, message id) only from the first source (file) that holds it.

    The first file wins whatever became of the message there: a copy skipped in an earlier
    file (media-only, say, and captioned later) is not kept from a later one. ``table`` holds
    the kept messages and ``source`` their file's index; ``skipped`` the ids of the skipped
    ones, ``skipped_source`` theirs. Returns the table without later copies and how the skip
    counts change: later copies count as ``duplicate`` (a skipped later copy moves from its
    reason to ``duplicate``), so every message read is counted once. Copies within one file
    are left to :func:`dedup_and_order`.
    """
    n_kept = table.num_rows
    src = np.r_[source, skipped_source]
    if len(src) == 0 or src.min() == src.max():  # one file: nothing to compare with
        return table, Counter()
    assert skipped.chat_id is not None
    chat = np.r_[_column(table, "chat_id"), skipped.chat_id]
    mid = np.r_[_column(table, "message_id"), skipped.message_id]
    order = np.lexsort((src, mid, chat))  # by chat, id, then file
    c, m, s = chat[order], mid[order], src[order]
    group_start = np.ones(len(order), dtype=bool)
    group_start[1:] = (c[1:] != c[:-1]) | (m[1:] != m[:-1])
    starts = np.flatnonzero(group_start)
    first_src = np.repeat(s[starts], np.diff(np.r_[starts, len(order)]))
    later = np.zeros(len(order), dtype=bool)
    later[order] = s > first_src
    change: Counter[str] = Counter()
    later_kept, later_skipped = later[:n_kept], later[n_kept:]
    for code, n in enumerate(np.bincount(skipped.code[later_skipped], minlength=len(SKIP_CODES))):
        if n:
            change[SKIP_CODES[code]] -= int(n)
    change["duplicate"] += int(later.sum())
    if later_kept.any():
        table = table.filter(bool_array(~later_kept))
    return table, change


def dedup_and_order(table: pa.Table) -> tuple[pa.Table, int]:
    """Messages sorted by (chat, date, message id), each (chat, message id) once.

    Several exports of one chat overlap; the first file given wins for a message found in
    more than one. Returns the table and the number of duplicates dropped. A single export
    is usually already unique and in order, which is checked in O(n) before sorting.
    """
    if table.num_rows == 0:
        return table, 0
    chat = _column(table, "chat_id")
    mid = _column(table, "message_id")
    duplicates = 0
    if not _unique_in_runs(chat, mid):
        order = np.lexsort((np.arange(len(mid)), mid, chat))  # by chat, id, then input order
        c, m = chat[order], mid[order]
        repeat = np.zeros(len(order), dtype=bool)
        repeat[1:] = (c[1:] == c[:-1]) & (m[1:] == m[:-1])
        duplicates = int(repeat.sum())
        if duplicates:
            table = table.take(int_array(np.sort(order[~repeat])))
            chat, mid = _column(table, "chat_id"), _column(table, "message_id")
    date = _column(table, "date")
    if not _ordered(chat, date, mid):
        table = table.take(int_array(np.lexsort((mid, date, chat))))
    return table, duplicates


def _column(table: pa.Table, name: str) -> np.ndarray:
    return as_numpy(table[name])


def _unique_in_runs(chat: np.ndarray, mid: np.ndarray) -> bool:
    """True when ids rise strictly within each run of a chat and no chat has two runs."""
    same = chat[1:] == chat[:-1]
    if not np.all(mid[1:][same] > mid[:-1][same]):
        return False
    run_chats = chat[np.flatnonzero(np.r_[True, ~same])]
    return len(np.unique(run_chats)) == len(run_chats)


def _ordered(chat: np.ndarray, date: np.ndarray, mid: np.ndarray) -> bool:
    dc, dd, dm = np.diff(chat), np.diff(date), np.diff(mid)
    return bool(np.all((dc > 0) | ((dc == 0) & ((dd > 0) | ((dd == 0) & (dm > 0))))))


def session_starts(chat: np.ndarray, date: np.ndarray, gap_seconds: float) -> np.ndarray:
    """True where a session begins: a new chat, or a gap of at least ``gap_seconds``."""
    starts = np.ones(len(chat), dtype=bool)
    starts[1:] = (chat[1:] != chat[:-1]) | (np.diff(date) >= gap_seconds)
    return starts


def merge_bursts(
    table: pa.Table, starts: np.ndarray, max_gap_seconds: float
) -> tuple[pa.Table, np.ndarray]:
    """Join consecutive messages of one sender, at most ``max_gap_seconds`` apart, into a turn.

    People often split one thought over several messages; as separate turns they would make
    pairs whose "response" continues the speaker's own previous line. A merged turn keeps
    the first message's id, time and reply-to, and its texts joined by a space.
    Returns the turns and their session starts.
    """
    if table.num_rows == 0:
        return table, starts
    sender = as_numpy(pc.dictionary_encode(table["sender_id"].combine_chunks()).indices)
    date = _column(table, "date")
    new_turn = starts.copy()
    new_turn[1:] |= (sender[1:] != sender[:-1]) | (np.diff(date) > max_gap_seconds)
    if new_turn.all():
        return table, starts
    first = np.flatnonzero(new_turn)
    offsets = int_array(np.r_[first, len(new_turn)])
    texts = pa.LargeListArray.from_arrays(offsets, table["text"].combine_chunks())
    joined = pc.binary_join(texts, string_scalar(" ")).cast(pa.string())
    turns = table.take(int_array(first))
    turns = turns.set_column(turns.schema.get_field_index("text"), "text", joined)
    return turns, starts[first]


@dataclass(frozen=True)
class SplitPlan:
    """Which split each session goes to (0 train, 1 validation, 2 test)."""

    labels: np.ndarray  # (sessions,) int8

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(SPLITS)}


def assign_splits(
    chat: np.ndarray,
    first_message: np.ndarray,
    fractions: tuple[float, float, float],
    seed: int,
) -> SplitPlan:
    """Put whole sessions into train/validation/test, stably.

    A session's split comes from a seeded hash of (chat id, id of its first message), not
    from a shuffle of the session list: preparing again with more messages (new exports, the
    bot's history when retraining) leaves every earlier session where it was, so a test
    session never turns up in a later training set. With at least three sessions, a split
    with a positive share is never left empty.
    """
    n = len(chat)
    u = _unit_hash(chat, first_message, seed)
    cut_train, cut_val = fractions[0], fractions[0] + fractions[1]
    labels = np.where(u < cut_train, 0, np.where(u < cut_val, 1, 2)).astype(np.int8)
    if n >= 3:
        for split, share in ((1, fractions[1]), (2, fractions[2]), (0, fractions[0])):
            if share > 0 and not (labels == split).any():
                # the session whose hash lies nearest that split's range moves over, taken
                # from a split that can spare one
                target = (cut_train + cut_val) / 2 if split == 1 else (1.0 if split == 2 else 0.0)
                spare = [s for s in range(3) if s != split and (labels == s).sum() > 1]
                candidates = np.flatnonzero(np.isin(labels, spare))
                labels[candidates[np.argmin(np.abs(u[candidates] - target))]] = split
    return SplitPlan(labels)


def _unit_hash(chat: np.ndarray, first_message: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic number in [0, 1) per (chat, message id) and seed (splitmix64)."""
    with np.errstate(over="ignore"):
        x = chat.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= first_message.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x ^= x >> np.uint64(shift)
            x *= np.uint64(mult)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
