"""The fast columnar reading of messages gives exactly what the per-message reading gives.

``extract_lean`` decides fates per column and leaves senders and texts as raw JSON tokens;
``extract`` decodes every message into Python objects and knows every odd case. Both must
produce the same rows, skip counts and skipped ids on every chunk the lean one accepts, and
``prepare`` must write the same pairs as before the lean reader existed: the digests below
were taken from the per-message implementation's output (rows of the three parquet files
and ``stats.json`` without timings and directories).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.training.fixtures.quirky_export import write_quirky_export
from training.data.export_layout import Chunk, scan
from training.data.normalize import Rules, decode, extract, extract_chunk, extract_lean, to_table
from training.data.options import PrepareOptions
from training.data.prepare import prepare

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_chat" / "result.json"
RULES = [
    Rules(),
    Rules(sticker_emoji=False, scrub=True),
    Rules(exclude=frozenset({"fay", "user101"}), bots=frozenset({"ben"})),
]


def _chunks(path: Path, block_size: int = 1 << 16) -> list[bytes]:
    return [e.data for e in scan(path, block_size=block_size) if isinstance(e, Chunk)]


@pytest.fixture(scope="module")
def quirky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_quirky_export(tmp_path_factory.mktemp("quirky") / "result.json")


@pytest.mark.parametrize("rules", RULES)
def test_lean_and_per_message_reading_agree_on_every_chunk(quirky: Path, rules: Rules) -> None:
    chunks = _chunks(quirky) + _chunks(SAMPLE, 1 << 20)
    assert len(chunks) > 10
    for data in chunks:
        lean = extract_lean(data, rules)
        assert lean is not None  # the usual shapes all take the fast way
        messages, malformed = decode(data)
        assert malformed == 0
        slow = extract(messages, rules, data)
        fast_t, slow_t = to_table(lean, rules), to_table(slow, rules)
        assert fast_t.table.equals(slow_t.table)
        assert (fast_t.read, list(fast_t.skipped.items())) == (
            slow_t.read,
            list(slow_t.skipped.items()),
        )
        for name in ("message_id", "code"):
            fast_ids = getattr(fast_t.skipped_ids, name).tolist()
            assert fast_ids == getattr(slow_t.skipped_ids, name).tolist()


def test_lean_reading_agrees_on_spelled_types_and_not_own_fields() -> None:
    base = '"date_unixtime": "100", "from": "A\\\\B", "from_id": "user7"'
    rows = [
        '{"id": 1, "type": "messag\\u0065", ' + base + ', "text": "escaped type"}',
        '{"id": 2, ' + base + ', "text": "no type at all"}',
        '{"id": 3, "type": "servic\\u0065", ' + base + ', "text": ""}',
        '{"id": 4, "type": "unsupported", ' + base + ', "text": "x"}',
        '{"id": 5, "type": "message", ' + base + ', "forwarded_from": null, "text": "f"}',
        '{"id": 6, "type": "message", ' + base + ', "saved_from": "S", "text": "s"}',
        '{"id": 7, "type": "message", ' + base + ', "via_bot": "@b", "text": "v"}',
        '{"id": 8, "type": "message", ' + base + ', "text": "a \\\\ b"}',
        '{"id": 9, ' + base + ', "via_bot": "@b", "forwarded_from": "F", "text": "both"}',
        '{"id": 10, ' + base + ', "reply_to_message_id": null, "text": "null reply"}',
        '{"id": 11, ' + base + ', "reply_to_message_id": 8, "text": "a reply"}',
    ]
    data = ("[" + ", ".join(rows) + "]").encode()
    lean = extract_lean(data, Rules())
    assert lean is not None
    messages, _ = decode(data)
    fast, slow = to_table(lean, Rules()), to_table(extract(messages, Rules(), data), Rules())
    assert fast.table.equals(slow.table)
    assert fast.table["message_id"].to_pylist() == [1, 2, 8, 10, 11]
    assert fast.table["reply_to"].to_pylist() == [None, None, None, None, 8]
    assert fast.table["text"].to_pylist()[2] == "a \\ b"
    assert fast.skipped == slow.skipped
    assert fast.skipped_ids.code.tolist() == slow.skipped_ids.code.tolist()
    assert extract_lean(data.replace(b'"unsupported"', b"3"), Rules()) is None


def test_unusual_chunks_are_left_to_the_per_message_reading(tmp_path: Path) -> None:
    damaged = write_quirky_export(tmp_path / "damaged.json", n_messages=300, damage=True)
    data = next(d for d in _chunks(damaged, 1 << 20) if b"\xff" in d)
    assert extract_lean(data, Rules()) is None
    assert extract_chunk(data, Rules()).invalid_utf8  # read anyway, with U+FFFD
    old = b'[{"id": 1, "type": "message", "date": "2020-01-01T10:00:00", "from": "A", '
    old += b'"from_id": 7, "text": "hi"}]'
    assert extract_lean(old, Rules()) is None  # no date_unixtime, integer sender id
    odd = b'[{"id": 1, "date_unixtime": "5", "from": "A", "from_id": "user7", "text": 5}]'
    assert extract_lean(odd, Rules()) is None
    assert extract_chunk(odd, Rules()).skipped["malformed"] == 1
    # a type Telegram does not write: the lean reader knows only its three, the other way
    # reads it (and skips it as a service message)
    other = b'[{"id": 1, "type": "poll_vote", "date_unixtime": "5", "from": "A", '
    other += b'"from_id": "user7", "text": "x"}, {"id": 2, "date_unixtime": "6", '
    other += b'"from": "A", "from_id": "user7", "text": "kept"}]'
    assert extract_lean(other, Rules()) is None
    read = to_table(extract_chunk(other, Rules()), Rules())
    assert read.skipped["service"] == 1 and read.table["text"].to_pylist() == ["kept"]


def digest(out: Path) -> str:
    """The rows of the three splits and the stats (without timing and paths), hashed."""
    stats = json.loads((out / "stats.json").read_text())
    stats.pop("seconds")
    # added later with ``prepare --memory`` (off here): the pairs must stay the same
    assert stats.pop("memory") is None and stats["options"].pop("memory") is False
    for f in stats["files"]:
        name = Path(f["path"]).name
        stats["warnings"] = [w.replace(f["path"], name) for w in stats["warnings"]]
        f["path"] = name
    parts = [json.dumps(stats, sort_keys=True)]
    for split in ("train", "validation", "test"):
        rows = pq.read_table(out / f"{split}.parquet").to_pylist()
        parts.append(json.dumps(rows, default=str, ensure_ascii=False))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


CASES = {
    "sample": (["sample"], {}),
    "quirky": (["quirky"], {}),
    "damaged": (["damaged"], {}),
    "options": (
        ["quirky"],
        dict(
            merge_bursts=90,
            scrub=True,
            exclude=("Fay",),
            bot=("user102",),
            speakers=("Ann", "Cleo Q", "Émile"),
            context=4,
            min_context=0,
            sticker_emoji=False,
            session_gap=30,
        ),
    ),
    "two_files": (["quirky", "quirky2", "damaged"], dict(workers=2)),
}
# Taken from the per-message reader's output (before ``extract_lean``); a deliberate change
# of what prepare writes updates these, nothing else should.
EXPECTED = {
    "sample": "bb594e6a51f57d776c6e43eae0cd65b1f927d408cae94cdc912459815e0b7228",
    "quirky": "ea37f6e54f964e7b9dd1a30c3a644e36d16412ec9c6572310712cd862831ff63",
    "damaged": "3d1ff23080705e1f25c9e8b31fa2f83fb808cdad657f44c50fa516cc7d916892",
    "options": "8b7902159ef85ffda0cc7b240db19d22ae10b802e58f2eb404bae3ee58d1319e",
    "two_files": "3cb8e1967b34c2000d282bc9fc3f9a761175fda48d51da4caf87956ed2bfda5f",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prepare_writes_the_same_pairs_as_the_per_message_reader(case: str, tmp_path: Path) -> None:
    inputs = {
        "sample": SAMPLE,
        "quirky": write_quirky_export(tmp_path / "quirky.json"),
        "quirky2": write_quirky_export(tmp_path / "quirky2.json", n_messages=2000, seed=1),
        "damaged": write_quirky_export(tmp_path / "quirky_damaged.json", damage=True),
    }
    files, options = CASES[case]
    out = tmp_path / "out"
    prepare([inputs[f] for f in files], out, PrepareOptions(**options))
    assert digest(out) == EXPECTED[case]
