"""``friendbot doctor`` and the admins' ``/doctor``: what a first deployment gets wrong, checked.

Every check is a small function returning :class:`Check` rows (name, ok/warn/fail, what was
found, what to do), so the command line and the bot print the same table from the same code.
A ``fail`` is something that stops the bot from running at all (a rejected token, no model, an
unusable database, settings it refuses to start with); the command then exits 1. Everything
else that makes the bot misbehave (privacy mode, a chat it is not in, no admins, a stale ct2
conversion, a full disk) is a ``warn``: the bot runs, but not as the admin expects.

The checks only read. The Telegram ones use python-telegram-bot's ``Bot`` with
``TELEGRAM_API_BASE_URL`` (so tests point them at a fake Bot API server); the database is opened
read-only and without creating SQLite's side files, so a doctor run as another user (root)
cannot leave files behind that the bot's user may not write.

Why one file of ~600 lines: each check is a short function, and an admin fixing a deployment
reads them together, in the order the report prints them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import InputError, first_line

if TYPE_CHECKING:
    from telegram import Bot, User

    from bot.settings import Settings
    from training.settings import TrainingSettings

TELEGRAM_TIMEOUT_S = 10.0
"""Per Bot API call: a doctor that hangs on a dead network is no help."""
DISK_FACTOR = 3
"""Free space wanted for the next training, in sizes of the model in service: the candidate,
its checkpoints and its ct2 conversion sit next to the served model until one is removed."""
SEES_EVERYTHING = frozenset({"administrator", "creator"})
"""Chat member statuses that receive every group message even with privacy mode on."""

PRIVACY_FIX = (
    "@BotFather: /setprivacy, choose the bot, Disable; then remove the bot from the group and "
    "add it again (Telegram applies the change when it joins). Or make the bot a group admin."
)


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One row of the table: ``fix`` says what to do, for a ``warn`` or a ``fail``."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAIL, detail, fix)


def blocking(checks: Iterable[Check]) -> bool:
    """Whether any check failed: the bot cannot run as configured."""
    return any(c.status is Status.FAIL for c in checks)


# --- everything, in the table's order --------------------------------------------------------


def diagnose(settings: Settings | None = None, env_file: Path | str | None = ".env") -> list[Check]:
    """Run every check: settings, Telegram, model, database, folders, schedule, disk.

    Blocking (network and disk): the bot calls it in a worker thread. ``settings`` defaults to
    the environment and ``env_file``, as ``friendbot run`` reads them.
    """
    from bot.settings import load_settings as load_bot_settings

    checks = [check_user()]
    if settings is None:
        try:
            settings = load_bot_settings(env_file)
        except InputError as exc:
            return [*checks, fail("settings", str(exc), "fix the variable in .env")]
    try:
        checks += asyncio.run(telegram_checks(settings))
    except Exception as exc:  # no check may take the report down with it
        checks.append(_crashed("token", exc, fail, settings.token))
    model_check, model_dir = check_model(settings.model_dir)
    checks.append(model_check)
    if model_dir is not None:
        checks.append(_guarded("ct2", warn, check_ct2, model_dir, settings.inference_backend))
    checks.append(_guarded("database", fail, check_database, settings.database_url))
    checks.append(_guarded("exports", warn, check_exports_dir, settings.exports_dir))
    checks.append(_guarded("schedule", warn, check_schedule, settings))
    checks.append(_guarded("disk", warn, check_disk, settings.models_dir, model_dir))
    return checks


def _guarded(
    name: str, severity: Callable[..., Check], check: Callable[..., Check], *args: Any
) -> Check:
    """``check(*args)``; an error nobody foresaw (a folder this user may not read) is a row
    of its own, a ``severity`` (warn or fail), instead of the end of the report."""
    try:
        return check(*args)
    except Exception as exc:
        return _crashed(name, exc, severity)


def _crashed(
    name: str, exc: BaseException, severity: Callable[..., Check], token: str | None = None
) -> Check:
    return severity(
        name,
        f"could not check ({type(exc).__name__}: {_masked(exc, token)})",
        "run the doctor as the bot's user; if it persists, report this line",
    )


# --- who runs it -----------------------------------------------------------------------------


def check_user(euid: int | None = None) -> Check:
    """Warn when run as root: every permission check passes for root, and files created now
    (a database, a model) would belong to root, where the bot's own user cannot write them."""
    uid = os.geteuid() if euid is None else euid
    if uid == 0:
        return warn(
            "user",
            "running as root: permission checks pass for root even where the bot's user fails",
            f"run it as the bot's user in its working directory: sudo -u friendbot "
            f"{Path(sys.executable).with_name('friendbot')} doctor",
        )
    return ok("user", f"running as uid {uid}")


# --- Telegram --------------------------------------------------------------------------------


async def telegram_checks(settings: Settings) -> list[Check]:
    """Token (getMe), each allowed chat (getChat, getChatMember), privacy mode, reactions,
    the admins."""
    from telegram import Bot
    from telegram.error import InvalidToken, NetworkError
    from telegram.request import HTTPXRequest

    token = settings.token
    if not token:
        return [
            fail(
                "token",
                "TELEGRAM_BOT_TOKEN is not set",
                "create a bot with @BotFather (/newbot) and put its token in .env",
            )
        ]
    base_url = settings.telegram_api_base_url
    request = HTTPXRequest(connect_timeout=TELEGRAM_TIMEOUT_S, read_timeout=TELEGRAM_TIMEOUT_S)
    bot = Bot(token, base_url=base_url, request=request)
    try:
        try:
            await bot.initialize()  # getMe
        except InvalidToken:  # its message quotes the token: never shown
            return [
                fail(
                    "token",
                    "Telegram rejected TELEGRAM_BOT_TOKEN",
                    "copy the token again from @BotFather (/mybots, API Token); "
                    "a revoked token stops working",
                )
            ]
        except NetworkError as exc:
            reason = _masked(exc, token)
            return [
                fail(
                    "token",
                    f"cannot reach the Bot API at {base_url} ({reason})",
                    "check the server's network and DNS, and TELEGRAM_API_BASE_URL",
                )
            ]
        me = bot.bot
        checks = [ok("token", f"valid: @{me.username} (id {me.id})")]
        statuses: dict[int, str] = {}
        if not settings.allowed_chat_ids:
            checks.append(
                warn(
                    "allowed chats",
                    "ALLOWED_CHAT_IDS is empty: the bot ignores every chat",
                    "set ALLOWED_CHAT_IDS in .env; the bot's log names the id of every chat "
                    "it ignores, so start it and write in the group once",
                )
            )
        for chat_id in sorted(settings.allowed_chat_ids):
            check, status = await check_chat(bot, me, chat_id)
            checks.append(check)
            if status is not None:
                statuses[chat_id] = status
        checks.append(check_privacy(me, settings.allowed_chat_ids, statuses))
        checks.append(check_reactions(settings.allowed_chat_ids, statuses))
        checks.append(await check_admins(bot, me, settings.admin_user_ids))
        return checks
    finally:
        await bot.shutdown()


async def check_chat(bot: Bot, me: User, chat_id: int) -> tuple[Check, str | None]:
    """Whether the bot reaches ``chat_id`` and may post there; also the bot's member status
    (None when unknown), which the privacy check needs."""
    from telegram.error import TelegramError

    name = f"chat {chat_id}"
    try:
        chat = await bot.get_chat(chat_id)
    except TelegramError as exc:
        return warn(
            name,
            f"not reachable: {_masked(exc, bot.token)}",
            "add the bot to the chat, and check the id (Bot API form: supergroups -100...; "
            "the bot's log names the id of every chat it ignores)",
        ), None
    title = chat.title or chat.full_name or chat.username or "?"
    if chat.type == "private":
        return ok(name, f"private chat with {title}"), None
    try:
        member = await bot.get_chat_member(chat_id, me.id)
    except TelegramError as exc:
        return warn(
            name,
            f"{chat.type} {title!r}: the bot's membership is unknown ({_masked(exc, bot.token)})",
            f"add @{me.username} to the group",
        ), None
    status = str(member.status)
    if status in ("left", "kicked"):
        return warn(
            name,
            f"{chat.type} {title!r}: the bot is not a member ({status})",
            f"add @{me.username} to the group",
        ), status
    if status == "restricted" and not getattr(member, "can_send_messages", True):
        return warn(
            name,
            f"{chat.type} {title!r}: the bot may not send messages here",
            "let the bot send messages (group settings, Permissions or Exceptions)",
        ), status
    return ok(name, f"{chat.type} {title!r}, the bot is {status}"), status


def check_privacy(me: User, allowed: Iterable[int], statuses: dict[int, str]) -> Check:
    """Privacy mode on and not an admin means the bot gets only commands and replies to it:
    it stores nothing, never joins in, and looks as if it "does nothing"."""
    groups = sorted(chat_id for chat_id in allowed if chat_id < 0)
    if me.can_read_all_group_messages:
        return ok("privacy mode", "off: the bot receives every message of its groups")
    blind = [chat_id for chat_id in groups if statuses.get(chat_id) not in SEES_EVERYTHING]
    if not blind:
        if not groups:
            return ok("privacy mode", "on (no group in ALLOWED_CHAT_IDS)")
        return ok("privacy mode", "on, but the bot is an admin of every allowed group")
    chats = ", ".join(str(c) for c in blind)
    return warn(
        "privacy mode",
        f"on, and the bot is no admin in {chats}: it receives only commands and replies to "
        "its own messages there, so it stores nothing and never joins in",
        PRIVACY_FIX,
    )


def check_reactions(allowed: Iterable[int], statuses: dict[int, str]) -> Check:
    """Telegram sends reactions (``message_reaction``) only to a bot that is an admin of the
    group: elsewhere the group's 👍 and 👎 on the bot's replies never reach it, and
    RETRAIN_USE_FEEDBACK has nothing to learn from (quoting replies still count)."""
    groups = sorted(chat_id for chat_id in allowed if chat_id < 0)
    if not groups:
        return ok("reactions", "no group in ALLOWED_CHAT_IDS")
    blind = [chat_id for chat_id in groups if statuses.get(chat_id) not in SEES_EVERYTHING]
    if not blind:
        return ok("reactions", "received: the bot is an admin of every allowed group")
    chats = ", ".join(str(c) for c in blind)
    return warn(
        "reactions",
        f"not received in {chats}: Telegram sends reactions only to group admins, so the "
        "group's reactions to the bot's replies are lost",
        "make the bot an administrator of the group (no rights needed beyond the default)",
    )


async def check_admins(bot: Bot, me: User, admin_ids: Iterable[int]) -> Check:
    """Admins are set, and each has a private chat with the bot (Telegram lets a bot write
    only to people who started it: retraining results and notices go there)."""
    from telegram.error import TelegramError

    admins = sorted(admin_ids)
    if not admins:
        return warn(
            "admins",
            "ADMIN_USER_IDS is empty: nobody can /reload, /retrain, /doctor or get notices",
            "set ADMIN_USER_IDS in .env to your numeric Telegram user id",
        )
    unreachable = []
    for user_id in admins:
        try:
            await bot.get_chat(user_id)
        except TelegramError:
            unreachable.append(user_id)
    if unreachable:
        ids = ", ".join(str(u) for u in unreachable)
        return warn(
            "admins",
            f"{len(admins)} set; the bot cannot message {ids} (no private chat with it yet)",
            f"each admin opens a private chat with @{me.username} and presses Start",
        )
    return ok("admins", f"{len(admins)} set, all reachable privately")


def _masked(exc: BaseException, token: str | None) -> str:
    """An exception's first line, with the token (if quoted) replaced."""
    text = first_line(exc)
    return text.replace(token, "<TOKEN>") if token else text


# --- model -----------------------------------------------------------------------------------


def check_model(model_dir: Path) -> tuple[Check, Path | None]:
    """The model in service loads and its tokenizer fits it; returns the resolved directory."""
    try:
        resolved, summary = validate_model(Path(model_dir))
    except (InputError, OSError) as exc:  # OSError: a file this user may not read
        return fail(
            "model",
            str(exc),
            "train one (friendbot train) and serve it: friendbot rollback DIR points "
            "models/current at it; or set MODEL_DIR",
        ), None
    return ok("model", summary), resolved


def validate_model(model_dir: Path) -> tuple[Path, str]:
    """Everything ``friendbot run`` needs of MODEL_DIR short of loading the weights: a model
    directory with weights, a readable friendbot.json, a tokenizer that loads, and no token id
    the model has no embedding for. One InputError line otherwise.

    The single place the doctor judges a model directory, so a fuller check in
    training.model.model_dir can replace the body.
    """
    import json

    from training.model.model_dir import check_model_dir, read_info

    resolved = check_model_dir(model_dir)
    info = read_info(resolved)
    try:
        config = json.loads((resolved / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{resolved / 'config.json'}: not valid JSON ({first_line(exc)})") from exc
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{model_dir}: cannot load the tokenizer ({first_line(exc)})") from exc
    vocab = config.get("vocab_size")
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise InputError(
            f"{model_dir}: the tokenizer has {len(tokenizer)} tokens but the model only "
            f"{vocab} (tokenizer and weights come from different models)"
        )
    where = (
        str(model_dir) if resolved == Path(model_dir).absolute() else f"{model_dir} -> {resolved}"
    )
    base = info.get("base_model") or config.get("_name_or_path") or "a model"
    return resolved, f"{where} ({base}, {_size_text(_tree_size(resolved))})"


def check_ct2(model_dir: Path, backend: str) -> Check:
    """Whether replies will use the CTranslate2 conversion, and why not."""
    from training.model.model_dir import CT2_DIRNAME

    if backend == "hf":
        return ok("ct2", "not used (INFERENCE_BACKEND=hf)")
    converted = (model_dir / CT2_DIRNAME / "model.bin").is_file()
    problem = ct2_problem(model_dir)
    if problem is None:
        return ok("ct2", "fresh: replies use CTranslate2")
    fix = f"friendbot export-ct2 {model_dir}"
    if backend == "ct2":
        return fail("ct2", f"INFERENCE_BACKEND=ct2 but {problem}", fix)
    if not converted:
        return ok("ct2", f"no conversion: replies use HF generate ({fix} makes them ~3x faster)")
    return warn("ct2", f"{problem}: the bot ignores it and uses HF generate (slower)", fix)


def ct2_problem(model_dir: Path) -> str | None:
    """Why ``model_dir/ct2`` cannot serve the model (None when it can): the reply engine's own
    rule, so the doctor never disagrees with what the bot will do."""
    from training.model.model_dir import ct2_problem

    return ct2_problem(model_dir)


# --- database --------------------------------------------------------------------------------


def check_database(url: str) -> Check:
    """Reachable, writable by this user (SQLite), and at a schema this friendbot knows."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception as exc:
        return fail("database", f"DATABASE_URL: not a database URL ({first_line(exc)})", _DB_FIX)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(str(parsed.database)).expanduser()
        if not path.exists():
            home = _nearest_existing(path.parent)
            if not home.is_dir():
                return fail("database", f"{path}: cannot be created ({home} is a file)", _DB_FIX)
            if not os.access(home, os.W_OK | os.X_OK):
                return fail(
                    "database", f"{path}: cannot be created ({home} is not writable)", _chown(home)
                )
            return ok("database", f"{path}: none yet, created with the schema at the first start")
        for needed in (path, path.parent):  # WAL writes its side files next to the database
            if not os.access(needed, os.W_OK):
                return fail("database", f"{needed}: not writable by this user", _chown(needed))
    try:
        current, heads, known = schema_revisions(url)
    except Exception as exc:
        return fail("database", f"{shown}: cannot read it ({first_line(exc)})", _DB_FIX)
    if not current:
        return ok("database", f"{shown}: no tables yet, created at the bot's first start")
    unknown = current - known
    if unknown:
        return fail(
            "database",
            f"{shown}: schema {', '.join(sorted(unknown))} is unknown to this friendbot "
            "(written by a newer version)",
            "upgrade friendbot (pip install -U), or restore the backup taken before",
        )
    if current != heads:
        return ok(
            "database",
            f"{shown}: schema {', '.join(sorted(current))}, upgraded to "
            f"{', '.join(sorted(heads))} when the bot starts",
        )
    return ok("database", f"{shown}: reachable, schema current ({', '.join(sorted(heads))})")


_DB_FIX = "check DATABASE_URL, and that the database server runs and accepts this user"


def schema_revisions(url: str) -> tuple[set[str], set[str], set[str]]:
    """(revisions the database is at, this friendbot's heads, every revision it knows).

    The one place the doctor opens the database; read-only (see :func:`_read_only_engine`).
    """
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from storage.db import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config())
    known = {s.revision for s in scripts.walk_revisions()}
    engine = _read_only_engine(url)
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
    return current, set(scripts.get_heads()), known


def _read_only_engine(url: str) -> Any:
    """An engine that cannot change the database, nor create files next to an SQLite one.

    SQLite opens even a ``mode=ro`` connection with ``-wal``/``-shm`` side files, owned by
    whoever opens it; a doctor run as root would leave files the bot's user cannot write. When
    there is no ``-wal`` file, everything is in the database file itself, and
    ``immutable=1`` reads it without creating anything; otherwise ``mode=ro`` uses the files
    that are there.
    """
    from urllib.parse import quote

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from storage.db import make_engine

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return make_engine(url)
    path = Path(str(parsed.database)).expanduser().absolute()
    sidecars = all(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))
    mode = "mode=ro" if sidecars else "immutable=1"
    return create_engine(f"sqlite:///file:{quote(str(path))}?{mode}&uri=true")


# --- folders, schedule, disk -----------------------------------------------------------------


def check_exports_dir(exports_dir: Path) -> Check:
    """EXPORTS_DIR exists and this user may add exports to it."""
    path = Path(exports_dir)
    if not path.exists():
        return warn(
            "exports",
            f"{path}: missing (retraining finds no export)",
            f"mkdir -p {path}, owned by the bot's user; put result.json exports there",
        )
    if not path.is_dir():
        return warn("exports", f"{path}: not a directory", "set EXPORTS_DIR to a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        return warn("exports", f"{path}: not writable by this user", _chown(path))
    found = sum(1 for _ in path.rglob("*.json"))
    return ok("exports", f"{path}: writable, {found} JSON file{'s' if found != 1 else ''}")


def check_schedule(retrain: TrainingSettings, now: datetime | None = None) -> Check:
    """When RETRAIN_CRON fires next, and who fires it. A bad expression stops the bot only
    when the schedule runs inside it (RETRAIN_IN_BOT)."""
    from training.retrain.scheduler import make_trigger

    runner = (
        "inside the bot (RETRAIN_IN_BOT)"
        if retrain.retrain_in_bot
        else "by `friendbot schedule`, if it runs (a systemd timer keeps its own time)"
    )
    try:
        trigger = make_trigger(retrain)
    except InputError as exc:
        make = fail if retrain.retrain_in_bot else warn
        return make("schedule", str(exc), "RETRAIN_CRON takes 5 crontab fields: 0 4 * * *")
    now = now or datetime.now(retrain.timezone())
    when = trigger.get_next_fire_time(None, now)
    if when is None:
        return warn("schedule", f"RETRAIN_CRON {retrain.retrain_cron!r} never fires", "fix it")
    return ok(
        "schedule",
        f"next run {when:%a %Y-%m-%d %H:%M %Z} (in {_span(when - now)}), {runner}",
    )


def check_disk(models_dir: Path, model_dir: Path | None) -> Check:
    """Free space on MODELS_DIR's disk for the next training (DISK_FACTOR x the served model)."""
    from training.model.model_dir import resolve_current

    where = _nearest_existing(Path(models_dir))
    free = shutil.disk_usage(where).free
    served = resolve_current(Path(models_dir)) or model_dir
    if served is None or not served.is_dir():
        return ok("disk", f"{_size_text(free)} free on {where} (no model yet to size from)")
    need = DISK_FACTOR * _tree_size(served)
    detail = f"{_size_text(free)} free on {where}; the next training needs about {_size_text(need)}"
    if free < need:
        return warn(
            "disk",
            detail,
            "free space, or lower KEEP_MODELS (old models are removed after a promotion)",
        )
    return ok("disk", detail)


# --- output ----------------------------------------------------------------------------------

MARKS = {Status.OK: "✅", Status.WARN: "⚠️", Status.FAIL: "❌"}


def summary(checks: list[Check]) -> str:
    fails = sum(c.status is Status.FAIL for c in checks)
    warns = sum(c.status is Status.WARN for c in checks)
    if fails:
        return f"{_count(fails, 'failure')}, {_count(warns, 'warning')}: the bot cannot run"
    if warns:
        return f"{_count(warns, 'warning')}: the bot runs, but see what to do"
    return "all good"


def as_text(checks: list[Check], limit: int = 4000) -> str:
    """The report as a chat message (plain text, within Telegram's 4096 characters)."""
    lines = [f"friendbot doctor: {summary(checks)}"]
    for c in checks:
        lines.append(f"{MARKS[c.status]} {c.name}: {c.detail}")
        if c.fix:
            lines.append(f"    → {c.fix}")
    text = "\n".join(lines)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- small helpers ---------------------------------------------------------------------------


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _chown(path: Path) -> str:
    return f"give it to the bot's user: chown -R friendbot: {path}"


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _size_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def _span(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"
