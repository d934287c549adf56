"""Build and run the Telegram application: every handler is wired here, in one place.

Start-up order (``post_init``, before the first update is fetched): upgrade the database
schema, start the message writer, load opt-outs and muted chats, apply retention, load the
models, queue the updates a stopped process fetched but did not handle (bot/inbox.py), publish
the command menu. Shutdown (``post_shutdown``): commit every queued message, stop the workers.
Polling by default; webhook mode when ``WEBHOOK_URL`` is set. In polling mode every fetched
batch of updates is stored before Telegram is told to forget it, so killing the process loses
no message (bot/inbox.py).

Extensions: optional features (retraining's model watcher, /retrain, /runs, admin
notifications) plug in through :func:`extensions`, one line each. An extension is a function
``install(application) -> None`` called once the core handlers are wired. It finds the bot's
services in ``application.bot_data[SERVICE_KEY]`` (a :class:`bot.service.FriendBot`: ``reload()``
swaps the models between replies, ``is_admin()``, ``sessions``, ``settings``), may add handlers
(the core ones are in group 0), schedule jobs on ``application.job_queue``, append to
``application.bot_data[COMMANDS_KEY]`` (the menu published at start), check admins with
:func:`bot.handlers.require_admin` and message them with :func:`bot.handlers.notify_admins`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlparse

from telegram import BotCommand, Update
from telegram.error import InvalidToken, NetworkError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    BaseRateLimiter,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot import handlers
from bot.handlers import COMMANDS_KEY, SERVICE_KEY
from bot.inbox import InboxBot, MarkHandled, replay_unhandled
from bot.service import FriendBot
from bot.settings import Settings
from training.errors import InputError

log = logging.getLogger(__name__)


RETENTION_EVERY_S = 24 * 3600
OWN_SIGNALS = "app.own_signals"
"""``bot_data[OWN_SIGNALS]``: run_bot owns the process, so post_init installs the stop signals."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGABRT)

Extension = Callable[[Application], None]

MENU = [
    BotCommand("help", "What I can do"),
    BotCommand("paraphrase", "Say it differently: /paraphrase TEXT"),
    BotCommand("joke", "One of us tells a joke: /joke [TOPIC]"),
    BotCommand("as", "I answer as a friend: /as NAME [text]"),
    BotCommand("recall", "What we said about it: /recall TOPIC"),
    BotCommand("optout", "Never store or imitate my messages"),
    BotCommand("optin", "Undo /optout"),
    BotCommand("stats", "Admins: what is stored here"),
    BotCommand("reload", "Admins: load the newest model"),
    BotCommand("forget", "Admins: delete this chat's history"),
    BotCommand("mute", "Admins: stop replying here"),
    BotCommand("unmute", "Admins: reply here again"),
    BotCommand("doctor", "Admins: check the setup"),
]


def extensions() -> list[Extension]:
    """Optional features installed into every application (add one import + line each)."""
    from bot import guess, reactions, retrain_hooks, upload

    # upload's "Retrain now" uses the hooks; guess and reactions: the group judges the bot
    return [retrain_hooks.install, upload.install, guess.install, reactions.install]


def build_application(
    settings: Settings,
    *,
    service: FriendBot | None = None,
    rate_limiter: BaseRateLimiter | None = None,
) -> Application:
    """The configured Application; nothing touches the network or the database until it runs.

    ``rate_limiter`` defaults to PTB's AIORateLimiter with Telegram's limits (30 messages/s
    overall, 20 per minute per group), retrying a flood-wait twice. The bot is an
    :class:`~bot.inbox.InboxBot` (fetched updates stored before they are confirmed), with the
    connection pools PTB's builder would give it.
    """
    token = settings.token
    if not token:
        raise InputError(
            "TELEGRAM_BOT_TOKEN: not set (get a token from @BotFather; "
            "`friendbot chat` tries the bot locally without one)"
        )
    protect_token_in_logs(token)
    service = service or FriendBot(settings)
    bot = InboxBot(
        service,
        token=token,
        base_url=settings.telegram_api_base_url,
        base_file_url=settings.telegram_api_base_file_url,
        rate_limiter=rate_limiter or AIORateLimiter(max_retries=2),
        request=HTTPXRequest(connection_pool_size=256),
        get_updates_request=HTTPXRequest(connection_pool_size=1),
    )
    application = (
        ApplicationBuilder()
        .bot(bot)
        .concurrent_updates(MarkHandled(service, bot))
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
        .build()
    )
    application.bot_data[SERVICE_KEY] = service
    application.bot_data[COMMANDS_KEY] = list(MENU)
    add_handlers(application, settings)
    for install in extensions():
        install(application)
    return application


def add_handlers(application: Application, settings: Settings) -> None:
    """All the wiring. Only ALLOWED_CHAT_IDS get through; other chats are logged and dropped."""
    allowed = filters.Chat(chat_id=settings.allowed_chat_ids) & filters.UpdateType.MESSAGE
    command = [
        ("start", handlers.start, True),
        ("help", handlers.help_command, True),
        ("paraphrase", handlers.paraphrase, False),  # block=False: generation runs as a task
        ("joke", handlers.joke, False),
        ("as", handlers.as_command, False),
        ("recall", handlers.recall, False),
        ("optout", handlers.optout, True),
        ("optin", handlers.optin, True),
        ("reload", handlers.reload, False),
        ("stats", handlers.stats, True),
        ("forget", handlers.forget, True),
        ("mute", handlers.mute, True),
        ("unmute", handlers.unmute, True),
    ]
    for name, callback, block in command:
        application.add_handler(CommandHandler(name, callback, filters=allowed, block=block))
    # /doctor also in an admin's private chat: where to ask when the bot seems deaf in the group
    admin_private = filters.ChatType.PRIVATE & filters.User(user_id=settings.admin_user_ids)
    doctor_where = (allowed | admin_private) & filters.UpdateType.MESSAGE
    application.add_handler(
        CommandHandler("doctor", handlers.doctor, filters=doctor_where, block=False)
    )
    text = allowed & filters.TEXT & ~filters.COMMAND
    application.add_handler(MessageHandler(text, handlers.message))
    elsewhere = ~filters.Chat(chat_id=settings.allowed_chat_ids)
    application.add_handler(MessageHandler(elsewhere, handlers.ignored_chat))
    application.add_error_handler(handlers.error_handler)


def service_of(application: Application) -> FriendBot:
    """The FriendBot of ``application`` (for extensions and tests)."""
    return application.bot_data[SERVICE_KEY]


async def _post_init(application: Application) -> None:
    service = service_of(application)
    await asyncio.to_thread(service.start)
    if application.bot_data.get(OWN_SIGNALS):
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, _stop_signal)
    await replay_unhandled(application)
    await application.bot.set_my_commands(application.bot_data[COMMANDS_KEY])
    settings = service.settings
    if application.job_queue is not None:  # retention, and the inbox's old rows
        application.job_queue.run_repeating(
            _prune, interval=RETENTION_EVERY_S, first=RETENTION_EVERY_S, name="retention"
        )
    log.info(
        "friendbot ready as @%s; allowed chats: %s",
        application.bot.username,
        sorted(settings.allowed_chat_ids) or "none (set ALLOWED_CHAT_IDS)",
    )


def _stop_signal() -> None:
    """SIGTERM (systemctl stop, a reboot) or Ctrl-C: abandon replies being generated, then
    stop as PTB does (raising SystemExit out of the loop).

    PTB's stop waits for every task the handlers started, and queued replies would each wait
    out GENERATION_TIMEOUT in turn: minutes, past systemd's 90 s before SIGKILL, which loses
    what is not committed yet. A reply nobody will see is not worth that. The shutdown that
    follows still commits every stored message (post_shutdown: the writer's close).
    """
    abandoned = 0
    for task in asyncio.all_tasks():
        if task.get_name().startswith(handlers.ANSWER_TASK) and not task.done():
            task.cancel()
            abandoned += 1
    log.info("stop signal: shutting down (%d replies being generated abandoned)", abandoned)
    raise SystemExit


async def _post_shutdown(application: Application) -> None:
    await asyncio.to_thread(service_of(application).stop)


async def _prune(context: ContextTypes.DEFAULT_TYPE) -> None:
    await asyncio.to_thread(service_of(context.application).prune)


@contextlib.asynccontextmanager
async def serving(
    application: Application, *, poll_timeout: float = 10.0
) -> AsyncIterator[Application]:
    """Run ``application`` (long polling) on the current event loop for the block's duration.

    What ``run_polling`` does, minus owning the loop and the signals: for tests, and for
    embedding the bot in another asyncio program. The start and stop hooks run as there.
    """
    await application.initialize()
    try:
        await application.post_init(application)
        await application.updater.start_polling(
            timeout=int(poll_timeout), allowed_updates=Update.ALL_TYPES
        )
        await application.start()
        try:
            yield application
        finally:
            if application.updater.running:
                await application.updater.stop()
            await application.stop()
    finally:
        await application.shutdown()
        await application.post_shutdown(application)


def run_bot(settings: Settings) -> None:
    """Run until Ctrl-C / SIGTERM: long polling, or a webhook server when WEBHOOK_URL is set.

    Updates that arrived while the bot was down are fetched and stored, not dropped.
    """
    application = build_application(settings)
    application.bot_data[OWN_SIGNALS] = True
    try:
        if settings.webhook_url:
            secret = settings.webhook_secret_token
            application.run_webhook(
                listen=settings.webhook_listen,
                port=settings.webhook_port,
                url_path=urlparse(settings.webhook_url).path.lstrip("/"),
                webhook_url=settings.webhook_url,
                secret_token=secret.get_secret_value() if secret else None,
                allowed_updates=Update.ALL_TYPES,
                stop_signals=None,  # post_init installs ours (_stop_signal)
            )
        else:
            application.run_polling(allowed_updates=Update.ALL_TYPES, stop_signals=None)
    except InvalidToken:
        raise InputError(
            "TELEGRAM_BOT_TOKEN: Telegram rejected the token (check it with @BotFather)"
        ) from None
    except NetworkError as exc:  # at start only: once running, PTB retries by itself
        reason = str(exc).replace(settings.token or "", "<TOKEN>")
        raise InputError(
            f"TELEGRAM_API_BASE_URL: cannot reach the Bot API at "
            f"{settings.telegram_api_base_url} ({reason})"
        ) from None


# --- keeping the token out of logs -----------------------------------------------------------


class RedactToken(logging.Filter):
    """Replace the bot token in any log record (message, arguments, traceback) by a mask.

    httpx logs every request URL at INFO, and the Bot API puts the token in the URL; network
    errors may quote it too. The filter sits on the root handlers, so it sees every record.
    """

    def __init__(self, token: str) -> None:
        super().__init__("redact-token")
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg, record.args = message.replace(self.token, "<TOKEN>"), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and self.token in record.exc_text:
            record.exc_text = record.exc_text.replace(self.token, "<TOKEN>")
        return True


def protect_token_in_logs(token: str) -> None:
    """Quiet httpx's per-request lines and mask the token on every root log handler."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactToken) and f.token == token for f in handler.filters):
            handler.addFilter(RedactToken(token))
