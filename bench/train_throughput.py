"""Training throughput: our training step against `transformers.Seq2SeqTrainer` defaults.

Both train the FLAN-T5 architecture (built from its config, random weights: the compute does
not depend on the weights) on the same chat-shaped pairs, in one run, and we count real
(non-padding) source + target tokens per second. Ours is `training.model.loop.train_step` fed by
`training.model.batching` (token-budget length buckets), with Accelerate's bf16 autocast, TF32 and
fused AdamW on a GPU, exactly as `friendbot train` runs it. The Trainer gets its defaults
(batch 8, fp32, `DataCollatorForSeq2Seq` dynamic padding, random order).

Lengths are synthetic by default (log-normal, mean 101 source / 17 target tokens, as measured
on chat pairs in the perf notes), or measured on a prepared dataset with `--data DIR`.

    python bench/train_throughput.py                       # CPU: flan-t5-small, few steps
    python bench/train_throughput.py --models small,base   # both architectures
    python bench/train_throughput.py --full                # GPU-sized run (more steps)

On a GPU it also reports MFU (model FLOPs utilisation against the chip's dense bf16 peak).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.model.batching import collate, plan_batches, real_tokens

if TYPE_CHECKING:
    from transformers import T5Config

# FLAN-T5 architectures (the hub configs' values), T5 v1.1 layout: gated-GELU, untied head.
ARCHS: dict[str, dict[str, int]] = {
    "small": {"d_model": 512, "d_ff": 1024, "num_layers": 8, "num_heads": 6, "d_kv": 64},
    "base": {"d_model": 768, "d_ff": 2048, "num_layers": 12, "num_heads": 12, "d_kv": 64},
}
VOCAB = 32128
# dense bf16 peak FLOP/s by device name fragment, for MFU
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


@dataclass
class Result:
    model: str
    system: str
    tokens_per_s: float
    steps: int
    tokens: int
    seconds: float
    peak_mem_mib: float | None
    mfu: float | None = None


def t5_config(name: str) -> T5Config:
    from transformers import T5Config

    return T5Config(
        vocab_size=VOCAB,
        num_decoder_layers=ARCHS[name]["num_layers"],
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.1,
        layer_norm_epsilon=1e-6,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        **ARCHS[name],
    )


def synthetic_lengths(n: int, seed: int) -> tuple[list[int], list[int]]:
    """Log-normal lengths with the chat means (101 source, 17 target), clipped to 512/64."""
    rng = np.random.default_rng(seed)
    sigma = 0.6

    def draw(mean: float, low: int, high: int) -> list[int]:
        mu = math.log(mean) - sigma**2 / 2
        return np.clip(rng.lognormal(mu, sigma, n).round(), low, high).astype(int).tolist()

    return draw(101, 4, 512), draw(17, 2, 64)


def dataset_lengths(data_dir: Path) -> tuple[list[int], list[int]]:
    """Token lengths of a prepared dataset's pairs (a SentencePiece vocab trained on it)."""
    from training.model.tasks import chat_examples, read_chat_split
    from training.model.tiny import train_tokenizer

    examples = chat_examples(read_chat_split(data_dir, "train"))
    tokenizer = train_tokenizer([t for e in examples for t in (e.source, e.target)], 8000)
    src = [min(len(ids), 512) for ids in tokenizer([e.source for e in examples])["input_ids"]]
    tgt = [min(len(ids), 64) for ids in tokenizer([e.target for e in examples])["input_ids"]]
    return src, tgt


def make_pairs(src: list[int], tgt: list[int], seed: int) -> list[tuple[list[int], list[int]]]:
    """Random token ids of the given lengths, each ending in eos (1), like tokenizer output."""
    rng = np.random.default_rng(seed)
    return [
        (
            [*rng.integers(3, VOCAB, s - 1).tolist(), 1],
            [*rng.integers(3, VOCAB, t - 1).tolist(), 1],
        )
        for s, t in zip(src, tgt, strict=True)
    ]


def flops_per_step(config: T5Config, src_tokens: int, tgt_tokens: int) -> float:
    """Training FLOPs (6 x params x tokens) for encoder tokens and decoder tokens separately."""
    d, ff, layers = config.d_model, config.d_ff, config.num_layers
    attn = 4 * d * config.num_heads * config.d_kv
    mlp = 3 * d * ff  # gated: wi_0, wi_1, wo
    encoder = layers * (attn + mlp)
    decoder = layers * (2 * attn + mlp) + d * config.vocab_size  # + lm_head
    return 6 * (encoder * src_tokens + decoder * tgt_tokens)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def bench_ours(
    name: str,
    pairs: list[tuple[list[int], list[int]]],
    budget: int,
    steps: int,
    warmup: int,
    compile_model: bool,
) -> Result:
    """`friendbot train`'s step: Accelerate (bf16 on GPU), fused AdamW, token-budget buckets."""
    from accelerate import Accelerator
    from transformers import T5ForConditionalGeneration, get_constant_schedule

    from training.model.loop import train_step

    use_cuda = torch.cuda.is_available()
    precision = "bf16" if use_cuda and torch.cuda.is_bf16_supported() else "no"
    accelerator = Accelerator(cpu=not use_cuda, mixed_precision=precision)
    device = accelerator.device
    if use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    reset_memory(device)
    torch.manual_seed(0)
    config = t5_config(name)
    model = T5ForConditionalGeneration(config).to(device)
    if compile_model:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=use_cuda or None)
    scheduler = get_constant_schedule(optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    plan = plan_batches(
        [len(s) for s, _ in pairs], [len(t) for _, t in pairs], budget, seed=0, epoch=0
    )
    plan = (plan * (1 + (steps + warmup) // max(len(plan), 1)))[: steps + warmup]
    batches = [([pairs[i][0] for i in b], [pairs[i][1] for i in b]) for b in plan]
    loss = torch.zeros((), device=device)
    for src, tgt in batches[:warmup]:
        loss += train_step(accelerator, model, optimizer, scheduler, [collate(src, tgt, 0)], 1.0)
    sync(device)
    start = time.perf_counter()
    tokens = src_tokens = 0
    for src, tgt in batches[warmup:]:
        loss += train_step(accelerator, model, optimizer, scheduler, [collate(src, tgt, 0)], 1.0)
        tokens += real_tokens(src, tgt)
        src_tokens += sum(len(s) for s in src)
    sync(device)
    seconds = time.perf_counter() - start
    assert math.isfinite(loss.item())
    label = "ours (bf16, buckets, fused AdamW" + (", compile)" if compile_model else ")")
    if device.type != "cuda":
        label = "ours (fp32, buckets" + (", compile)" if compile_model else ")")
    peak = peak_flops(device)
    mfu = flops_per_step(config, src_tokens, tokens - src_tokens) / seconds / peak if peak else None
    result = Result(name, label, tokens / seconds, steps, tokens, seconds, peak_memory(device), mfu)
    accelerator.free_memory()
    del model, optimizer
    return result


def bench_trainer(
    name: str, pairs: list[tuple[list[int], list[int]]], steps: int, warmup: int
) -> Result:
    """`Seq2SeqTrainer` with its defaults; a collator wrapper counts the tokens it is fed."""
    from transformers import (
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        T5ForConditionalGeneration,
        TrainerCallback,
    )

    from training.model.tiny import train_tokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reset_memory(device)
    torch.manual_seed(0)
    config = t5_config(name)
    model = T5ForConditionalGeneration(config)
    # The collator only needs a tokenizer to pad with (pad id 0, as FLAN-T5's); ids are synthetic.
    padder = train_tokenizer(["pad with me"] * 20, vocab_size=20)
    collator = DataCollatorForSeq2Seq(padder, model=model, label_pad_token_id=-100)
    fed: list[tuple[int, int]] = []  # (real tokens, source tokens) per batch

    def counting(features: list[dict]) -> dict:
        src = sum(len(f["input_ids"]) for f in features)
        fed.append((src + sum(len(f["labels"]) for f in features), src))
        return collator(features)

    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == warmup:
                sync(device)
                marks["start"] = time.perf_counter()
            if state.global_step == warmup + steps:
                sync(device)
                marks["end"] = time.perf_counter()

    dataset = [{"input_ids": s, "labels": t} for s, t in pairs]
    with tempfile.TemporaryDirectory() as tmp:
        args = Seq2SeqTrainingArguments(
            output_dir=tmp,
            max_steps=warmup + steps,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            use_cpu=device.type == "cpu",
            seed=0,
        )
        trainer = Seq2SeqTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=counting,
        )
        trainer.add_callback(Clock())
        trainer.train()
        batch_size = args.per_device_train_batch_size
    # batches handed out after the warmup steps (the dataloader may prefetch one more)
    counted = fed[warmup : warmup + steps]
    tokens = sum(t for t, _ in counted)
    src_tokens = sum(s for _, s in counted)
    seconds = marks["end"] - marks["start"]
    peak = peak_flops(device)
    mfu = flops_per_step(config, src_tokens, tokens - src_tokens) / seconds / peak if peak else None
    label = f"Seq2SeqTrainer defaults (batch {batch_size}, fp32)"
    result = Result(name, label, tokens / seconds, steps, tokens, seconds, peak_memory(device), mfu)
    del trainer, model
    return result


def main(argv: list[str] | None = None) -> None:
    on_gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="small", help="comma-separated: small, base")
    parser.add_argument("--full", action="store_true", help="GPU-sized run: more steps")
    parser.add_argument("--steps", type=int, help="timed steps per system [CPU 6, full 50]")
    parser.add_argument("--warmup", type=int, help="untimed steps first [CPU 2, full 10]")
    parser.add_argument(
        "--budget", type=int, help="our token budget per batch [16384 GPU, 2048 CPU]"
    )
    parser.add_argument("--compile", action="store_true", help="also time ours under compile")
    parser.add_argument("--data", type=Path, help="take lengths from a prepared dataset")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (50 if args.full else 6)
    warmup = args.warmup if args.warmup is not None else (10 if args.full else 2)
    budget = args.budget or (16384 if on_gpu else 2048)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - set(ARCHS)
    if unknown:
        parser.error(f"unknown model(s): {', '.join(sorted(unknown))}")

    src, tgt = dataset_lengths(args.data) if args.data else synthetic_lengths(4096, seed=0)
    pairs = make_pairs(src, tgt, seed=1)
    device = torch.cuda.get_device_name() if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device}; torch {torch.__version__}")
    print(
        f"pairs: {len(pairs)}, mean source {np.mean(src):.1f} / target {np.mean(tgt):.1f} "
        f"tokens; our budget {budget} tokens; {steps} timed steps after {warmup} warmup"
    )
    results: list[Result] = []
    for name in models:
        base = bench_trainer(name, pairs, steps, warmup)
        results.append(base)
        results.append(bench_ours(name, pairs, budget, steps, warmup, compile_model=False))
        if args.compile:
            results.append(bench_ours(name, pairs, budget, steps, warmup, compile_model=True))
        print_table([r for r in results if r.model == name], base)


def print_table(rows: list[Result], base: Result) -> None:
    print()
    print(f"| flan-t5-{base.model} | real tok/s | vs Trainer | MFU | peak GPU MiB | tokens / s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        mfu = f"{r.mfu:.1%}" if r.mfu is not None else "n/a"
        mem = f"{r.peak_mem_mib:,.0f}" if r.peak_mem_mib is not None else "n/a"
        print(
            f"| {r.system} | {r.tokens_per_s:,.0f} | {r.tokens_per_s / base.tokens_per_s:.2f}x "
            f"| {mfu} | {mem} | {r.tokens:,} / {r.seconds:.1f} |"
        )
    print()


if __name__ == "__main__":
    main()
