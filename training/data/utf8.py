"""Bytes that are not UTF-8 in an export: replaced, counted and placed, never fatal.

Telegram Desktop writes UTF-8. A stray invalid byte (a damaged copy, a hand edit, a tool
that cut an emoji in half) used to reject a whole multi-year export at "an unknown
position", while ``friendbot chats`` listed the same file happily. A user would rather have
the chat read, with U+FFFD where the damage is and a warning saying where it is, than have
to repair a JSON file of hundreds of MB by hand; so both commands read such a file the same
way and both name the offset of the first bad byte. Only strings read by friendbot are
repaired: invalid bytes between JSON tokens remain a JSON error.
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

SHOWN = 5  # offsets kept for the warning; the count covers all of them
_ERRORS = "friendbot-note-invalid-utf8"
_noted = threading.local()


def _note(exc: UnicodeError) -> tuple[str, int]:
    """A codec error handler: replace like ``errors="replace"`` and remember where."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _noted.offsets.append(exc.start)
    return "\ufffd", exc.end


codecs.register_error(_ERRORS, _note)


def is_utf8(data: bytes | memoryview) -> bool:
    """True when ``data`` is valid UTF-8 as a whole (Python's and msgspec's strict rules).

    Only the runs of non-ASCII bytes are decoded, each with the ASCII byte after it: a
    multi-byte sequence never holds an ASCII byte, so whether the whole is valid depends
    on nothing else, and decoding a few percent of the bytes (emoji, accents) costs a fifth
    of decoding all of them into a string (the reader checks every chunk's text tokens).
    """
    if isinstance(data, bytes) and data.isascii():
        return True
    raw = np.frombuffer(data, dtype=np.uint8)
    high = raw >= 0x80
    kept = high.copy()
    kept[1:] |= high[:-1]  # and the byte after each: what ends the run in ``data``
    try:
        codecs.utf_8_decode(raw[kept].tobytes(), "strict", True)
    except UnicodeDecodeError:
        return False
    return True


def repair(data: bytes | memoryview) -> tuple[bytes, list[int]]:
    """``data`` with each invalid UTF-8 sequence replaced by U+FFFD, and their offsets in it."""
    _noted.offsets = []
    try:
        text, _ = codecs.utf_8_decode(data, _ERRORS, True)
        return text.encode("utf-8"), _noted.offsets
    finally:
        del _noted.offsets


class StreamRepair:
    """Repairs a byte stream block by block (a sequence may be split between blocks)."""

    def __init__(self, found: InvalidUtf8) -> None:
        self.found = found
        self.decoder = codecs.getincrementaldecoder("utf-8")(_ERRORS)
        self.offset = 0  # bytes of the stream seen so far

    def __call__(self, block: bytes, final: bool = False) -> bytes:
        pending = len(self.decoder.getstate()[0])  # bytes held back from the last block
        start = self.offset - pending
        self.offset += len(block)
        if not block and not final:
            return block
        _noted.offsets = []
        try:
            text = self.decoder.decode(block, final)
            self.found.add(start + o for o in _noted.offsets)
        finally:
            del _noted.offsets
        return text.encode("utf-8")


@dataclass
class InvalidUtf8:
    """Invalid UTF-8 found (and replaced) in one file: how often, and where it starts."""

    count: int = 0
    offsets: list[int] = field(default_factory=list)  # the first SHOWN, in file order

    def add(self, offsets: Iterable[int], count: int | None = None) -> None:
        """Note bad sequences at ``offsets`` (``count`` of them when more than listed)."""
        listed = sorted(self.offsets + list(offsets))
        self.count += len(listed) - len(self.offsets) if count is None else count
        self.offsets = listed[:SHOWN]

    def merge(self, other: InvalidUtf8) -> None:
        self.add(other.offsets, other.count)

    def to_dict(self) -> dict[str, object]:
        return {"count": self.count, "first_offsets": self.offsets}
