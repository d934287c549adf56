"""Build ``conversation -> response`` pairs from turns, a window of turns at a time.

The conversation of turn ``i`` is the previous ``context`` turns of the same session, oldest
first, one ``Sender: text`` line each (``training.formatting.format_turn``). Those lines are
contiguous: put every turn's line, with its newline, back to back in one buffer, and each
conversation is a single slice of it. The slices are written as an Arrow ``string_view``
array pointing into that buffer, so the ten-fold repetition of context costs one copy, made
when the column is cast for writing, instead of a Python join per pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.data.columns import as_numpy, int_array, string_scalar
from training.data.normalize import is_member

# The two text columns are built as views into one buffer of lines (see module doc) and
# written as such; parquet stores them as plain strings, and readers get ``string``.
PAIR_SCHEMA = pa.schema(
    [
        ("conversation", pa.string_view()),
        ("response", pa.string_view()),
        ("sender", pa.string()),
        ("sender_id", pa.string()),
        ("chat_id", pa.int64()),
        ("session_id", pa.int64()),
        ("message_id", pa.int64()),
        ("date", pa.timestamp("s", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class PairRules:
    """How pairs are cut: context length, the minimum context, who may respond."""

    context: int = 10
    min_context: int = 1
    speakers: frozenset[str] | None = None  # lower-cased names / sender ids; None: everyone


def turn_lines(sender: pa.Array, text: pa.Array) -> pa.Array:
    """Each turn as ``Sender: text\\n`` (sender and text are already whitespace-clean)."""
    colon, newline, nothing = (string_scalar(s) for s in (": ", "\n", ""))
    return pc.binary_join_element_wise(sender, colon, text, newline, nothing)


def context_starts(session_start: np.ndarray, context: int) -> np.ndarray:
    """Index of the oldest context turn of each turn: never before its session's first."""
    index = np.arange(len(session_start))
    first_of_session = np.maximum.accumulate(np.where(session_start, index, 0))
    return np.maximum(first_of_session, index - context)


def speaker_mask(turns: pa.Table, speakers: frozenset[str] | None) -> np.ndarray:
    """True for turns whose sender may be a response (``--speakers``), by name or id."""
    if speakers is None:
        return np.ones(turns.num_rows, dtype=bool)
    return as_numpy(is_member(turns, speakers))


@dataclass(frozen=True)
class Lines:
    """A window's turns as ``Sender: text\\n`` lines back to back: ``data[offsets[i]:...]``."""

    data: pa.Buffer
    offsets: np.ndarray  # (turns + 1,) int64


def window_lines(turns: pa.Table) -> Lines:
    """The lines of every turn of a window (sender, text) in one buffer."""
    lines = turn_lines(turns["sender"].combine_chunks(), turns["text"].combine_chunks())
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    offsets = offsets[lines.offset : lines.offset + len(lines) + 1].astype(np.int64)
    return Lines(lines.buffers()[2], offsets)


def build_pairs(
    turns: pa.Table, lines: Lines, lo: np.ndarray, rows: np.ndarray, session_id: np.ndarray
) -> pa.Table:
    """Pairs for ``rows`` of a window of ``turns`` (see module doc).

    ``turns`` (sender, sender_id, chat_id, message_id, date) covers the rows and their
    context, ``lines`` are its lines; ``lo[k]`` is the first context row of ``rows[k]``
    (``lo == row``: no context).
    """
    offsets = lines.offsets
    # conversation: lines lo..row-1 without the final newline; response: line row, likewise
    conv_start = offsets[lo]
    conv_len = np.maximum(offsets[rows] - conv_start - 1, 0)
    resp_start = offsets[rows]
    resp_len = offsets[rows + 1] - resp_start - 1
    picked = turns.take(int_array(rows))
    return pa.table(
        {
            "conversation": _slices(lines.data, conv_start, conv_len),
            "response": _slices(lines.data, resp_start, resp_len),
            "sender": picked["sender"],
            "sender_id": picked["sender_id"],
            "chat_id": picked["chat_id"],
            "session_id": int_array(session_id),
            "message_id": picked["message_id"],
            "date": picked["date"].cast(pa.timestamp("s", tz="UTC")),
        },
        schema=PAIR_SCHEMA,
    )


def _slices(data: pa.Buffer, start: np.ndarray, length: np.ndarray) -> pa.Array:
    """A ``string_view`` array of ``data[start:start+length]`` (Arrow's view layout).

    Each view is 16 bytes: the length, then either the string itself (up to 12 bytes) or
    its first 4 bytes, the buffer index (0) and the offset.
    """
    n = len(start)
    views = np.zeros((n, 16), dtype=np.uint8)
    words = views.view(np.int32)  # (n, 4)
    words[:, 0] = length
    raw = np.frombuffer(data, dtype=np.uint8)
    long = np.flatnonzero(length > 12)
    if long.size:
        views[long, 4:8] = raw[start[long, None] + np.arange(4)]
        words[long, 3] = start[long]
    short = np.flatnonzero(length <= 12)
    if short.size:
        index = start[short, None] + np.arange(12)
        inside = np.arange(12) < length[short, None]
        views[short, 4:16] = np.where(inside, raw[np.where(inside, index, 0)], 0)
    return pa.Array.from_buffers(pa.string_view(), n, [None, pa.py_buffer(views), data])
