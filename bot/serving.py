"""Which models answer: the chat model plus the /paraphrase and /joke task models, hot-swappable.

``load_models`` resolves every setting to a loaded ``ReplyEngine``:

- chat: ``MODEL_DIR`` (``models/current`` by default, resolved again on every reload, so a
  promoted model is picked up by ``/reload`` or the retraining watcher);
- paraphrase and joke: ``PARAPHRASE_MODEL`` / ``JOKE_MODEL`` when set; otherwise the chat
  model's base FLAN-T5 when it is on this machine (a local directory, or the Hugging Face cache,
  looked up without network); otherwise the chat model itself, prompted chat-style (it then
  answers like a friend would, not with a real paraphrase or joke; docs/bot.md).

Every directory is checked by ``training.model.model_dir.validate`` as it is loaded: the chat
model must be a chat model with its friendbot.json, a task model any usable model directory.
A broken one fails the (re)load with one line, and a reload keeps the models in service.

``ModelHolder`` keeps the set in service. A reload loads the new set in a thread while the old
one keeps answering, then swaps one reference: a generation already running finishes on the
model it started with, and no update waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.model.model_dir import is_model_dir, read_info

if TYPE_CHECKING:
    from bot.engine import ReplyEngine
    from bot.settings import Settings

log = logging.getLogger(__name__)

BASE_MODEL_KEYS = ("base_model", "base_model_name_or_path")


@dataclass(frozen=True)
class TaskModel:
    """An engine for one command, and whether it takes instructions or chat-shaped prompts."""

    engine: ReplyEngine
    instruct: bool
    source: str  # how it was chosen, for /stats and the logs

    def describe(self) -> str:
        kind = "instruction prompts" if self.instruct else "chat model fallback"
        return f"{self.engine.model_dir} ({kind}; {self.source})"


@dataclass(frozen=True)
class ServedModels:
    """The models answering right now."""

    chat: ReplyEngine
    paraphrase: TaskModel
    joke: TaskModel

    def describe(self) -> str:
        """A few lines for /stats, /reload and the start-up log."""
        return (
            f"chat: {self.chat.model_dir} ({self.chat.backend})\n"
            f"paraphrase: {self.paraphrase.describe()}\n"
            f"joke: {self.joke.describe()}"
        )


def load_models(settings: Settings, previous: ServedModels | None = None) -> ServedModels:
    """Load every model the settings name; a task model unchanged since ``previous`` is reused.

    Reusing matters on reload: the chat model changes after retraining, but a FLAN-T5-base
    task model does not, and loading it again would double memory and time for nothing.
    """
    from bot.engine import ReplyEngine

    loaded: dict[Path, ReplyEngine] = {}
    if previous is not None:
        for engine in (previous.paraphrase.engine, previous.joke.engine):
            if engine is not previous.chat:
                loaded[engine.model_dir] = engine

    def load(path: Path) -> ReplyEngine:
        resolved = Path(path).resolve()
        if resolved not in loaded:
            loaded[resolved] = ReplyEngine.load(
                Path(path),
                backend=settings.inference_backend,
                threads=settings.inference_threads,
                chat=False,
            )
        return loaded[resolved]

    chat = ReplyEngine.load(
        settings.model_dir,
        backend=settings.inference_backend,
        threads=settings.inference_threads,
        chat=True,
    )
    loaded[chat.model_dir] = chat
    base = base_model_dir(chat.info)

    def task(setting: Path | None, name: str) -> TaskModel:
        if setting is not None:
            engine = load(setting)
            instruct = engine.task != "chat"  # a chat model answers as a friend would
            return TaskModel(engine, instruct=instruct, source=f"{name.upper()}_MODEL")
        if base is not None:
            return TaskModel(load(base), instruct=True, source="the chat model's base model")
        return TaskModel(chat, instruct=False, source="no task model available offline")

    models = ServedModels(
        chat=chat,
        paraphrase=task(settings.paraphrase_model, "paraphrase"),
        joke=task(settings.joke_model, "joke"),
    )
    log.info("models in service:\n%s", models.describe())
    return models


def base_model_dir(info: dict[str, Any], hops: int = 5) -> Path | None:
    """The chat model's base FLAN-T5 as a local directory, if this machine has it.

    ``friendbot.json`` names the base model (a hub id or a directory). A hub id is looked up
    in the local Hugging Face cache only (``local_files_only``): the bot never downloads.
    A base that is itself a fine-tuned chat model (retraining from the current model) is
    followed to its own base; the offline ``tiny`` base is no instruction model at all.
    """
    for _ in range(hops):
        path = _local_model(next((str(info[k]) for k in BASE_MODEL_KEYS if info.get(k)), ""))
        if path is None:
            return None
        info = read_info(path)
        if info.get("task") != "chat":  # a task model, or a plain (instruction) FLAN-T5
            return path
    return None


def _local_model(name: str) -> Path | None:
    if not name or name == "tiny":
        return None
    path = Path(name).expanduser()
    if is_model_dir(path):
        return path
    if path.is_absolute() or name.startswith("."):
        return None
    try:
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached, not a hub id, hub library missing: all mean "not here"
        return None
    return cached if is_model_dir(cached) else None


class ModelHolder:
    """The models in service, swapped whole on reload; callers read ``current`` once per job."""

    def __init__(self, loader: Callable[[ServedModels | None], ServedModels]) -> None:
        self._loader = loader
        self._current: ServedModels | None = None
        self._lock = asyncio.Lock()
        self.reloads = 0

    @property
    def current(self) -> ServedModels:
        """The models in service (RuntimeError before the first load)."""
        if self._current is None:
            raise RuntimeError("models are not loaded yet")
        return self._current

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def load(self) -> ServedModels:
        """Load synchronously (start-up, the local chat)."""
        self._current = self._loader(self._current)
        return self._current

    async def reload(self) -> ServedModels:
        """Load the models again in a thread, then swap; replies keep flowing meanwhile.

        Concurrent calls (an admin's /reload and the retraining watcher) run one after the
        other. If loading fails, the models in service stay and the error propagates.
        """
        async with self._lock:
            models = await asyncio.to_thread(self._loader, self._current)
            self._current = models
            self.reloads += 1
            return models
