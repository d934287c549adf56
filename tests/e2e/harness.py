"""What both end-to-end suites need: the real bot polling the fake server, and a patient wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from telegram.ext import AIORateLimiter, Application

from bot.app import build_application, serving
from bot.settings import Settings

T = TypeVar("T")


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Application]:
    """The bot, polling the fake server, for the block's duration."""
    limiter = AIORateLimiter(overall_max_rate=1000, group_max_rate=1000, group_time_period=1)
    application = build_application(settings, rate_limiter=limiter)
    async with serving(application, poll_timeout=1):
        yield application


async def until(predicate: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    """Wait (without blocking the bot's event loop) until ``predicate()`` is truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return value
