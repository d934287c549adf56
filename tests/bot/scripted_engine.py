"""A scripted stand-in for ``bot.engine.ReplyEngine``: fixed outputs, every prompt recorded.

For tests of what the bot does with model output (who speaks, what is posted); tests of the
real generation path use the tiny model instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bot.serving import ServedModels, TaskModel
from training.model.decoding import DecodeOptions


class ScriptedEngine:
    def __init__(
        self,
        outputs: list[str] | Callable[[str], list[str]],
        *,
        name: str = "scripted",
        info: dict[str, Any] | None = None,
    ) -> None:
        self.outputs = outputs
        self.model_dir = Path("/models") / name
        self.backend = "scripted"
        self.info = info or {}
        self.prompts: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.threads: set[str] = set()

    def generate(self, prompts: list[str], **options: Any) -> list[list[str]]:
        self.threads.add(threading.current_thread().name)
        self.prompts.extend(prompts)
        self.calls.append(options)
        n = options.get("num_return_sequences", 1)
        result = []
        for prompt in prompts:
            outs = self.outputs(prompt) if callable(self.outputs) else self.outputs
            result.append((list(outs) * n)[:n] if outs else [""] * n)
        return result

    def generate_scored(
        self, prompts: list[str], options: DecodeOptions
    ) -> list[list[tuple[str, float]]]:
        """As ``generate``, each output with a log-probability of 0 (scorers are injected)."""
        groups = self.generate(prompts, **asdict(options))
        return [[(text, 0.0) for text in group] for group in groups]


def served(
    chat: ScriptedEngine,
    paraphrase: ScriptedEngine | None = None,
    joke: ScriptedEngine | None = None,
) -> Callable[[ServedModels | None], ServedModels]:
    """A FriendBot ``loader`` serving the scripted engines (task models as instruction models
    when given, else the chat model as the fallback)."""

    def task(engine: ScriptedEngine | None) -> TaskModel:
        if engine is None:
            return TaskModel(chat, instruct=False, source="test fallback")  # type: ignore[arg-type]
        return TaskModel(engine, instruct=True, source="test")  # type: ignore[arg-type]

    def load(previous: ServedModels | None) -> ServedModels:
        return ServedModels(chat=chat, paraphrase=task(paraphrase), joke=task(joke))  # type: ignore[arg-type]

    return load
