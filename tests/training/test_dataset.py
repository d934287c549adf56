"""``prepare``: files, split without leakage, privacy options, extra messages, bad input."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from training.data.messages import ChatMessage
from training.data.prepare import PrepareOptions, prepare
from training.errors import InputError

EXPORTS = Path(__file__).parent / "fixtures" / "exports"
SAMPLE = Path(__file__).parents[2] / "examples" / "sample_chat" / "result.json"
COLUMNS = ["conversation", "response", "sender", "sender_id", "chat_id", "session_id",
           "message_id", "date"]  # fmt: skip
CLUB = -1001555000111


def load(out: Path) -> dict[str, pd.DataFrame]:
    return {s: pd.read_parquet(out / f"{s}.parquet") for s in ("train", "validation", "test")}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("sample") / "data"
    return out, prepare([SAMPLE], out, PrepareOptions())


def test_output_files_and_columns(sample: tuple[Path, object]) -> None:
    out, stats = sample
    splits = load(out)
    for name, frame in splits.items():
        assert list(frame.columns) == COLUMNS
        assert len(frame) == stats.pairs[name] > 0  # type: ignore[attr-defined]
    train = splits["train"]
    assert str(train["date"].dt.tz) == "UTC"
    assert train["chat_id"].unique().tolist() == [-1001712345678]
    row = train.iloc[0]
    assert row["response"] == f"{row['sender']}: " + row["response"].split(": ", 1)[1]
    assert all(line.count(": ") >= 1 for line in row["conversation"].split("\n"))


def test_stats_json_matches_the_files(sample: tuple[Path, object]) -> None:
    out = sample[0]
    saved = json.loads((out / "stats.json").read_text())
    assert saved["messages_read"] == 6021
    assert saved["messages_read"] == saved["messages_kept"] + sum(saved["skipped"].values())
    assert saved["pairs"] == {k: len(v) for k, v in load(out).items()}
    assert sum(saved["pairs_per_speaker"].values()) == sum(saved["pairs"].values())
    assert saved["sessions"]["total"] == sum(saved["sessions"][s] for s in saved["pairs"])
    assert saved["pairs_skipped"]["short_context"] == saved["sessions"]["total"]  # openers


def test_split_by_session_without_leakage(sample: tuple[Path, object]) -> None:
    splits = load(sample[0])
    sessions = {name: set(frame["session_id"]) for name, frame in splits.items()}
    assert not sessions["train"] & sessions["validation"]
    assert not sessions["train"] & sessions["test"]
    assert not sessions["validation"] & sessions["test"]


def test_context_stays_in_its_session(sample: tuple[Path, object]) -> None:
    frame = pd.concat(load(sample[0]).values())
    for _, session in frame.groupby("session_id"):
        lines = {line for c in session["conversation"] for line in c.split("\n")}
        assert session["conversation"].str.count("\n").max() <= 9  # at most 10 turns
        # every context line is a turn of this session: a response, the opener, or a line of
        # the deleted account (context, never a response)
        others = {line for line in lines - set(session["response"])}
        assert len({line for line in others if not line.startswith("Deleted Account: ")}) <= 1


def test_same_input_same_output(sample: tuple[Path, object], tmp_path: Path) -> None:
    again = tmp_path / "again"
    prepare([SAMPLE], again, PrepareOptions())
    for name, frame in load(again).items():
        pd.testing.assert_frame_equal(frame, load(sample[0])[name])


def test_pairs_of_the_fixture_chat(tmp_path: Path) -> None:
    out = tmp_path / "club"
    stats = prepare([EXPORTS / "single_chat.json"], out, PrepareOptions(split=(1.0, 0.0, 0.0)))
    train = load(out)["train"].sort_values("message_id")
    assert train["response"].tolist() == [
        "Ben: sure 10am works",
        "Cleo: 👍",
        "Dan: look at this wall",
        # message 10 (a deleted account) is no one to imitate: context only, no pair
        # message 14 opens the second session: no pair
        "Ben: edited text",
        "Ann: @ben_k check this 🔥",
        # message 19 (an anonymous admin posting as the group): context only, no pair
        "Dan: nice one",
        "Ben: only entities",
    ]
    assert stats.pairs_skipped["not_a_person"] == 2
    assert stats.speakers == 4  # Ann, Ben, Cleo, Dan
    assert train["conversation"].str.contains("Climbing Club: Admin notice").any()
    last = train.iloc[-1]["conversation"].split("\n")
    assert last[0] == "Ann: line one line two with spaces"  # not the first session's lines
    assert len(last) == 5


def test_context_length_and_min_context(tmp_path: Path) -> None:
    out = tmp_path / "short"
    options = PrepareOptions(context=2, min_context=2, split=(1.0, 0.0, 0.0))
    stats = prepare([EXPORTS / "single_chat.json"], out, options)
    train = load(out)["train"]
    assert train["conversation"].str.count("\n").eq(1).all()  # exactly two lines
    assert stats.pairs_skipped["short_context"] == 4  # two first turns of each session


def test_speakers_limit_responses_not_contexts(tmp_path: Path) -> None:
    out = tmp_path / "ben"
    options = PrepareOptions(speakers=("Ben",), split=(1.0, 0.0, 0.0))
    stats = prepare([EXPORTS / "single_chat.json"], out, options)
    train = load(out)["train"]
    assert set(train["sender"]) == {"Ben"}
    assert train["conversation"].str.contains("Ann: ").any()
    assert stats.pairs_skipped["not_speaker"] == 6


def test_excluded_member_vanishes_from_contexts_and_responses(tmp_path: Path) -> None:
    out = tmp_path / "optout"
    stats = prepare([SAMPLE], out, PrepareOptions(exclude=("Carol",)))
    frame = pd.concat(load(out).values())
    assert "Carol" not in set(frame["sender"])
    assert not frame["conversation"].str.contains("Carol: ").any()
    assert stats.skipped["excluded"] > 1000


def test_scrub_reaches_the_dataset(tmp_path: Path) -> None:
    out = tmp_path / "scrubbed"
    prepare([SAMPLE], out, PrepareOptions(scrub=True))
    frame = pd.concat(load(out).values())
    text = "\n".join(frame["conversation"]) + "\n".join(frame["response"])
    assert "https://" not in text and "@example.com" not in text
    assert "<url>" in text and "<email>" in text


def test_overlapping_exports_are_deduplicated(tmp_path: Path) -> None:
    out = tmp_path / "both"
    a, b = EXPORTS / "overlap_a.json", EXPORTS / "overlap_b.json"
    stats = prepare([a, b], out, PrepareOptions(split=(1.0, 0.0, 0.0), min_context=0))
    train = load(out)["train"].sort_values("message_id")
    assert train["message_id"].tolist() == list(range(1, 10))
    assert stats.skipped["duplicate"] == 3
    assert "Dan: i have chalk" in train["response"].tolist()  # the first file's copy wins


def test_extra_messages_join_the_same_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "extra"
    later = 1717243200 + 10 * 60  # right after the overlap fixture's messages
    extra = [
        ChatMessage(CLUB, 6, "Ann", "user101", later, "duplicate of the export"),
        ChatMessage(CLUB, 100, "Ann", "user101", later + 10, "back   from the gym"),
        ChatMessage(CLUB, 101, "Ben", "user102", later + 20, "how was it"),
        ChatMessage(CLUB, 102, "Ben", "user102", later + 30, "   "),
    ]
    options = PrepareOptions(split=(1.0, 0.0, 0.0), exclude=("user102",))
    stats = prepare([EXPORTS / "overlap_a.json"], out, options, extra_messages=extra)
    train = load(out)["train"].sort_values("message_id")
    assert stats.extra_messages == 4
    assert stats.skipped["duplicate"] == 1 and stats.skipped["empty"] == 1
    assert train["response"].tolist()[-1] == "Ann: back from the gym"
    assert not train["conversation"].str.contains("Ben: ").any()


def test_only_extra_messages(tmp_path: Path) -> None:
    out = tmp_path / "db"
    extra = [
        ChatMessage(-42, i, "Ann" if i % 2 else "Ben", "user1", 1000 + i, f"m{i}")
        for i in range(1, 6)
    ]
    stats = prepare([], out, PrepareOptions(split=(1.0, 0.0, 0.0)), extra_messages=extra)
    assert stats.pairs["train"] == 4


def test_cycle_collector_is_off_while_preparing_and_restored_after(tmp_path: Path) -> None:
    seen: list[bool] = []

    def extra(valid: bool) -> Iterator[ChatMessage]:
        seen.append(gc.isenabled())  # read by prepare, in the middle of its work
        for i in range(1, 6 if valid else 1):
            yield ChatMessage(-42, i, "Ann" if i % 2 else "Ben", "user1", 1000 + i, f"m{i}")

    options = PrepareOptions(split=(1.0, 0.0, 0.0))
    assert gc.isenabled()
    prepare([], tmp_path / "a", options, extra_messages=extra(True))
    assert seen == [False] and gc.isenabled()
    with pytest.raises(InputError):  # no messages at all: an error on the way
        prepare([], tmp_path / "b", options, extra_messages=extra(False))
    assert seen == [False, False] and gc.isenabled()
    gc.disable()
    try:  # a caller that had it off keeps it off
        prepare([], tmp_path / "c", options, extra_messages=extra(True))
        assert not gc.isenabled()
    finally:
        gc.enable()


# --- errors leave the output directory alone ----------------------------------------------


def test_no_usable_messages_leaves_out_dir_untouched(tmp_path: Path) -> None:
    only_service = tmp_path / "service.json"
    data = json.loads((EXPORTS / "single_chat.json").read_text())
    data["messages"] = [m for m in data["messages"] if m["type"] == "service"]
    only_service.write_text(json.dumps(data))
    out = tmp_path / "data"
    prepare([SAMPLE], out, PrepareOptions())  # an earlier, good dataset
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(
        InputError, match=r"service\.json: no usable messages \(3 read; skipped: 3 service\)"
    ):
        prepare([only_service], out, PrepareOptions())
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_no_pairs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no pairs"):
        prepare([EXPORTS / "single_chat.json"], tmp_path / "x", PrepareOptions(speakers=("Zed",)))
    assert not (tmp_path / "x").exists()


def test_refuses_to_replace_a_directory_that_is_not_a_dataset(tmp_path: Path) -> None:
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "diary.txt").write_text("dear diary")
    with pytest.raises(InputError, match="not a `friendbot prepare` output"):
        prepare([SAMPLE], precious, PrepareOptions())
    assert (precious / "diary.txt").read_text() == "dear diary"


def test_unknown_chat_lists_the_chats(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no chat matches --chat Nope; chats: .*Climbing Club"):
        prepare([EXPORTS / "full_account.json"], tmp_path / "x", PrepareOptions(chat=("Nope",)))


@pytest.mark.parametrize(
    "bad",
    [
        {"context": 0},
        {"min_context": 11},
        {"session_gap": 0},
        {"merge_bursts": -1},
        {"split": (0.5, 0.5, 0.5)},
        {"split": (0.0, 0.5, 0.5)},
        {"workers": -1},
    ],
)
def test_impossible_options(bad: dict) -> None:
    with pytest.raises((InputError, ValueError)):
        PrepareOptions(**bad)


def test_options_accept_single_values_and_lists() -> None:
    options = PrepareOptions(chat="Weekend Crew", exclude=["Bob", "user5"], speakers=("a,b",))  # type: ignore[arg-type]
    assert options.chat == ("Weekend Crew",)
    assert options.exclude == ("Bob", "user5")
    assert options.speakers == ("a", "b")


# --- duplicates: the first file's copy decides, skipped or not --------------------------------


def _club_export(path: Path, messages: list[dict]) -> Path:
    """A single-chat export of the Climbing Club holding ``messages``."""
    data = {"name": "Climbing Club", "type": "private_supergroup", "id": 1555000111,
            "messages": messages}  # fmt: skip
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    return path


def _message(mid: int, sender: str, text: str, **fields: object) -> dict:
    return {
        "id": mid, "type": "message", "date_unixtime": str(1717243200 + 60 * mid),
        "from": sender, "from_id": f"user{100 + len(sender)}", "text": text, **fields,
    }  # fmt: skip


def test_a_message_skipped_in_the_first_file_is_not_kept_from_the_second(tmp_path: Path) -> None:
    """Export A has message 3 as a bare photo; a later export B has it captioned."""
    common = [_message(1, "Ann", "who is in"), _message(2, "Ben", "me")]
    service = {"id": 5, "type": "service", "date_unixtime": "1717243500", "action": "pin_message"}
    a = _club_export(tmp_path / "a.json", [
        *common, _message(3, "Cleo", "", photo="(File not included.)"), service,
        _message(4, "Ann", "nice")])  # fmt: skip
    b = _club_export(tmp_path / "b.json", [
        *common, _message(3, "Cleo", "look at this wall", photo="(File not included.)"), service,
        _message(4, "Ann", "nice"), _message(6, "Ben", "see you")])  # fmt: skip
    out = tmp_path / "both"
    stats = prepare([a, b], out, PrepareOptions(split=(1.0, 0.0, 0.0), min_context=0))
    train = load(out)["train"].sort_values("message_id")
    assert train["message_id"].tolist() == [1, 2, 4, 6]  # 3 stays skipped: file A comes first
    assert not train["response"].str.contains("look at this wall").any()
    # every message read is counted once: B's copies of 1-5 are duplicates, whatever they were
    assert stats.skipped == {"duplicate": 5, "media_only": 1, "service": 1}
    assert stats.messages_read == 11 == stats.messages_kept + sum(stats.skipped.values())

    reverse = prepare([b, a], tmp_path / "reverse", PrepareOptions(split=(1.0, 0.0, 0.0)))
    assert reverse.skipped == {"duplicate": 5, "service": 1}  # B first: its caption is kept
    assert "Cleo" in reverse.pairs_per_speaker


# --- who may be imitated ----------------------------------------------------------------------


def _export(path: Path, chat_type: str, senders: list[tuple[str | None, str]]) -> Path:
    """A single chat of ``chat_type`` whose messages come from (from, from_id) in turn."""
    messages = [
        {"id": i, "type": "message", "date_unixtime": str(1717243200 + 60 * i), "from": name,
         "from_id": from_id, "text": f"post number {i}"}
        for i, (name, from_id) in enumerate(senders * 4, start=1)
    ]  # fmt: skip
    data = {"name": "Some Chat" if chat_type != "saved_messages" else None, "type": chat_type,
            "id": 4242, "messages": messages}  # fmt: skip
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    return path


@pytest.mark.parametrize(
    ("chat_type", "senders", "expected"),
    [
        ("public_channel", [("Some Chat", "channel4242")], r"1 speaker\(s\) in chat Some Chat "
         r"\(public_channel\): Some Chat"),
        ("saved_messages", [("Ann", "user101")], r"1 speaker\(s\) in chat \(no name\) "
         r"\(saved_messages\): Ann"),
        # a bot chat's id is the bot's: its answers are no person's
        ("bot_chat", [("Ann", "user101"), ("Weather Bot", "user4242")], r"1 speaker\(s\).*"
         r"\(bot_chat\): Ann"),
        ("private_supergroup", [("Ann", "user101"), (None, "user999")], r"1 speaker\(s\).*: Ann"),
    ],
)  # fmt: skip
def test_fewer_than_two_people_is_refused_unless_allowed(
    chat_type: str, senders: list, expected: str, tmp_path: Path
) -> None:
    export = _export(tmp_path / "one.json", chat_type, senders)
    with pytest.raises(InputError, match=expected + r".*--allow-single-speaker") as info:
        prepare([export], tmp_path / "x", PrepareOptions())
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()

    options = PrepareOptions(allow_single_speaker=True, split=(1.0, 0.0, 0.0))
    stats = prepare([export], tmp_path / "y", options)
    assert stats.speakers == 1 and len(stats.pairs_per_speaker) == 1
    assert json.loads((tmp_path / "y" / "stats.json").read_text())["options"][
        "allow_single_speaker"
    ]


def test_deleted_accounts_and_chats_are_context_never_responses(tmp_path: Path) -> None:
    senders = [("Ann", "user101"), (None, "user999"), ("Ben", "user102"),
               ("Some Chat", "channel4242"), ("Linked Channel", "channel777")]  # fmt: skip
    export = _export(tmp_path / "group.json", "private_supergroup", senders)
    out = tmp_path / "group"
    stats = prepare([export], out, PrepareOptions(split=(1.0, 0.0, 0.0), session_gap=600))
    train = load(out)["train"]
    assert set(train["sender"]) == {"Ann", "Ben"}
    assert stats.speakers == 2 and stats.pairs_skipped["not_a_person"] == 12
    context = "\n".join(train["conversation"])
    for line in ("Deleted Account: post", "Some Chat: post", "Linked Channel: post"):
        assert line in context


def test_stored_anonymous_admin_posts_are_no_speaker(tmp_path: Path) -> None:
    """The bot stores a sender_chat's post under the chat's negative id."""
    from training.data.messages import stored_sender_id

    extra = [
        ChatMessage(-42, i, name, stored_sender_id(sid, -42), 1000 + i, f"m{i}")
        for i, (name, sid) in enumerate(
            [("Ann", 5), ("The Group", -1001234), ("Ben", 6), ("News", -1000000000777)] * 2,
            start=1,
        )
    ]
    assert [m.sender_id for m in extra[:4]] == ["user5", "chat1001234", "user6", "channel777"]
    options = PrepareOptions(split=(1.0, 0.0, 0.0))
    stats = prepare([], tmp_path / "db", options, extra_messages=extra)
    assert set(stats.pairs_per_speaker) == {"Ann", "Ben"}
