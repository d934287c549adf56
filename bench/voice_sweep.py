"""Voice of the bot's replies under several sampling temperatures and voice weights.

How TEMPERATURE (training.model.decoding) and VOICE_WEIGHT (training.model.rerank) were chosen:
on a split (use ``validation``: the test split is for the final report), every ``reply as NAME:``
prompt of the active speakers gets K sampled candidates per temperature, scored once; then each
(k <= K, weight) picks its reply the way the bot does (training.model.rerank) and the picks are
judged by ``friendbot evaluate``'s classifier (character n-grams) and by the independent word
judge (training.model.imitation). Also prints the CPU microseconds per candidate of the scorer
without and with the voice term. The model directory needs its voice_scorer.json (written by
``friendbot train``).

    python bench/voice_sweep.py --model MODEL --data DATA --split validation \
        --temperatures 0.9,0.7,0.5 --candidates 4 --weights 0,4,8 --limit 300
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from training.formatting import parse_turn
from training.model.decoding import BOT_DECODING
from training.model.evaluate import generate_scored, load_model, rouge_l
from training.model.imitation import (
    attribution,
    fit_voice,
    fit_word_judge,
    persona_cases,
    sender_of,
    voice_speakers,
)
from training.model.rerank import Candidate, rank, score_candidate, with_model_scorers
from training.model.tasks import read_chat_split
from training.model.voice_scorer import VoiceScorer, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--temperatures", default="0.9,0.7,0.5")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--weights", default="0,4,8")
    parser.add_argument("--limit", type=int, default=300)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    voice = load(args.model)
    if voice is None:
        raise SystemExit(f"{args.model}: no voice_scorer.json (train it with `friendbot train`)")
    model, info = load_model(args.model)
    rows, train = read_chat_split(args.data, args.split), read_chat_split(args.data, "train")
    speakers = voice_speakers([sender_of(r) for r in train], [sender_of(r) for r in rows])
    cases = persona_cases(rows, speakers)
    if len(cases) > args.limit:  # spread over the split, deterministically
        cases = [cases[i * len(cases) // args.limit] for i in range(args.limit)]
    texts = [parse_turn(r["response"])[1] for r in train]
    senders = [sender_of(r) for r in train]
    judges = {"char": fit_voice(texts, senders, speakers)}
    judges["word"] = fit_word_judge(texts, senders, speakers)
    personas = [c.persona for c in cases]
    real = [c.real_text for c in cases]
    ceilings = {n: attribution(j, real, personas)["balanced"] for n, j in judges.items()}
    print(
        f"{len(cases)} cases; balanced ceiling char {ceilings['char']:.3f} "
        f"word {ceilings['word']:.3f}; chance {1 / len(speakers):.3f}"
    )
    for temperature in (float(t) for t in args.temperatures.split(",")):
        opts = replace(
            BOT_DECODING, temperature=temperature, num_return_sequences=args.candidates, seed=0
        )
        prompts = [c.prompt for c in cases]
        cpu = time.process_time()
        drawn = generate_scored(model, info.tokenizer, prompts, info.max_source_length, opts)
        cpu = time.process_time() - cpu
        for k in range(1, args.candidates + 1):
            for weight in (float(w) for w in args.weights.split(",")):
                scorer = with_model_scorers(score_candidate, voice, voice_weight=weight)
                picks = [
                    parse_turn(
                        rank([Candidate(t, s, c.context, c.persona) for t, s in d[:k]], scorer)[0]
                    )[1]
                    for c, d in zip(cases, drawn, strict=True)
                ]
                voices = {n: attribution(j, picks, personas)["balanced"] for n, j in judges.items()}
                print(
                    f"T {temperature} k {k} w {weight:g}: voice char {voices['char']:.3f} "
                    f"word {voices['word']:.3f}  ROUGE-L {rouge_l(picks, real):.3f}"
                )
        print(f"T {temperature}: generation {cpu:.1f} CPU s")
    _cost(
        voice,
        [
            Candidate(t, s, c.context, c.persona)
            for c, d in zip(cases, drawn, strict=True)
            for t, s in d
        ],
    )


def _cost(voice: VoiceScorer, candidates: list[Candidate]) -> None:
    voiced = with_model_scorers(score_candidate, voice)
    for name, scorer in (("scorer without voice", score_candidate), ("with voice", voiced)):
        cpu = time.process_time()
        for c in candidates:
            scorer(c)
        cpu = time.process_time() - cpu
        print(f"{name}: {cpu / len(candidates) * 1e6:.0f} CPU us per candidate")


if __name__ == "__main__":
    main()
