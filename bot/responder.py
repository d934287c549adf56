"""Model work off the event loop: worker threads, a time limit, and a typing indicator.

python-telegram-bot runs every handler on one asyncio loop. A generation takes from a fraction
of a second to several seconds of CPU; run on the loop it would stall every chat, every command
and even the storing of incoming messages. So generation goes to a small pool of worker
threads (torch and CTranslate2 release the GIL while they compute), and the caller awaits it
with a time limit. A thread cannot be killed: past the limit the caller stops waiting and
moves on, and the worker finishes its (bounded: ``max_new_tokens``) work in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

TYPING_EVERY_S = 4.0  # Telegram shows "typing..." for 5 s after each sendChatAction


class GenerationTimeout(TimeoutError):
    """The reply took longer than GENERATION_TIMEOUT (waiting for a worker included)."""


class Responder:
    """Runs blocking model calls in worker threads, each bounded by ``timeout_s``."""

    def __init__(self, workers: int = 1, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="generate")
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Generations queued or running now (for /stats)."""
        return self._in_flight

    async def run(self, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        """``fn()`` in a worker thread; GenerationTimeout past the limit, its error otherwise."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn)
        self._in_flight += 1
        try:
            # On timeout wait_for cancels the future: a job still queued is dropped; one already
            # running cannot be stopped and finishes in its thread, its result unused.
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            log.warning("generation gave up after %.1f s", limit)
            raise GenerationTimeout(f"no reply within {limit:.0f} s") from None
        finally:
            self._in_flight -= 1

    def shutdown(self) -> None:
        """Stop accepting work; running generations finish in their threads (not awaited)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


@contextlib.asynccontextmanager
async def typing(
    send_action: Callable[[], Awaitable[object]], every_s: float = TYPING_EVERY_S
) -> AsyncIterator[None]:
    """Show "typing..." (by calling ``send_action`` every few seconds) for the block's duration.

    A failing chat action is logged and ignored: the reply matters, the indicator does not.
    """

    async def keep_typing() -> None:
        while True:
            try:
                await send_action()
            except Exception as exc:  # network hiccup, rate limit: not worth failing a reply
                log.debug("chat action failed: %r", exc)
            await asyncio.sleep(every_s)

    task = asyncio.create_task(keep_typing())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
