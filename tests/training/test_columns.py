"""Raw JSON tokens gathered per field in one pass (``training.data.columns.Tokens``)."""

from __future__ import annotations

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from training.data.columns import Tokens


def test_fields_split_one_buffer_into_per_field_spans() -> None:
    rows = [
        (msgspec.Raw(b'"hi"'), msgspec.Raw(b'"Ann"'), msgspec.Raw()),
        (msgspec.Raw(b"[1, 2]"), msgspec.Raw(), msgspec.Raw(b"null")),
        (b"", b'"Bo"', b'"x"'),
    ]
    text, name, extra = Tokens.fields(iter(rows), len(rows), 3)
    assert [text.data[a:b] for a, b in zip(text.starts, text.ends, strict=True)] == [
        b'"hi"',
        b"[1, 2]",
        b"",
    ]
    assert name.present().tolist() == [True, False, True]
    assert extra.present().tolist() == [False, True, True]  # ``null`` is present
    assert text.first_bytes().tolist() == [ord('"'), ord("["), 0]
    assert name.picked(np.array([2, 0])).to_pylist() == [b'"Bo"', b'"Ann"']
    assert name.picked(np.array([1])).to_pylist() == [b""]


def test_fields_of_no_rows_and_of_ragged_rows() -> None:
    (empty,) = Tokens.fields(iter([]), 0, 1)
    assert len(empty) == 0 and empty.picked(np.zeros(0, np.int64)).to_pylist() == []
    assert empty.first_bytes().tolist() == []
    with pytest.raises(ValueError, match="expected 2 rows of 2 tokens"):
        Tokens.fields(iter([(b"a", b"b"), (b"c",)]), 2, 2)


def test_picked_tokens_trimmed_as_strings() -> None:
    rows = [(msgspec.Raw('"héllo"'.encode()),), (msgspec.Raw(b'"x"'),), (msgspec.Raw(b'""'),)]
    (text,) = Tokens.fields(iter(rows), len(rows), 1)
    inner = text.picked(np.array([2, 0, 1]), trim=1, as_type=pa.string())
    assert inner.type == pa.string()
    assert inner.to_pylist() == ["", "héllo", "x"]
    inner.validate(full=True)
