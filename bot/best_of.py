"""Best of k: sample several chat replies in one batch and send the one that scores best.

Drawing k at once costs little more than one (one padded batch, the same encoder pass per
prompt). How a candidate is scored (the model's mean log-probability, penalties for loops and
echoes, the persona's voice probability, the group's taste) lives in training.model.rerank, so
``friendbot evaluate`` ranks its "bot decoding" replies with the very same code; here the served
model's saved scorers are found (bot.model_scorers) and the batch is drawn.

Scoring only orders the candidates; which speaker is acceptable is still decided by
bot.replies (``choose_reply``/``persona_reply`` take the first acceptable in this order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.model_scorers import scorers_for
from training.model.decoding import DecodeOptions
from training.model.rerank import (
    ECHO_PENALTY,
    LOOP_PENALTY,
    VOICE_WEIGHT,
    Candidate,
    Scorer,
    Voice,
    body,
    rank,
    score_candidate,
    with_model_scorers,
)

if TYPE_CHECKING:
    from bot.engine import ReplyEngine

__all__ = [
    "ECHO_PENALTY",
    "LOOP_PENALTY",
    "VOICE_WEIGHT",
    "Candidate",
    "Scorer",
    "Voice",
    "best_of",
    "body",
    "rank",
    "score_candidate",
]


def best_of(
    engine: ReplyEngine,
    prompt: str,
    options: DecodeOptions,
    context: Sequence[str],
    persona: str | None = None,
    scorer: Scorer = score_candidate,
) -> list[str]:
    """``options.num_return_sequences`` replies to ``prompt`` from one batch, best first.

    The bot's reply path and the latency benchmark both call this, so the benchmark times
    what the bot does; ``scorer`` gets the served model's voice and feedback terms added.
    """
    scored = engine.generate_scored([prompt], options)[0]
    lines = tuple(context)
    model_dir = getattr(engine, "model_dir", None)
    scorer = with_model_scorers(scorer, *scorers_for(model_dir))
    return rank([Candidate(text, logprob, lines, persona) for text, logprob in scored], scorer)
