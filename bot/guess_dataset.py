"""``/guess`` from the training data: held-out excerpts of the served model's dataset.

A new bot has no stored conversation older than GUESS_MIN_AGE, so on its first days (and in a
fresh ``friendbot chat``) the stored history has nothing to play. The chat model was trained
on a ``friendbot prepare`` dataset whose *test* split holds whole conversations the model
never saw (prepare splits by session): each row is an excerpt (``conversation``) and the real
next line (``response``) of a friend, which is exactly a round. The bot's line is made from
the same excerpt as for a stored one.

Which dataset: the one the model's ``friendbot.json`` names (``dataset.dir``, the absolute
directory recorded at training time, else ``dataset.path`` as it was given, relative to the
working directory), and only while the train and validation splits there still hash to the
model's recorded ``dataset.fingerprint``: a dataset prepared again since, or another one at
that path, could hold in its test split lines this model was trained on, and a real line the
model learned by heart is no test of it. A retrained model's scratch dataset is deleted after
its run, so it has no fallback: by then the chat's stored history usually plays.

The same rules as for stored history hold: only rows of the asking chat (the export's chat id
in the Bot API form, which ``prepare`` records per row), never a line of an opted-out member
(by display name or username, as the bot blocks personas, and by the export's ``user<ID>``
sender id, which also blocks the names that id used in the export), never a bot's, nothing
newer than GUESS_MIN_AGE days, and the excerpt never crosses a line it cannot show.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.replies import Friends
from training.formatting import clean_text, is_placeholder_sender, parse_turn

log = logging.getLogger(__name__)

SPLIT = "test"
COLUMNS = ("conversation", "response", "sender", "sender_id", "chat_id", "message_id", "date")
USER_ID = re.compile(r"^user(\d+)$")  # an export's from_id of a person


@dataclass(frozen=True)
class HeldOutSplit:
    """The rows of a model's test split, column by column (read once, kept per model)."""

    file: Path
    fingerprint: str
    columns: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.columns["response"])

    def chats(self) -> set[int]:
        return {int(c) for c in self.columns["chat_id"] if c is not None}

    def names_of(self, user_ids: set[int]) -> set[str]:
        """Every name the export shows for these user ids (a member renamed since is still
        recognised in the excerpts, which carry names only)."""
        return {
            str(name)
            for name, sender in zip(self.columns["sender"], self.columns["sender_id"], strict=True)
            if export_user_id(sender) in user_ids and name
        }


@dataclass(frozen=True)
class HeldOutExcerpt:
    """One row of the test split as a round: the excerpt, and the friend's real next line."""

    row: int
    lines: tuple[tuple[str, str], ...]  # (speaker, text), oldest first
    friend: str
    friend_id: int | None  # the export's user id (a Telegram user id)
    line: str
    message_id: int | None  # the real line's id in the export (provenance only)


class Unavailable(Exception):
    """No held-out split to play; the message says why (for the log and the refusal)."""


def export_user_id(sender_id: Any) -> int | None:
    """``user123`` -> 123; None for a chat or channel sender and for no id."""
    match = USER_ID.match(str(sender_id or ""))
    return int(match.group(1)) if match else None


def dataset_dirs(info: Mapping[str, Any]) -> list[Path]:
    """Where the model's dataset may be, best first (friendbot.json's ``dataset``)."""
    dataset = info.get("dataset")
    if not isinstance(dataset, dict):
        return []
    found = [Path(str(dataset[key])) for key in ("dir", "path") if dataset.get(key)]
    return list(dict.fromkeys(found))


def load_held_out(info: Mapping[str, Any]) -> HeldOutSplit:
    """The served model's test split, checked to be held out of *this* model's training.

    :class:`Unavailable` when the model names no dataset, the dataset is gone, or it changed
    since the model was trained (its fingerprint differs).
    """
    from training.errors import InputError
    from training.model.tasks import fingerprint_files, split_path, trained_files

    dataset = info.get("dataset")
    expected = dataset.get("fingerprint") if isinstance(dataset, dict) else None
    dirs = dataset_dirs(info)
    if not dirs or not expected:
        raise Unavailable("the model's friendbot.json names no dataset")
    changed = None
    for data_dir in dirs:
        try:
            files, test = trained_files(data_dir), split_path(data_dir, SPLIT)
        except InputError:
            continue
        if fingerprint_files(files) != expected:
            changed = data_dir
            continue
        return HeldOutSplit(test.resolve(), str(expected), read_columns(test))
    if changed is not None:
        raise Unavailable(f"the model's dataset {changed} changed since the model was trained")
    raise Unavailable(f"the model's dataset {dirs[0]} is not there any more")


def read_columns(test_file: Path) -> dict[str, list[Any]]:
    import pyarrow.parquet as pq

    try:
        present = set(pq.read_schema(test_file).names)
        table = pq.read_table(test_file, columns=[c for c in COLUMNS if c in present])
    except (OSError, ValueError) as exc:
        raise Unavailable(f"{test_file}: not readable ({exc})") from None
    missing = {"conversation", "response", "sender", "chat_id"} - present
    if missing:
        raise Unavailable(f"{test_file}: no {', '.join(sorted(missing))} column")
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    n = table.num_rows
    for name in COLUMNS:
        columns.setdefault(name, [None] * n)
    return columns


def pick_held_out(
    split: HeldOutSplit,
    chat_id: int,
    *,
    blocked_names: Iterable[str],
    blocked_ids: set[int],
    bot_ids: set[int],
    before: datetime,
    rng: random.Random,
    size: int,
    min_context: int,
) -> HeldOutExcerpt | None:
    """A random row of ``chat_id`` that makes a round under the rules, or None.

    ``blocked_ids`` are opted-out members (their export ids, and every name those ids used
    in the export, are blocked beside ``blocked_names``); ``bot_ids`` are known bots.
    """
    cols = split.columns
    hidden = Friends.build((), [*blocked_names, *split.names_of(blocked_ids | bot_ids)])
    order = [i for i, chat in enumerate(cols["chat_id"]) if chat == chat_id]
    rng.shuffle(order)
    for i in order:
        excerpt = _excerpt(cols, i, hidden, blocked_ids | bot_ids, before, size, min_context)
        if excerpt is not None:
            return excerpt
    return None


def _excerpt(
    cols: dict[str, list[Any]],
    i: int,
    hidden: Friends,
    hidden_ids: set[int],
    before: datetime,
    size: int,
    min_context: int,
) -> HeldOutExcerpt | None:
    """Row ``i`` as a round: the lines after the last one it may not show, the real line."""
    date = cols["date"][i]
    if isinstance(date, datetime) and _utc(date) > before:
        return None  # too recent: no spoilers, as for stored history
    friend, sender_id = clean_text(str(cols["sender"][i] or "")), cols["sender_id"][i]
    friend_id = export_user_id(sender_id)
    if not friend or is_placeholder_sender(friend, sender_id) or hidden.is_blocked(friend):
        return None
    if friend_id in hidden_ids:
        return None
    _, line = parse_turn(str(cols["response"][i] or ""))
    if not line:
        return None
    lines: list[tuple[str, str]] = []
    for turn in str(cols["conversation"][i] or "").split("\n"):
        speaker, text = parse_turn(turn)
        if speaker is None or not text or hidden.is_blocked(speaker):
            lines = []  # never across a line that cannot be shown
            continue
        lines.append((speaker, text))
    if len(lines) < min_context:
        return None
    message_id = cols["message_id"][i]
    return HeldOutExcerpt(
        row=i,
        lines=tuple(lines[-size:]),
        friend=friend,
        friend_id=friend_id,
        line=line,
        message_id=int(message_id) if message_id is not None else None,
    )


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
