"""The normalized chat message every part of friendbot agrees on, and the ids it carries.

A Telegram export and the bot's own database describe the same messages in different shapes;
both are turned into :class:`ChatMessage` (or the equivalent columns) before anything else
looks at them, so sessions, pairs and splits never care where a message came from.
"""

from __future__ import annotations

from dataclasses import dataclass

# Chat types whose Bot API id is -100<id> (supergroups and channels) or -<id> (basic groups).
_SUPERGROUP_TYPES = frozenset(
    {"private_supergroup", "public_supergroup", "private_channel", "public_channel"}
)
_BASIC_GROUP_TYPES = frozenset({"private_group"})
# Chats a group bot can live in: what `prepare` suggests when a full export needs --chat.
GROUP_TYPES = frozenset({"private_group", "private_supergroup", "public_supergroup"})

# Why a message did not become a turn. The order is the order of the checks: a message is
# counted under the first reason that applies.
SKIP_REASONS: dict[str, str] = {
    "service": "service message (joins, pins, calls...)",
    "unsupported": "message type the exporter could not render",
    "malformed": "message with fields of the wrong type",
    "forwarded": "forwarded or saved from elsewhere (not the sender's words)",
    "via_bot": "sent through an inline bot (not the sender's words)",
    "bot": "sent by a member chosen with --bot",
    "excluded": "sent by a member chosen with --exclude (opt-out)",
    "media_only": "photo, file, voice, poll... without text",
    "empty": "no text at all",
    "duplicate": "same (chat, message id) already read from another file",
}
SKIP_CODES = tuple(SKIP_REASONS)  # a skipped message's reason as a small integer (its index)


@dataclass(slots=True)
class ChatMessage:
    """One message, normalized: the unit that exports and the bot's history both become.

    ``chat_id`` is in Bot API form (see :func:`bot_api_chat_id`), ``sender_id`` is the export's
    ``from_id`` form (``user123``), ``date`` is epoch seconds UTC, ``text`` is plain text
    (entities flattened).
    """

    chat_id: int
    message_id: int
    sender: str
    sender_id: str
    date: int
    text: str
    reply_to: int | None = None


def bot_api_chat_id(raw_id: int, chat_type: str | None) -> int:
    """The id the Bot API (and our database) uses for a chat the export calls ``raw_id``.

    Exports write the bare peer id; the Bot API writes supergroups and channels as
    ``-100<id>`` and basic groups as ``-<id>``. Ids already in Bot API form pass through, so
    calling this twice is harmless.
    """
    if raw_id < 0:
        return raw_id
    if chat_type in _SUPERGROUP_TYPES:
        return -(1_000_000_000_000 + raw_id)
    if chat_type in _BASIC_GROUP_TYPES:
        return -raw_id
    return raw_id


def sender_id_of(from_id: str | int | None) -> str:
    """The ``user123`` form of a sender id; old exports wrote a bare integer for users."""
    if from_id is None:
        return "unknown"
    if isinstance(from_id, bool):  # bool is an int: never a real id
        return "unknown"
    if isinstance(from_id, int):
        return f"user{from_id}"
    return from_id


def stored_sender_id(sender_id: int | None, chat_id: int) -> str:
    """The export form of a sender the bot stored by Telegram id.

    A user is ``user<id>``; a chat speaking as itself (``sender_chat``: an anonymous admin, a
    linked channel) has a negative Bot API id and becomes ``channel<id>`` (``-100<id>``) or
    ``chat<id>``, as an export writes it. Without an id the message is the chat's own.
    """
    if sender_id is None:
        return f"chat{chat_id}"
    if sender_id > 0:
        return f"user{sender_id}"
    if sender_id <= -1_000_000_000_000:
        return f"channel{-sender_id - 1_000_000_000_000}"
    return f"chat{-sender_id}"
