"""Who a dataset may teach the model to be: people, and at least two of them.

The model learns to pick the next speaker and the bot signs each reply with that name, so a
response must come from a person. A deleted account, a chat speaking as itself (anonymous
admins, a channel's posts in a group: ``training.formatting.is_placeholder_sender``) and the
bot of a bot chat stay in the conversation as context but never answer. A channel's posts in
the channel itself are its one voice, so there they count as a speaker.

An export with fewer than two such speakers (a channel, saved messages, a chat with a bot)
makes a bot that imitates one account, which is rarely what a user meant: ``prepare`` and
retraining refuse it unless told otherwise (``allow_single_speaker``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.data.columns import as_numpy, bool_array
from training.formatting import is_chat_sender, is_placeholder_name

CHANNEL_TYPES = frozenset({"private_channel", "public_channel"})
SHOWN = 5  # speakers named in the refusal


def person_mask(turns: pa.Table, chat_types: Mapping[int, str | None]) -> np.ndarray:
    """True for turns a person wrote (see module doc); ``chat_types``: chat id -> type.

    Names and ids repeat on every message, so the predicate runs once per distinct value.
    """
    if turns.num_rows == 0:
        return np.zeros(0, dtype=bool)
    placeholder = _per_value(turns["sender"], is_placeholder_name)
    chat_sender = _per_value(turns["sender_id"], is_chat_sender)
    bots = {f"user{chat_id}" for chat_id, kind in chat_types.items() if kind == "bot_chat"}
    if bots:
        chat_sender |= _per_value(turns["sender_id"], bots.__contains__)
    channels = [chat_id for chat_id, kind in chat_types.items() if kind in CHANNEL_TYPES]
    if channels:  # a channel's own posts are its voice, not a signature in someone's group
        chat_sender &= ~np.isin(as_numpy(turns["chat_id"]), channels)
    return ~(placeholder | chat_sender)


def _per_value(column: pa.ChunkedArray | pa.Array, test: object) -> np.ndarray:
    """``test`` (a predicate on one value) for every row, computed once per distinct value."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    values = np.array([bool(test(v)) for v in encoded.dictionary.to_pylist()], dtype=bool)  # type: ignore[operator]
    if len(values) == 0:
        return np.zeros(len(column), dtype=bool)
    return values[as_numpy(encoded.indices)]


def speakers(turns: pa.Table, persons: np.ndarray) -> list[str]:
    """The people who speak in ``turns``, by name, most turns first."""
    counts = pc.value_counts(turns["sender"].filter(bool_array(persons))).to_pylist()
    ranked = Counter({c["values"]: c["counts"] for c in counts})
    return [name for name, _ in ranked.most_common()]


def too_few_speakers(
    people: list[str], chats: Iterable[tuple[str | None, str | None]]
) -> str | None:
    """Why a dataset of ``people`` from ``chats`` (name, type) is refused, or None.

    The line says what the chats are and who speaks, for the caller to add how to override.
    """
    if len(people) >= 2:
        return None
    kinds = [f"{name or '(no name)'} ({kind or 'unknown type'})" for name, kind in chats]
    where = f"chat {', '.join(kinds)}" if kinds else "these messages"
    who = f": {', '.join(people[:SHOWN])}" if people else ""
    return (
        f"{len(people)} speaker(s) in {where}{who}; friendbot imitates the members of a "
        "group chat, and a bot that imitates one account is rarely what you meant"
    )


def check_people(
    turns: pa.Table, chats: Sequence[tuple[int | None, str | None, str | None]]
) -> tuple[np.ndarray, list[str], str | None]:
    """Who wrote each turn, who the people are, and why they are too few (or None).

    ``chats`` are the (chat id, name, type) the turns come from.
    """
    chat_types = {chat_id: kind for chat_id, _, kind in chats if chat_id is not None}
    persons = person_mask(turns, chat_types)
    people = speakers(turns, persons)
    return persons, people, too_few_speakers(people, [(name, kind) for _, name, kind in chats])
