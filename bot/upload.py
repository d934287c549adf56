"""An admin sends the bot a Telegram Desktop export; the bot checks it, files it, offers a run.

The admin loop without a shell: in a private chat an admin (``ADMIN_USER_IDS``) sends
``result.json`` or a ``.zip`` of the export folder as a document. The bot

1. refuses anyone else (politely; nothing is downloaded or stored) and files too big for the
   Bot API to hand over (the cloud serves 20 MB, a local Bot API server 2 GB);
2. downloads into a hidden folder inside ``EXPORTS_DIR`` (same filesystem, ignored by the
   retraining's export search, writable wherever the exports are);
3. unpacks a zip with its entries checked first (no ``..`` or absolute names, no zip bomb,
   exactly one ``result.json``), copying ``result.json`` with a byte cap;
4. reads it with the same reader as ``friendbot prepare`` (training.data.export: streaming,
   only the kept columns in memory), so what passes here is what retraining will read;
5. only then moves it into ``EXPORTS_DIR`` in one ``os.replace`` under a name that says what
   it is (``climbing-club-2026-11-30.json``; never over another file);
6. answers with what it found and a *Retrain now* / *Later* keyboard. *Retrain now* starts the
   same run as ``/retrain`` (bot.retrain_hooks), whose outcome is posted in this chat.

Every failure is one line in the chat, and the temporary folder is removed whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.handlers import SERVICE_KEY
from training.errors import InputError

if TYPE_CHECKING:
    from bot.service import FriendBot
    from bot.settings import Settings

log = logging.getLogger(__name__)

MB = 1024 * 1024
CLOUD_LIMIT = 20 * MB  # getFile on api.telegram.org
LOCAL_SERVER_LIMIT = 2000 * MB  # a local Bot API server (telegram-bot-api --local)
MAX_UNPACKED = 2 * 1024 * MB  # a zip's result.json, uncompressed
MAX_RATIO = 100  # uncompressed / compressed, above which an entry is a zip bomb
RATIO_FROM = 1 * MB  # tiny entries compress absurdly well and harm nobody
_CHUNK = 1 << 20

NOW, LATER = "retrain:now", "retrain:later"
KEYBOARD = InlineKeyboardMarkup(
    [[InlineKeyboardButton("Retrain now", callback_data=NOW),
      InlineKeyboardButton("Later", callback_data=LATER)]]
)  # fmt: skip
NOT_ADMIN = "Thanks! Only the bot's admins can send me chat exports, so I haven't kept this file."
WHAT_TO_SEND = (
    "Send me a Telegram Desktop export: its result.json, or a .zip of the export folder "
    "(Settings > Advanced > Export Telegram data, format: JSON)."
)
UPLOAD_LOCK = "upload.lock"


class UploadError(Exception):
    """One line for the admin: what is wrong with the file they sent."""


def install(application: Application) -> None:
    """Documents in private chats (group -1: before the catch-all for other chats) and the
    keyboard's buttons."""
    private_document = filters.ChatType.PRIVATE & filters.Document.ALL
    application.add_handler(MessageHandler(private_document, receive), group=-1)
    application.add_handler(
        CallbackQueryHandler(button, pattern=r"^retrain:(now|later)$"), group=-1
    )
    application.bot_data[UPLOAD_LOCK] = asyncio.Lock()


def download_limit(settings: Settings) -> int:
    """What the Bot API will hand over: 20 MB from the cloud, 2 GB from a local server."""
    from bot.settings import TELEGRAM_FILES

    cloud = settings.telegram_api_base_file_url == TELEGRAM_FILES
    return CLOUD_LIMIT if cloud else LOCAL_SERVER_LIMIT


# --- the handlers --------------------------------------------------------------------------


async def receive(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A document in a private chat: an admin's export to file, or a polite refusal.

    The download and the checks run as a task of their own (minutes for a big export), so
    the updates behind this one are not held up; no handler after this one sees it."""
    context.application.create_task(_receive(update, context), update=update, name="upload")
    raise ApplicationHandlerStop


async def _receive(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    msg = update.effective_message
    service: FriendBot = context.application.bot_data[SERVICE_KEY]
    user_id = update.effective_user.id if update.effective_user else None
    if msg is None or msg.document is None:
        return
    if not service.is_admin(user_id):
        log.info("export upload refused: user %s is not an admin", user_id)
        await msg.reply_text(NOT_ADMIN)
        return
    document = msg.document
    name = document.file_name or "document"
    limit = download_limit(service.settings)
    try:
        kind = _kind(name)
        if document.file_size is not None and document.file_size > limit:
            raise UploadError(_too_big(document.file_size))
        async with context.application.bot_data[UPLOAD_LOCK]:
            await msg.reply_text(f"Got {name}; checking it…")
            exports_dir = Path(service.settings.exports_dir)
            with staging(exports_dir) as folder:
                received = folder / ("upload.zip" if kind == "zip" else "upload.json")
                try:
                    telegram_file = await document.get_file()
                    await telegram_file.download_to_drive(received, read_timeout=600)
                except TelegramError as exc:
                    if "too big" in str(exc).lower():
                        too_big = _too_big(document.file_size)
                        raise UploadError(too_big) from None
                    raise UploadError(f"{name}: could not download it ({exc})") from None
                summary = await asyncio.to_thread(
                    file_export, received, kind, name, exports_dir, service
                )
    except UploadError as exc:
        await msg.reply_text(str(exc))
        return
    await msg.reply_text(summary.text(), reply_markup=KEYBOARD)


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """*Retrain now* starts the same run as /retrain; *Later* leaves it to the schedule."""
    from bot.retrain_hooks import hooks_of

    query = update.callback_query
    service: FriendBot = context.application.bot_data[SERVICE_KEY]
    if query is None:
        return
    if not service.is_admin(query.from_user.id):
        await query.answer("Only the bot's admins can start retraining.")
        raise ApplicationHandlerStop
    chat_id = query.message.chat.id if query.message else query.from_user.id
    if query.data == NOW:
        started = hooks_of(context).start_manual(chat_id, force=False)
        text = (
            "Retraining started. I'll post the result here; replies go on meanwhile."
            if started
            else "A retraining run started from Telegram is still going."
        )
    else:
        text = "OK. The next scheduled run (or /retrain) will use it."
    await query.answer()
    with contextlib.suppress(TelegramError):  # the keyboard is spent either way
        await query.edit_message_reply_markup(reply_markup=None)
    await context.bot.send_message(chat_id, text)
    raise ApplicationHandlerStop


def _kind(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(".zip"):
        return "zip"
    if lowered.endswith(".json"):
        return "json"
    raise UploadError(f"{name}: not a .json or .zip file. {WHAT_TO_SEND}")


def _too_big(size: int | None) -> str:
    what = f"{size / MB:.0f} MB" if size else "This file"
    return (
        f"{what} is too big for me to download: Telegram's cloud Bot API hands bots at most "
        "20 MB, a local Bot API server 2 GB (see docs/retraining.md). Zip the export folder "
        "(exports compress about 10x), or copy result.json into EXPORTS_DIR on the server."
    )


# --- checking and filing (in a thread: file work) ------------------------------------------


@contextlib.contextmanager
def staging(exports_dir: Path):  # type: ignore[no-untyped-def]
    """A hidden folder in EXPORTS_DIR for the download, removed whatever happens."""
    try:
        exports_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".upload-", dir=exports_dir))
    except OSError as exc:
        raise UploadError(
            f"EXPORTS_DIR {exports_dir}: cannot write there ({exc.strerror})"
        ) from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Summary:
    """What the admin is told about an export that was filed."""

    filed_as: str
    chat_name: str
    chat_type: str
    messages: int
    first: int
    last: int
    speakers: list[tuple[str, int]]
    new_since: tuple[str, int] | None = None  # (previous file, messages after its newest)
    opted_out: list[tuple[str, int]] = field(default_factory=list)
    duplicate: bool = False

    def text(self) -> str:
        first, last = (_day(self.first), _day(self.last))
        lines = [
            f"{'Already have' if self.duplicate else 'Saved'} {self.filed_as}",
            f"Chat: {self.chat_name} ({self.chat_type.replace('_', ' ')})",
            f"Messages: {self.messages:,} from {first} to {last}",
            f"Speakers: {len(self.speakers)}: "
            + ", ".join(f"{name} ({count:,})" for name, count in self.speakers[:8])
            + (", …" if len(self.speakers) > 8 else ""),
        ]
        if self.new_since is None:
            lines.append("New: the first export of this chat here")
        else:
            previous, new = self.new_since
            lines.append(f"New since {previous}: {new:,} messages")
        if self.opted_out:
            who = ", ".join(f"{name} ({count:,})" for name, count in self.opted_out)
            lines.append(f"Opted out, their messages will be left out: {who}")
        lines.append("Retrain on it now?")
        return "\n".join(lines)


def file_export(
    received: Path, kind: str, shown_name: str, exports_dir: Path, service: FriendBot
) -> Summary:
    """Check ``received`` (unpacking a zip), then move it into ``exports_dir``."""
    export = unpack(received, shown_name) if kind == "zip" else received
    read = read_upload(export, shown_name, service.settings.retrain_chat)
    summary = summarize(read, exports_dir, service)
    target, duplicate = place(export, exports_dir, summary.filed_as)
    summary.filed_as, summary.duplicate = target.name, duplicate
    log.info("export %s from an admin filed as %s", shown_name, target)
    return summary


def unpack(archive: Path, shown_name: str) -> Path:
    """The zip's one ``result.json``, copied out with its entries checked first."""
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = zf.infolist()
            for entry in entries:
                _check_entry(entry, shown_name)
            results = [
                e for e in entries
                if PurePosixPath(e.filename).name == "result.json"
                and not e.filename.startswith("__MACOSX/")
            ]  # fmt: skip
            if len(results) != 1:
                found = "no result.json" if not results else f"{len(results)} result.json files"
                raise UploadError(
                    f"{shown_name}: {found} in it; zip one export folder (it holds one result.json)"
                )
            out = archive.with_name("result.json")
            _copy_capped(zf, results[0], out, shown_name)
    except zipfile.BadZipFile:
        raise UploadError(f"{shown_name}: not a valid zip file") from None
    return out


def _check_entry(entry: zipfile.ZipInfo, shown_name: str) -> None:
    name = entry.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise UploadError(f"{shown_name}: refused, an entry points outside the folder ({name!r})")
    if entry.file_size > MAX_UNPACKED:
        raise UploadError(f"{shown_name}: refused, {name} unpacks to more than 2 GB")
    ratio = entry.file_size / max(entry.compress_size, 1)
    if entry.file_size > RATIO_FROM and ratio > MAX_RATIO:
        raise UploadError(
            f"{shown_name}: refused, {name} unpacks {ratio:.0f}x its packed size (a zip bomb?)"
        )


def _copy_capped(zf: zipfile.ZipFile, entry: zipfile.ZipInfo, out: Path, shown_name: str) -> None:
    """Copy ``entry`` in 1 MiB chunks, stopping at what its header promised (a lying header
    is a bomb too)."""
    cap = min(entry.file_size, MAX_UNPACKED)
    written = 0
    with zf.open(entry) as src, open(out, "wb") as dst:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > cap:
                raise UploadError(f"{shown_name}: refused, result.json is larger than it says")
            dst.write(chunk)


@dataclass
class UploadRead:
    chat_id: int
    chat_name: str
    chat_type: str
    messages: int
    first: int
    last: int
    speakers: dict[str, tuple[str, int]]  # sender id -> (name, messages)
    dates: list[int]


def read_upload(path: Path, shown_name: str, chat: str | None) -> UploadRead:
    """Read with prepare's reader; exactly one chat, with messages to learn from."""
    from training.data.export import ChatSelector, NeedsChatChoice, choose_chat_error, read_export
    from training.data.normalize import Rules

    def mine(text: str) -> str:  # name the file as the admin knows it, not our temp path
        return text.replace(str(path), shown_name)

    try:
        try:
            read = read_export(path, ChatSelector.of([chat] if chat else []), Rules())
        except NeedsChatChoice:
            raise choose_chat_error(path) from None
    except InputError as exc:
        raise UploadError(mine(str(exc))) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UploadError(f"{shown_name}: not a Telegram export ({type(exc).__name__})") from None
    if len(read.chats) != 1:
        raise UploadError(
            f"{shown_name}: {len(read.chats)} chats in it; set RETRAIN_CHAT to the one to use"
        )
    table = read.table()
    if table.num_rows == 0:
        raise UploadError(f"{shown_name}: no usable messages (only service messages or media)")
    info = read.chats[0]
    dates = table["date"].to_pylist()
    speakers: dict[str, tuple[str, int]] = {}
    for sender_id, name in zip(
        table["sender_id"].to_pylist(), table["sender"].to_pylist(), strict=True
    ):
        _, count = speakers.get(sender_id, (name, 0))
        speakers[sender_id] = (name, count + 1)
    return UploadRead(
        chat_id=int(info.chat_id or 0),
        chat_name=info.name or "(no name)",
        chat_type=info.type or "chat",
        messages=table.num_rows,
        first=min(dates),
        last=max(dates),
        speakers=speakers,
        dates=dates,
    )


def summarize(read: UploadRead, exports_dir: Path, service: FriendBot) -> Summary:
    """The figures, the comparison with the newest export of the same chat, the opt-outs."""
    opted_out = {f"user{user_id}" for user_id in opted_out_ids(service)}
    by_count = sorted(read.speakers.values(), key=lambda item: (-item[1], item[0]))
    summary = Summary(
        filed_as=f"{slug(read.chat_name)}-{_day(read.last)}.json",
        chat_name=read.chat_name,
        chat_type=read.chat_type,
        messages=read.messages,
        first=read.first,
        last=read.last,
        speakers=by_count,
        opted_out=[read.speakers[s] for s in sorted(read.speakers) if s in opted_out],
    )
    previous = previous_export(exports_dir, read.chat_id)
    if previous is not None:
        name, newest = previous
        summary.new_since = (name, sum(1 for date in read.dates if date > newest))
    return summary


def opted_out_ids(service: FriendBot) -> set[int]:
    from storage.history import opted_out_ids as stored

    with service.sessions() as session:
        return stored(session)


def previous_export(exports_dir: Path, chat_id: int) -> tuple[str, int] | None:
    """The export in EXPORTS_DIR with the newest message of ``chat_id``: (name, its date)."""
    from training.data.export import list_chats
    from training.retrain.inputs import check_export, find_exports

    best: tuple[str, int] | None = None
    for path in find_exports(exports_dir):
        try:
            if not any(c.chat_id == chat_id for c in list_chats(path)):
                continue
        except InputError:
            continue
        newest = check_export(path, str(chat_id)).newest.get(chat_id)
        if newest is not None and (best is None or newest > best[1]):
            best = (str(path.relative_to(exports_dir)), newest)
    return best


def place(export: Path, exports_dir: Path, name: str) -> tuple[Path, bool]:
    """Move ``export`` into ``exports_dir`` as ``name`` (``name-2``… when taken by another
    file); (path, True) when an identical file is there already (nothing moved)."""
    digest = _sha256(export)
    stem, suffix = name.removesuffix(".json"), ".json"
    for n in range(1, 1000):
        target = exports_dir / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        if target.exists():
            if target.is_file() and _sha256(target) == digest:
                return target, True
            continue
        with open(export, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(export, target)
        _fsync_dir(exports_dir)
        return target, False
    raise UploadError(f"EXPORTS_DIR: too many files named {stem}-N.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every OS/filesystem can fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def slug(name: str) -> str:
    """``Climbing Club 🧗`` -> ``climbing-club``: safe in any filesystem, still readable."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return text[:60].strip("-") or "chat"


def _day(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")
