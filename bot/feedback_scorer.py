"""The group's taste in best-of-k: a scorer of liked vs disliked replies, per served model.

``friendbot retrain`` with RETRAIN_USE_FEEDBACK fits the scorer (training.model.feedback_scorer)
and saves it in the candidate's directory. Here it is loaded next to the model it came with,
and :func:`with_feedback` adds its P(liked) to a candidate's score, beside the model's
log-probability and the loop/echo penalties (bot.best_of). A model without a scorer ranks as
before; a scorer file that cannot be read is logged once and ignored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.formatting import clean_text, parse_turn
from training.model.feedback_scorer import SCORER_FILE, FeedbackScorer, load

log = logging.getLogger(__name__)

FEEDBACK_WEIGHT = 1.0
"""P(liked) is in 0..1, like the voice classifier's probability (bot.best_of.VOICE_WEIGHT):
it decides between candidates of similar log-probability, never against a loop or an echo."""

_cache: dict[Path, tuple[tuple[int, int], FeedbackScorer | None]] = {}
_lock = threading.Lock()


def scorer_for(model_dir: Path | str | None) -> FeedbackScorer | None:
    """The scorer saved with ``model_dir`` (cached; read again when the file changes: a
    retrain writes it into a new directory, so this is one ``stat`` per reply)."""
    if model_dir is None:
        return None
    path = Path(model_dir) / SCORER_FILE
    try:
        stat = path.stat()
    except OSError:
        return None
    version = (stat.st_mtime_ns, stat.st_size)
    with _lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
    try:
        scorer = load(Path(model_dir))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: reply scorer ignored (%s)", path, exc)
        scorer = None
    with _lock:
        _cache[path] = (version, scorer)
    return scorer


def score(texts: list[str], model_dir: Path | str | None) -> list[float]:
    """P(liked) of each reply text under ``model_dir``'s scorer (0.5 each without one)."""
    scorer = scorer_for(model_dir)
    return scorer.score(texts) if scorer is not None else [0.5] * len(texts)


def with_feedback(
    scorer: Callable[[Any], float], model_dir: Path | str | None
) -> Callable[[Any], float]:
    """``scorer`` plus FEEDBACK_WEIGHT x P(liked) of the candidate's message text, when the
    served model has a feedback scorer; ``scorer`` itself otherwise."""
    feedback = scorer_for(model_dir)
    if feedback is None:
        return scorer

    def scored(candidate: Any) -> float:
        sender, said = parse_turn(candidate.text)
        text = said if sender is not None else clean_text(candidate.text)
        return scorer(candidate) + FEEDBACK_WEIGHT * feedback.score([text])[0]

    return scored
