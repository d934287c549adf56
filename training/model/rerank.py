"""How best-of-k scores a candidate reply: shared by the bot and ``friendbot evaluate``.

One sample is a lottery ticket: a small model sometimes loops or parrots a line of the chat.
The bot draws k at once (bot.best_of) and sends the best-scored one; ``friendbot evaluate``
scores its "bot decoding" row with this same code, so the report shows what the bot posts:

- the model's own confidence: mean token log-probability (computed while decoding; the mean, so
  a short reply does not win just for being short);
- minus a penalty when the reply loops or echoes a context line (the measures ``evaluate``
  reports, training.model.imitation), since those are the failures people notice;
- plus ``VOICE_WEIGHT`` x the probability that the persona wrote it, when the model directory
  has a voice scorer (training.model.voice_scorer) and a persona was asked for;
- plus ``FEEDBACK_WEIGHT`` x P(liked), when it has the group's feedback scorer
  (training.model.feedback_scorer, issue 14).

Scoring only orders the candidates; which speaker is acceptable is still decided by the bot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from training.formatting import clean_text, parse_turn
from training.model import feedback_scorer, voice_scorer
from training.model.feedback_scorer import FeedbackScorer
from training.model.imitation import echoes, loops
from training.model.voice_scorer import VoiceScorer

VOICE_WEIGHT = 8.0
"""Chosen on the validation split of a real Slack chat (BENCHMARKS.md, "Voice in the bot's
decoding"): with two candidates at temperature 0.5, weights 0 / 4 / 8 / 16 gave voice 0.41 /
0.54 / 0.55 / 0.55 (ceiling 0.61) at the same ROUGE-L; sampled candidates differ by well under
one nat per token, so the voice decides between clean replies."""
# Mean log-probabilities of sampled replies lie around -0.5..-4 nats per token, and the voice
# and feedback terms add at most 8 + 1: a penalty of 20 puts any looping or parroting reply
# behind every clean one, whatever it sounds like.
LOOP_PENALTY = 20.0
ECHO_PENALTY = 20.0
FEEDBACK_WEIGHT = 1.0
"""P(liked) is in 0..1 like the voice probability: it decides between candidates of similar
log-probability, never against a loop or an echo."""

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


def with_model_scorers(
    scorer: Scorer,
    voice: VoiceScorer | None = None,
    feedback: FeedbackScorer | None = None,
    voice_weight: float = VOICE_WEIGHT,
) -> Scorer:
    """``scorer`` plus the voice and feedback terms of the scorers saved with a model (each
    only when present): the score the bot ranks a served model's candidates with
    (``voice_weight`` other than the default: for bench/voice_sweep.py)."""
    if voice is None and feedback is None:
        return scorer

    def scored(candidate: Candidate) -> float:
        total = scorer(candidate)
        said = body(candidate.text)
        if voice is not None and candidate.persona:
            total += voice_weight * voice.probability(said, candidate.persona)
        if feedback is not None:
            total += FEEDBACK_WEIGHT * feedback.score([said])[0]
        return total

    return scored


def load_model_scorers(model_dir: Path) -> tuple[VoiceScorer | None, FeedbackScorer | None]:
    """The voice and feedback scorers saved in ``model_dir`` (None for each one absent).

    Raises ValueError (or OSError) for a file that is there but unreadable; the bot logs and
    ignores it, ``evaluate`` refuses it.
    """
    return voice_scorer.load(model_dir), feedback_scorer.load(model_dir)
