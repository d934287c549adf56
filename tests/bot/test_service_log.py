"""What a running bot writes to its service log: no per-tick scheduler lines, no progress bars.

Found running the real bot for a day: APScheduler logged two INFO lines per retrain-watcher
tick (every 5 s, ~35,000 lines a day), and transformers drew a "Loading weights" bar into the
log on every model load.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from telegram.ext import ApplicationBuilder

from bot import retrain_hooks
from bot.handlers import SERVICE_KEY
from bot.settings import Settings
from storage.db import make_engine, session_factory, upgrade


async def test_a_watcher_tick_logs_nothing_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'friendbot.db'}")
    upgrade(engine)
    settings = Settings(
        _env_file=None,
        database_url=str(engine.url),
        models_dir=tmp_path / "models",
        retrain_watch_interval_s=0.05,
    )
    service = SimpleNamespace(
        settings=settings,
        sessions=session_factory(engine),
        models=SimpleNamespace(loaded=False),
    )
    application = ApplicationBuilder().token("123456:TEST").build()
    application.bot_data[SERVICE_KEY] = service
    retrain_hooks.install(application)
    hooks = application.bot_data[retrain_hooks.HOOKS_KEY]
    assert hooks.settings is settings  # one settings object for the whole process

    ticks = 0
    check_runs = hooks.check_runs

    async def counted() -> int:
        nonlocal ticks
        ticks += 1
        return await check_runs()

    hooks.check_runs = counted
    caplog.set_level(logging.INFO)
    assert application.job_queue is not None
    await application.job_queue.start()
    try:
        caplog.clear()  # from here on: ticks only
        for _ in range(200):
            if ticks >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        await application.job_queue.stop()
        engine.dispose()
    assert ticks >= 3
    assert [r.getMessage() for r in caplog.records if r.levelno <= logging.INFO] == []


def test_loading_a_model_draws_no_progress_bar(
    tiny_model_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from bot.engine import ReplyEngine

    capfd.readouterr()
    engine = ReplyEngine.load(tiny_model_dir, backend="hf", threads=1)
    err = capfd.readouterr().err
    assert engine.backend == "hf"
    assert "Loading weights" not in err and "it/s]" not in err, err
