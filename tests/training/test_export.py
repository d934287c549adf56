"""Reading Telegram exports: every quirk of the format doc, both readers, and bad files."""

from __future__ import annotations

import json
import time
from itertools import pairwise
from pathlib import Path

import pytest

from training.data import export
from training.data.export import (
    WORKER_CHUNK,
    ChatSelector,
    NeedsChatChoice,
    iter_chat_messages,
    list_chats,
    read_export,
)
from training.data.export_layout import JUMP_WINDOW, Chunk, read_chunk, scan
from training.data.messages import ChatMessage, bot_api_chat_id, sender_id_of
from training.data.normalize import Rules, member_keys
from training.errors import InputError

EXPORTS = Path(__file__).parent / "fixtures" / "exports"
SINGLE = EXPORTS / "single_chat.json"
OLD = EXPORTS / "old_format.json"
FULL = EXPORTS / "full_account.json"
CLUB = -1001555000111  # Climbing Club in Bot API form
SAMPLE_EXPORT = Path(__file__).parents[2] / "examples" / "sample_chat" / "result.json"


def messages(path: Path, **kwargs: object) -> dict[int, ChatMessage]:
    return {m.message_id: m for m in iter_chat_messages(path, **kwargs)}  # type: ignore[arg-type]


def rows(read: object) -> list[dict]:
    return read.table().to_pylist()  # type: ignore[attr-defined]


# --- ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "chat_type", "expected"),
    [
        (1555000111, "private_supergroup", -1001555000111),
        (1555000111, "public_supergroup", -1001555000111),
        (1777, "private_channel", -1000000001777),
        (1777, "public_channel", -1000000001777),
        (3030, "private_group", -3030),
        (102, "personal_chat", 102),
        (101, "saved_messages", 101),
        (-1001555000111, "private_supergroup", -1001555000111),  # already Bot API form
    ],
)
def test_bot_api_chat_ids(raw: int, chat_type: str, expected: int) -> None:
    assert bot_api_chat_id(raw, chat_type) == expected


def test_sender_ids_in_both_export_formats() -> None:
    assert sender_id_of("user123") == "user123"
    assert sender_id_of("channel777") == "channel777"
    assert sender_id_of(123) == "user123"  # old exports: a bare integer
    assert sender_id_of(None) == "unknown"


# --- one message at a time: the single-chat fixture ----------------------------------------


def test_kept_messages_are_normalized() -> None:
    got = messages(SINGLE)
    assert sorted(got) == [3, 4, 5, 6, 10, 14, 15, 17, 19, 23, 25]
    assert all(m.chat_id == CLUB for m in got.values())
    assert got[3] == ChatMessage(
        CLUB, 3, "Ann", "user101", 1717243260, "hey all, first session on saturday?", None
    )


def test_text_as_entity_list_is_flattened() -> None:
    got = messages(SINGLE)
    assert got[4].text == "sure 10am works"
    assert got[4].reply_to == 3
    assert got[17].text == "@ben_k check this 🔥"  # mention, text_link, custom_emoji


def test_text_entities_alone_are_read() -> None:
    assert messages(SINGLE)[25].text == "only entities"


def test_whitespace_is_collapsed_to_one_line() -> None:
    assert messages(SINGLE)[14].text == "line one line two with spaces"


def test_sticker_becomes_its_emoji_unless_disabled() -> None:
    assert messages(SINGLE)[5].text == "👍"
    off = read_export(SINGLE, ChatSelector(), Rules(sticker_emoji=False))
    assert 5 not in {r["message_id"] for r in rows(off)}
    assert off.skipped["media_only"] == 6


def test_photo_caption_is_kept() -> None:
    assert messages(SINGLE)[6].text == "look at this wall"


def test_deleted_account_and_anonymous_admin() -> None:
    got = messages(SINGLE)
    assert (got[10].sender, got[10].sender_id) == ("Deleted Account", "user999")
    assert (got[19].sender, got[19].sender_id) == ("Climbing Club", "channel1555000111")


def test_date_unixtime_wins_over_local_date() -> None:
    # the fixture's `date` is the exporter's local time (UTC+2); the truth is date_unixtime
    assert messages(SINGLE)[3].date == 1717243260


def test_every_skip_reason_is_counted() -> None:
    read = read_export(SINGLE, ChatSelector(), Rules())
    assert read.read == 25
    assert dict(read.skipped) == {
        "service": 3,  # create_group, invite_members (with a null member), pin_message
        "unsupported": 1,
        "forwarded": 2,  # forwarded_from, saved_from
        "via_bot": 1,
        "media_only": 5,  # photo, voice, poll, contact, sticker without emoji
        "empty": 2,  # "", and whitespace only
    }
    assert read.read == len(rows(read)) + sum(read.skipped.values())


def test_bots_and_opted_out_members_are_skipped_by_name_or_id() -> None:
    rules = Rules(bots=member_keys(["dan"]), exclude=member_keys(["102"]))
    read = read_export(SINGLE, ChatSelector(), rules)
    senders = {r["sender"] for r in rows(read)}
    assert "Dan" not in senders and "Ben" not in senders
    assert read.skipped["bot"] == 2  # Dan's caption photo and "nice one"
    assert read.skipped["excluded"] == 3  # Ben: 4, 15, 25


def test_scrub_replaces_urls_emails_and_phones() -> None:
    from training.data.normalize import scrub, strings

    out = scrub(
        strings(
            [
                "route: https://maps.example.com/trail/12?x=1 ok",
                "mail carol.p@example.com or call +49 151 2345 6789",
                "office (030) 1234567, www.example.org and t.me/joinchat/abc",
                "see you 2024-01-06 at 10:30, 42 people",
            ]
        )
    ).to_pylist()
    assert out == [
        "route: <url> ok",
        "mail <email> or call <phone>",
        "office <phone>, <url> and <url>",
        "see you 2024-01-06 at 10:30, 42 people",  # dates and small numbers stay
    ]


# --- old exports ------------------------------------------------------------------------------


def test_old_export_integer_ids_and_local_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        got = messages(OLD)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert sorted(got) == [2, 3, 4, 6]
    assert got[2].chat_id == -4242  # basic group
    assert (got[2].sender_id, got[3].sender_id) == ("user5", "user6")
    assert got[3].text == "yes, barely"
    # "2019-05-01T20:01:00" read as this machine's local time (Berlin, UTC+2 in May)
    assert got[2].date == 1556733660


# --- full-account exports ------------------------------------------------------------------


def test_list_chats_of_a_full_export() -> None:
    chats = list_chats(FULL)
    assert [(c.chat_id, c.type, c.name, c.messages) for c in chats] == [
        (102, "personal_chat", "Ben K", 2),
        (101, "saved_messages", None, 1),
        (-3030, "private_group", "Board Games", 4),
        (CLUB, "public_supergroup", "Climbing Club", 4),
        (-1000000001777, "private_channel", "Old Channel", 1),
    ]
    assert [c.name for c in chats if c.is_group] == ["Board Games", "Climbing Club"]
    assert [(c.chat_id, c.messages) for c in list_chats(SINGLE)] == [(CLUB, 25)]


@pytest.mark.parametrize("choice", ["Climbing Club", "climbing club", "1555000111", str(CLUB)])
def test_choose_a_chat_by_name_or_id(choice: str) -> None:
    read = read_export(FULL, ChatSelector.of([choice]), Rules())
    assert read.layout == "full_account"
    assert [c.name for c in read.chats] == ["Climbing Club"]
    assert [r["message_id"] for r in rows(read)] == [10, 11, 12, 13]
    assert {r["chat_id"] for r in rows(read)} == {CLUB}


def test_full_export_without_a_choice() -> None:
    with pytest.raises(NeedsChatChoice):
        read_export(FULL, ChatSelector(), Rules())
    with pytest.raises(InputError, match=r"--chat.*Board Games \(-3030\).*Climbing Club"):
        list(iter_chat_messages(FULL))


# --- the two readers agree ------------------------------------------------------------------


def reformat(src: Path, dst: Path, **dump: object) -> Path:
    dst.write_text(json.dumps(json.loads(src.read_text()), ensure_ascii=False, **dump))
    return dst


@pytest.mark.parametrize("source", [SINGLE, OLD, FULL])
def test_minified_file_is_streamed_with_the_same_result(source: Path, tmp_path: Path) -> None:
    chats = ["Climbing Club"] if source == FULL else []
    fast = read_export(source, ChatSelector.of(chats), Rules())
    minified = reformat(source, tmp_path / "min.json", separators=(",", ":"))
    slow = read_export(minified, ChatSelector.of(chats), Rules())
    assert (fast.reader, slow.reader) == ("fast", "streaming")
    assert rows(slow) == rows(fast)
    assert slow.skipped == fast.skipped
    assert list_chats(minified) == list_chats(source)


def test_other_indentation_still_uses_the_fast_reader(tmp_path: Path) -> None:
    wide = reformat(SINGLE, tmp_path / "wide.json", indent=4)
    read = read_export(wide, ChatSelector(), Rules())
    assert read.reader == "fast"
    assert rows(read) == rows(read_export(SINGLE, ChatSelector(), Rules()))


def test_chunks_hold_whole_messages_whatever_the_block_size() -> None:
    for block_size in (64, 1000, 1 << 20):
        chunks = [
            e for e in scan(SINGLE, count=True, block_size=block_size) if isinstance(e, Chunk)
        ]
        assert sum(c.count for c in chunks) == 25
        ids = [m["id"] for c in chunks for m in json.loads(c.data)]
        assert ids == list(range(1, 26))


def _ids_of_chunks_read_back(path: Path, block_size: int) -> list[int]:
    """Scan as for workers (no copies: each chunk's end found a block ahead), read back."""
    chunks = [e for e in scan(path, copy=False, block_size=block_size) if isinstance(e, Chunk)]
    for before, after in pairwise(chunks):
        assert before.offset + before.length < after.offset  # in order, no overlap
    return [m["id"] for c in chunks for m in json.loads(read_chunk(path, c.offset, c.length))]


def test_chunks_found_without_reading_them_hold_every_message_once() -> None:
    expected = [m["id"] for m in json.loads(SAMPLE_EXPORT.read_text())["messages"]]
    for block_size in (100_000, 300_000, 1 << 20, 1 << 23):
        assert _ids_of_chunks_read_back(SAMPLE_EXPORT, block_size) == expected


def test_messages_longer_than_the_window_are_read_through(tmp_path: Path) -> None:
    data = json.loads(SINGLE.read_text())
    for i, m in enumerate(data["messages"]):
        if i % 3 == 0:  # far longer than the window a jump reads
            m["text"] = f"long {i} " + "x" * (2 * JUMP_WINDOW)
    long = tmp_path / "long.json"
    long.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    expected = [m["id"] for m in data["messages"]]
    for block_size in (JUMP_WINDOW + 1000, 3 * JUMP_WINDOW, 5 * JUMP_WINDOW):
        assert _ids_of_chunks_read_back(long, block_size) == expected


# Workers' chunks of 150 kB: each chunk's end is found by a jump (see export_layout).
SMALL_WORKER_CHUNKS = pytest.mark.parametrize("worker_chunk", [WORKER_CHUNK, 150_000])


@SMALL_WORKER_CHUNKS
def test_worker_processes_give_the_same_rows(
    worker_chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "WORKER_CHUNK", worker_chunk)
    one = read_export(SAMPLE_EXPORT, ChatSelector(), Rules(), workers=1)
    two = read_export(SAMPLE_EXPORT, ChatSelector(), Rules(), workers=2)
    assert one.table().equals(two.table())
    assert one.skipped == two.skipped and one.read == two.read == 6021


@SMALL_WORKER_CHUNKS
def test_bad_json_found_by_a_worker_says_where(
    tmp_path: Path, worker_chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "WORKER_CHUNK", worker_chunk)
    lines = SAMPLE_EXPORT.read_text(encoding="utf-8").splitlines()
    target = next(i for i in range(40_000, len(lines)) if lines[i].startswith('   "from":'))
    lines[target] = lines[target].replace('"from":', '"from"')
    broken = tmp_path / "broken.json"
    broken.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(InputError, match=rf"invalid JSON at line {target + 1}, column"):
        read_export(broken, ChatSelector(), Rules(), workers=2)


def test_a_message_with_odd_field_types_is_skipped_not_fatal(tmp_path: Path) -> None:
    data = json.loads(SINGLE.read_text())
    data["messages"][2]["id"] = "three"  # message 3
    data["messages"][3]["from_id"] = {"odd": True}  # message 4
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    read = read_export(odd, ChatSelector(), Rules())
    assert read.skipped["malformed"] == 2
    assert {r["message_id"] for r in rows(read)} == {5, 6, 10, 14, 15, 17, 19, 23, 25}


@pytest.mark.parametrize("field", ["id", "date_unixtime", "reply_to_message_id"])
def test_a_number_beyond_64_bits_is_a_malformed_message(tmp_path: Path, field: str) -> None:
    # the columns are int64: such a number used to stop prepare with an OverflowError
    data = json.loads(SINGLE.read_text())
    data["messages"][4][field] = 2**70 if field != "date_unixtime" else str(2**70)  # message 5
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    read = read_export(odd, ChatSelector(), Rules())
    assert read.skipped["malformed"] == 1
    assert {r["message_id"] for r in rows(read)} == {3, 4, 6, 10, 14, 15, 17, 19, 23, 25}


# --- bad files --------------------------------------------------------------------------------


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.json: no such file"):
        read_export(tmp_path / "missing.json", ChatSelector(), Rules())
    with pytest.raises(InputError, match="is a directory"):
        list_chats(tmp_path)


def test_invalid_json_says_where(tmp_path: Path) -> None:
    text = SINGLE.read_text().splitlines()
    text[41] = text[41].replace('"from":', '"from"')  # line 42, inside message 3
    broken = tmp_path / "broken.json"
    broken.write_text("\n".join(text))
    with pytest.raises(InputError) as info:
        read_export(broken, ChatSelector(), Rules())
    assert "broken.json: invalid JSON at line 42" in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_json_in_the_header_says_where(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{\n "name": "x",\n "type" "private_group",\n "messages": []\n}\n')
    with pytest.raises(InputError, match=r"invalid JSON at line 3, column 9"):
        list_chats(broken)


def test_truncated_file(tmp_path: Path) -> None:
    cut = tmp_path / "cut.json"
    cut.write_bytes(SINGLE.read_bytes()[:3000])
    with pytest.raises(InputError, match=r"cut\.json: invalid JSON"):
        read_export(cut, ChatSelector(), Rules())


@pytest.mark.parametrize(
    "content",
    [
        '{"hello": "world"}',
        "[1, 2, 3]",
        '{"messages": "none"}',
        '{"chats": {"list": [{"name": "x", "messages": [1, 2]}]}}',
    ],
)
def test_json_that_is_not_an_export(content: str, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(content)
    with pytest.raises(InputError, match=r"other\.json: not a Telegram Desktop export"):
        read_export(other, ChatSelector(), Rules())


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty\.json: invalid JSON.*empty"):
        list_chats(empty)


# --- bytes that are not UTF-8 -----------------------------------------------------------------


def _damaged(tmp_path: Path, minified: bool = False) -> tuple[Path, list[int]]:
    """The single-chat fixture with two damaged messages; the offsets of the bad bytes."""
    text = SINGLE.read_text(encoding="utf-8")
    if minified:
        text = json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
    data = text.encode("utf-8")
    cut_emoji = "🔥".encode()[:2]  # an emoji cut in half, then more text
    data = data.replace(b"first session", b"fi\xffrst session", 1)
    data = data.replace(b"only entities", b"only " + cut_emoji + b" entities", 1)
    offsets = [data.index(b"\xff"), data.index(cut_emoji + b" entities")]
    path = tmp_path / "damaged.json"
    path.write_bytes(data)
    return path, offsets


@pytest.mark.parametrize(("minified", "workers"), [(False, 1), (False, 2), (True, 1)])
def test_invalid_utf8_is_read_as_replacement_characters_and_placed(
    minified: bool, workers: int, tmp_path: Path
) -> None:
    from training.data.utf8 import InvalidUtf8

    path, offsets = _damaged(tmp_path, minified)
    read = read_export(path, ChatSelector(), Rules(), workers=workers)
    assert read.reader == ("streaming" if minified else "fast")
    got = {r["message_id"]: r["text"] for r in rows(read)}
    assert got[3] == "hey all, fi\ufffdrst session on saturday?"
    assert got[25] == "only \ufffd entities"
    assert read.read == 25  # nothing lost around the damage
    assert read.invalid_utf8.count >= 2 and read.invalid_utf8.offsets[0] == offsets[0]
    (warning,) = read.warnings()
    assert f"first at byte {offsets[0]} (line " in warning and "U+FFFD" in warning
    # `friendbot chats` reads the same file alike: it lists it and finds the same bytes
    found = InvalidUtf8()
    assert [c.messages for c in list_chats(path, found)] == [25]
    assert found.to_dict() == read.invalid_utf8.to_dict()


def test_utf8_check_agrees_with_python_s_decoder() -> None:
    """``is_utf8`` decodes only the non-ASCII runs: it must judge like a whole decode."""
    import codecs
    import random

    from training.data.utf8 import is_utf8

    def whole(data: bytes) -> bool:
        try:
            codecs.utf_8_decode(data, "strict", True)
        except UnicodeDecodeError:
            return False
        return True

    pieces = [b"a", b" ", b'"', "é".encode(), "\xa0".encode(), "🔥".encode(), "\u2028".encode()]
    pieces += [b"\xed\xa0\x80", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf4\x90\x80\x80", b"\xff", b"\x80"]
    pieces += ["🔥".encode()[:2], "é".encode()[:1], b"\xf5\x80\x80\x80"]
    rng = random.Random(15)
    for _ in range(20_000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        if data and rng.random() < 0.3:
            k = rng.randrange(len(data))
            data = data[:k] + bytes([rng.randrange(256)]) + data[k + 1 :]
        assert is_utf8(data) == whole(data), data
        assert is_utf8(memoryview(data)) == whole(data), data
    assert is_utf8(b"") and is_utf8(b"plain") and not is_utf8(b"plain\xff")


def test_invalid_utf8_in_a_chat_name(tmp_path: Path) -> None:
    data = SINGLE.read_bytes().replace(b'"Climbing Club"', b'"Climbing \xc3Club"', 1)
    path = tmp_path / "name.json"
    path.write_bytes(data)
    read = read_export(path, ChatSelector(), Rules())
    assert [c.name for c in read.chats] == ["Climbing \ufffdClub"]
    bad = data.index(b"\xc3Club")
    assert f"at byte {bad} " in read.warnings()[0]


def test_a_bad_byte_outside_any_string_is_still_invalid_json(tmp_path: Path) -> None:
    lines = SINGLE.read_bytes().split(b"\n")
    lines[41] = lines[41].replace(b'"from":', b'"from":\xff')  # line 42, inside message 3
    path = tmp_path / "broken.json"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(InputError, match=r"broken\.json: invalid JSON at line 42"):
        read_export(path, ChatSelector(), Rules())


def test_skipped_messages_leave_their_ids_and_reasons() -> None:
    from training.data.messages import SKIP_CODES

    read = read_export(SINGLE, ChatSelector(), Rules(bots=member_keys(["dan"])))
    skipped = {}
    for part in read.skipped_ids:
        assert set(part.chat_id.tolist()) == {CLUB}
        for mid, code in zip(part.message_id.tolist(), part.code.tolist(), strict=True):
            skipped[mid] = SKIP_CODES[code]
    counts: dict[str, int] = {}
    for reason in skipped.values():
        counts[reason] = counts.get(reason, 0) + 1
    assert counts == dict(read.skipped)  # every skip but id-less malformed ones has its id
    assert skipped[1] == "service" and "bot" in skipped.values()
