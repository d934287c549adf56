"""bench/real_chats.py: real IRC and Slack logs become exports that `friendbot prepare` reads.

The IRC excerpts are real #ubuntu and #duraspace logs (CC-BY-4.0, see fixtures/real/README.md);
the Slack file is hand-written in the layout of a dataset that may not be copied.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from bench import real_chats
from bot.cli import main as friendbot_main

REAL = Path(__file__).parent / "fixtures" / "real"
IRC_2016 = REAL / "2016-06-08_07.raw.txt"
IRC_2005 = REAL / "2005-08-08_01.raw.txt"
SLACK = REAL / "handwritten-slack.xml"
LOGBOT = [REAL / "2013-11-06.log", REAL / "2014-04-22.log"]


def run(main: Callable[[list[str]], int | None], *args: str) -> tuple[int, str]:
    """Call a CLI's ``main(argv)`` in this process; (exit status, stdout+stderr)."""
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(list(args)) or 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue()


def convert(kind: str, *paths: Path, out: Path, name: str = "test chat") -> dict:
    code, output = run(real_chats.main, kind, *map(str, paths), "--name", name, "--out", str(out))
    assert code == 0, output
    return json.loads((out / "result.json").read_text(encoding="utf-8"))


def by_text(export: dict, text: str) -> dict:
    return next(m for m in export["messages"] if m["text"] == text)


def starting(export: dict, prefix: str) -> dict:
    return next(m for m in export["messages"] if m["text"].startswith(prefix))


def unix(message: dict) -> int:
    return int(message["date_unixtime"])


def test_irc_logs_become_a_telegram_supergroup(tmp_path: Path) -> None:
    export = convert("irc", REAL, out=tmp_path, name="#ubuntu")
    messages = export["messages"]
    assert export["type"] == "private_supergroup" and export["name"] == "#ubuntu"
    assert [m["id"] for m in messages] == list(range(1, len(messages) + 1))
    # 172 raw lines: 12 joins and parts, 2 nick changes left out; the rest are messages
    assert len(messages) == 172 - 14
    first = messages[0]
    assert first["from"] == "vader1102" and first["date"].startswith("2005-08-08T")
    assert first["text_entities"] == [{"type": "plain", "text": first["text"]}]
    assert (
        str(int(datetime.fromisoformat(first["date"] + "+00:00").timestamp()))
        == (first["date_unixtime"])
    )
    assert not any("has joined" in m["text"] or "known as" in m["text"] for m in messages)
    assert by_text(export, "*bows*")["from"] == "Agamotto"


def test_irc_clock_wraps_at_midnight_and_at_twelve(tmp_path: Path) -> None:
    export = convert("irc", IRC_2016, IRC_2005, out=tmp_path)
    # 24-hour log: 23:59 then 00:00 is one minute later, on the next day
    before = starting(export, "!new Kathi Daley - [Zoe Donovan Mystery 11]")
    after = by_text(export, "madcatter: this is not a warez or file-sharing channel")
    assert before["date"] == "2016-06-08T23:59:00" and after["date"] == "2016-06-09T00:00:00"
    # 12-hour log without am/pm: 12:59 then 01:00 is one minute later, not eleven hours back
    paste = by_text(export, "somebody said paste was please use http://paste.ubuntulinux.nl/ or "
                            "#flood to paste large amounts of text")  # fmt: skip
    error = by_text(export, "What does this error mean and how can I correct it? "
                            "http://paste.ubuntulinux.nl/910")  # fmt: skip
    assert unix(error) - unix(paste) == 60
    # the timeless old-style action takes the time of the line before it
    line_before = starting(export, "ubuntu_: it looks like it is configured correctly")
    assert unix(by_text(export, "*bows*")) == unix(line_before)
    dates = [unix(m) for m in export["messages"]]
    assert dates == sorted(dates)


def test_irc_speakers_get_stable_ids(tmp_path: Path) -> None:
    one = convert("irc", IRC_2016, out=tmp_path / "one")
    both = convert("irc", IRC_2005, IRC_2016, out=tmp_path / "both")
    ids_one = {m["from"]: m["from_id"] for m in one["messages"]}
    ids_both = {m["from"]: m["from_id"] for m in both["messages"]}
    assert all(ids_both[name] == user_id for name, user_id in ids_one.items())
    assert len(set(ids_both.values())) == len(ids_both)
    assert all(
        user_id.startswith("user") and user_id[4:].isdigit() for user_id in ids_both.values()
    )
    # IRC nicks are case-insensitive: one speaker, shown as first seen
    lines = [real_chats.Line(datetime(2020, 1, 1), nick, "hi") for nick in ("Bob", "bob", "BOB")]
    export = real_chats.telegram_export("x", lines, casefold_names=True)
    assert {(m["from"], m["from_id"]) for m in export["messages"]} == {
        ("Bob", export["messages"][0]["from_id"])
    }


def test_prepare_reads_the_converted_irc_excerpt(tmp_path: Path) -> None:
    export = convert("irc", REAL, out=tmp_path, name="#ubuntu")
    speakers = {m["from"] for m in export["messages"]}
    bot_messages = sum(m["from"] in {"ubottu", "ubotu"} for m in export["messages"])
    assert len(speakers) >= 5 and bot_messages == 5
    data = tmp_path / "data"
    code, out = run(
        friendbot_main, "prepare", str(tmp_path / "result.json"), "--out", str(data),
        "--bot", "ubottu", "--bot", "ubotu", "--split", "100/0/0",
    )  # fmt: skip
    assert code == 0, out
    stats = json.loads((data / "stats.json").read_text())
    assert stats["messages_read"] == len(export["messages"])
    assert stats["skipped"] == {"bot": bot_messages}
    kept = len(export["messages"]) - bot_messages
    assert stats["messages_kept"] == kept
    # the two excerpts are eleven years apart: two sessions, each opener has no context
    assert stats["sessions"]["total"] == 2
    assert stats["pairs"]["train"] == kept - 2
    per_speaker = stats["pairs_per_speaker"]
    assert per_speaker["lordcirth"] == sum(m["from"] == "lordcirth" for m in export["messages"])
    assert "ubottu" not in per_speaker and sum(per_speaker.values()) == kept - 2


def test_logbot_html_becomes_plain_messages(tmp_path: Path) -> None:
    code, out = run(real_chats.main, "logbot", str(REAL), "--out", str(tmp_path))
    assert code == 0, out
    export = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    messages = export["messages"]
    # 25 messages and 2 actions; 16 joins, quits, topic and server notices and one private
    # message to the logger are left out
    assert len(messages) == 27
    assert "27 messages from 7 speakers in 2 file(s)" in out
    assert "left out: service 16, private 1" in out
    assert not any("jaime" in m["from"] or "has joined" in m["text"] for m in messages)
    first = messages[0]
    assert (first["from"], first["date"]) == ("tdonohue", "2013-11-06T19:47:00")
    # a link is its visible text; LogBot's escaping is undone once (the bot's own &quot; stays)
    assert by_text(export, "We have someone looking into the wiki crash... here's the agenda "
                   "page for when it returns: "
                   "https://wiki.duraspace.org/display/DSPACE/DevMtg+2013-11-06")  # fmt: skip
    title = by_text(export, "[ https://jira.duraspace.org/browse/DS-1762 ] - [DS-1762] When run "
                    "command &quot;dspace index-init&quot; - DuraSpace JIRA")  # fmt: skip
    assert title["from"] == "kompewter"
    assert by_text(export, "*volunteers for proofreading duty.*")["from"] == "hpottinger"
    assert by_text(export, "*too.*")["from"] == "mhwood"
    # helix84_ is helix84 with the client's "nick taken" underscore: one speaker
    assert by_text(export, "hi everyone")["from"] == "helix84"
    assert {m["from"] for m in messages} == {
        "tdonohue", "bollini", "kompewter", "mhwood", "helix84", "aschweer", "hpottinger",
    }  # fmt: skip
    assert not any("<" in m["text"] and "href" in m["text"] for m in messages)
    dates = [unix(m) for m in messages]
    assert dates == sorted(dates)


def test_prepare_reads_the_converted_logbot_excerpt(tmp_path: Path) -> None:
    export = convert("logbot", *LOGBOT, out=tmp_path, name="#duraspace")
    code, out = run(
        friendbot_main, "prepare", str(tmp_path / "result.json"), "--out", str(tmp_path / "d"),
        "--bot", "kompewter", "--split", "100/0/0",
    )  # fmt: skip
    assert code == 0, out
    stats = json.loads((tmp_path / "d" / "stats.json").read_text())
    assert stats["skipped"] == {"bot": 4} and stats["messages_kept"] == 23
    # 19:47 to 21:12 with no two-hour gap: one session, its opener has no context
    assert stats["sessions"]["total"] == 1 and stats["pairs"]["train"] == 22
    per_speaker = stats["pairs_per_speaker"]
    assert per_speaker["helix84"] == sum(m["from"] == "helix84" for m in export["messages"])
    assert "helix84_" not in per_speaker and "kompewter" not in per_speaker


def test_slack_xml_becomes_readable_text(tmp_path: Path) -> None:
    code, out = run(real_chats.main, "slack", str(SLACK), "--out", str(tmp_path))
    assert code == 0, out
    export = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    texts = [m["text"] for m in export["messages"]]
    assert export["name"] == "racket #general"
    assert "@Ines yes, the nightly one works for me" in texts
    assert "is `(define x 1)` the same as `(define x (values 1))`? seems so when x > 0 & x < 2" in (
        texts
    )
    assert "also see https://docs.racket-lang.org/reference/values.html" in texts
    assert "@here meetup moved to thursday, details in #events" in texts
    assert "   " not in texts and len(texts) == 12  # the blank message is left out
    assert {m["from"] for m in export["messages"]} == {"Ines", "Tobias", "Marek", "Odile", "Priya"}
    assert export["messages"][0]["date"] == "2018-03-01T09:02:11"
    assert "12 messages from 5 speakers" in out and "left out: empty 1" in out


def test_prepare_reads_the_converted_slack_file(tmp_path: Path) -> None:
    convert("slack", SLACK, out=tmp_path)
    code, out = run(
        friendbot_main, "prepare", str(tmp_path / "result.json"), "--out", str(tmp_path / "d"),
        "--split", "100/0/0",
    )  # fmt: skip
    assert code == 0, out
    stats = json.loads((tmp_path / "d" / "stats.json").read_text())
    # two sessions (a day apart): 12 messages, two openers without context
    assert stats["messages_kept"] == 12 and stats["sessions"]["total"] == 2
    assert stats["pairs"]["train"] == 10
    assert stats["pairs_per_speaker"] == {
        "Tobias": 3,
        "Marek": 3,
        "Priya": 2,
        "Odile": 1,
        "Ines": 1,
    }


@pytest.mark.parametrize(
    ("kind", "source", "message"),
    [
        ("irc", "undated.raw.txt", "undated.raw.txt: no YYYY-MM-DD in the file name"),
        ("irc", "missing", "missing: no such file or directory"),
        ("slack", "2016-06-08_07.raw.txt", "2016-06-08_07.raw.txt: not well-formed XML"),
        ("logbot", "undated.log", "undated.log: no YYYY-MM-DD in the file name"),
        ("logbot", "2016-06-08.log", "2016-06-08.log: no messages found in 1 file(s)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    kind: str, source: str, message: str, tmp_path: Path
) -> None:
    if source != "missing":
        shutil.copy(IRC_2016, tmp_path / source)
    code, out = run(real_chats.main, kind, str(tmp_path / source), "--out", str(tmp_path / "o"))
    assert code == 2
    assert message in out and len(out.strip().splitlines()) == 1 and "Traceback" not in out
    assert not (tmp_path / "o").exists()


def test_an_existing_export_is_kept_without_overwrite(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text("mine")
    code, out = run(real_chats.main, "slack", str(SLACK), "--out", str(tmp_path))
    assert code == 2 and "already exists (pass --overwrite" in out
    assert (tmp_path / "result.json").read_text() == "mine"
    code, out = run(real_chats.main, "slack", str(SLACK), "--out", str(tmp_path), "--overwrite")
    assert code == 0, out
    assert len(json.loads((tmp_path / "result.json").read_text())["messages"]) == 12
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left
