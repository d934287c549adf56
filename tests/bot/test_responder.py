"""The responder: work off the event loop, a time limit, a typing indicator."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from bot.responder import GenerationTimeout, Responder, typing


async def test_runs_in_a_worker_thread() -> None:
    responder = Responder(workers=1, timeout_s=5)
    try:
        name = await responder.run(lambda: threading.current_thread().name)
        assert name.startswith("generate") and name != threading.current_thread().name
    finally:
        responder.shutdown()


async def test_event_loop_keeps_running_during_a_slow_job() -> None:
    responder = Responder(workers=1, timeout_s=5)
    release = threading.Event()
    try:
        job = asyncio.create_task(responder.run(lambda: release.wait(5)))
        ticks = 0
        for _ in range(5):  # the loop is free while the worker blocks
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 5 and not job.done()
        assert responder.in_flight == 1
        release.set()
        assert await job is True
        assert responder.in_flight == 0
    finally:
        release.set()
        responder.shutdown()


async def test_timeout_gives_up_and_drops_queued_work() -> None:
    responder = Responder(workers=1, timeout_s=0.2)
    release = threading.Event()
    ran: list[str] = []
    try:
        slow = asyncio.create_task(responder.run(lambda: release.wait(5)))
        queued = asyncio.create_task(responder.run(lambda: ran.append("queued")))
        with pytest.raises(GenerationTimeout):
            await slow
        with pytest.raises(GenerationTimeout):
            await queued
        release.set()
        assert await responder.run(lambda: "next", timeout_s=5) == "next"
        assert ran == []  # the job that timed out while waiting for a worker never ran
    finally:
        release.set()
        responder.shutdown()


async def test_errors_propagate() -> None:
    responder = Responder()

    def boom() -> None:
        raise RuntimeError("model exploded")

    try:
        with pytest.raises(RuntimeError, match="model exploded"):
            await responder.run(boom)
        assert await responder.run(lambda: 42) == 42
    finally:
        responder.shutdown()


async def test_typing_repeats_until_done_and_ignores_failures() -> None:
    calls: list[float] = []

    async def send_action() -> None:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise ConnectionError("network hiccup")

    async with typing(send_action, every_s=0.05):
        await asyncio.sleep(0.28)
    count = len(calls)
    assert count >= 4
    await asyncio.sleep(0.12)
    assert len(calls) == count  # stopped with the block
