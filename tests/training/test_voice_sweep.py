"""bench/voice_sweep.py: its decoding settings, and candidates that start with ``NAME:``."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from bench import voice_sweep
from tests.training.test_evaluate import data_dir, model_dir  # noqa: F401 (shared fixtures)
from training.formatting import parse_turn
from training.model.decoding import BOT_DECODING
from training.model.evaluate import load_model
from training.model.imitation import persona_cases, sender_of
from training.model.tasks import read_chat_split


def test_a_setting_changes_only_what_it_names() -> None:
    assert voice_sweep.decoding("0.7") == replace(BOT_DECODING, temperature=0.7)
    assert voice_sweep.decoding("0.5:0.8:20:1.4") == replace(
        BOT_DECODING, temperature=0.5, top_p=0.8, top_k=20, repetition_penalty=1.4
    )
    assert voice_sweep.decoding("0.5:::1.4") == replace(
        BOT_DECODING, temperature=0.5, repetition_penalty=1.4
    )


def test_forced_replies_are_signed_by_the_persona_asked_for(
    data_dir: Path,  # noqa: F811
    model_dir: Path,  # noqa: F811
) -> None:
    model, info = load_model(model_dir)
    rows = read_chat_split(data_dir, "validation")
    cases = persona_cases(rows, sorted({sender_of(r) for r in rows}))[:6]
    assert len({c.persona for c in cases}) >= 2
    opts = replace(BOT_DECODING, num_return_sequences=2, seed=0)
    # the sweep draws through evaluate's generate_scored: the forced NAME: is its only path now
    prompts = [c.prompt for c in cases]
    drawn = voice_sweep.generate_scored(
        model, info.tokenizer, prompts, info.max_source_length, opts
    )
    assert [len(d) for d in drawn] == [2] * len(cases)
    for case, candidates in zip(cases, drawn, strict=True):
        for text, logprob in candidates:
            assert parse_turn(text)[0] == case.persona, text
            assert math.isfinite(logprob) and logprob <= 0
