"""What a retraining run learns from, and a fingerprint of it so an unchanged run is skipped.

Inputs are every Telegram export in ``EXPORTS_DIR`` plus (optionally) the human messages the
bot stored since the newest message of those exports. The fingerprint hashes the *contents*
of the exports (renaming or moving a file changes nothing), the stored messages, and every
option that changes what would be trained; the served model is deliberately not part of it,
so a rollback is not undone by the next scheduled run on the same inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import InputError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from storage.models import Message
    from training.data.messages import ChatMessage

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExportFile:
    """One file in the exports folder and the hash of its bytes."""

    path: Path
    sha256: str
    size: int


@dataclass
class ExportCheck:
    """What reading one export through prepare's parser found: usable or why not."""

    path: Path
    error: str | None = None
    messages: int = 0
    newest: dict[int, int] = field(default_factory=dict)  # chat id (Bot API form) -> epoch s
    warnings: list[str] = field(default_factory=list)  # usable, but worth a word (bad UTF-8)


def find_exports(exports_dir: Path) -> list[Path]:
    """Every ``*.json`` under ``exports_dir`` (a dropped ``ChatExport_*/result.json`` too).

    Hidden files and folders are ignored, so a copy still in progress under a dot-name, or an
    editor's backup, is not read.
    """
    exports_dir = Path(exports_dir)
    if not exports_dir.is_dir():
        raise InputError(f"{exports_dir}: exports folder does not exist (EXPORTS_DIR)")
    found = []
    for path in exports_dir.rglob("*.json"):
        relative = path.relative_to(exports_dir)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        found.append(path)
    return sorted(found)


def hash_file(path: Path) -> ExportFile:
    """SHA-256 of a file, read in 1 MiB chunks (exports can be hundreds of MB)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return ExportFile(Path(path), digest.hexdigest(), size)


def check_export(path: Path, chat: str | None, allow_single_speaker: bool = False) -> ExportCheck:
    """Read one export with prepare's reader, to find a bad file before training on the rest.

    A file whose chat has fewer than two people to imitate (a channel, saved messages, a bot
    chat: see ``training.data.speakers``) is bad too, unless ``allow_single_speaker``: one
    dropped by mistake into the exports folder must not turn the bot into that account.
    Also notes the newest message date per chat, which is where the bot's stored history
    takes over from the export. Only the kept columns are held, never the raw JSON.
    """
    from training.data.export import ChatSelector, NeedsChatChoice, choose_chat_error, read_export
    from training.data.normalize import Rules

    check = ExportCheck(Path(path))
    try:
        try:
            read = read_export(path, ChatSelector.of([chat] if chat else []), Rules())
        except NeedsChatChoice:
            raise choose_chat_error(Path(path)) from None
        check.warnings = read.warnings()
        if not allow_single_speaker:
            check.error = _too_few_speakers(read)
        for table in read.tables:
            check.messages += table.num_rows
            grouped = table.group_by("chat_id").aggregate([("date", "max")])
            for chat_id, newest in zip(
                grouped["chat_id"].to_pylist(), grouped["date_max"].to_pylist(), strict=True
            ):
                check.newest[chat_id] = max(newest, check.newest.get(chat_id, newest))
    except InputError as exc:
        check.error = str(exc)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # parser surprises: still bad
        check.error = f"{path}: {type(exc).__name__}: {exc}"
    if check.error is None and check.messages == 0:
        check.error = f"{path}: no usable messages (only service messages, media or empty)"
    return check


def _too_few_speakers(read: Any) -> str | None:
    """The reason to leave out an export of fewer than two people, or None."""
    from training.data.speakers import check_people

    table = read.table()
    if table.num_rows == 0:
        return None  # "no usable messages" says it better
    _, _, problem = check_people(table, [(c.chat_id, c.name, c.type) for c in read.chats])
    if problem is None:
        return None
    return (
        f'{read.path}: {problem}; add "allow_single_speaker": true to '
        "RETRAIN_PREPARE_OPTIONS to train on it anyway"
    )


def newest_per_chat(checks: Iterable[ExportCheck]) -> dict[int, int]:
    """Latest message date per chat over all usable exports."""
    newest: dict[int, int] = {}
    for check in checks:
        for chat_id, date in check.newest.items():
            newest[chat_id] = max(date, newest.get(chat_id, date))
    return newest


def to_chat_message(row: Message) -> ChatMessage:
    """A stored message in the normalized form ``prepare`` reads from exports.

    A post by a chat itself (an anonymous admin, a linked channel: a negative sender id) gets
    the export's ``channel<id>``/``chat<id>`` form, so it stays context and never a response.
    """
    from training.data.messages import ChatMessage, stored_sender_id

    return ChatMessage(
        chat_id=row.chat_id,
        message_id=row.message_id,
        sender=row.sender_name,
        sender_id=stored_sender_id(row.sender_id, row.chat_id),
        date=int(row.date.timestamp()),
        text=row.text,
        reply_to=row.reply_to_message_id,
    )


def history_after_exports(session: Session, newest: Mapping[int, int]) -> Iterator[ChatMessage]:
    """Human messages stored by the bot that the exports do not already hold.

    A chat's stored messages count from just after its newest exported message; chats the
    exports do not cover count whole. Opted-out members and the bot's own replies never
    appear (``messages_since`` leaves them out).
    """
    from storage.history import messages_since

    for row in messages_since(session, None, human_only=True):
        message = to_chat_message(row)
        if message.date > newest.get(message.chat_id, -1):
            yield message


def history_digest(session: Session) -> tuple[str, int]:
    """Hash and count of every stored human message: changes when the bot stores more."""
    from storage.history import messages_since

    digest = hashlib.sha256()
    count = 0
    for row in messages_since(session, None, human_only=True):
        line = f"{row.chat_id}\t{row.message_id}\t{row.sender_id}\t{row.date.isoformat()}\t"
        digest.update(line.encode() + row.text.encode() + b"\n")
        count += 1
    return digest.hexdigest(), count


def fingerprint(
    export_hashes: Iterable[str], history: str | None, options: Mapping[str, Any]
) -> str:
    """One hash of everything that decides what a run would train and how it is judged."""
    payload = {
        "exports": sorted(export_hashes),
        "history": history,
        "options": dict(options),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
