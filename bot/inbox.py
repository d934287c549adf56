"""No update lost when the bot dies: fetched updates are stored before Telegram forgets them.

Telegram forgets an update once the bot confirms it, and python-telegram-bot's Updater confirms
a batch by asking for the next one (``getUpdates`` with a higher ``offset``), long before the
messages in it are committed. So:

- :class:`InboxBot` stores every batch ``getUpdates`` returns, in one durable transaction
  (storage.inbox), before the Updater sees it; whatever the next call confirms is on disk.
- :class:`MarkHandled` marks an update handled once its handlers ran, through the message
  writer: the mark is committed with (or after) the message the update produced.
- :func:`replay_unhandled` queues, at start, the updates a stopped process stored but did not
  handle. An update Telegram delivers again is handled only once: skipped when the inbox has
  it processed, or when this process handed it out already.

Commands started as tasks (``block=False``: /paraphrase, /joke...) count as handled once
started: one that a crash interrupts is not run again, as with Telegram's own delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from telegram import Update
from telegram.error import NetworkError
from telegram.ext import Application, ExtBot, SimpleUpdateProcessor

if TYPE_CHECKING:
    from bot.service import FriendBot

log = logging.getLogger(__name__)


class InboxUnavailable(NetworkError):
    """Fetched updates could not be stored; PTB's polling loop retries (with a growing pause)
    without confirming them, so Telegram hands them out again."""


class InboxBot(ExtBot[Any]):
    """An ExtBot whose ``get_updates`` stores what it fetched before returning it."""

    __slots__ = ("_handed_out", "_service")

    def __init__(self, service: FriendBot, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._service = service
        self._handed_out: set[int] = set()  # ids given to the Updater or replayed, >= offset

    def claim(self, update_ids: Iterable[int]) -> set[int]:
        """The ids not handed out by this process yet, from now on counted as handed out."""
        fresh = set(update_ids) - self._handed_out
        self._handed_out |= fresh
        return fresh

    async def get_updates(
        self,
        offset: int | None = None,
        limit: int | None = None,
        timeout: Any = None,
        allowed_updates: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> tuple[Update, ...]:
        """The next updates to handle, each stored in the inbox first.

        Left out: updates already processed (Telegram delivering again what a killed process
        handled) and updates this process handed out already (replayed from the inbox at
        start). When a whole batch is such, it is confirmed here and the next one fetched,
        since the Updater only moves its offset past updates it is given; confirming them
        is safe, as they are in the inbox.
        """
        while True:
            if offset is not None:  # Telegram never returns ids below the offset again
                self._handed_out = {i for i in self._handed_out if i >= offset}
            updates = await super().get_updates(offset, limit, timeout, allowed_updates, **kwargs)
            if not updates:
                return updates
            fresh = self.claim(await self._store(updates))
            if fresh:
                return tuple(u for u in updates if u.update_id in fresh)
            offset = max(u.update_id for u in updates) + 1

    async def _store(self, updates: Sequence[Update]) -> set[int]:
        payloads = [u.to_dict() for u in updates]
        try:
            return await asyncio.to_thread(self._service.store_fetched, self.id, payloads)
        except Exception as exc:
            raise InboxUnavailable(
                f"could not store {len(updates)} fetched updates (they stay unconfirmed): {exc!r}"
            ) from exc


class MarkHandled(SimpleUpdateProcessor):
    """Handles updates one at a time, as PTB's default does, then marks each one handled."""

    __slots__ = ("_bot", "_service")

    def __init__(self, service: FriendBot, bot: ExtBot[Any]) -> None:
        super().__init__(max_concurrent_updates=1)
        self._service = service
        self._bot = bot

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        try:
            await coroutine
        finally:
            if isinstance(update, Update):
                self._service.update_handled(self._bot.id, update.update_id)


async def replay_unhandled(application: Application) -> int:
    """Queue the updates stored but not handled before the last stop; returns how many.

    Called before polling starts, so they are handled first, in the order they arrived.
    """
    from bot.handlers import SERVICE_KEY

    service: FriendBot = application.bot_data[SERVICE_KEY]
    bot = application.bot
    payloads = await asyncio.to_thread(service.unhandled_updates, bot.id)
    if isinstance(bot, InboxBot):  # Telegram may deliver them again: not twice
        bot.claim(payload["update_id"] for payload in payloads)
    for payload in payloads:
        await application.update_queue.put(Update.de_json(payload, bot))
    if payloads:
        log.info("handling %d updates fetched before the bot last stopped", len(payloads))
    return len(payloads)
