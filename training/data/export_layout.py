"""Find the chats and their message arrays in a Telegram export without parsing it whole.

A Telegram Desktop export is pretty-printed with a fixed indentation, and a raw newline can
never occur inside a JSON string. So in the ``messages`` array, a line holding only the
array's element indentation and ``}`` always closes one message, and a line holding the key's
indentation and ``]`` closes the array. :func:`scan` reads the file in blocks, walks the small
structure around the arrays token by token (chat name, type, id), and cuts each array into
:class:`Chunk` s of whole messages with ``bytes.find``; decoding those chunks is the reader's
job. Memory stays at about one block however large the file is. When the chunks are read
by worker processes (``copy=False``), the scanner does not read the messages at all: it
looks for each chunk's end in a small window a block ahead (:meth:`_Scanner.jump`).

A file laid out differently (minified, or re-indented by some tool) raises
:class:`NotSplittable`; :func:`scan_streaming` then produces the same events through ijson,
slower but independent of layout.

Invalid UTF-8 in the strings read here (chat names) or anywhere in a streamed file is read
as U+FFFD and noted in an :class:`~training.data.utf8.InvalidUtf8` (see that module).

Why one file of ~520 lines: the scanner's byte-level assumptions about the export's layout
and the checks that fall back to the streaming reader when they fail belong together.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec

from training.data.messages import bot_api_chat_id
from training.data.utf8 import InvalidUtf8, StreamRepair, is_utf8, repair

BLOCK_SIZE = 8 << 20
JUMP_WINDOW = 64 << 10  # the end of a block read to find where its last message ends
MAX_TOKEN = 64 << 20  # a header string or number longer than this is not a Telegram export
SECTIONS = ("chats", "left_chats")  # full-account exports keep chats in these lists

_WS = re.compile(rb"[ \t\r\n]*")
_STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]|\\.)*"')
_SCALAR = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_STRUCTURAL = re.compile(rb'[\[\]{}"]')


class LayoutError(Exception):
    """The scanner cannot go on; subclasses say whether the file or the layout is at fault."""


class NotSplittable(LayoutError):
    """Valid-looking JSON not laid out as Telegram writes it: use the streaming parser."""


class InvalidJSON(LayoutError):
    """The bytes are not JSON; ``where`` says where ("line 3, column 7" or "near byte 123")."""

    def __init__(self, reason: str, where: str) -> None:
        super().__init__(f"invalid JSON at {where}: {reason}")
        self.reason, self.where = reason, where


class NotAnExport(LayoutError):
    """JSON, but not shaped like a Telegram Desktop export."""


@dataclass
class ChatMeta:
    """A chat's identity as the export gives it, completed while the chat object is read."""

    index: int  # order of appearance in the file
    section: str  # "chat" (single-chat file), "chats" or "left_chats" (full export)
    name: str | None = None
    type: str | None = None
    raw_id: int | None = None
    message_count: int = 0  # filled by whoever reads the chunks

    @property
    def chat_id(self) -> int | None:
        """The Bot API id (``-100<id>`` for supergroups), or None when the export has none."""
        return None if self.raw_id is None else bot_api_chat_id(self.raw_id, self.type)


@dataclass
class Chunk:
    """Whole messages of one chat: ``data`` is a JSON array of them.

    ``data`` is empty when the scan was asked not to copy it (workers read the file at
    ``offset`` for ``length`` bytes themselves, see :func:`read_chunk`).
    """

    chat: ChatMeta
    data: bytes
    count: int  # messages in data; -1 when not counted (see scan)
    offset: int  # file offset of the first message (data[1]); -1 when unknown (streaming)
    length: int = 0  # bytes of the messages in the file (data without its brackets)


@dataclass
class ChatDone:
    """The chat object is closed: ``chat`` is now as complete as the export makes it."""

    chat: ChatMeta


Event = Chunk | ChatDone


def scan(
    path: Path,
    *,
    count: bool = False,
    copy: bool = True,
    block_size: int = BLOCK_SIZE,
    invalid_utf8: InvalidUtf8 | None = None,
) -> Iterator[Event]:
    """Chunks of messages and chat completions, in file order (fast path; see module doc).

    ``count`` fills each chunk's ``count`` (costs a pass over the bytes; the reader knows
    the number anyway once it decodes a chunk, so only listing chats asks for it).
    ``copy=False`` leaves ``data`` empty, for readers that fetch the bytes themselves.
    Invalid UTF-8 in the chat names and types read here is noted in ``invalid_utf8``.
    """
    with open(path, "rb") as f:
        scanner = _Scanner(f, block_size, count, copy, invalid_utf8 or InvalidUtf8())
        yield from scanner.export()


def read_chunk(path: str | Path, offset: int, length: int) -> bytes:
    """The JSON array of a chunk scanned with ``copy=False`` (what a worker process reads)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return b"".join((b"[", f.read(length), b"]"))


def position(path: str | Path, offset: int) -> str:
    """ "line L, column C" of a byte offset: read again only when there is an error to show."""
    line, last_newline, done = 1, -1, 0
    with open(path, "rb") as f:
        while done < offset:
            block = f.read(min(BLOCK_SIZE, offset - done))
            if not block:
                break
            line += block.count(b"\n")
            nl = block.rfind(b"\n")
            if nl >= 0:
                last_newline = done + nl
            done += len(block)
    return f"line {line}, column {offset - last_newline}"


class _Scanner:
    """A cursor over a sliding window of the file, with just enough JSON to walk the header."""

    def __init__(
        self, f: BinaryIO, block_size: int, count: bool, copy: bool, invalid_utf8: InvalidUtf8
    ) -> None:
        self.f, self.block_size, self.count, self.copy = f, block_size, count, copy
        self.invalid_utf8 = invalid_utf8
        self.buf = b""
        self.pos = 0  # cursor in buf
        self.base = 0  # file offset of buf[0]
        self.eof = False
        self.indent: int | None = None  # spaces before the last token that began a line
        self.chats = 0

    # -- the window ---------------------------------------------------------------------
    def more(self) -> bool:
        """Drop what was consumed and append a block; False at the end of the file."""
        if self.eof:
            return False
        self.base += self.pos
        block = self.f.read(self.block_size)
        self.buf = self.buf[self.pos :] + block
        self.pos = 0
        self.eof = not block
        return bool(block)

    def jump(self, start: int, boundary: bytes) -> tuple[int, int] | None:
        """``copy=False``: cut a chunk of about a block at ``start`` reading only its end.

        Whoever decodes a chunk reads its bytes (and msgspec checks them), so the scanner
        only needs where it ends: the last ``boundary`` (a message's closing line and its
        comma) in a small window a block ahead. Returns the chunk's file offset and length
        and leaves the cursor after that comma; None (nothing read, nothing moved) when
        the window would overlap what is read already, runs into the end of the file, or
        holds no boundary (a message longer than the window): then the whole block is read.
        """
        offset = self.base + start
        window_at = offset + self.block_size - JUMP_WINDOW
        resume = self.base + len(self.buf)
        if window_at <= resume:
            return None
        self.f.seek(window_at)
        window = self.f.read(JUMP_WINDOW)
        last = window.rfind(boundary) if len(window) == JUMP_WINDOW else -1
        if last < 0:
            self.f.seek(resume)
            return None
        self.buf, self.base, self.pos = window, window_at, last + len(boundary)
        return offset, window_at + last + len(boundary) - 1 - offset

    def invalid(self, reason: str, pos: int | None = None) -> InvalidJSON:
        offset = self.base + (self.pos if pos is None else pos)
        return InvalidJSON(reason, position(self.f.name, offset))

    # -- tokens -------------------------------------------------------------------------
    def ws(self) -> int:
        """Skip whitespace; return the next byte (-1 at end of file) and note the indent."""
        newline = False
        while True:
            end = _WS.match(self.buf, self.pos).end()
            skipped = self.buf[self.pos : end]
            nl = skipped.rfind(b"\n")
            if nl >= 0:
                newline, spaces = True, skipped[nl + 1 :]
            elif newline:
                spaces += skipped
            self.pos = end
            if end < len(self.buf):
                break
            if not self.more():
                return -1
        if newline and spaces.strip(b" ") == b"":
            self.indent = len(spaces)
        else:
            self.indent = None
        return self.buf[self.pos]

    def expect(self, char: bytes) -> None:
        if self.ws() != char[0]:
            raise self.unexpected(f"expected '{char.decode()}'")

    def unexpected(self, what: str) -> InvalidJSON:
        if self.pos >= len(self.buf):
            return self.invalid(f"unexpected end of file ({what})")
        shown = self.buf[self.pos : self.pos + 1].decode("latin-1")
        return self.invalid(f"{what}, found {shown!r}")

    def token(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        """The token at the cursor; reads on while it may continue past the window."""
        while True:
            m = pattern.match(self.buf, self.pos)
            if m and (m.end() < len(self.buf) or self.eof):
                self.pos = m.end()
                return m.group()
            if len(self.buf) - self.pos > MAX_TOKEN or not self.more():
                raise self.unexpected(f"expected {what}")

    def value(self) -> object:
        """A string or scalar at the cursor, decoded."""
        c = self.ws()
        raw = self.token(_STRING, "a string") if c == 0x22 else self.token(_SCALAR, "a value")
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            if is_utf8(raw):
                raise self.invalid(str(exc), self.pos - len(raw)) from None
        fixed, offsets = repair(raw)
        start = self.base + self.pos - len(raw)
        self.invalid_utf8.add(start + o for o in offsets)
        return msgspec.json.decode(fixed)

    def key(self) -> str:
        if self.ws() != 0x22:
            raise self.unexpected("expected an object key")
        key = self.value()
        self.expect(b":")
        self.pos += 1
        return str(key)

    def members(self) -> Iterator[tuple[str, int | None]]:
        """The keys of the object at the cursor, with the indent of each key's line."""
        self.expect(b"{")
        self.pos += 1
        if self.ws() == 0x7D:
            self.pos += 1
            return
        while True:
            c = self.ws()
            indent = self.indent
            yield self.key(), indent if c == 0x22 else None
            c = self.ws()
            self.pos += 1
            if c == 0x7D:
                return
            if c != 0x2C:
                self.pos -= 1
                raise self.unexpected("expected ',' or '}' after an object member")

    def elements(self) -> Iterator[None]:
        """Step through the array at the cursor; the caller consumes each element."""
        self.expect(b"[")
        self.pos += 1
        if self.ws() == 0x5D:
            self.pos += 1
            return
        while True:
            yield None
            c = self.ws()
            self.pos += 1
            if c == 0x5D:
                return
            if c != 0x2C:
                self.pos -= 1
                raise self.unexpected("expected ',' or ']' after an array element")

    def skip(self) -> None:
        """Skip one value of any size, counting brackets outside strings."""
        c = self.ws()
        if c not in (0x7B, 0x5B):
            self.value()
            return
        depth = 0
        while True:
            m = _STRUCTURAL.search(self.buf, self.pos)
            if m is None:
                self.pos = len(self.buf)
                if not self.more():
                    raise self.unexpected("unterminated value")
                continue
            self.pos = m.start()
            c = self.buf[self.pos]
            if c == 0x22:
                self.token(_STRING, "a string")
                continue
            self.pos += 1
            depth += 1 if c in (0x7B, 0x5B) else -1
            if depth == 0:
                return

    # -- the export ---------------------------------------------------------------------
    def export(self) -> Iterator[Event]:
        if self.ws() == -1:
            raise self.invalid("the file is empty")
        if self.buf.startswith(b"\xef\xbb\xbf", self.pos):  # a UTF-8 byte order mark
            self.pos += 3
        if self.ws() != 0x7B:
            raise NotAnExport("the top level is not a JSON object")
        top = ChatMeta(index=0, section="chat")
        single = full = False
        for key, indent in self.members():
            if key == "messages":
                single = True
                self.chats = 1
                yield from self.messages(top, indent)
            elif key in ("name", "type", "id"):
                self.chat_field(top, key)
            elif key in SECTIONS:
                full = True
                yield from self.section(key)
            else:
                self.skip()
        if self.ws() != -1:
            raise self.unexpected("unexpected data after the top-level object")
        if single:
            yield ChatDone(top)
        elif not full:
            raise NotAnExport('no "messages" (single chat) or "chats" (full export) found')

    def chat_field(self, chat: ChatMeta, key: str) -> None:
        value = self.value()
        if key == "id":
            if not isinstance(value, int) or isinstance(value, bool):
                raise NotAnExport(f"chat id {value!r} is not an integer")
            chat.raw_id = value
        elif value is None or isinstance(value, str):
            setattr(chat, key, value)

    def section(self, name: str) -> Iterator[Event]:
        if self.ws() != 0x7B:
            raise NotAnExport(f'"{name}" is not an object')
        for key, _ in self.members():
            if key != "list":
                self.skip()
                continue
            if self.ws() != 0x5B:
                raise NotAnExport(f'"{name}.list" is not an array')
            for _ in self.elements():
                yield from self.chat(name)

    def chat(self, section: str) -> Iterator[Event]:
        if self.ws() != 0x7B:
            raise NotAnExport(f'an entry of "{section}.list" is not a chat object')
        chat = ChatMeta(index=self.chats, section=section)
        self.chats += 1
        for key, indent in self.members():
            if key == "messages":
                yield from self.messages(chat, indent)
            elif key in ("name", "type", "id"):
                self.chat_field(chat, key)
            else:
                self.skip()
        yield ChatDone(chat)

    def messages(self, chat: ChatMeta, key_indent: int | None) -> Iterator[Chunk]:
        """Cut the array at the cursor into chunks of whole messages (see module doc)."""
        c = self.ws()
        if c != 0x5B:
            raise NotAnExport('"messages" is not an array')
        self.pos += 1
        c = self.ws()
        if c == 0x5D:
            self.pos += 1
            return
        if c != 0x7B:
            raise NotAnExport('"messages" holds something other than message objects')
        if key_indent is None or self.indent is None:
            raise NotSplittable("the messages array is not one message per indented block")
        item_end = b"\n" + b" " * self.indent + b"}"
        item_start = b"\n" + b" " * self.indent + b"{"
        array_end = b"\n" + b" " * key_indent + b"]"
        # A single-chat file has one messages array and it comes last, so its end is only
        # looked for once the whole rest of the file is in the window (it saves a pass).
        # In a full export another chat's array may follow in the same window.
        only_array = chat.section == "chat"
        searched_to_end = False
        while True:
            start = self.pos  # at the "{" of the next message
            look = self.eof or not only_array
            close = self.buf.find(array_end, start) if look else -1
            searched_to_end = look
            if close < 0 and only_array and not (self.copy or self.count):
                jumped = self.jump(start, item_end + b",")
                if jumped is not None:
                    yield Chunk(chat, b"", -1, *jumped)
                    if self.ws() != 0x7B:
                        raise NotSplittable("a message does not start where expected")
                    continue
            if close >= 0:
                last = self.buf.rfind(item_end, start, close)
                if last < 0 or self.buf[last + len(item_end) : close].strip():
                    raise NotSplittable("the messages array does not close where expected")
                end, after = last + len(item_end), close + len(array_end)
            else:
                last = self.buf.rfind(item_end + b",", start)
                if last < 0:
                    if self.more() or not searched_to_end:
                        continue
                    raise self.invalid("unexpected end of file inside the messages array")
                end = last + len(item_end)
                after = end + 1
            data = b""
            if self.copy:
                data = b"".join((b"[", memoryview(self.buf)[start:end], b"]"))
            count = 1 + self.buf.count(item_start, start, end) if self.count else -1
            yield Chunk(chat, data, count, self.base + start, end - start)
            self.pos = after
            if close >= 0:
                return
            if self.ws() != 0x7B:
                raise NotSplittable("a message does not start where expected")


# -- the streaming fallback ----------------------------------------------------------------
_SCALAR_EVENTS = frozenset({"string", "number", "boolean", "null"})


class _CountingReader:
    """A binary file that remembers how far it has been read (to say where bad JSON is),
    handing on its bytes with invalid UTF-8 replaced (and noted)."""

    def __init__(self, f: BinaryIO, invalid_utf8: InvalidUtf8) -> None:
        self.f, self.offset = f, 0
        self.repair = StreamRepair(invalid_utf8)

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.offset += len(data)
        return self.repair(data, final=not data)


def scan_streaming(
    path: Path, batch: int = 5000, invalid_utf8: InvalidUtf8 | None = None
) -> Iterator[Event]:
    """The events of :func:`scan` for any valid JSON layout, through ijson (slower).

    Messages are rebuilt as objects and re-encoded in batches, so the reader decodes them
    exactly as it decodes the fast path's chunks. Offsets are unknown here (-1); invalid
    UTF-8 anywhere in the file is noted in ``invalid_utf8`` with its offset.
    """
    import ijson

    with open(path, "rb") as raw:
        f = _CountingReader(raw, invalid_utf8 or InvalidUtf8())
        try:
            yield from _stream_events(ijson.parse(f, use_float=True), batch)
        except ijson.JSONError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "malformed"
            raise InvalidJSON(reason, f"about byte {f.offset}") from None


def _stream_events(events: Iterator[tuple[str, str, object]], batch: int) -> Iterator[Event]:
    import ijson

    first = next(events, None)
    if first is None:
        raise InvalidJSON("the file is empty", "byte 0")
    if first[1] != "start_map":
        raise NotAnExport("the top level is not a JSON object")
    top = ChatMeta(index=0, section="chat")
    chat: ChatMeta | None = None
    single = full = False
    n_chats = 0
    pending: list[object] = []
    builder: ijson.ObjectBuilder | None = None
    depth = 0

    def flush(owner: ChatMeta) -> Iterator[Chunk]:
        if pending:
            yield Chunk(owner, msgspec.json.encode(pending), len(pending), -1)
            pending.clear()

    for prefix, event, value in events:
        if builder is not None:  # inside a message: rebuild it
            builder.event(event, value)
            depth += event in ("start_map", "start_array")
            depth -= event in ("end_map", "end_array")
            if depth == 0:
                pending.append(builder.value)
                builder = None
                if len(pending) >= batch:
                    yield from flush(chat or top)
            continue
        section, _, rest = prefix.partition(".list.item")
        in_chat = section in SECTIONS and prefix.startswith(section + ".list.item")
        field = rest.lstrip(".") if in_chat else prefix
        owner = chat if in_chat else top
        if in_chat and not rest and event == "start_map":
            full = True
            chat = ChatMeta(index=n_chats, section=section)
            n_chats += 1
        elif in_chat and not rest and event == "end_map" and chat is not None:
            yield from flush(chat)
            yield ChatDone(chat)
            chat = None
        elif field == "messages" and (in_chat or prefix == "messages"):
            if event not in ("start_array", "end_array"):
                raise NotAnExport('"messages" is not an array')
            single = single or not in_chat
            if event == "end_array":
                yield from flush(owner or top)
        elif field == "messages.item":
            if event != "start_map":
                raise NotAnExport('"messages" holds something other than message objects')
            builder = ijson.ObjectBuilder()
            builder.event(event, value)
            depth = 1
        elif field in ("name", "type", "id") and event in _SCALAR_EVENTS and owner is not None:
            if field == "id" and (not isinstance(value, int) or isinstance(value, bool)):
                raise NotAnExport(f"chat id {value!r} is not an integer")
            if field == "id" or value is None or isinstance(value, str):
                setattr(owner, "raw_id" if field == "id" else field, value)
        elif prefix in SECTIONS and event not in ("start_map", "end_map", "map_key"):
            raise NotAnExport(f'"{prefix}" is not an object')
    if single:
        yield ChatDone(top)
    elif not full:
        raise NotAnExport('no "messages" (single chat) or "chats" (full export) found')
