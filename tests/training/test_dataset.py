"""``prepare``: files, split without leakage, privacy options, extra messages, bad input."""

from __future__ import annotations

import json
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
        # every context line is a turn of this session: a response, or the opener
        assert len(lines - set(session["response"])) <= 1


def test_same_input_same_output(sample: tuple[Path, object], tmp_path: Path) -> None:
    again = tmp_path / "again"
    prepare([SAMPLE], again, PrepareOptions())
    for name, frame in load(again).items():
        pd.testing.assert_frame_equal(frame, load(sample[0])[name])


def test_pairs_of_the_fixture_chat(tmp_path: Path) -> None:
    out = tmp_path / "club"
    prepare([EXPORTS / "single_chat.json"], out, PrepareOptions(split=(1.0, 0.0, 0.0)))
    train = load(out)["train"].sort_values("message_id")
    assert train["response"].tolist() == [
        "Ben: sure 10am works",
        "Cleo: 👍",
        "Dan: look at this wall",
        "Deleted Account: i used to climb here",
        # message 14 opens the second session: no pair
        "Ben: edited text",
        "Ann: @ben_k check this 🔥",
        "Climbing Club: Admin notice: gym closed monday",
        "Dan: nice one",
        "Ben: only entities",
    ]
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
