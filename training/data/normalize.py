"""Turn decoded export messages into normalized columns, counting what is skipped and why.

A usual chunk is read per column (:func:`extract_lean`): decoded into :class:`LeanMessage`
structs whose sender and text stay raw JSON tokens, fates decided with numpy, tokens turned
into Arrow columns in bulk; only the messages that are skipped, have escapes, entity lists
or a possibly blank text are looked at one by one. Any chunk out of the ordinary (an old
export, a field of an unexpected type, invalid UTF-8) goes the general way: decoding into a
:class:`RawMessage` struct that holds only the fields we use (msgspec skips the rest without
building objects, and ``Raw`` fields only record that a key was present), then one plain
loop deciding each message's fate (:func:`extract`). Both give the same rows (a test checks
it); all text work after that (whitespace, scrubbing, opt-outs) runs vectorised in Arrow.

Rules (docs/data.md explains the choices):
- text: ``text`` when it is a string; a list is flattened (its strings and each entity's
  ``text``); ``text_entities`` when ``text`` is absent; whitespace collapsed.
- a sticker without text becomes its ``sticker_emoji`` (unless disabled): in a group chat a
  sticker is a reply, and its emoji is what it says.
- a photo or file with a caption keeps the caption; without one it is ``media_only``.
- ``from: null`` (deleted account) becomes "Deleted Account"; integer ``from_id`` becomes
  ``user<id>``.
- time: ``date_unixtime`` when present, else ``date`` read as this machine's local time.

A skipped message leaves its id and reason behind (:class:`SkippedIds`): when several files
hold the same message, the first file's copy decides its fate even when it was skipped there.
A chunk that is not valid UTF-8 is read with U+FFFD in place of the bad bytes, whose
positions come back with the chunk (``training.data.utf8``).

Why one file of ~700 lines: every rule that decides what a message becomes (kept, skipped
and why, its text) sits here, so the fast reader and the streaming reader cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from operator import attrgetter, ne
from typing import Annotated, Literal

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.data.columns import (
    OptionalInts,
    Repetitive,
    RepetitiveTokens,
    Strings,
    Tokens,
    TokenTexts,
    as_numpy,
    bool_scalar,
    int_array,
    strings,
)
from training.data.messages import SKIP_CODES, ChatMessage, sender_id_of
from training.data.utf8 import is_utf8, repair
from training.formatting import DELETED_ACCOUNT

# Python's str.isspace() set, so that this matches training.formatting.clean_text exactly.
_SPACE = r"\t\n\x{0b}\x{0c}\r\x{1c}-\x{1f}\x{85}\p{Z}"
_WHITESPACE = f"[{_SPACE}]+"
# A value needs cleaning if it has whitespace other than single inner spaces.
_NEEDS_CLEAN = (
    r"[\t\n\x{0b}\x{0c}\r\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}"
    r"\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]|  |^ | $"
)
# --scrub: order matters (a URL may contain an e-mail or digits).
SCRUB_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"(?i)\b(?:https?://|www\.|t\.me/)[^\s<>\"]+", "<url>"),
    (r"(?i)\b[A-Z0-9._%+-]+@[A-Z0-9.-]+\.[A-Z]{2,}\b", "<email>"),
    (r"\+?\(?\d(?:[\s().-]{0,2}\d){8,14}", "<phone>"),
)
_MEDIA_FIELDS = (
    "photo",
    "file",
    "media_type",
    "poll",
    "contact_information",
    "location_information",
    "place_name",
    "game_title",
    "invoice_information",
)

SCHEMA = pa.schema(
    [
        ("chat_id", pa.int64()),
        ("message_id", pa.int64()),
        ("date", pa.int64()),  # epoch seconds, UTC
        ("sender", pa.string()),
        ("sender_id", pa.string()),
        ("text", pa.string()),
        ("reply_to", pa.int64()),
    ]
)


class Part(msgspec.Struct, gc=False):
    """An entity of a ``text`` list or of ``text_entities``: only its text matters here."""

    text: str = ""


_Text = str | list[str | Part] | None
# The columns are int64: a larger number is a malformed message (counted and skipped, like an id
# of the wrong type), not an OverflowError while the column is filled.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class RawMessage(msgspec.Struct, gc=False):
    """The fields of an exported message that normalization reads; the rest is skipped.

    ``date`` and ``text_entities`` are in every recent message but only needed when
    ``date_unixtime`` or ``text`` is missing (old or unusual exports); leaving them out makes
    decoding cheaper, and the rare chunk that needs them is decoded a second time (see
    :func:`_extras`).
    """

    id: Int64
    type: str = "message"
    date_unixtime: Int64 | None = None  # a string in the file; lax decoding makes it an int
    from_: str | None = msgspec.field(default=None, name="from")
    from_id: str | int | None = None
    text: _Text = None
    reply_to_message_id: Int64 | None = 0  # 0: not a reply (message ids start at 1)
    forwarded_from: msgspec.Raw = msgspec.Raw()
    saved_from: msgspec.Raw = msgspec.Raw()
    via_bot: msgspec.Raw = msgspec.Raw()
    media_type: str | None = None
    sticker_emoji: str | None = None
    photo: msgspec.Raw = msgspec.Raw()
    file: msgspec.Raw = msgspec.Raw()
    poll: msgspec.Raw = msgspec.Raw()
    contact_information: msgspec.Raw = msgspec.Raw()
    location_information: msgspec.Raw = msgspec.Raw()
    place_name: msgspec.Raw = msgspec.Raw()
    game_title: msgspec.Raw = msgspec.Raw()
    invoice_information: msgspec.Raw = msgspec.Raw()


class LeanMessage(msgspec.Struct, gc=False):
    """:class:`RawMessage` with the sender and the text left as raw JSON tokens.

    Decoding a token into a Python string (and encoding it back for Arrow) costs more than
    everything else done with a message; as tokens, they go into Arrow columns in bulk and
    only the few with escapes, entity lists or blank texts are decoded (:func:`extract_lean`).
    ``type`` is one of the types Telegram writes, which msgspec gives as the same three
    string objects every time (no token, no new object per message); any other type fails
    validation, and the chunk is read the general way.
    """

    id: Int64
    type: Literal["message", "service", "unsupported"] = "message"
    date_unixtime: Int64 | None = None
    from_: msgspec.Raw = msgspec.field(default=msgspec.Raw(), name="from")
    from_id: msgspec.Raw = msgspec.Raw()
    text: msgspec.Raw = msgspec.Raw()
    reply_to_message_id: Int64 | None = 0
    forwarded_from: msgspec.Raw = msgspec.Raw()
    saved_from: msgspec.Raw = msgspec.Raw()
    via_bot: msgspec.Raw = msgspec.Raw()
    media_type: str | None = None
    sticker_emoji: str | None = None
    photo: msgspec.Raw = msgspec.Raw()
    file: msgspec.Raw = msgspec.Raw()
    poll: msgspec.Raw = msgspec.Raw()
    contact_information: msgspec.Raw = msgspec.Raw()
    location_information: msgspec.Raw = msgspec.Raw()
    place_name: msgspec.Raw = msgspec.Raw()
    game_title: msgspec.Raw = msgspec.Raw()
    invoice_information: msgspec.Raw = msgspec.Raw()


# strict=False lets the string "1704546180" of date_unixtime decode straight to an int.
_decode_chunk = msgspec.json.Decoder(list[RawMessage], strict=False).decode
_decode_lean = msgspec.json.Decoder(list[LeanMessage], strict=False).decode
_decode_texts = msgspec.json.Decoder(list[_Text], strict=False).decode
_decode_one = msgspec.json.Decoder(RawMessage, strict=False).decode
_decode_raw_list = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_plain = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class Rules:
    """What normalization keeps: the options of ``prepare`` that act on single messages."""

    sticker_emoji: bool = True
    scrub: bool = False
    exclude: frozenset[str] = frozenset()  # lower-cased names and sender ids (--exclude)
    bots: frozenset[str] = frozenset()  # lower-cased names and sender ids (--bot)


_CODE = {reason: np.int8(code) for code, reason in enumerate(SKIP_CODES)}


@dataclass
class SkippedIds:
    """Message ids of skipped messages and why (``SKIP_CODES`` index), to de-duplicate them.

    ``chat_id`` is empty until the chat's id is known (an export's chunk gets it later).
    """

    message_id: np.ndarray  # int64
    code: np.ndarray  # int8
    chat_id: np.ndarray | None = None  # int64, per row

    @classmethod
    def empty(cls) -> SkippedIds:
        return cls(np.empty(0, np.int64), np.empty(0, np.int8), np.empty(0, np.int64))

    @classmethod
    def concat(cls, parts: Sequence[SkippedIds]) -> SkippedIds:
        """One array of each; chat ids only when every non-empty part has them."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        chats = [p.chat_id for p in parts]
        return cls(
            np.concatenate([p.message_id for p in parts]),
            np.concatenate([p.code for p in parts]),
            None if any(c is None for c in chats) else np.concatenate(chats),  # type: ignore[arg-type]
        )

    def __len__(self) -> int:
        return len(self.message_id)

    def in_chat(self, chat_id: int) -> SkippedIds:
        return SkippedIds(self.message_id, self.code, np.full(len(self), chat_id, np.int64))


@dataclass
class Normalized:
    """Kept messages of one chunk as columns (no chat id yet) and the skipped, by reason."""

    table: pa.Table
    read: int
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_ids: SkippedIds = field(default_factory=SkippedIds.empty)
    invalid_utf8: list[int] = field(default_factory=list)  # offsets in the chunk's data


@dataclass
class Senders:
    """Each message's sender name and id, every distinct value stored once.

    Names and ids repeat on every message, so each column is dictionary-encoded and only
    the distinct values are normalized (``from: null`` -> "Deleted Account", an old export's
    integer ``from_id`` -> ``user<id>``).
    """

    names: Repetitive | RepetitiveTokens
    ids: Repetitive | RepetitiveTokens

    @classmethod
    def encode(cls, names: list[str | None], ids: list[str | int | None]) -> Senders:
        return cls(Repetitive.encode(names, _sender_name), Repetitive.encode(ids, sender_id_of))


def _sender_name(name: str | None) -> str:
    return name or DELETED_ACCOUNT


@dataclass
class Extracted:
    """A chunk's kept fields as numpy arrays and bytes: what a worker process sends back."""

    read: int
    skipped: Counter[str]
    message_id: np.ndarray
    date: OptionalInts
    senders: Senders
    text: Strings | TokenTexts
    reply_to: OptionalInts
    skipped_ids: SkippedIds = field(default_factory=SkippedIds.empty)
    invalid_utf8: list[int] = field(default_factory=list)  # offsets in the chunk's data


def member_keys(names_or_ids: Iterable[str]) -> frozenset[str]:
    """Lower-cased names and ids to match members by (``123`` also matches ``user123``)."""
    keys: set[str] = set()
    for value in names_or_ids:
        value = " ".join(value.split())
        keys.add(value.lower())
        if value.lstrip("-").isdigit():
            keys.add(f"user{value}")
    return frozenset(keys)


def extract_chunk(data: bytes | memoryview, rules: Rules) -> Extracted:
    """Decode one chunk (a JSON array of messages) and gather its kept fields.

    Runs in worker processes, so it touches no Arrow: only msgspec, Python and numpy.
    A chunk with invalid UTF-8 in a field that is read is decoded again with U+FFFD in place
    of every bad byte (msgspec checks only the strings it decodes; so does this).
    """
    try:
        lean = extract_lean(data, rules)
    except msgspec.DecodeError:
        lean = None
    if lean is not None:
        lean.skipped["malformed"] += 0  # (the key's place in the counts, as below)
        return lean
    try:
        return _extract_chunk(data, rules)
    except msgspec.DecodeError:
        if is_utf8(data):
            raise
    data, bad = repair(data)
    extracted = _extract_chunk(data, rules)
    extracted.invalid_utf8 = bad
    return extracted


def _extract_chunk(data: bytes | memoryview, rules: Rules) -> Extracted:
    messages, malformed = decode(data)
    extracted = extract(messages, rules, data)
    extracted.read += malformed
    extracted.skipped["malformed"] += malformed
    return extracted


def decode(data: bytes | memoryview) -> tuple[list[RawMessage], int]:
    """Decode a chunk (a JSON array of messages) into messages.

    A message with fields of unexpected types does not sink the whole chunk: the chunk is
    then decoded message by message and the odd ones are counted as ``malformed``. Malformed
    JSON raises ``msgspec.DecodeError`` (the reader turns it into a position).
    """
    try:
        return _decode_chunk(data), 0
    except msgspec.ValidationError:
        pass
    messages, malformed = [], 0
    for raw in _decode_raw_list(data):
        try:
            messages.append(_decode_one(raw))
        except msgspec.ValidationError:
            malformed += 1
    return messages, malformed


_id = attrgetter("id")
_unix = attrgetter("date_unixtime")
_from = attrgetter("from_")
_from_id = attrgetter("from_id")
_reply = attrgetter("reply_to_message_id")


def extract(
    messages: Sequence[RawMessage], rules: Rules, data: bytes | memoryview | None = None
) -> Extracted:
    """Decide each message's fate and gather the kept ones' fields (see module doc).

    The loop only decides which messages are kept and finds their text; the other fields
    are gathered per column afterwards with C-level ``map``, so a million messages cost
    well under a second of Python. ``data`` (the chunk's JSON) is read again only for
    messages without ``text`` or ``date_unixtime``.
    """
    extras = _extras(messages, data)
    kept: list[RawMessage] = []
    texts: list[str] = []
    skipped_ids: list[int] = []
    reasons: list[str] = []
    keep, add_text = kept.append, texts.append
    for m in messages:
        if m.type != "message" or m.forwarded_from or m.saved_from or m.via_bot:
            skipped_ids.append(m.id)
            reasons.append(_not_own_words(m))
            continue
        text = m.text
        if text.__class__ is not str:
            text = _flatten(m, extras)
        if not text or text.isspace():
            text = _media_text(m, rules)
            if text is None:
                skipped_ids.append(m.id)
                reasons.append(_no_text_reason(m))
                continue
        keep(m)
        add_text(text)
    return Extracted(
        read=len(messages),
        skipped=Counter(reasons),
        message_id=np.fromiter(map(_id, kept), np.int64, count=len(kept)),
        date=_epoch_seconds(kept, extras),
        senders=Senders.encode(list(map(_from, kept)), list(map(_from_id, kept))),
        text=Strings.encode(texts),
        reply_to=_reply_ids(kept),
        skipped_ids=SkippedIds(
            np.array(skipped_ids, np.int64),
            np.fromiter((_CODE[r] for r in reasons), np.int8, count=len(reasons)),
        ),
    )


# The tokens extract_lean reads, in one pass over the messages (see Tokens.fields); a field
# is present where its token is not empty (``null`` is present, as in extract).
_lean_tokens = attrgetter("text", "from_", "from_id")
_LEAN_WIDTH = 3
# A message is not its sender's own words when its type is not "message" or one of three
# rare fields is present: which messages are is one comparison per message against the
# usual values (msgspec leaves the same default object in every message without a field,
# and an empty Raw equals another anyway, while a present field is never empty).
_not_own_fields = attrgetter("type", "forwarded_from", "saved_from", "via_bot")
_NOT_OWN_ABSENT = _not_own_fields(LeanMessage(id=0))
_QUOTE, _BRACKET, _NULL = ord('"'), ord("["), ord("n")
# The first byte of every character str.isspace() knows that JSON writes unescaped (the
# others are control characters, always escaped): a token starting otherwise is not blank.
_BLANK_LEADS = np.array([0x20, 0xC2, 0xE1, 0xE2, 0xE3], dtype=np.uint8)


def extract_lean(data: bytes | memoryview, rules: Rules) -> Extracted | None:
    """:func:`extract` for the usual chunk, on whole columns; None for an unusual one.

    The same rules as :func:`extract`, decided per column with numpy: only messages that
    are skipped, have an entity list, escapes or a text that may be blank go through
    Python. A chunk where anything differs from a recent export's usual shapes (a missing
    text or time, an integer sender id, a field of an unexpected type, invalid UTF-8) gets
    None, and the caller reads it with :func:`extract`, which knows every case.
    """
    try:
        messages = _decode_lean(data)
    except msgspec.ValidationError:
        return None
    n = len(messages)
    ints = _lean_integers(messages)
    if ints is None:  # no date_unixtime somewhere: an old export
        return None
    message_id, unix, reply = ints
    text, names, ids = Tokens.fields(map(_lean_tokens, messages), n, _LEAN_WIDTH)
    if not (n and is_utf8(text.data)):
        return None
    first = text.first_bytes()
    if not (
        np.isin(first, (_QUOTE, _BRACKET)).all()
        and np.isin(names.first_bytes(), (0, _QUOTE, _NULL)).all()
        and np.isin(ids.first_bytes(), (0, _QUOTE, _NULL)).all()
    ):
        return None

    raw = np.frombuffer(text.data, dtype=np.uint8)  # every field's tokens
    not_own = np.fromiter(
        map(ne, map(_not_own_fields, messages), repeat(_NOT_OWN_ABSENT)), bool, count=n
    )
    own = ~not_own
    reason = np.full(n, -1, dtype=np.int8)  # the skip reason's code; -1: kept
    for i in np.flatnonzero(not_own).tolist():
        reason[i] = _CODE[_not_own_words(messages[i])]

    starts, ends = text.starts, text.ends
    backslash = np.flatnonzero(raw == ord("\\"))
    in_token = np.searchsorted(ends, backslash, side="right")
    inside = in_token < n
    inside[inside] = starts[in_token[inside]] <= backslash[inside]
    escaped = np.zeros(n, dtype=bool)
    escaped[in_token[inside]] = True
    odd = own & ((first == _BRACKET) | escaped)
    lead = raw[np.minimum(starts + 1, len(raw) - 1)]
    maybe_blank = own & ~odd & ((ends - starts == 2) | np.isin(lead, _BLANK_LEADS))
    patches: dict[int, str] = {}
    blank: list[int] = []
    odd_rows = np.flatnonzero(odd)
    tokens = map(
        text.data.__getitem__, map(slice, starts[odd_rows].tolist(), ends[odd_rows].tolist())
    )
    try:  # one call for all of them: a call per token cost more than its decoding
        values = _decode_texts(b"".join((b"[", b",".join(tokens), b"]")))
    except msgspec.ValidationError:
        return None
    for i, value in zip(odd_rows.tolist(), values, strict=True):
        if value.__class__ is not str:
            value = "".join([part if part.__class__ is str else part.text for part in value])
        if not value or value.isspace():
            blank.append(i)
        else:
            patches[i] = value
    for i in np.flatnonzero(maybe_blank).tolist():
        value = text.data[starts[i] + 1 : ends[i] - 1].decode()
        if not value or value.isspace():
            blank.append(i)
    for i in blank:
        m = messages[i]
        media = _media_text(m, rules)
        if media is None:
            reason[i] = _CODE[_no_text_reason(m)]
        else:
            patches[i] = media

    kept = np.flatnonzero(reason < 0)
    skipped = np.flatnonzero(reason >= 0)
    codes = reason[skipped]
    patched = np.array(sorted(patches), dtype=np.int64)
    reply = reply[kept]
    valid = reply != 0
    return Extracted(
        read=n,
        skipped=Counter([SKIP_CODES[c] for c in codes.tolist()]),
        message_id=message_id[kept],
        date=OptionalInts(unix[kept], None),
        senders=Senders(
            RepetitiveTokens(names, kept, _sender_name), RepetitiveTokens(ids, kept, sender_id_of)
        ),
        text=TokenTexts(
            text,
            kept,
            np.isin(kept, patched) if len(patched) else None,
            Strings.encode([patches[i] for i in patched.tolist()]),
        ),
        reply_to=OptionalInts(reply, None if valid.all() else valid),
        skipped_ids=SkippedIds(message_id[skipped], codes),
    )


def _lean_integers(
    messages: Sequence[LeanMessage],
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Message ids, times and reply-to ids (0: none); None when a time is missing.

    A pass per field: a plain ``attrgetter`` pass costs less than one pass making a tuple
    of the three per message. A None among the replies (an explicit ``null``) takes a
    slower pass that reads it as 0.
    """
    n = len(messages)
    try:
        unix = np.fromiter(map(_unix, messages), np.int64, count=n)
    except TypeError:  # no date_unixtime somewhere: an old export
        return None
    try:
        reply = np.fromiter(map(_reply, messages), np.int64, count=n)
    except TypeError:
        reply = np.fromiter((r or 0 for r in map(_reply, messages)), np.int64, count=n)
    return np.fromiter(map(_id, messages), np.int64, count=n), unix, reply


def _reply_ids(kept: list[RawMessage]) -> OptionalInts:
    """Reply-to ids; 0 (absent) and null become null."""
    try:
        values = np.fromiter(map(_reply, kept), np.int64, count=len(kept))
    except TypeError:  # an explicit null somewhere
        values = np.fromiter((r or 0 for r in map(_reply, kept)), np.int64, count=len(kept))
    valid = values != 0
    return OptionalInts(values, None if valid.all() else valid)


def to_table(extracted: Extracted, rules: Rules, chat_id: np.ndarray | None = None) -> Normalized:
    """Arrow columns of an extracted chunk, with the text rules applied.

    ``chat_id`` (per row) is for messages that carry their own; an export's chunk gets its
    chat's id later, once the chat object has been read to its end.
    """
    n = len(extracted.message_id)
    table = pa.table(
        {
            "chat_id": pa.nulls(n, pa.int64()) if chat_id is None else int_array(chat_id),
            "message_id": int_array(extracted.message_id),
            "date": extracted.date.to_arrow(),
            "sender": extracted.senders.names.to_arrow(clean),  # each distinct name once
            "sender_id": extracted.senders.ids.to_arrow(),
            "text": extracted.text.to_arrow(),
            "reply_to": extracted.reply_to.to_arrow(),
        },
        schema=SCHEMA,
    )
    skipped = Counter(extracted.skipped)
    dropped: list[SkippedIds] = []
    table = apply_rules(table, rules, skipped, dropped)
    skipped_ids = SkippedIds.concat([extracted.skipped_ids, *dropped])
    return Normalized(table, extracted.read, skipped, skipped_ids, extracted.invalid_utf8)


_text = attrgetter("text")


def _extras(messages: Sequence[RawMessage], data: bytes | memoryview | None) -> dict[int, dict]:
    """The raw objects of a chunk by message id, when some message lacks text or time."""
    if data is None or (None not in map(_text, messages) and None not in map(_unix, messages)):
        return {}
    return {m["id"]: m for m in _decode_plain(data) if isinstance(m, dict) and "id" in m}


def _not_own_words(m: RawMessage | LeanMessage) -> str:
    """The skip reason of a message that is not the sender's own text."""
    return _not_own_reason(m.type, bool(m.forwarded_from or m.saved_from))


def _not_own_reason(kind: str, forwarded: bool) -> str:
    """The skip reason of a message of type ``kind`` that is not the sender's own text."""
    if kind != "message":
        return "unsupported" if kind == "unsupported" else "service"
    return "forwarded" if forwarded else "via_bot"


def _flatten(m: RawMessage, extras: dict[int, dict]) -> str:
    """Plain text of a message whose ``text`` is an entity list (or missing).

    ``text`` and ``text_entities`` hold the same characters in every export we have seen;
    the already decoded ``text`` list is used, ``text_entities`` only when ``text`` is absent.
    """
    if m.text:
        return "".join(part if part.__class__ is str else part.text for part in m.text)
    if m.text is None:
        entities = extras.get(m.id, {}).get("text_entities")
        if isinstance(entities, list):
            return "".join(e.get("text", "") for e in entities if isinstance(e, dict))
    return ""


def _media_text(m: RawMessage, rules: Rules) -> str | None:
    """The text a message without text stands for (a sticker's emoji), or None to skip it."""
    if rules.sticker_emoji and m.media_type == "sticker" and m.sticker_emoji:
        return m.sticker_emoji
    return None


_media_fields = attrgetter(*_MEDIA_FIELDS)


def _no_text_reason(m: RawMessage | LeanMessage) -> str:
    """Why a message without text is skipped (asked of every photo without a caption)."""
    return "media_only" if any(_media_fields(m)) else "empty"


def _epoch_seconds(kept: list[RawMessage], extras: dict[int, dict]) -> OptionalInts:
    """``date_unixtime`` (epoch seconds), else ``date`` read as local time.

    Old exports have no ``date_unixtime``; their ``date`` is the exporting machine's local
    time without an offset, and the best guess we have is this machine's zone. A time that
    cannot be read becomes null (the row is then skipped as malformed).
    """
    unix = list(map(_unix, kept))
    try:
        return OptionalInts(np.fromiter(unix, np.int64, count=len(unix)), None)
    except TypeError:  # None somewhere: rows of an old export
        pass
    values = [
        v if v is not None else _local_time(extras.get(m.id, {}).get("date"))
        for v, m in zip(unix, kept, strict=True)
    ]
    return OptionalInts.encode(values)


def _local_time(date: object) -> int | None:
    if not isinstance(date, str):
        return None
    try:  # a naive datetime's timestamp() is in this machine's local time zone
        return int(datetime.fromisoformat(date).timestamp())
    except ValueError:
        return None


def apply_rules(
    table: pa.Table,
    rules: Rules,
    skipped: Counter[str],
    dropped: list[SkippedIds] | None = None,
) -> pa.Table:
    """Clean (and optionally scrub) text; drop bots, opted-out members and unknown times.

    Sender names arrive cleaned (:func:`to_table` cleans each distinct name once). The ids
    of dropped rows, with their reason, are appended to ``dropped`` when given.
    """
    if table.num_rows == 0:
        return table
    keep = pc.is_valid(table["date"])
    hits = [("malformed", pc.invert(keep))]
    for reason, keys in (("bot", rules.bots), ("excluded", rules.exclude)):
        if keys:
            hit = pc.and_(is_member(table, keys), keep)
            hits.append((reason, hit))
            keep = pc.and_(keep, pc.invert(hit))
    for reason, hit in hits:
        n = pc.sum(hit).as_py() or 0
        skipped[reason] += n
        if n and dropped is not None:
            ids = as_numpy(table["message_id"].filter(hit))
            chats = table["chat_id"].filter(hit)
            chat_ids = as_numpy(chats) if chats.null_count == 0 else None
            dropped.append(SkippedIds(ids, np.full(n, _CODE[reason], np.int8), chat_ids))
    if not pc.all(keep).as_py():
        table = table.filter(keep)
    text = clean(table["text"])
    if rules.scrub:
        text = scrub(text)
    return table.set_column(5, "text", text)


def is_member(table: pa.Table, keys: frozenset[str]) -> pa.Array:
    """True for rows whose sender name or sender id is in ``keys`` (see member_keys)."""
    value_set = strings(sorted(keys))
    return pc.or_(
        pc.is_in(pc.utf8_lower(table["sender"]), value_set=value_set),
        pc.is_in(pc.utf8_lower(table["sender_id"]), value_set=value_set),
    )


def clean(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``training.formatting.clean_text`` over a column: whitespace runs become one space.

    Most messages need nothing; finding the few that do is ten times cheaper than rewriting
    every one, so only those are rewritten.
    """
    return _rewrite_matching(column, _NEEDS_CLEAN, _clean_all)


def _clean_all(column: pa.Array) -> pa.Array:
    return pc.utf8_trim(pc.replace_substring_regex(column, _WHITESPACE, " "), " ")


def scrub(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Replace URLs, e-mail addresses and phone numbers with placeholders (``--scrub``)."""
    for pattern, placeholder in SCRUB_PATTERNS:
        column = _rewrite_matching(
            column, pattern, lambda c, p=pattern, r=placeholder: pc.replace_substring_regex(c, p, r)
        )
    return column


def _rewrite_matching(
    column: pa.Array | pa.ChunkedArray, pattern: str, rewrite: Callable[[pa.Array], pa.Array]
) -> pa.Array:
    """``rewrite`` applied to the values matching ``pattern`` only."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    hit = pc.fill_null(pc.match_substring_regex(column, pattern), bool_scalar(False))
    if not pc.any(hit).as_py():
        return column
    rows = np.flatnonzero(as_numpy(hit))
    rewritten = rewrite(column.take(int_array(rows)))
    return pc.replace_with_mask(column, hit, rewritten)


def from_chat_messages(messages: Iterable[ChatMessage], rules: Rules) -> Normalized:
    """Messages the bot stored, as the same columns, under the same rules.

    Empty texts are skipped as ``empty``; skipped ids carry their chat ids already.
    """
    rows = list(messages)
    kept = [m for m in rows if m.text and not m.text.isspace()]
    empty = [m for m in rows if not (m.text and not m.text.isspace())]
    n = len(kept)
    extracted = Extracted(
        read=len(rows),
        skipped=Counter({"empty": len(rows) - n}),
        message_id=np.fromiter((m.message_id for m in kept), np.int64, count=n),
        date=OptionalInts(np.fromiter((m.date for m in kept), np.int64, count=n), None),
        senders=Senders.encode([m.sender for m in kept], [m.sender_id or None for m in kept]),
        text=Strings.encode([m.text for m in kept]),
        reply_to=OptionalInts.encode([m.reply_to for m in kept]),
    )
    chat_ids = np.fromiter((m.chat_id for m in kept), np.int64, count=n)
    normalized = to_table(extracted, rules, chat_ids)
    normalized.skipped = +normalized.skipped
    blank = SkippedIds(
        np.fromiter((m.message_id for m in empty), np.int64, count=len(empty)),
        np.full(len(empty), _CODE["empty"], np.int8),
        np.fromiter((m.chat_id for m in empty), np.int64, count=len(empty)),
    )
    normalized.skipped_ids = SkippedIds.concat([blank, normalized.skipped_ids])
    return normalized
