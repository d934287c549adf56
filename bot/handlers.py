"""Telegram handlers: small, one per command, all thin glue over ``FriendBot`` (bot/service.py).

Wiring (which handler serves which update, and the allowed-chats filter) lives in
bot/app.py. Handlers that generate are registered with ``block=False`` and the message handler
hands its reply to a task, so a generation never holds up the next update: messages keep being
stored and other commands keep being answered while a model works.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, TypeVar

from telegram import Message, MessageEntity, ReplyParameters, Update
from telegram.constants import ChatAction, ParseMode
from telegram.ext import Application, ContextTypes

from bot.policy import Decision
from bot.replies import Reply, UsageError
from bot.responder import GenerationTimeout, typing
from bot.service import FriendBot
from storage.writer import MessageRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_KEY = "friendbot"
"""``application.bot_data[SERVICE_KEY]`` is the process's FriendBot (for extensions too)."""
COMMANDS_KEY = "bot_commands"
"""``application.bot_data[COMMANDS_KEY]``: the BotCommand menu published at start."""

HELP = "\n".join(  # Telegram shows every newline: one line per thought
    [
        "<b>Hi, I'm one of you.</b> I learned how this group talks, and sometimes I join in.",
        "I always answer when you mention me or reply to me; otherwise only now and then.",
        "",
        "/paraphrase TEXT: say it differently (or reply to a message with /paraphrase)",
        "/joke [TOPIC]: one of us tells a joke",
        "/as NAME [text]: I answer as NAME",
        "/guess: real or bot? guess whether a friend's line is theirs or mine; /guessstats",
        "/recall TOPIC: what did we say about it, and when",
        "/optout: never store or imitate your messages (deletes what is stored)",
        "/optin: undo /optout",
        "/help: this message",
        "",
        "Admins: /reload (load the newest model), /stats, /forget (delete this chat's "
        "history), /mute, /unmute, /doctor (check the setup)",
    ]
)

TOO_SLOW = "That took too long. Try again in a moment."
ANSWER_TASK = "answer-"
"""Name prefix of the reply tasks: a stop signal abandons them (bot.app._stop_signal)."""
ADMINS_ONLY = "Only the bot's admins can use /{command}."


def service_of(context: ContextTypes.DEFAULT_TYPE) -> FriendBot:
    """The FriendBot this application serves."""
    return context.application.bot_data[SERVICE_KEY]


# --- messages --------------------------------------------------------------------------------


async def message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Store a chat message and, if the policy says so, answer it in a friend's voice."""
    msg = update.effective_message
    if msg is None or not msg.text:
        return
    service = service_of(context)
    addressed = is_addressed(msg, context.bot.id, context.bot.username)
    decision = service.observe(message_record(msg, context.bot.id), addressed=addressed)
    if decision:
        context.application.create_task(
            answer(msg, context, decision), update=update, name=f"{ANSWER_TASK}{msg.chat_id}"
        )


async def answer(msg: Message, context: ContextTypes.DEFAULT_TYPE, decision: Decision) -> None:
    """Generate and post an in-character reply to ``msg`` (run as a task, off the update queue)."""
    service = service_of(context)
    asker = sender_name(msg)
    try:
        async with _typing(context, msg.chat_id):
            reply = await service.reply_in_character(
                msg.chat_id, asker, prompted=decision is Decision.PROMPTED
            )
    except GenerationTimeout:
        log.warning("chat %s: reply dropped (too slow)", msg.chat_id)
        return
    if reply is None:
        return
    reply_to = msg.message_id if decision is Decision.PROMPTED else None
    thread = msg.message_thread_id if msg.is_topic_message else None
    await post(context, msg.chat_id, reply, reply_to, thread)


async def post(
    context: ContextTypes.DEFAULT_TYPE,
    chat_id: int,
    reply: Reply,
    reply_to: int | None,
    thread_id: int | None = None,
    footer_html: str = "",
) -> Message:
    """Send ``<b>Friend</b>: text`` (in the forum topic it belongs to) and store it as the
    bot's own message; ``footer_html`` is shown under it but not stored as what they said."""
    sent = await context.bot.send_message(
        chat_id,
        reply.html() + footer_html,
        parse_mode=ParseMode.HTML,
        message_thread_id=thread_id,
        reply_parameters=(
            ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        ),
    )
    service = service_of(context)
    service.record_sent(
        reply,
        chat_id=chat_id,
        message_id=sent.message_id,
        bot_id=context.bot.id,
        date=sent.date,
        reply_to_message_id=reply_to,
    )
    await service.remember_reply(reply, chat_id, sent.message_id)  # for reactions (issue 14)
    return sent


# --- member commands -------------------------------------------------------------------------


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Greet and explain."""
    await help_command(update, context)


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List what the bot can do."""
    await update.effective_message.reply_html(HELP)


async def paraphrase(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Reword the given text (or the replied-to message) up to three ways."""
    msg = update.effective_message
    text = " ".join(context.args or [])
    if not text and msg.reply_to_message is not None:
        text = msg.reply_to_message.text or msg.reply_to_message.caption or ""
    service = service_of(context)
    options = await _generate(context, msg, service.paraphrase(text, sender_name(msg)))
    if options is None:
        return
    if not options:
        await msg.reply_text("I couldn't find another way to say that.")
        return
    lines = [html.escape(o) for o in options]
    body = lines[0] if len(lines) == 1 else "\n".join(f"{i}. {o}" for i, o in enumerate(lines, 1))
    await msg.reply_html(body)


async def joke(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A joke (about the topic, if given), told by one of the friends."""
    msg = update.effective_message
    service = service_of(context)
    topic = " ".join(context.args or [])
    reply = await _generate(context, msg, service.joke(msg.chat_id, topic, sender_name(msg)))
    if reply is not None:
        await post(context, msg.chat_id, reply, msg.message_id)


async def as_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Answer as the named friend: /as NAME [text]."""
    msg = update.effective_message
    service = service_of(context)
    args = context.args or []
    reply = await _generate(context, msg, service.reply_as(msg.chat_id, args, sender_name(msg)))
    if reply is not None:
        await post(context, msg.chat_id, reply, msg.message_id)


async def recall(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """What the chat said about TOPIC, with dates, and a friend's answer about it."""
    msg = update.effective_message
    service = service_of(context)
    topic = " ".join(context.args or [])
    found = await _generate(context, msg, service.recall(msg.chat_id, topic, sender_name(msg)))
    if found is None:
        return
    if not found.found:
        await msg.reply_text(f"I don't remember anything about {found.topic}.")
        return
    listing = "\n".join(html.escape(line) for line in found.found_lines())
    if found.reply is None:
        await msg.reply_html(f"<i>I remember:</i>\n{listing}")
        return
    await post(
        context, msg.chat_id, found.reply, msg.message_id, None, f"\n\n<i>found:</i>\n{listing}"
    )


async def _generate(
    context: ContextTypes.DEFAULT_TYPE, msg: Message, work: Coroutine[Any, Any, T]
) -> T | None:
    """Await a generation with "typing..." shown; a usage error or a timeout is answered
    here (and gives None), so every command tells the member the same way."""
    try:
        async with _typing(context, msg.chat_id):
            return await work
    except UsageError as exc:
        await msg.reply_text(str(exc))
    except GenerationTimeout:
        await msg.reply_text(TOO_SLOW)
    return None


async def optout(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stop storing and imitating the sender, and delete what is stored of them."""
    msg, user = update.effective_message, update.effective_user
    if user is None:
        return
    deleted = await service_of(context).opt_out(user.id, user.full_name, user.username)
    await msg.reply_text(
        f"Done: I won't store or imitate your messages anymore "
        f"(deleted {deleted} stored message{'s' if deleted != 1 else ''}). /optin undoes this."
    )


async def optin(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Let the bot store and imitate the sender again."""
    msg, user = update.effective_message, update.effective_user
    if user is None:
        return
    await service_of(context).opt_in(user.id, user.full_name, user.username)
    await msg.reply_text("Welcome back: I'll store and learn from your messages again.")


# --- admin commands --------------------------------------------------------------------------


async def reload(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Load the newest models without restarting (admins)."""
    if not await require_admin(update, context, "reload"):
        return
    msg = update.effective_message
    try:
        models = await service_of(context).reload()
    except Exception as exc:
        log.exception("reload failed")
        await msg.reply_text(f"Reload failed, still serving the previous models: {exc}")
        return
    await msg.reply_text(f"Reloaded.\n{models.describe()}")


async def stats(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """What is stored for this chat, and which models answer (admins)."""
    if not await require_admin(update, context, "stats"):
        return
    msg = update.effective_message
    numbers = await service_of(context).stats(msg.chat_id)
    await msg.reply_text("\n".join(f"{key}: {value}" for key, value in numbers.items()))


async def forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Delete this chat's stored history (admins)."""
    if not await require_admin(update, context, "forget"):
        return
    msg = update.effective_message
    deleted = await service_of(context).forget(msg.chat_id)
    await msg.reply_text(f"Forgot this chat: deleted {deleted} stored messages.")


async def mute(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stop replying in this chat; messages are still stored (admins)."""
    if not await require_admin(update, context, "mute"):
        return
    await service_of(context).set_muted(update.effective_chat.id, True)
    await update.effective_message.reply_text("Muted: I'll keep quiet here until /unmute.")


async def unmute(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Start replying in this chat again (admins)."""
    if not await require_admin(update, context, "unmute"):
        return
    await service_of(context).set_muted(update.effective_chat.id, False)
    await update.effective_message.reply_text("Unmuted: I'm back.")


async def doctor(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Check the setup, as `friendbot doctor` does, and answer with the report (admins).

    The checks call the Bot API and read the disk, so they run in a worker thread.
    """
    if not await require_admin(update, context, "doctor"):
        return
    from bot import doctor as checkup

    settings = service_of(context).settings
    checks = await asyncio.to_thread(checkup.diagnose, settings)
    await update.effective_message.reply_text(checkup.as_text(checks))


# --- chats that are not allowed, and errors --------------------------------------------------

_reported_chats: set[int] = set()


async def ignored_chat(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log (once per chat) that a chat outside ALLOWED_CHAT_IDS wrote; nothing else happens."""
    chat = update.effective_chat
    if chat is None or service_of(context).is_allowed(chat.id):
        return  # e.g. a membership update of an allowed chat: not a message, not ignored
    if chat.id not in _reported_chats:
        _reported_chats.add(chat.id)
        log.info(
            "ignoring chat %s (%s, %r): not in ALLOWED_CHAT_IDS", chat.id, chat.type, chat.title
        )


async def error_handler(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log a failed update (ids only, never the token or message text); the bot carries on."""
    where = "no update"
    if isinstance(update, Update):
        chat = update.effective_chat.id if update.effective_chat else None
        where = f"update {update.update_id} (chat {chat})"
    log.error("%s failed: %r", where, context.error, exc_info=context.error)


# --- helpers ---------------------------------------------------------------------------------


def message_record(msg: Message, bot_id: int) -> MessageRecord:
    """The Telegram message as the record the service stores (sender, chat, reply)."""
    chat = msg.chat
    sender_id, username, is_bot = None, None, False
    if msg.sender_chat is not None:  # anonymous admin or a linked channel: the chat speaks
        sender_id, username = msg.sender_chat.id, msg.sender_chat.username
    elif msg.from_user is not None:
        sender_id, username = msg.from_user.id, msg.from_user.username
        is_bot = msg.from_user.is_bot
    reply_to = msg.reply_to_message.message_id if msg.reply_to_message else None
    return MessageRecord(
        chat_id=chat.id,
        message_id=msg.message_id,
        sender_id=sender_id,
        sender_name=sender_name(msg),
        text=msg.text or "",
        date=msg.date or datetime.now(UTC),
        chat_title=chat.title or chat.full_name or chat.username,
        chat_type=chat.type,
        sender_username=username,
        sender_is_bot=is_bot or sender_id == bot_id,
        reply_to_message_id=reply_to,
    )


def sender_name(msg: Message) -> str:
    """The name the chat sees: the user's full name, or the title of a chat posting as itself."""
    if msg.sender_chat is not None:
        return msg.sender_chat.title or msg.sender_chat.username or str(msg.sender_chat.id)
    if msg.from_user is not None:
        return msg.from_user.full_name
    return "Someone"


def is_addressed(msg: Message, bot_id: int, bot_username: str | None) -> bool:
    """True when ``msg`` replies to the bot, @mentions its username, or text-mentions it."""
    replied = msg.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot_id:
        return True
    wanted = f"@{bot_username}".casefold() if bot_username else None
    for entity, text in msg.parse_entities(
        [MessageEntity.MENTION, MessageEntity.TEXT_MENTION]
    ).items():
        if entity.type == MessageEntity.MENTION and wanted and text.casefold() == wanted:
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot_id:
            return True
    return False


def _typing(context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> AbstractAsyncContextManager[None]:
    return typing(lambda: context.bot.send_chat_action(chat_id, ChatAction.TYPING))


async def require_admin(update: Update, context: ContextTypes.DEFAULT_TYPE, command: str) -> bool:
    """True for an admin; anyone else is told that /``command`` is for admins (every admin
    command, extensions' included, checks through this)."""
    user = update.effective_user
    if service_of(context).is_admin(user.id if user else None):
        return True
    await update.effective_message.reply_text(ADMINS_ONLY.format(command=command))
    return False


async def notify_admins(
    application: Application, text: str, *, skip: frozenset[int] | set[int] = frozenset()
) -> int:
    """Send ``text`` privately to every ADMIN_USER_IDS member but ``skip``; returns how many
    got it.

    Telegram only lets a bot write to someone who has started a private chat with it, so a
    failure per admin is logged and skipped.
    """
    service: FriendBot = application.bot_data[SERVICE_KEY]
    delivered = 0
    for user_id in sorted(service.settings.admin_user_ids - set(skip)):
        try:
            await application.bot.send_message(user_id, text)
            delivered += 1
        except Exception as exc:
            log.warning("could not notify admin %s: %r", user_id, exc)
    return delivered
