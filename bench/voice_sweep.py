"""Voice of the bot's replies under several decoding settings and voice weights.

How TEMPERATURE (training.model.decoding) and VOICE_WEIGHT (training.model.rerank) were chosen:
on a split (use ``validation``: the test split is for the final report), every ``reply as NAME:``
prompt of the active speakers gets K sampled candidates per decoding setting, scored once; then
each (k <= K, weight) picks its reply the way the bot does (training.model.rerank) and the picks
are judged by ``friendbot evaluate``'s classifier (character n-grams) and by the independent
word judge (training.model.imitation). When k divides K, the K candidates make K/k disjoint
draws of k and the figures are their mean: the same CPU buys less noise than K/k reruns would
(one draw of 300 prompts moves persona-balanced voice by about 3 points). Candidates start with
the persona's `NAME:`, as the bot's do (training.formatting.reply_prefix_ids). Also prints the CPU
microseconds per candidate of the scorer without and with the voice term. The model directory
needs its voice_scorer.json (written by ``friendbot train``).

A decoding setting is ``TEMPERATURE[:TOP_P[:TOP_K[:REPETITION_PENALTY]]]`` (the bot's values
for the parts left out); ``--scorer DIR`` adds the voice scorer saved in another model directory
(e.g. a variant fit with other features) as one more reranker over the same candidates.

    python bench/voice_sweep.py --model MODEL --data DATA --split validation \
        --settings 0.5,0.7:0.8:20,0.5:0.9:50:1.1 --candidates 4 --weights 0,8 --limit 400
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from training.formatting import parse_turn
from training.model.decoding import BOT_DECODING, DecodeOptions
from training.model.evaluate import generate_scored, load_model, rouge_l
from training.model.imitation import (
    PersonaCase,
    VoiceClassifier,
    attribution,
    echoes,
    fit_voice,
    fit_word_judge,
    loops,
    persona_cases,
    sender_of,
    share,
    voice_speakers,
)
from training.model.rerank import Candidate, rank, score_candidate, with_model_scorers
from training.model.tasks import read_chat_split
from training.model.voice_scorer import VoiceScorer, load


def decoding(setting: str) -> DecodeOptions:
    """``T[:top_p[:top_k[:repetition_penalty]]]`` over the bot's own settings."""
    parts = setting.split(":")
    names = ("temperature", "top_p", "top_k", "repetition_penalty")
    kinds = (float, float, int, float)
    given = {n: kind(v) for n, kind, v in zip(names, kinds, parts, strict=False) if v}
    return replace(BOT_DECODING, **given)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--settings", default="0.9,0.7,0.5", help="comma-separated settings")
    parser.add_argument("--temperatures", help="old spelling of --settings (temperatures only)")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--weights", default="0,4,8")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--scorer", type=Path, action="append", default=[])
    parser.add_argument(
        "--cache",
        type=Path,
        help="folder (one per model and split): keep each setting's candidates, reuse them",
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    voice = load(args.model)
    if voice is None:
        raise SystemExit(f"{args.model}: no voice_scorer.json (train it with `friendbot train`)")
    rerankers = {"model": voice}
    for other in args.scorer:
        extra = load(other)
        if extra is None:
            raise SystemExit(f"{other}: no voice_scorer.json")
        rerankers[other.name] = extra
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
    settings = args.temperatures or args.settings
    drawn: list[list[tuple[str, float]]] = []
    for setting in settings.split(","):
        opts = replace(decoding(setting), num_return_sequences=args.candidates, seed=0)
        # "-prefixed": candidates start with the persona's NAME: (evaluate.generate_scored, as
        # the bot), not reusable from caches of the earlier sweeps
        file_name = f"{setting}-{args.candidates}-{len(cases)}-prefixed.json"
        cached = args.cache / file_name if args.cache else None
        cpu = time.process_time()
        if cached is not None and cached.is_file():
            drawn = [[(t, s) for t, s in d] for d in json.loads(cached.read_text())]
        else:
            drawn = generate_scored(
                model, info.tokenizer, [c.prompt for c in cases], info.max_source_length, opts
            )
        if cached is not None and not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(drawn))
        cpu = time.process_time() - cpu
        for k in range(1, args.candidates + 1):
            for weight, name in _rerankings(args, rerankers):
                cell = _judge(cases, drawn, k, weight, rerankers[name], judges)
                label = "" if len(rerankers) == 1 else f" [{name}]"
                print(f"{setting} k {k} w {weight:g}{label}: {cell}")
        print(f"{setting}: generation {cpu:.1f} CPU s")
    _cost(
        voice,
        [
            Candidate(t, s, c.context, c.persona)
            for c, d in zip(cases, drawn, strict=True)
            for t, s in d
        ],
    )


def _rerankings(
    args: argparse.Namespace, rerankers: dict[str, VoiceScorer]
) -> list[tuple[float, str]]:
    """(voice weight, reranker) to try; weight 0 once, not once per reranker."""
    return [
        (weight, name)
        for weight in (float(w) for w in args.weights.split(","))
        for name in rerankers
        if weight or name == "model"
    ]


def _judge(
    cases: list[PersonaCase],
    drawn: list[list[tuple[str, float]]],
    k: int,
    weight: float,
    reranker: VoiceScorer,
    judges: dict[str, VoiceClassifier],
) -> str:
    """Mean measures over the disjoint draws of k among each case's candidates."""
    scorer = with_model_scorers(score_candidate, reranker, voice_weight=weight)
    groups = len(drawn[0]) // k if len(drawn[0]) % k == 0 else 1
    personas = [c.persona for c in cases]
    real = [c.real_text for c in cases]
    sums = {"char": 0.0, "word": 0.0, "rouge": 0.0, "loops": 0.0, "echo": 0.0}
    for g in range(groups):
        picks = [
            parse_turn(
                rank(
                    [Candidate(t, s, c.context, c.persona) for t, s in d[g * k : g * k + k]],
                    scorer,
                )[0]
            )[1]
            for c, d in zip(cases, drawn, strict=True)
        ]
        for name, judge in judges.items():
            sums[name] += attribution(judge, picks, personas)["balanced"]
        sums["rouge"] += rouge_l(picks, real)
        sums["loops"] += share([loops(p) for p in picks])
        sums["echo"] += share([echoes(p, c.context) for p, c in zip(picks, cases, strict=True)])
    m = {key: value / groups for key, value in sums.items()}
    return (
        f"voice char {m['char']:.3f} word {m['word']:.3f}  ROUGE-L {m['rouge']:.3f}  "
        f"loops {m['loops']:.3f} echo {m['echo']:.3f}  ({groups} draws)"
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
