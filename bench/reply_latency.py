"""Reply latency through the bot's own generation path: HF generate vs CTranslate2 int8.

For each FLAN-T5 architecture (random weights: the cost of a forward pass does not depend on
the values, and every reply is forced to the same length) this builds a model directory like
``friendbot train`` writes, converts it with ``export_ct2``, loads it twice with
``ReplyEngine.load`` (backend ``hf`` and ``ct2``) and times ``engine.generate`` on a
10-message chat context (about 200 input tokens) with exactly 32 new tokens, greedy and
sampling (top-p 0.9, top-k 50). Calls are interleaved round-robin so that noise from other
work on the machine lands on every path alike. Target: CTranslate2 greedy p50 at most a third
of HF greedy fp32.

    .venv/bin/python bench/reply_latency.py                 # quick: small + base, 5 rounds
    .venv/bin/python bench/reply_latency.py --repeats 30    # steadier percentiles
    .venv/bin/python bench/reply_latency.py --arch tiny     # seconds: a smoke run

``--candidates K [K ...]`` measures the bot's whole reply path instead (bot.best_of: prompt
built from the chat lines, loop guards on, K sampled candidates in one batch, scored and
ranked, decoded) on CTranslate2 int8, for each K, against HF greedy fp32 without guards (the
baseline the engine started from), in the same interleaved rounds:

    .venv/bin/python bench/reply_latency.py --arch small --candidates 1 2 3 4 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

NEW_TOKENS = 32
CONTEXT_MESSAGES = 10
TARGET_SOURCE_TOKENS = 200
VOCAB_SIZE = 32128  # FLAN-T5's embedding rows (32100 pieces + padding to a multiple of 64)


@dataclass(frozen=True)
class Arch:
    """A FLAN-T5 shape (T5 v1.1: gated-gelu, untied embeddings)."""

    name: str
    d_model: int
    d_ff: int
    num_layers: int
    num_heads: int
    d_kv: int = 64
    vocab_size: int = VOCAB_SIZE


ARCHS = {
    "small": Arch("flan-t5-small", d_model=512, d_ff=1024, num_layers=8, num_heads=6),
    "base": Arch("flan-t5-base", d_model=768, d_ff=2048, num_layers=12, num_heads=12),
    "tiny": Arch("tiny (smoke)", d_model=64, d_ff=128, num_layers=2, num_heads=2, d_kv=32),
}

# (label, backend, sample)
PATHS = [
    ("HF generate greedy fp32", "hf", False),
    ("CTranslate2 int8 greedy", "ct2", False),
    ("HF sampling top-p 0.9, top-k 50", "hf", True),
    ("CTranslate2 int8 top-p 0.9, top-k 50", "ct2", True),
]

NAMES = ["Alice", "Bob", "Carol", "Dave", "Hugo"]
WORD_TEXT = (
    "hey ok lol yes no maybe tonight tomorrow climbing pizza beer movie train late early "
    "coffee work home gym run weekend party music band ticket trip beach rain sun cold hot "
    "call later now soon sure idk haha nice cool great sorry thanks please why what when "
    "where who how really omg wow same mood vibes plan meet park bar cafe station car bus "
    "walk"
)
WORDS = WORD_TEXT.split()


def chat_lines(words_per_message: int) -> list[str]:
    """A deterministic 10-message context, ``Sender: text`` lines as the bot builds them."""
    lines = []
    for i in range(CONTEXT_MESSAGES):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(words_per_message)]
        lines.append(f"{NAMES[i % len(NAMES)]}: {' '.join(words)}")
    return lines


def build_tokenizer(vocab_size: int):  # -> T5Tokenizer
    """A SentencePiece tokenizer trained on chat-like text, padded to ``vocab_size`` pieces.

    The trained pieces tokenize the context the way a real vocabulary would (words, not
    letters); the padding pieces only give the embedding and output layers FLAN-T5's size
    (the output projection over 32128 rows is a real share of each decoding step).
    """
    from transformers import T5Tokenizer

    from training.model.tiny import train_tokenizer

    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4
    corpus += [f"{name}: {w}" for name in NAMES for w in WORDS]
    pieces = _trained_pieces(train_tokenizer(corpus, vocab_size=1000))
    padding = [(f"▁⟪unused{i}⟫", -1000.0) for i in range(vocab_size - len(pieces))]
    return T5Tokenizer(vocab=pieces + padding, extra_ids=0)


def _trained_pieces(tokenizer) -> list[tuple[str, float]]:
    """(piece, score) of a tokenizer built by training.model.tiny.train_tokenizer, in id order."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    return [(piece, float(score)) for piece, score in state["model"]["vocab"]]


def build_model_dir(arch: Arch, out: Path) -> Path:
    """Save a random-weight T5 of ``arch`` with its tokenizer, as friendbot train would."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from training.model.model_dir import write_info

    tokenizer = build_tokenizer(arch.vocab_size)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=arch.vocab_size,
        d_model=arch.d_model,
        d_ff=arch.d_ff,
        d_kv=arch.d_kv,
        num_layers=arch.num_layers,
        num_decoder_layers=arch.num_layers,
        num_heads=arch.num_heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    model = T5ForConditionalGeneration(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # the record friendbot train writes: ReplyEngine refuses a chat model without it
    write_info(
        out,
        {
            "base_model": arch.name,
            "task": "chat",
            "speakers": NAMES,
            "max_source_length": 512,
            "max_target_length": 64,
        },
    )
    return out


def context_prompt(engine) -> tuple[str, int]:
    """The longest 10-message context that stays within about 200 source tokens."""
    from training.formatting import encode_source

    best = ("", 0)
    for words in range(1, 60):
        prompt = "\n".join(chat_lines(words))
        n = len(encode_source(engine._tokenizer, prompt, engine.max_source_length))
        if n > TARGET_SOURCE_TOKENS + 5:
            break
        best = (prompt, n)
    return best


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of a small sample."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def load_average() -> str:
    """The 1/5/15-minute load averages as the kernel reports them (/proc/loadavg)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text(encoding="ascii").split()[:3])
    except OSError:  # not Linux
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def candidate_paths(candidates: list[int]) -> list[tuple[str, str, int | None]]:
    """(label, backend, k) of the reply-path comparison; k None: the unguarded baseline."""
    paths: list[tuple[str, str, int | None]] = [("HF greedy fp32, no guards", "hf", None)]
    paths += [(f"CT2 int8 bot reply, k={k}", "ct2", k) for k in candidates]
    return paths


def bench_reply_path(
    engines: dict, context: list[str], candidates: list[int], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Time the bot's reply path (bot.best_of) for each k against the unguarded baseline."""
    from dataclasses import replace

    from bot.best_of import best_of
    from training.formatting import build_prompt
    from training.model.decoding import BOT_DECODING, DecodeOptions

    forced = replace(BOT_DECODING, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    baseline = DecodeOptions(
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        sample=False,
        no_repeat_ngram_size=0,
        repetition_penalty=1.0,
    )

    def reply(backend: str, k: int | None) -> str:
        prompt = build_prompt(context)
        engine = engines[backend]
        if k is None:
            return engine.generate(
                [prompt],
                **{
                    f: getattr(baseline, f)
                    for f in (
                        "max_new_tokens",
                        "min_new_tokens",
                        "sample",
                        "no_repeat_ngram_size",
                        "repetition_penalty",
                    )
                },
            )[0][0]
        return best_of(engine, prompt, replace(forced, num_return_sequences=k), context)[0]

    paths = candidate_paths(candidates)
    times: dict[str, list[float]] = {label: [] for label, _, _ in paths}
    for round_ in range(warmup + repeats):
        for label, backend, k in paths:  # interleaved: noise hits every path alike
            start = time.perf_counter()
            reply(backend, k)
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[label].append(elapsed * 1000)
        Console(stderr=True).print(f"  round {round_ + 1}/{warmup + repeats}", end="\r")
    return times


def bench_arch(
    arch: Arch, repeats: int, warmup: int, threads: int | None, candidates: list[int] | None = None
) -> dict:
    """Time every reply path on one architecture; returns the figures as a dict."""
    from bot.engine import DecodeOptions, ReplyEngine
    from training.model.ct2 import export_ct2

    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="reply-latency-") as tmp:
        model_dir = Path(tmp) / "model"
        t0 = time.perf_counter()
        build_model_dir(arch, model_dir)
        t1 = time.perf_counter()
        export_ct2(model_dir, quantization="int8")
        t2 = time.perf_counter()
        engines, load_s = {}, {}
        for backend in ("hf", "ct2"):
            start = time.perf_counter()
            engines[backend] = ReplyEngine.load(model_dir, backend=backend, threads=threads)
            load_s[backend] = time.perf_counter() - start
        prompt, source_tokens = context_prompt(engines["hf"])
        console.print(
            f"[bold]{arch.name}[/]: built in {t1 - t0:.1f}s, converted in {t2 - t1:.1f}s, "
            f"loaded in {load_s['hf']:.2f}s (hf) / {load_s['ct2']:.2f}s (ct2); "
            f"{source_tokens} source tokens, {NEW_TOKENS} new tokens, {repeats} rounds"
        )
        if candidates:
            words = len(prompt.splitlines()[0].split()) - 1
            times = bench_reply_path(engines, chat_lines(words), candidates, repeats, warmup)
            Console(stderr=True).print()
            return _figures(arch, source_tokens, repeats, t2 - t1, load_s, times)
        options = {
            sample: dict(
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                sample=sample,
                temperature=0.9,
                top_p=0.9,
                top_k=50,
            )
            for sample in (False, True)
        }
        # every path really generates 32 tokens (no early eos on random weights)
        for _, backend, sample in PATHS:
            [[ids]] = engines[backend].generate_ids([prompt], DecodeOptions(**options[sample]))
            assert len(ids) == NEW_TOKENS, (backend, sample, len(ids))

        times: dict[str, list[float]] = {label: [] for label, _, _ in PATHS}
        for round_ in range(warmup + repeats):
            for label, backend, sample in PATHS:  # interleaved: noise hits every path alike
                start = time.perf_counter()
                engines[backend].generate([prompt], **options[sample])
                elapsed = time.perf_counter() - start
                if round_ >= warmup:
                    times[label].append(elapsed * 1000)
            console.print(f"  round {round_ + 1}/{warmup + repeats}", end="\r")
        console.print()
    return _figures(arch, source_tokens, repeats, t2 - t1, load_s, times)


def _figures(
    arch: Arch,
    source_tokens: int,
    repeats: int,
    convert_s: float,
    load_s: dict,
    times: dict[str, list[float]],
) -> dict:
    return {
        "arch": arch.name,
        "source_tokens": source_tokens,
        "new_tokens": NEW_TOKENS,
        "repeats": repeats,
        "convert_s": convert_s,
        "load_s": load_s,
        "paths": {
            label: {
                "p50_ms": percentile(ms, 50),
                "p95_ms": percentile(ms, 95),
                "mean_ms": statistics.fmean(ms),
            }
            for label, ms in times.items()
        },
    }


def print_table(results: list[dict]) -> None:
    sources = ", ".join(f"{r['arch']} {r['source_tokens']}" for r in results)
    table = Table(
        title=f"Reply latency (ms), batch 1, {NEW_TOKENS} new tokens; source tokens: {sources}"
    )
    table.add_column("architecture")
    table.add_column("reply path")
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    table.add_column("p50 vs HF greedy", justify="right")
    for result in results:
        paths = result["paths"]
        baseline = next(iter(paths.values()))["p50_ms"]  # HF greedy, listed first
        for i, (label, figures) in enumerate(paths.items()):
            table.add_row(
                result["arch"] if i == 0 else "",
                label,
                f"{figures['p50_ms']:,.0f}",
                f"{figures['p95_ms']:,.0f}",
                f"{baseline / figures['p50_ms']:.2f}x",
            )
        labels = list(paths)
        if labels[1].startswith("CT2 int8 bot reply"):  # --candidates: k vs k=1 (or smallest)
            single = paths[labels[1]]["p50_ms"]
            for label in labels[2:]:
                ratio = paths[label]["p50_ms"] / single
                k_label = label.rsplit(" ", 1)[-1]
                table.add_row(
                    "", f"p50 {k_label} / p50 {labels[1].rsplit(' ', 1)[-1]} = {ratio:.2f}"
                )
        else:
            ratio = paths[PATHS[1][0]]["p50_ms"] / baseline
            verdict = "meets" if ratio <= 1 / 3 else "misses"
            table.add_row("", f"CT2 greedy p50 / HF greedy p50 = {ratio:.2f} ({verdict} <= 0.33)")
        table.add_section()
    Console(width=110).print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch",
        nargs="+",
        choices=sorted(ARCHS),
        default=["small", "base"],
        help="architectures to measure (tiny: a smoke run in seconds)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per path")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--candidates",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="time the bot's reply path with K candidates (best of K) on CT2 int8, per K",
    )
    args = parser.parse_args(argv)
    if args.candidates and min(args.candidates) < 1:
        parser.error("--candidates: each K must be >= 1")

    load_before = load_average()
    results = [
        bench_arch(ARCHS[a], args.repeats, args.warmup, args.threads, args.candidates)
        for a in args.arch
    ]
    print_table(results)
    # The machine is shared: a load average above the core count means the figures are noisy.
    load_after = load_average()
    load = f"load average (1/5/15 min) {load_before} before, {load_after} after"
    Console().print(f"{load} ({os.cpu_count()} cores)")
    for result in results:
        result["load_average"] = [load_before, load_after]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
