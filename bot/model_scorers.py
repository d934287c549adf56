"""The scorers saved with a served chat model, read once per file version.

``friendbot train`` saves a voice scorer with a chat model (training.model.voice_scorer) and
``friendbot retrain`` with RETRAIN_USE_FEEDBACK a scorer of the group's liked and disliked
replies (training.model.feedback_scorer). Best-of-k adds both to a candidate's score
(training.model.rerank, bot.best_of). ``train`` also saves a next-speaker scorer
(training.model.next_speaker): which friend the bot speaks as (bot.service). Each file is read
when first needed and again only when it changes (one ``stat`` per reply; a reload serves
another directory, so its own files); a model without them works as before, and a file that
cannot be read is logged and ignored, so a damaged scorer never stops the bot from replying.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from training.model import feedback_scorer, next_speaker, scorer_files, voice_scorer
from training.model.feedback_scorer import FeedbackScorer
from training.model.next_speaker import NextSpeaker
from training.model.voice_scorer import VoiceScorer

log = logging.getLogger(__name__)

T = TypeVar("T")
_cache: dict[Path, tuple[tuple[int, int], object]] = {}
_lock = threading.Lock()


def scorers_for(model_dir: Path | str | None) -> tuple[VoiceScorer | None, FeedbackScorer | None]:
    """The voice and feedback scorers saved with ``model_dir`` (None for each one absent)."""
    if model_dir is None:
        return None, None
    folder = Path(model_dir)
    return (
        _cached(folder / voice_scorer.SCORER_FILE, voice_scorer.load, "voice scorer"),
        _cached(folder / feedback_scorer.SCORER_FILE, feedback_scorer.load, "reply scorer"),
    )


def next_speaker_for(model_dir: Path | str | None) -> NextSpeaker | None:
    """The next-speaker scorer saved with ``model_dir`` (None when absent or unreadable)."""
    if model_dir is None:
        return None
    path = Path(model_dir) / next_speaker.SCORER_FILE
    return _cached(path, next_speaker.load, "next-speaker scorer")


def _cached(path: Path, load: Callable[[Path], T | None], what: str) -> T | None:
    """``load(path.parent)``, cached by the file's mtime and size; None when absent/broken."""
    try:
        stat = path.stat()
    except OSError:
        return None
    version = (stat.st_mtime_ns, stat.st_size)
    with _lock:
        cached = _cache.get(path)
    if cached is not None and cached[0] == version:
        return cached[1]  # type: ignore[return-value]
    try:
        scorer = load(path.parent)
    except scorer_files.DAMAGED as exc:
        log.warning("%s: %s ignored (%s)", path, what, exc)
        scorer = None
    with _lock:
        _cache[path] = (version, scorer)
    return scorer
