"""Real, human-written group chats turned into Telegram Desktop exports for friendbot.

The sample chat in ``examples/`` is synthetic; its people have habits a small model learns
easily. To see how friendbot does on chats people actually wrote, this script converts three
public multi-party chat logs into the ``result.json`` that ``friendbot prepare`` reads:

``irc``: IRC channel logs in the irclogs.ubuntu.com style, one file per day or sample::

    [09:14] <crimsun> kleedrac: I'm afraid not.
    [09:17]  * kleedrac yawns
    === vassie [~vassie@195.153.177.75]  has joined #ubuntu

  Source used: #ubuntu on Freenode, the samples published with the IRC disentanglement corpus
  (Kummerfeld et al., ACL 2019), repository ``jkkummerfeld/irc-disentanglement`` on GitHub,
  files ``data/dev/*.raw.txt`` and ``data/test/*.raw.txt`` (20 samples of 1,250-1,500 lines,
  2004-2016; ``data/train/*.raw.txt`` has 153 more). Data license: CC-BY-4.0
  (``data/LICENSE-data.txt``); Ubuntu states that its channel logs are in the public domain.

``logbot``: the HTML day files (``YYYY-MM-DD.log``) of the PircBot "LogBot" IRC logger::

    <span class="irc-date">[20:01]</span> <span class="irc-black">&lt;tdonohue&gt; related to
      <a href="https://jira.duraspace.org/browse/DS-1269">DS-1269</a></span><br />
    <span class="irc-date">[21:19]</span> <span class="irc-brick">* helix84 is lurking</span><br />

  Source used: #duraspace on Freenode, the channel of the DSpace and Fedora repository
  developers, repository ``duraspace/irclogs`` on GitHub, files ``original-logs/*.log``
  (one per day, 2009-06-30 to 2018-07-27; we use 2013-2016). The README licenses the logs
  under CC-BY-4.0 (the scripts in the repository are Apache-2.0).

``slack``: the XML of "Software-related Slack Chats with Disentangled Conversations"
  (Chatterjee et al., MSR 2020), repository
  ``preethac/Software-related-Slack-Chats-with-Disentangled-Conversations`` on GitHub::

    <slack><team_domain>racket</team_domain><channel_name>general</channel_name>
      <message conversation_id="1"><ts>2017-12-31T11:38:10.000028</ts>
        <user>Marnie</user><text>&lt;@Carlyn&gt; hackett is so fun</text></message> ...

  Source used: ``data/racket/2018/merged-racket-general.xml`` (#general of the Racket Slack,
  2018). The authors replaced user names with pseudonyms (a new mapping per file). The
  repository has no license file: use the data where it is, do not redistribute it.

Getting the raw files (this script never downloads anything)::

    git clone --depth 1 https://github.com/jkkummerfeld/irc-disentanglement
    git clone --depth 1 https://github.com/duraspace/irclogs duraspace-irclogs
    git clone --depth 1 \\
        https://github.com/preethac/Software-related-Slack-Chats-with-Disentangled-Conversations
    python bench/real_chats.py irc irc-disentanglement/data/dev irc-disentanglement/data/test \\
        --name "#ubuntu" --out realdata/ubuntu-irc
    python bench/real_chats.py slack \\
        Software-related-*/data/racket/2018/merged-racket-general.xml --out realdata/racket-slack
    python bench/real_chats.py logbot duraspace-irclogs/original-logs/201[3-6]-*.log \\
        --name "#duraspace" --out realdata/duraspace-irc
    friendbot prepare realdata/racket-slack/result.json --out realdata/racket-slack/data

What the conversion decides (the rest is in docs/real-chats.md):

- every speaker gets ``from_id`` ``user<N>`` with N derived from a hash of the name (IRC nicks
  case-folded, as IRC compares them), so ids are the same in every run and every file; the
  display name is the first spelling seen;
- joins, parts, quits and nick changes (IRC ``===`` lines) are dropped, not written as
  service messages: a Telegram export has no equivalent and friendbot skips them anyway;
  a nick change keeps the old and new nick as two speakers;
- an IRC action (``/me yawns``) becomes the message ``*yawns*`` from its sender;
- LogBot's HTML is read as a person reads the page: links become their visible text,
  ``&lt;`` becomes ``<``; its colour class tells messages (``irc-black``) and actions
  (``irc-brick``) from joins, quits, notices and mode changes, which are dropped like IRC's
  ``===`` lines; a private message to the logger (``&lt;- *nick* ...``) is dropped; a nick's
  trailing ``_`` or backquote (the client's stand-in when the nick is taken) is removed;
- bots stay in (``ubottu`` in #ubuntu, ``kompewter`` in #duraspace): ``friendbot prepare
  --bot NAME`` is the project's way to skip them;
- IRC logs carry only a time of day. The date comes from the file name (``YYYY-MM-DD``),
  and a time earlier than the one before means the clock wrapped: the next day, or the next
  half day in the old logs that use a 12-hour clock without am/pm (no hour above 12 in the
  file). The dates may therefore be off by a day and the hours by 12; friendbot only uses
  them for the order and for the gaps that split sessions, which stay right. LogBot writes
  one file per day, so its clock never wraps;
- Slack markup is resolved (``<@Name>`` -> ``@Name``, ``<url|label>`` -> ``label``,
  ``&lt;`` -> ``<``); emoji codes such as ``:smile:`` stay as typed;
- times are written as UTC in ``date`` (Telegram writes the exporting machine's local time).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

IRC_MESSAGE = re.compile(r"^\[(\d{1,2}):(\d{2})(?::(\d{2}))?\]\s<([^>]+)>\s?(.*)$")
IRC_ACTION = re.compile(r"^\[(\d{1,2}):(\d{2})(?::(\d{2}))?\]\s+\*\s(\S+)\s?(.*)$")
IRC_SERVICE = re.compile(
    r"^(\[[\d:]+\]\s+)?(===|\*\*\*|-!-) "
    r"(\S+ (\[[^\]]*\]\s+)?(has (joined|left|quit)|is now known as|is (away|back))"
    r"|\S*(topic|mode)/)",
    re.IGNORECASE,
)
# Old irclogs (2004-2005) write an action without a time: "=== bob2 hopes that excludes /proc".
IRC_UNTIMED_ACTION = re.compile(r"^=== (\S+) (.+)$")
IRC_CONTROL = re.compile(r"\x03\d{0,2}(?:,\d{1,2})?|[\x02\x0f\x16\x1d\x1f]")
FILE_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
SLACK_MARKUP = re.compile(r"<([^<>]*)>")
# LogBot (PircBot) HTML day logs: one line per event, the colour class says which kind.
LOGBOT_LINE = re.compile(
    r'^<span class="irc-date">\[(\d{1,2}):(\d{2})(?::(\d{2}))?\]</span> '
    r'<span class="irc-(\w+)">(.*)</span><br ?/?>$'
)
LOGBOT_SPEECH = {"black", "brick"}  # messages, /me actions; the rest are joins, quits, notices
LOGBOT_MESSAGE = re.compile(r"^&lt;([^\s&]+)&gt; ?(.*)$")
LOGBOT_ACTION = re.compile(r"^\* (\S+) ?(.*)$")
HTML_TAG = re.compile(r"<[^<>]+>")
# Backwards steps smaller than this are logging jitter, not a clock that wrapped.
WRAP_TOLERANCE = timedelta(minutes=60)


class ConversionError(Exception):
    """A problem with the input the user can fix; the message names the file."""


@dataclass(frozen=True)
class Line:
    """One human message: when, who, what."""

    when: datetime
    speaker: str
    text: str


@dataclass
class Tally:
    """What was read and what was left out, by reason, for the summary line."""

    files: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


# --- IRC ---------------------------------------------------------------------------------


def irc_lines(path: Path, tally: Tally) -> Iterator[Line]:
    """The messages of one IRC log file, in file order, with reconstructed dates."""
    match = FILE_DATE.search(path.name)
    if match is None:
        raise ConversionError(f"{path}: no YYYY-MM-DD in the file name to date its messages")
    day = datetime(*map(int, match.groups()), tzinfo=UTC)
    # split on "\n" only: str.splitlines() also breaks at U+2028 and friends inside a message
    raw = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    parsed = [(irc_parse(line), line) for line in raw]
    hours = {fields[0] for fields, _ in parsed if fields is not None}
    period = timedelta(hours=24 if hours & {0, *range(13, 24)} else 12)
    offset = timedelta(0)
    previous: datetime | None = None
    for fields, line in parsed:
        if fields is not None:
            hour, minute, second, speaker, text = fields
            when = day + offset + timedelta(hours=hour, minutes=minute, seconds=second)
            if previous is not None and when < previous - WRAP_TOLERANCE:
                offset += period
                when += period
            when = max(when, previous) if previous is not None else when
            previous = when
        elif IRC_SERVICE.match(line):
            tally.skipped["service"] += 1
            continue
        elif previous is not None and (action := IRC_UNTIMED_ACTION.match(line)):
            when, speaker, text = previous, action.group(1), f"*{action.group(2).strip()}*"
        else:
            if line.strip():
                tally.skipped["unparsed"] += 1
            continue
        text = IRC_CONTROL.sub("", text).strip()
        if not text:
            tally.skipped["empty"] += 1
            continue
        yield Line(when, speaker, text)


def irc_parse(line: str) -> tuple[int, int, int, str, str] | None:
    """(hour, minute, second, nick, text) of a message or action line; None otherwise."""
    if match := IRC_MESSAGE.match(line):
        text = match.group(5)
    elif match := IRC_ACTION.match(line):
        text = f"*{match.group(5).strip()}*" if match.group(5).strip() else ""
    else:
        return None
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        return None
    nick = match.group(4).lstrip("@+%~&")
    return hour, minute, int(match.group(3) or 0), nick, text


# --- LogBot (HTML day files) ---------------------------------------------------------------


def logbot_lines(path: Path, tally: Tally) -> Iterator[Line]:
    """The messages of one LogBot day file (``YYYY-MM-DD.log``), in file order."""
    match = FILE_DATE.search(path.name)
    if match is None:
        raise ConversionError(f"{path}: no YYYY-MM-DD in the file name to date its messages")
    day = datetime(*map(int, match.groups()), tzinfo=UTC)
    previous: datetime | None = None
    for line in path.read_bytes().decode("utf-8", errors="replace").split("\n"):
        fields = logbot_parse(line.rstrip("\r"))
        if fields is None:
            if line.strip():
                tally.skipped["unparsed"] += 1
            continue
        hour, minute, second, colour, body = fields
        if colour not in LOGBOT_SPEECH:
            tally.skipped["service"] += 1
            continue
        spoken = logbot_speech(colour, body)
        if spoken is None:
            tally.skipped["private" if body.startswith("&lt;- ") else "unparsed"] += 1
            continue
        speaker, text = spoken
        text = IRC_CONTROL.sub("", text).strip()
        if not text:
            tally.skipped["empty"] += 1
            continue
        when = day + timedelta(hours=hour, minutes=minute, seconds=second)
        when = max(when, previous) if previous is not None else when
        previous = when
        yield Line(when, speaker, text)


def logbot_parse(line: str) -> tuple[int, int, int, str, str] | None:
    """(hour, minute, second, colour class, HTML body) of a timed line; None otherwise."""
    match = LOGBOT_LINE.match(line)
    if match is None:
        return None
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        return None
    return hour, minute, int(match.group(3) or 0), match.group(4), match.group(5)


def logbot_speech(colour: str, body: str) -> tuple[str, str] | None:
    """(nick, plain text) of a channel message or ``/me`` action; None for anything else.

    A nick's trailing ``_`` or backquote is the client's stand-in when the nick is taken
    (``helix84_`` is helix84 reconnecting), so it is dropped; other suffixes stay.
    """
    pattern = LOGBOT_MESSAGE if colour == "black" else LOGBOT_ACTION
    match = pattern.match(body)
    if match is None:
        return None
    nick = html.unescape(match.group(1)).lstrip("@+%~&")
    nick = nick.rstrip("_`") or nick
    text = html.unescape(HTML_TAG.sub("", match.group(2)))
    return nick, (f"*{text.strip()}*" if colour == "brick" and text.strip() else text)


# --- Slack -------------------------------------------------------------------------------


def slack_lines(path: Path, tally: Tally) -> Iterator[Line]:
    """The messages of one Slack XML file (the MSR 2020 dataset's layout), in file order."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ConversionError(f"{path}: not well-formed XML ({exc})") from None
    if root.tag != "slack":
        raise ConversionError(f"{path}: expected a <slack> document, found <{root.tag}>")
    for number, message in enumerate(root.iter("message"), 1):
        stamp, user = message.findtext("ts"), message.findtext("user")
        if not stamp or not user:
            raise ConversionError(f"{path}: message {number} has no <ts> or no <user>")
        try:
            when = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
        except ValueError:
            raise ConversionError(f"{path}: message {number}: bad <ts> {stamp!r}") from None
        text = slack_text(message.findtext("text") or "")
        if not text:
            tally.skipped["empty"] += 1
            continue
        yield Line(when, user.strip(), text)


def slack_text(text: str) -> str:
    """Slack's wire format as a person reads it: links, mentions and escapes resolved."""
    text = SLACK_MARKUP.sub(lambda match: slack_markup(match.group(1)), text)
    for escaped, plain in (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&")):
        text = text.replace(escaped, plain)
    return text.strip()


def slack_markup(inner: str) -> str:
    """One ``<...>`` element: ``@user``, ``#channel``, ``@here``, or a link's visible text."""
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        return "@" + (label or target[1:])
    if target.startswith("#"):
        return "#" + (label or target[1:])
    if target.startswith("!"):
        return label or "@" + target[1:].split("^")[0]
    if target.startswith("mailto:"):
        return label or target.removeprefix("mailto:")
    return label or target


# --- Telegram export ---------------------------------------------------------------------


def stable_id(key: str, taken: dict[int, str]) -> int:
    """A 10-digit id from the key's hash; the next free one if two keys collide."""
    number = 1_000_000_000 + int(hashlib.sha1(key.encode()).hexdigest()[:12], 16) % 9_000_000_000
    while taken.setdefault(number, key) != key:
        number += 1
    return number


def telegram_export(name: str, lines: Iterable[Line], *, casefold_names: bool) -> dict:
    """A single-chat Telegram Desktop export (``private_supergroup``) holding ``lines``."""
    taken: dict[int, str] = {}
    speakers: dict[str, tuple[str, int]] = {}  # key -> (display name, id)
    messages = []
    for number, line in enumerate(lines, 1):
        key = line.speaker.casefold() if casefold_names else line.speaker
        if key not in speakers:
            speakers[key] = (line.speaker, stable_id(key, taken))
        display, user_id = speakers[key]
        messages.append(
            {
                "id": number,
                "type": "message",
                "date": line.when.strftime("%Y-%m-%dT%H:%M:%S"),
                "date_unixtime": str(int(line.when.timestamp())),
                "from": display,
                "from_id": f"user{user_id}",
                "text": line.text,
                "text_entities": [{"type": "plain", "text": line.text}],
            }
        )
    chat_id = int(hashlib.sha1(name.encode()).hexdigest()[:12], 16) % 9_000_000_000
    return {
        "name": name,
        "type": "private_supergroup",
        "id": 1_000_000_000 + chat_id,
        "messages": messages,
    }


def write_atomically(export: dict, out_dir: Path, overwrite: bool) -> Path:
    """``out_dir/result.json``, written to a temp file and renamed: never half a file."""
    target = out_dir / "result.json"
    if target.exists() and not overwrite:
        raise ConversionError(f"{target}: already exists (pass --overwrite to replace it)")
    out_dir.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=out_dir, prefix=".result.", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(export, stream, ensure_ascii=False, indent=1)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp's 0600 would surprise next to other outputs
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


# --- command line ------------------------------------------------------------------------


def input_files(paths: list[Path], pattern: str) -> list[Path]:
    """The given files, plus every ``pattern`` file under the given directories, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(path.rglob(pattern))
            if not inside:
                raise ConversionError(f"{path}: no {pattern} files in this directory")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise ConversionError(f"{path}: no such file or directory")
    return found


# kind -> (file pattern searched in directories, reader)
SOURCES = {
    "irc": ("*.raw.txt", irc_lines),
    "logbot": ("*.log", logbot_lines),
    "slack": ("*.xml", slack_lines),
}


def convert(kind: str, paths: list[Path], name: str, tally: Tally) -> dict:
    """Read every file of one source kind, in date order, into one export."""
    pattern, reader = SOURCES[kind]
    files = input_files(paths, pattern)
    tally.files = len(files)
    lines = sorted(
        (line for path in files for line in reader(path, tally)),
        key=lambda line: line.when,  # stable: a minute's messages keep their file order
    )
    if not lines:
        raise ConversionError(f"{paths[0]}: no messages found in {len(files)} file(s)")
    return telegram_export(name, lines, casefold_names=kind in {"irc", "logbot"})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="real_chats.py",
        description="Convert public IRC logs (plain or LogBot HTML) or Slack XML (see the "
        "module docstring for the sources and how to get them) into a Telegram Desktop "
        "result.json for `friendbot prepare`. Nothing is downloaded.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python bench/real_chats.py irc irc-disentanglement/data/dev "
        "--name '#ubuntu' --out /tmp/ubuntu\n  friendbot prepare /tmp/ubuntu/result.json "
        "--bot ubottu --out /tmp/ubuntu/data",
    )
    parser.add_argument("kind", choices=sorted(SOURCES), help="format of the raw files")
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        help="raw files, or directories searched for *.raw.txt (irc), *.log (logbot) or "
        "*.xml (slack)",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for result.json")
    parser.add_argument("--name", help="chat name in the export (default: from the source)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing result.json")
    return parser.parse_args(argv)


def default_name(kind: str, paths: list[Path]) -> str:
    """``#channel`` from Slack's XML header when there is one; else the first path's name."""
    if kind == "slack" and paths[0].is_file():
        try:
            root = ET.parse(paths[0]).getroot()
            team, channel = root.findtext("team_domain"), root.findtext("channel_name")
            if team and channel:
                return f"{team} #{channel}"
        except ET.ParseError:
            pass  # convert() reports it with the file's name
    return paths[0].resolve().name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tally = Tally()
    try:
        name = args.name or default_name(args.kind, args.paths)
        export = convert(args.kind, args.paths, name, tally)
        target = write_atomically(export, args.out, args.overwrite)
    except (ConversionError, OSError) as exc:
        print(f"real_chats.py: error: {exc}", file=sys.stderr)
        return 2
    messages = export["messages"]
    per_speaker = Counter(message["from"] for message in messages)
    skipped = ", ".join(f"{reason} {count:,}" for reason, count in tally.skipped.most_common())
    print(
        f"{target}: {len(messages):,} messages from {len(per_speaker):,} speakers "
        f"in {tally.files} file(s), {messages[0]['date'][:10]} to {messages[-1]['date'][:10]}"
        f" (left out: {skipped or 'nothing'})"
    )
    top = ", ".join(f"{who} {count:,}" for who, count in per_speaker.most_common(8))
    print(f"most active: {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
