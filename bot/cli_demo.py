"""``friendbot demo``: the README's main job, from a fresh clone to a chat with the bot.

It chains the real commands on embedded defaults, doing each step only when its output is
missing: prepare the shipped sample export, train the offline tiny model and put it in
service, then start the bot, on Telegram when ``TELEGRAM_BOT_TOKEN`` is set, otherwise as a
local test chat in the terminal. Running it again goes straight to the chat.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from training.errors import InputError

log = logging.getLogger(__name__)

SAMPLE_EXPORT = Path("examples/sample_chat/result.json")
SAMPLE_DATA = Path("data/sample")
DEMO_MODEL = "demo-tiny"


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the CLI."""
    app.command("demo")(demo)


def demo(
    export: Annotated[
        Path, typer.Option(help="Telegram Desktop export to learn from.")
    ] = SAMPLE_EXPORT,
    data: Annotated[Path, typer.Option(help="Where the prepared dataset goes.")] = SAMPLE_DATA,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Prepare and train again even if outputs exist.")
    ] = False,
    train_only: Annotated[
        bool, typer.Option("--train-only", help="Stop after training (no chat, no bot).")
    ] = False,
) -> None:
    """Prepare the sample chat, train the offline tiny model once, then start the bot.

    With TELEGRAM_BOT_TOKEN set the bot joins Telegram; without it you chat with it here.
    """
    from bot.settings import load_settings

    settings = load_settings()
    model_dir = ensure_model(export, data, settings.model_dir, fresh=fresh)
    if train_only:
        typer.echo(f"Model ready: {model_dir}")
        return
    if settings.telegram_bot_token is not None:
        from bot.app import run_bot

        run_bot(settings)
    else:
        from bot.local_chat import run_local_chat

        typer.echo("No TELEGRAM_BOT_TOKEN set: starting a local test chat (Ctrl-D to leave).")
        run_local_chat(settings)


def ensure_model(export: Path, data: Path, model_dir: Path, *, fresh: bool = False) -> Path:
    """The model in service at ``model_dir``, preparing and training it first if missing.

    A model is only trained when ``model_dir`` is the ``current`` pointer of a models folder
    (the default ``models/current``): the tiny model is written beside it and promoted, so
    ``friendbot retrain`` and ``friendbot rollback`` manage it like any other.
    """
    from training.model.model_dir import CURRENT, set_current

    if model_dir.exists() and not fresh:
        return model_dir.resolve()
    if model_dir.name != CURRENT:
        raise InputError(f"{model_dir}: MODEL_DIR does not exist (train a model into it first)")
    ensure_dataset(export, data, fresh=fresh)
    target = model_dir.parent / DEMO_MODEL
    typer.echo(f"Training the offline tiny model on {data} into {target} (a few CPU minutes)...")
    from training.model.config import TrainConfig
    from training.model.finetune import train

    train(TrainConfig(data=data, out=target, base_model="tiny", overwrite=True))
    set_current(model_dir.parent, target)
    return target.resolve()


def ensure_dataset(export: Path, data: Path, *, fresh: bool = False) -> None:
    """Run ``prepare`` on ``export`` unless ``data`` already holds a dataset made from it."""
    from training.data.options import PrepareOptions
    from training.data.prepare import prepare

    stats = data / "stats.json"
    if stats.exists() and not fresh and stats.stat().st_mtime >= export.stat().st_mtime:
        return
    typer.echo(f"Preparing {export} into {data}...")
    prepare([export], data, PrepareOptions(progress=True))
