"""Columns for ``prepare``: plain numpy/bytes while gathered, Arrow arrays once assembled.

Worker processes gather a chunk's columns as numpy arrays and UTF-8 bytes (cheap to pickle,
no Arrow in the worker, so forking is safe whatever threads Arrow runs here); this process
wraps them as Arrow arrays without copying.

``pa.array`` is avoided on purpose: the first time it sees a list or a numpy array it imports
pandas (to check for pandas types), half a second of start-up for nothing here. Scalars come
from arrays for the same reason (``pa.scalar`` does the same).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class Strings:
    """Strings as Arrow lays them out: UTF-8 back to back, and where each one starts."""

    offsets: np.ndarray  # (n + 1,) int64
    data: bytes

    @classmethod
    def encode(cls, values: list[str]) -> Strings:
        encoded = list(map(str.encode, values))
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, count=len(encoded)), out=offsets[1:])
        return cls(offsets, b"".join(encoded))

    def to_arrow(self) -> pa.Array:
        n = len(self.offsets) - 1
        data = pa.py_buffer(self.data)
        if self.offsets[-1] < 2**31:
            offsets = pa.py_buffer(self.offsets.astype(np.int32))
            return pa.Array.from_buffers(pa.string(), n, [None, offsets, data])
        large = pa.Array.from_buffers(
            pa.large_string(), n, [None, pa.py_buffer(self.offsets), data]
        )
        return large.cast(pa.string())  # raises only if one chunk really exceeds 2 GiB


@dataclass
class Repetitive:
    """Strings with few distinct values (names, ids): each distinct one stored once."""

    distinct: list[str]
    codes: np.ndarray  # (n,) int32 into distinct

    @classmethod
    def encode(cls, values: list, as_text: Callable[[Any], str] = str) -> Repetitive:
        """Encode ``values``; ``as_text`` turns each distinct raw value into its string."""
        distinct = list(dict.fromkeys(values))
        index = {value: i for i, value in enumerate(distinct)}
        codes = np.fromiter(map(index.__getitem__, values), np.int32, count=len(values))
        return cls([as_text(v) for v in distinct], codes)

    def to_arrow(self, distinct: Callable[[pa.Array], pa.Array] | None = None) -> pa.Array:
        """The column; ``distinct`` (a rewrite, such as cleaning) applies to each value once."""
        values = strings(self.distinct)
        return (distinct(values) if distinct else values).take(int32_array(self.codes))


@dataclass
class Tokens:
    """One field's raw JSON tokens, one per message, as spans of a buffer (empty if absent).

    Strings keep their quotes and escapes: turning a token into a Python string costs more
    than the rest of the work on a message, so only the few that need it are decoded. The
    buffer may hold other fields' tokens between these (:meth:`fields`), in order.
    """

    data: bytes
    starts: np.ndarray  # (n,) int64
    ends: np.ndarray  # (n,) int64; starts[i] <= ends[i] <= starts[i + 1]

    @classmethod
    def fields(cls, rows: Iterable[tuple], count: int, width: int) -> list[Tokens]:
        """The ``width`` fields of ``count`` rows (``msgspec.Raw`` or bytes), copied once into
        one buffer: one pass over the rows for all fields costs half of a pass per field.

        The tokens are joined by NUL bytes, which JSON (and msgspec) never lets through raw.
        """
        data = b"\0".join(chain.from_iterable(rows))
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0)
        if count:
            ends = np.append(ends, len(data))
        if len(ends) != count * width:
            raise ValueError(f"Tokens.fields: expected {count} rows of {width} tokens")
        starts = np.zeros_like(ends)
        starts[1:] = ends[:-1] + 1
        starts, ends = starts.reshape(count, width), ends.reshape(count, width)
        return [cls(data, starts[:, f].copy(), ends[:, f].copy()) for f in range(width)]

    def __len__(self) -> int:
        return len(self.starts)

    def present(self) -> np.ndarray:
        return self.ends > self.starts

    def first_bytes(self) -> np.ndarray:
        """Each token's first byte (0 for an absent one): its JSON type."""
        if not self.data:
            return np.zeros(len(self), dtype=np.uint8)
        raw = np.frombuffer(self.data, dtype=np.uint8)
        first = raw[np.minimum(self.starts, len(raw) - 1)]
        first[~self.present()] = 0
        return first

    def picked(
        self, rows: np.ndarray, trim: int = 0, as_type: pa.DataType | None = None
    ) -> pa.Array:
        """The tokens of ``rows`` as an Arrow binary column (only they are copied).

        The spans and the gaps between them are laid out as alternating elements of one
        array over the shared buffer, so picking a token is picking an even element.
        ``trim`` bytes are cut off both ends of each token (every token must be at least
        ``2 * trim`` long); ``as_type`` (``pa.string()``) reads the bytes as that type
        unchecked, so it is only for spans the caller knows to be valid UTF-8.
        """
        n = len(self)
        kind = as_type or pa.binary()
        offset_type = np.int32
        if len(self.data) >= 2**31:  # (a chunk this large: 32-bit offsets cannot reach)
            kind = pa.large_string() if kind == pa.string() else pa.large_binary()
            offset_type = np.int64
        if n == 0:  # (then there are no rows either)
            empty = [None, pa.py_buffer(np.zeros(1, dtype=offset_type)), pa.py_buffer(b"")]
            return pa.Array.from_buffers(kind, 0, empty)
        bounds = np.empty(2 * n, dtype=offset_type)
        bounds[0::2], bounds[1::2] = self.starts + trim, self.ends - trim
        buffers = [None, pa.py_buffer(bounds), pa.py_buffer(self.data)]
        spans = pa.Array.from_buffers(kind, 2 * n - 1, buffers)
        return spans.take(int_array(2 * np.asarray(rows, dtype=np.int64)))


@dataclass
class RepetitiveTokens:
    """A column of few distinct values (names, ids) as tokens: each distinct one decoded once.

    ``rows`` picks the kept messages; ``as_text`` turns a decoded value (None where the token
    is absent or ``null``) into the column's string.
    """

    tokens: Tokens
    rows: np.ndarray  # int64 indices into the tokens
    as_text: Callable[[Any], str]

    def to_arrow(self, distinct: Callable[[pa.Array], pa.Array] | None = None) -> pa.Array:
        """The column; ``distinct`` (a rewrite, such as cleaning) applies to each value once."""
        encoded = pc.dictionary_encode(self.tokens.picked(self.rows))
        values = strings(
            [
                self.as_text(msgspec.json.decode(t) if t else None)
                for t in encoded.dictionary.to_pylist()
            ]
        )
        return (distinct(values) if distinct else values).take(encoded.indices)


@dataclass
class TokenTexts:
    """A string column from string tokens (their quotes cut off), some values given instead.

    ``rows`` picks the kept messages; ``patched`` (per kept row, or None) marks those whose
    value is in ``patch`` (in order): tokens with escapes, entity lists, a sticker's emoji.
    """

    tokens: Tokens
    rows: np.ndarray  # int64 indices into the tokens
    patched: np.ndarray | None  # bool per row
    patch: Strings

    def to_arrow(self) -> pa.Array:
        """The picked tokens' insides, taken straight from the buffer as strings.

        Every token is a string or a list (at least two bytes, the caller checked) and the
        buffer is valid UTF-8 (checked too), so cutting one byte off each end never splits
        a character: one copy, no slicing pass, no casts.
        """
        inner = self.tokens.picked(self.rows, trim=1, as_type=pa.string())
        if inner.type != pa.string():  # (a buffer over 2 GiB)
            inner = inner.cast(pa.string())
        if self.patched is not None:
            inner = pc.replace_with_mask(inner, bool_array(self.patched), self.patch.to_arrow())
        return inner


@dataclass
class OptionalInts:
    """int64 values and which of them are present (None: all are)."""

    values: np.ndarray
    valid: np.ndarray | None

    @classmethod
    def encode(cls, values: list[int | None]) -> OptionalInts:
        valid = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
        filled = np.fromiter((0 if v is None else v for v in values), np.int64, len(values))
        return cls(filled, None if valid.all() else valid)

    def to_arrow(self) -> pa.Array:
        if self.valid is None:
            return int_array(self.values)
        bits = pa.py_buffer(np.packbits(self.valid, bitorder="little"))
        values = np.ascontiguousarray(self.values, dtype=np.int64)
        return pa.Array.from_buffers(pa.int64(), len(values), [bits, pa.py_buffer(values)])


def strings(values: list[str]) -> pa.Array:
    """A string column from Python strings (no None)."""
    return Strings.encode(values).to_arrow()


def int_array(values: np.ndarray) -> pa.Array:
    """int64 column sharing a numpy array's memory."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def int32_array(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values, dtype=np.int32)
    return pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(values)])


def bool_array(values: np.ndarray) -> pa.Array:
    """Boolean column (Arrow packs bits, least significant first)."""
    bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def string_scalar(value: str) -> pa.Scalar:
    return strings([value])[0]


def bool_scalar(value: bool) -> pa.Scalar:
    return bool_array(np.array([value]))[0]


_NUMPY_TYPES = {pa.int64(): np.int64, pa.int32(): np.int32, pa.int8(): np.int8}


def as_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numpy view (or copy) of an integer or boolean column without nulls."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError("as_numpy: the column has nulls")
    n, offset = len(column), column.offset
    data = column.buffers()[1]
    if column.type == pa.bool_():
        if data is None or n == 0:
            return np.zeros(n, dtype=bool)
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        return bits[offset : offset + n].astype(bool)
    dtype = _NUMPY_TYPES[column.type]
    if data is None or n == 0:
        return np.zeros(n, dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=n, offset=offset * np.dtype(dtype).itemsize)
