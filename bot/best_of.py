"""Best of k: sample several chat replies in one batch and send the one that scores best.

One sample is a lottery ticket: a small model sometimes loops or parrots a line of the chat.
Drawing k at once costs little more than one (one padded batch, the same encoder pass per
prompt), and a score picks the reply worth sending:

- the model's own confidence: mean token log-probability (computed while decoding, by HF and
  CTranslate2 alike; the mean, so a short reply does not win just for being short);
- minus a penalty when the reply loops or echoes a context line (the measures ``friendbot
  evaluate`` reports, training.model.imitation), since those are the failures people notice;
- plus, when a voice classifier is given, its probability that the persona wrote the text.

Scoring only orders the candidates; which speaker is acceptable is still decided by
bot.replies (``choose_reply``/``persona_reply`` take the first acceptable in this order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.feedback_scorer import with_feedback
from training.formatting import clean_text, parse_turn
from training.model.decoding import DecodeOptions
from training.model.imitation import echoes, loops

if TYPE_CHECKING:
    from bot.engine import ReplyEngine

# Mean log-probabilities of sampled replies lie around -1..-4 nats per token: a penalty of 5
# puts any looping or parroting reply behind every clean one.
LOOP_PENALTY = 5.0
ECHO_PENALTY = 5.0
VOICE_WEIGHT = 1.0

Voice = Callable[[str, str], float]
"""(text, persona) -> probability that persona wrote text."""


@dataclass(frozen=True)
class Candidate:
    """One sampled reply (``Sender: text`` or plain text) with what scoring needs."""

    text: str
    logprob: float
    context: tuple[str, ...] = ()
    persona: str | None = None


Scorer = Callable[[Candidate], float]


def body(text: str) -> str:
    """The message text of a ``Sender: text`` reply (the whole text when it names nobody)."""
    sender, said = parse_turn(text)
    return said if sender is not None else clean_text(text)


def score_candidate(candidate: Candidate, voice: Voice | None = None) -> float:
    """Higher is better: the model's confidence, less loops and echoes, plus the voice."""
    said = body(candidate.text)
    score = candidate.logprob
    if loops(said):
        score -= LOOP_PENALTY
    if echoes(said, candidate.context):
        score -= ECHO_PENALTY
    if voice is not None and candidate.persona:
        score += VOICE_WEIGHT * voice(said, candidate.persona)
    return score


def rank(candidates: Sequence[Candidate], scorer: Scorer = score_candidate) -> list[str]:
    """Candidate texts, best score first (ties keep the sampling order)."""
    scores = [scorer(c) for c in candidates]
    order = sorted(range(len(candidates)), key=lambda i: -scores[i])
    return [candidates[i].text for i in order]


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
    what the bot does.
    """
    scored = engine.generate_scored([prompt], options)[0]
    lines = tuple(context)
    # issue 14: the group's liked/disliked replies, when the served model has that scorer
    scorer = with_feedback(scorer, getattr(engine, "model_dir", None))
    return rank([Candidate(text, logprob, lines, persona) for text, logprob in scored], scorer)
