"""Read Telegram Desktop exports (single-chat and full-account files) into normalized tables.

``read_export`` streams a file: :mod:`training.data.export_layout` cuts it into chunks of whole
messages, :mod:`training.data.normalize` decodes each chunk into kept columns and skip counts,
and only those columns are held, never the raw JSON. A file the fast scanner cannot cut
(minified, re-indented) is read again through ijson, and so is one where a chunk fails to
decode, so an odd but valid layout is never mistaken for bad JSON.

Every problem a user can fix becomes :class:`training.errors.InputError` naming the file.
Invalid UTF-8 is not one of them: ``chats`` and ``prepare`` both read such a file with U+FFFD
in place of the bad bytes and warn with the offset of the first (``training.data.utf8``).
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa

from training.data.columns import int_array
from training.data.export_layout import (
    BLOCK_SIZE,
    ChatDone,
    ChatMeta,
    Chunk,
    Event,
    InvalidJSON,
    LayoutError,
    NotAnExport,
    NotSplittable,
    position,
    read_chunk,
    scan,
    scan_streaming,
)
from training.data.messages import GROUP_TYPES, ChatMessage
from training.data.normalize import (
    SCHEMA,
    Extracted,
    Normalized,
    Rules,
    SkippedIds,
    extract_chunk,
    to_table,
)
from training.data.utf8 import InvalidUtf8, repair
from training.data.worker_heap import keep_freed_memory
from training.errors import InputError

# Peak memory is the sum over the processes: with workers, this one holds the results in
# flight and each worker its chunk and what decoding it makes (about 4x its size), so
# workers get half-size chunks; their count, not their size, is the per-chunk overhead.
WORKER_CHUNK = BLOCK_SIZE // 2
Progress = Callable[[int], None]  # called with the number of bytes of the file read so far
_BYTE_IN_ERROR = re.compile(r"\(byte (\d+)\)")


@dataclass(frozen=True)
class ChatInfo:
    """One chat of an export, as ``friendbot chats`` lists it."""

    chat_id: int | None  # Bot API form
    name: str | None
    type: str | None
    messages: int
    section: str  # "chat" (single-chat file), "chats", "left_chats"

    @property
    def is_group(self) -> bool:
        return self.type in GROUP_TYPES

    @property
    def label(self) -> str:
        return f"{self.name or '(no name)'} ({self.chat_id})"


def _info(meta: ChatMeta) -> ChatInfo:
    return ChatInfo(meta.chat_id, meta.name, meta.type, meta.message_count, meta.section)


@dataclass
class ChatSelector:
    """Which chats to read: all of a single-chat file, or those named with ``--chat``.

    ``wanted`` are casefolded names and ids (bare or Bot API form). With none given, a
    full-account export cannot be read (which of its chats would we train on?).
    """

    wanted: frozenset[str] = frozenset()

    @classmethod
    def of(cls, names_or_ids: tuple[str, ...] | list[str]) -> ChatSelector:
        return cls(frozenset(v.strip().casefold() for v in names_or_ids))

    def matches(self, meta: ChatMeta) -> bool | None:
        """True/False, or None while the chat's name or id is still unknown."""
        if not self.wanted:
            return True
        keys = {str(meta.raw_id), str(meta.chat_id)} if meta.raw_id is not None else set()
        if meta.name is not None:
            keys.add(meta.name.casefold())
        if keys & self.wanted:
            return True
        return False if meta.raw_id is not None and meta.name is not None else None


class NeedsChatChoice(Exception):
    """A full-account export was given without ``--chat``."""


@dataclass
class ExportRead:
    """What reading one file produced: kept messages and the counts behind the stats."""

    path: Path
    tables: list[pa.Table] = field(default_factory=list)
    read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    chats: list[ChatInfo] = field(default_factory=list)  # the chats read
    layout: str = "single_chat"  # or "full_account"
    reader: str = "fast"  # or "streaming" (ijson)
    skipped_ids: list[SkippedIds] = field(default_factory=list)  # with their chat ids
    invalid_utf8: InvalidUtf8 = field(default_factory=InvalidUtf8)

    def table(self) -> pa.Table:
        return pa.concat_tables(self.tables) if self.tables else SCHEMA.empty_table()

    def warnings(self) -> list[str]:
        """What the user should know although the file was read (invalid UTF-8)."""
        warning = utf8_warning(self.path, self.invalid_utf8)
        return [warning] if warning else []


def utf8_warning(path: Path, found: InvalidUtf8) -> str | None:
    """One line naming where a file's invalid UTF-8 is, or None when there was none."""
    if not found.count:
        return None
    first = found.offsets[0]
    return (
        f"{path}: {found.count:,} invalid UTF-8 byte sequence(s) read as U+FFFD; the first "
        f"at byte {first} ({position(path, first)})"
    )


def check_file(path: Path) -> None:
    """One clear line for a path that cannot be read at all."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an export's result.json")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: not readable")


def list_chats(path: Path, invalid_utf8: InvalidUtf8 | None = None) -> list[ChatInfo]:
    """Every chat in ``path`` with its message count, without decoding messages.

    The messages' bytes are still checked for invalid UTF-8, which ``invalid_utf8`` notes, so
    that listing a damaged file warns as preparing it does (and about damage in fields that
    ``prepare`` never reads, which it then does not mention).
    """
    path = Path(path)
    check_file(path)
    chats: list[ChatInfo] = []
    try:
        try:
            found = InvalidUtf8()
            chats = _chats_from(scan(path, count=True, invalid_utf8=found), found)
        except NotSplittable:
            found = InvalidUtf8()
            chats = _chats_from(scan_streaming(path, invalid_utf8=found), found)
    except (InvalidJSON, NotAnExport) as exc:
        raise _input_error(path, exc) from None
    if invalid_utf8 is not None:
        invalid_utf8.merge(found)
    return chats


def _chats_from(events: Iterator[Event], invalid_utf8: InvalidUtf8) -> list[ChatInfo]:
    chats = []
    for event in events:
        if isinstance(event, Chunk):
            event.chat.message_count += event.count
            if event.offset >= 0 and not _valid_utf8(event.data):
                _, offsets = repair(event.data)
                invalid_utf8.add(event.offset + o - 1 for o in offsets)  # data[0] is "["
        else:
            chats.append(_info(event.chat))
    return chats


def _valid_utf8(data: bytes) -> bool:
    """Arrow's UTF-8 check: some GB/s, where Python's decoder makes a string of everything."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    array = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def read_export(
    path: Path,
    selector: ChatSelector,
    rules: Rules,
    progress: Progress | None = None,
    workers: int = 1,
) -> ExportRead:
    """Normalized messages of the selected chats in ``path`` (see module doc).

    ``workers`` > 1 decodes chunks in that many processes while this one scans (worth it
    from tens of MB on). Raises :class:`NeedsChatChoice` for a full-account export read
    without ``--chat``, and InputError for a file that is missing, not JSON, or not an export.
    """
    path = Path(path)
    check_file(path)

    def streamed() -> ExportRead:
        found = InvalidUtf8()
        events = scan_streaming(path, invalid_utf8=found)
        return _read(path, events, selector, rules, progress, "streaming", 1, found)

    try:
        found = InvalidUtf8()
        # workers read their chunks themselves, and smaller ones (see WORKER_CHUNK)
        block = BLOCK_SIZE if workers <= 1 else WORKER_CHUNK
        events = scan(path, copy=workers <= 1, block_size=block, invalid_utf8=found)
        return _read(path, events, selector, rules, progress, "fast", workers, found)
    except NotSplittable:
        pass
    except InvalidJSON as fast_error:
        # Could be bad JSON, or valid JSON laid out unlike Telegram: let ijson decide.
        try:
            return streamed()
        except InvalidJSON:
            raise _input_error(path, fast_error) from None
        except NotAnExport as exc:
            raise _input_error(path, exc) from None
    except NotAnExport as exc:
        raise _input_error(path, exc) from None
    try:
        return streamed()
    except LayoutError as exc:
        raise _input_error(path, exc) from None


def _read(
    path: Path,
    events: Iterator[Event],
    selector: ChatSelector,
    rules: Rules,
    progress: Progress | None,
    reader: str,
    workers: int,
    invalid_utf8: InvalidUtf8,
) -> ExportRead:
    """Decode the chunks of the selected chats (here or in worker processes), in order.

    ``invalid_utf8`` is filled by the scanner behind ``events``; the chunks' own finds join it.
    """
    result = ExportRead(path, reader=reader, invalid_utf8=invalid_utf8)
    decided: dict[int, bool | None] = {}
    closed: dict[int, ChatMeta] = {}
    parts: list[tuple[ChatMeta, int, Normalized]] = []
    with _pool(workers) as pool:
        in_flight: deque[tuple[ChatMeta, int, Future[Extracted]]] = deque()
        for event in events:
            chat = event.chat
            if isinstance(event, ChatDone):
                closed[chat.index] = chat
                continue
            if chat.section != "chat":
                result.layout = "full_account"
                if not selector.wanted:
                    raise NeedsChatChoice(str(path))
            if decided.get(chat.index) is None:
                decided[chat.index] = selector.matches(chat)
            if decided[chat.index] is False:
                continue
            if pool is None:
                extracted = _extracted(
                    path, event.offset, lambda e=event: extract_chunk(e.data, rules)
                )
                parts.append((chat, event.offset, to_table(extracted, rules)))
            else:  # (the streaming reader runs without workers: its bytes exist only here)
                future = pool.submit(extract_range, path, event.offset, event.length, rules)
                in_flight.append((chat, event.offset, future))
                while len(in_flight) > 2 * workers:  # bounded: the scanner may not run ahead
                    parts.append(_collect(path, rules, *in_flight.popleft()))
            if progress is not None and event.offset >= 0:
                progress(event.offset)
        while in_flight:
            parts.append(_collect(path, rules, *in_flight.popleft()))
    # every chat is complete now: decide the undecided, attach chat ids
    for chat, offset, normalized in parts:
        if offset >= 0:  # (the streaming reader notes invalid UTF-8 as it reads)
            invalid_utf8.add(offset + o - 1 for o in normalized.invalid_utf8)  # data[0]: "["
        chat.message_count += normalized.read
        keep = decided.get(chat.index)
        if keep is None:  # the chat is complete now: what is still unknown does not match
            keep = bool(selector.matches(chat))
        if not keep:
            continue
        result.read += normalized.read
        result.skipped.update(normalized.skipped)
        if len(normalized.skipped_ids):
            result.skipped_ids.append(normalized.skipped_ids.in_chat(_chat_id(chat)))
        if normalized.table.num_rows:
            result.tables.append(_with_chat_id(normalized.table, chat))
    for index, chat in closed.items():
        keep = decided.get(index)
        if keep is True or (keep is None and selector.matches(chat)):
            result.chats.append(_info(chat))
    result.skipped = +result.skipped  # drop zero counts
    return result


def _collect(
    path: Path, rules: Rules, chat: ChatMeta, offset: int, future: Future[Extracted]
) -> tuple[ChatMeta, int, Normalized]:
    """A worker's chunk as Arrow columns (its decode error placed in the file)."""
    return chat, offset, to_table(_extracted(path, offset, future.result), rules)


def _extracted(path: Path, offset: int, get: Callable[[], Extracted]) -> Extracted:
    try:
        return get()
    except msgspec.DecodeError as exc:
        raise _chunk_error(path, offset, exc) from None


def extract_range(path: Path, offset: int, length: int, rules: Rules) -> Extracted:
    """A worker's job: read one chunk of the file and extract it (see extract_chunk)."""
    return extract_chunk(read_chunk(path, offset, length), rules)


@contextmanager
def _pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes for decoding. They use no Arrow (see training.data.columns), so forking
    is safe; fork also spares them re-importing the caller's main module. They are started
    at once: a process forked later shares (and is charged for) the scanner's buffers."""
    if workers <= 1:
        yield None
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=keep_freed_memory
    ) as pool:
        for _ in range(workers):  # start them all now, before this process reads the file
            pool.submit(int)
        yield pool


def _chat_id(chat: ChatMeta) -> int:
    return chat.chat_id if chat.chat_id is not None else 0


def _with_chat_id(table: pa.Table, chat: ChatMeta) -> pa.Table:
    column = int_array(np.full(table.num_rows, _chat_id(chat), dtype=np.int64))
    return table.set_column(0, "chat_id", column)


def _chunk_error(path: Path, offset: int, exc: msgspec.DecodeError) -> InvalidJSON:
    """Place a chunk's decode error in the file (msgspec counts bytes from the chunk's "[")."""
    reason = _BYTE_IN_ERROR.sub("", str(exc)).strip().rstrip(" -")
    m = _BYTE_IN_ERROR.search(str(exc))
    if offset < 0 or m is None:
        return InvalidJSON(reason, "an unknown position")
    return InvalidJSON(reason, position(path, offset + max(int(m.group(1)) - 1, 0)))


def _input_error(path: Path, exc: LayoutError) -> InputError:
    if isinstance(exc, NotAnExport):
        return InputError(f"{path}: not a Telegram Desktop export ({exc})")
    return InputError(f"{path}: {exc}")


def iter_chat_messages(
    path: Path, chat: str | None = None, rules: Rules | None = None
) -> Iterator[ChatMessage]:
    """Normalized messages of an export one by one, in file order (convenient, not fast).

    ``chat`` picks a chat of a full-account export by name or id, as ``prepare --chat`` does.
    Bad files raise InputError, as in ``prepare``.
    """
    path = Path(path)
    try:
        read = read_export(path, ChatSelector.of([chat] if chat else []), rules or Rules())
    except NeedsChatChoice:
        raise choose_chat_error(path) from None
    for table in read.tables:
        for row in table.to_pylist():
            yield ChatMessage(**row)


def choose_chat_error(path: Path) -> InputError:
    """The error for a full-account export read without ``--chat``: it lists the groups."""
    chats = list_chats(path)
    groups = [c for c in chats if c.is_group] or chats
    listed = "; ".join(c.label for c in groups[:20])
    more = f"; and {len(groups) - 20} more" if len(groups) > 20 else ""
    return InputError(
        f"{path}: a full-account export with {len(chats)} chats; choose one with "
        f"--chat NAME_OR_ID. Group chats: {listed or 'none'}{more}"
    )
