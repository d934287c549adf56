"""How replies are decoded: one set of defaults for the bot, ``chat``, ``evaluate`` and retraining.

The report of ``friendbot evaluate`` is only worth reading if it decodes the way the bot does,
so the defaults live here, in training (the bot may import training; training never imports the
bot), and every caller builds its options from ``DecodeOptions``.

Two guards against the loops a small model falls into ("i'm sorry, i'm sorry, i'm sorry"):

- ``no_repeat_ngram_size``: a token 3-gram never appears twice in one reply;
- ``repetition_penalty``: tokens already in the reply are less likely again (CTRL's penalty:
  logits divided by it when positive, multiplied when negative).

Hugging Face ``generate`` and CTranslate2's ``translate_batch`` both take these two knobs under
the same names, so both backends can decode alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MAX_NEW_TOKENS = 48
TEMPERATURE = 0.5
"""Chosen on the validation split of a real Slack chat (BENCHMARKS.md, "Voice in the bot's
decoding"): at 0.9 one sample sounded like the persona to the judge 0.32 of the time, at 0.5
0.41 (greedy 0.47), with loops and echo 0 either way; 0.4 and below left too little variety for
best-of-k to choose from."""
TOP_P = 0.9
TOP_K = 50
NO_REPEAT_NGRAM_SIZE = 3
REPETITION_PENALTY = 1.2
REPLY_CANDIDATES = 4
"""Chat replies the bot samples at once and ranks (training.model.rerank); ``evaluate``'s "bot"
row draws as many. 4: the most whose p50 latency stays within 1.5x of one for flan-t5-small and
-base on a 2-core CPU (1.33-1.47x; 5 was 1.64x for small), and what most of the voice gain
needs (BENCHMARKS.md, "Best of four")."""


@dataclass(frozen=True)
class DecodeOptions:
    """How to pick tokens; one value shared by both backends so they decode alike.

    ``sample=False`` is greedy; greedy with several sequences asks for the best beams, so they
    differ. ``min_new_tokens`` forbids an earlier end (the benchmark forces a fixed length).
    ``no_repeat_ngram_size=0`` and ``repetition_penalty=1.0`` turn the loop guards off.
    """

    max_new_tokens: int = MAX_NEW_TOKENS
    min_new_tokens: int = 0
    sample: bool = True
    temperature: float = TEMPERATURE
    top_p: float = TOP_P
    top_k: int = TOP_K
    num_return_sequences: int = 1
    seed: int | None = None
    no_repeat_ngram_size: int = NO_REPEAT_NGRAM_SIZE
    repetition_penalty: float = REPETITION_PENALTY

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens must be in [0, max_new_tokens]: {self.min_new_tokens}"
            )
        if self.num_return_sequences < 1:
            raise ValueError(f"num_return_sequences must be >= 1, got {self.num_return_sequences}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(
                f"no_repeat_ngram_size must be >= 0 (0: off), got {self.no_repeat_ngram_size}"
            )
        if self.repetition_penalty <= 0:
            raise ValueError(
                f"repetition_penalty must be > 0 (1: off), got {self.repetition_penalty}"
            )
        if self.sample:
            if self.temperature <= 0:
                raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
            if not 0 < self.top_p <= 1:
                raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
            if self.top_k < 0:
                raise ValueError(f"top_k must be >= 0 (0: no top-k cut), got {self.top_k}")


BOT_DECODING = DecodeOptions()
"""How the bot samples: with both loop guards (``friendbot evaluate``'s "sampled" is one such
sample; its "bot" row draws REPLY_CANDIDATES of them and ranks them as the bot does)."""

GREEDY_DECODING = replace(BOT_DECODING, sample=False)
"""The bot's settings with sampling off: the most likely reply, still with the loop guards."""


def hf_generate_kwargs(opts: DecodeOptions) -> dict[str, Any]:
    """Keyword arguments for Hugging Face ``generate`` (or ``GenerationConfig``) from ``opts``.

    Every knob is passed explicitly, so values saved in a model's generation_config.json never
    change how it decodes.
    """
    kwargs: dict[str, Any] = {
        "max_new_tokens": opts.max_new_tokens,
        "min_new_tokens": opts.min_new_tokens,
        "num_return_sequences": opts.num_return_sequences,
        "no_repeat_ngram_size": opts.no_repeat_ngram_size,
        "repetition_penalty": opts.repetition_penalty,
    }
    if opts.sample:
        kwargs.update(
            do_sample=True,
            num_beams=1,
            temperature=opts.temperature,
            top_p=opts.top_p,
            top_k=opts.top_k,
        )
    else:
        kwargs.update(do_sample=False, num_beams=opts.num_return_sequences)
    return kwargs


def hf_decoder_prefix(start_id: int, prefix: Sequence[int], rows: int) -> torch.Tensor:
    """``decoder_input_ids`` that start each of ``rows`` replies on ``prefix`` (a persona's
    forced ``NAME:``, training.formatting.reply_prefix_ids); HF's ``max_new_tokens`` then
    counts only the tokens after it. The bot's HF backend and ``evaluate`` both use this."""
    import torch

    return torch.tensor([start_id, *prefix], dtype=torch.long).repeat(rows, 1)


def mean_reply_logprob(ids: Sequence[int], forced: int, logps: torch.Tensor) -> float:
    """Mean log-probability of a reply's generated tokens (the eos too, when it was generated),
    not of the ``forced`` prefix tokens it starts with: how best-of-k candidates are compared,
    the same in the bot's HF backend and in ``evaluate``. ``logps`` are HF's transition scores
    of the generated steps; ``ids`` the reply, prefix included, cut at the eos."""
    counted = min(len(ids) - forced + 1, len(logps))
    return float(logps[:counted].mean()) if counted > 0 else 0.0
