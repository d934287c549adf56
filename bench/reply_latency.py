"""Reply latency: the reply the bot sends (every guard, best of k) vs HF greedy without guards.

For each FLAN-T5 architecture (random weights: the cost of a forward pass does not depend on
the values, and every reply runs to the same length) this builds a model directory like
``friendbot train`` writes, converts it with ``export_ct2``, and times, round-robin so that
noise from other work on the machine lands on every path alike:

- **HF greedy fp32, no guards** (the baseline): ``ReplyEngine.generate`` on the HF backend,
  greedy, loop guards off, exactly 32 new tokens;
- **CT2 int8 greedy, no guards**: the same call on the CTranslate2 backend (with the
  vocabulary map, as every CTranslate2 call of a converted chat model);
- **bot reply, k=K**: what the bot does for a reply, through its own code: a ``FriendBot``
  started on a SQLite database with the model directory as ``MODEL_DIR`` (so the served engine
  is loaded by ``bot.serving.load_models``, CTranslate2 int8), the 10 chat messages stored,
  then ``FriendBot.reply_as`` awaited: the context read back from the database, the prompt
  built, K candidates sampled with both loop guards (``no_repeat_ngram_size=3``,
  ``repetition_penalty=1.2``) and their scores in one call, ranked by ``bot.best_of``, the
  reply picked. ``MAX_NEW_TOKENS=32``: random weights practically never end early, and the
  benchmark checks afterwards that the candidates really had 32 tokens;
- **bot reply, k=REPLY_CANDIDATES, no vocabulary map**: the default k with the engine's map
  switched off for the call: what the bot did before ``export-ct2`` wrote ``ct2/vmap.txt``.

Every engine (the baseline's too) chooses its threads as the bot does, by timing 1, 2 and 4 at
load (bot/threads.py), so HF greedy runs at its own fastest count on this machine; ``--threads
N`` pins every path to N instead.

The model is saved with the ``reply_vocabulary.json`` training would write (CHAT_PIECES ids:
every piece of examples/sample_chat plus rows standing in for a larger real chat;
``--chat-pieces N`` to change, 0 for none), so ``export_ct2`` writes the vocabulary map the
bot decodes with. ``reply_in_character`` runs the same ``_best_of`` call; the benchmark uses
``/as`` (a persona line) because a random-weight model names no friend, which would make
``reply_in_character`` ask a second time. Target: bot reply p50 at most a third of HF greedy p50.

    .venv/bin/python bench/reply_latency.py                      # small + base, 5 rounds
    .venv/bin/python bench/reply_latency.py --arch small base --repeats 8
    .venv/bin/python bench/reply_latency.py --arch tiny          # seconds: a smoke run
    .venv/bin/python bench/reply_latency.py --candidates 1 2 4   # the bot's path per k
    .venv/bin/python bench/reply_latency.py --arch small --breakdown 1 2   # what each part costs
    .venv/bin/python bench/reply_latency.py --chat-pieces 6000   # a smaller chat's vocabulary
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from training.formatting import reply_prefix_ids
from training.model.decoding import (
    NO_REPEAT_NGRAM_SIZE,
    REPETITION_PENALTY,
    TEMPERATURE,
    TOP_K,
    TOP_P,
)

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

NAMES = ["Alice", "Bob", "Carol", "Dave", "Hugo"]
WORD_TEXT = (
    "hey ok lol yes no maybe tonight tomorrow climbing pizza beer movie train late early "
    "coffee work home gym run weekend party music band ticket trip beach rain sun cold hot "
    "call later now soon sure idk haha nice cool great sorry thanks please why what when "
    "where who how really omg wow same mood vibes plan meet park bar cafe station car bus "
    "walk"
)
WORDS = WORD_TEXT.split()


def chat_messages(words_per_message: int) -> list[tuple[str, str]]:
    """A deterministic 10-message chat: (sender, text) pairs, oldest first."""
    messages = []
    for i in range(CONTEXT_MESSAGES):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(words_per_message)]
        messages.append((NAMES[i % len(NAMES)], " ".join(words)))
    return messages


def chat_lines(words_per_message: int) -> list[str]:
    """The chat as ``Sender: text`` lines, as the bot builds its context."""
    return [f"{name}: {text}" for name, text in chat_messages(words_per_message)]


SAMPLE_CHAT = Path(__file__).resolve().parents[1] / "examples" / "sample_chat" / "result.json"
CHAT_PIECES = 18_000
"""Rows the bench model's vocabulary map allows (``--chat-pieces``). Measured, not guessed: a
32,000-piece unigram vocabulary fit to three real chats together gives each chat 13,637
(9,709 messages), 18,311 (25,591) and 19,570 (35,228 messages) distinct pieces. A vocabulary
fit to the chats splits them into more, longer pieces than FLAN-T5's general one would, so
these are on the high side for a FLAN-T5 model; 18,000 stands for a large, varied chat."""


def sample_chat_lines() -> list[str]:
    """``Sender: text`` of every message of examples/sample_chat (what training targets are)."""
    data = json.loads(SAMPLE_CHAT.read_text(encoding="utf-8"))
    lines = []
    for message in data["messages"]:
        text = message.get("text")
        if not isinstance(text, str):
            text = "".join(p if isinstance(p, str) else p.get("text", "") for p in text or [])
        if message.get("type") == "message" and message.get("from") and text.strip():
            lines.append(f"{message['from']}: {text}")
    return lines


def build_tokenizer(vocab_size: int):  # -> T5Tokenizer
    """A SentencePiece tokenizer trained on chat text, padded to ``vocab_size`` pieces.

    The trained pieces (the bench's chat words and examples/sample_chat) tokenize the context
    the way a real vocabulary would (words, not letters); the padding pieces give the
    embedding and output layers FLAN-T5's size (the output projection over 32128 rows is a
    real share of each decoding step).
    """
    from transformers import T5Tokenizer

    from training.model.tiny import train_tokenizer

    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4
    corpus += [f"{name}: {w}" for name in NAMES for w in WORDS]
    corpus += sample_chat_lines()
    pieces = _trained_pieces(train_tokenizer(corpus, vocab_size=4000))
    padding = [(f"▁⟪unused{i}⟫", -1000.0) for i in range(vocab_size - len(pieces))]
    return T5Tokenizer(vocab=pieces + padding, extra_ids=0)


def _trained_pieces(tokenizer) -> list[tuple[str, float]]:
    """(piece, score) of a tokenizer built by training.model.tiny.train_tokenizer, in id order."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    return [(piece, float(score)) for piece, score in state["model"]["vocab"]]


def chat_vocabulary(tokenizer, pieces: int) -> list[int]:
    """The ids a model trained on a chat would save in reply_vocabulary.json, ``pieces`` of them.

    Every piece of examples/sample_chat and of the bench's own chat (about 500: a small,
    made-up chat), then rows spread evenly over the rest of the vocabulary up to ``pieces``,
    standing in for a real chat's larger vocabulary (CHAT_PIECES). Which rows does not change
    the cost; how many does.
    """
    lines = sample_chat_lines() + chat_lines(59) + [f"reply as {PERSONA}:"]
    seen = {i for ids in tokenizer(lines)["input_ids"] for i in ids}
    seen |= {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}
    rest = [i for i in range(len(tokenizer)) if i not in seen]
    extra = max(0, pieces - len(seen))
    step = len(rest) / extra if extra else 0
    return sorted(seen | {rest[int(j * step)] for j in range(min(extra, len(rest)))})


def build_model_dir(arch: Arch, out: Path, chat_pieces: int = CHAT_PIECES) -> Path:
    """Save a random-weight T5 of ``arch`` with its tokenizer, as friendbot train would.

    ``chat_pieces`` > 0: with the reply vocabulary training saves (chat_vocabulary), so
    export_ct2 writes the vocabulary map the bot decodes with; 0: none (every row).
    """
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from training.model import reply_vocabulary
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
    if chat_pieces:
        reply_vocabulary.save(chat_vocabulary(tokenizer, chat_pieces), [], out)
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


PERSONA, ASKER = "Hugo", "Alice"  # the reply the bot is asked for: /as Hugo, sent by Alice
GROUP = -1001
BASELINE = "HF greedy fp32, no guards"
CT2_GREEDY = "CT2 int8 greedy, no guards"
WHOLE = ", no vocabulary map"


def bot_label(k: int) -> str:
    return f"bot reply (CT2 int8, guards, best of k={k})"


class BotUnderTest:
    """A FriendBot serving ``model_dir`` as the bot would (SQLite, MODEL_DIR, its own loader)."""

    def __init__(self, model_dir: Path, workdir: Path, words: int, threads: int | None) -> None:
        import asyncio

        from bot.service import FriendBot
        from bot.settings import Settings

        self.settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite:///{workdir / 'bot.db'}",
            model_dir=model_dir,
            allowed_chat_ids=[GROUP],
            reply_probability=0.0,
            max_new_tokens=NEW_TOKENS,
            inference_threads=threads,
        )
        self.bot = FriendBot(self.settings)
        self.bot.start()
        self.loop = asyncio.new_event_loop()
        self._store(chat_messages(words))

    def _store(self, messages: list[tuple[str, str]]) -> None:
        from datetime import UTC, datetime, timedelta

        from storage.writer import MessageRecord

        start = datetime.now(UTC) - timedelta(minutes=len(messages))
        for i, (name, text) in enumerate(messages):
            self.bot.observe(
                MessageRecord(
                    chat_id=GROUP,
                    message_id=i + 1,
                    sender_id=NAMES.index(name) + 1,
                    sender_name=name,
                    text=text,
                    date=start + timedelta(minutes=i),
                    chat_title="Friends",
                    chat_type="supergroup",
                )
            )

    @property
    def engine(self):  # -> ReplyEngine
        return self.bot.models.current.chat

    def prompt(self) -> str:
        """The prompt the bot builds for /as PERSONA: its context read back, plus the persona."""
        from bot.replies import as_prompt

        context, _ = self.loop.run_until_complete(self.bot.context(GROUP))
        return as_prompt(context, PERSONA, ASKER, "")

    def reply(self, k: int, vocabulary_map: bool = True) -> str:
        """``/as PERSONA`` with REPLY_CANDIDATES=k, through FriendBot: the reply it would send.

        ``vocabulary_map=False``: the same call with the engine's map switched off (what the
        bot did before export-ct2 wrote one), to price the map in the same run.
        """
        self.bot.settings = self.settings.model_copy(update={"reply_candidates": k})
        impl = self.engine._impl
        rows = impl.vmap_rows
        if not vocabulary_map:
            impl.vmap_rows = None
        try:
            reply = self.loop.run_until_complete(self.bot.reply_as(GROUP, [PERSONA], ASKER))
        finally:
            impl.vmap_rows = rows
        return reply.text

    def candidate_lengths(self, k: int) -> list[int]:
        """New tokens (after the forced prefix) of the candidates one bot reply sampled (checked
        outside the timing)."""
        impl = self.engine._impl
        originals = {name: getattr(impl, name) for name in ("generate_ids", "generate_scored")}
        lengths: list[int] = []

        def counting(name: str) -> Callable[..., list]:
            def wrapper(sources, opts, prefix):
                rows = originals[name](sources, opts, prefix)
                lengths.extend(
                    len(row[0] if name == "generate_scored" else row) - len(prefix) for row in rows
                )
                return rows

            return wrapper

        for name in originals:
            setattr(impl, name, counting(name))
        try:
            self.reply(k)
        finally:
            for name in originals:
                delattr(impl, name)
        return lengths

    def close(self) -> None:
        self.bot.stop()
        self.loop.close()


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


def default_candidates() -> int:
    """REPLY_CANDIDATES' default: the k the bot uses unless told otherwise."""
    from bot.settings import Settings

    return int(Settings.model_fields["reply_candidates"].default)


def bench_arch(
    arch: Arch,
    repeats: int,
    warmup: int,
    threads: int | None,
    candidates: list[int],
    chat_pieces: int = CHAT_PIECES,
) -> dict:
    """Time the baseline, CT2 greedy and the bot's reply path on one architecture.

    With a vocabulary map (``chat_pieces`` > 0) the bot's default k is also timed without it
    (the same engine, its map switched off for that call): the map's gain in the same run.
    """
    from bot.engine import DecodeOptions, ReplyEngine
    from training.model.ct2 import export_ct2

    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="reply-latency-") as tmp:
        model_dir = Path(tmp) / "model"
        t0 = time.perf_counter()
        build_model_dir(arch, model_dir, chat_pieces)
        t1 = time.perf_counter()
        export_ct2(model_dir, quantization="int8")
        t2 = time.perf_counter()
        engines, load_s = {}, {}
        for backend in ("hf", "ct2"):
            start = time.perf_counter()
            engines[backend] = ReplyEngine.load(model_dir, backend=backend, threads=threads)
            load_s[backend] = time.perf_counter() - start
        hf_threads = _torch_threads()  # the HF engine's choice (process-wide)
        context, _ = context_prompt(engines["hf"])
        words = len(context.splitlines()[0].split()) - 1
        start = time.perf_counter()
        bot = BotUnderTest(model_dir, Path(tmp), words, threads)
        load_s["bot"] = time.perf_counter() - start
        try:
            assert bot.engine.backend == "ct2", bot.engine.backend
            prompt = bot.prompt()  # the baseline answers the very prompt the bot builds
            source_tokens = len(
                engines["hf"]._tokenizer(prompt, add_special_tokens=True)["input_ids"]
            )
            console.print(
                f"[bold]{arch.name}[/]: built in {t1 - t0:.1f}s, converted in {t2 - t1:.1f}s, "
                f"loaded in {load_s['hf']:.2f}s (hf; torch threads: {hf_threads}) / "
                f"{load_s['ct2']:.2f}s (ct2) / "
                f"{load_s['bot']:.2f}s (bot; CTranslate2 threads: {bot.engine._impl.threads}); "
                f"vocabulary map: {vmap_label(bot.engine._impl.vmap_rows, arch)}; "
                f"{source_tokens} source tokens, "
                f"{NEW_TOKENS} new tokens, {repeats} rounds"
            )
            unguarded = DecodeOptions(
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                sample=False,
                no_repeat_ngram_size=0,
                repetition_penalty=1.0,
            )
            # both really generate 32 tokens after the persona's forced `NAME:` prefix
            forced = len(reply_prefix_ids(engines["hf"]._tokenizer, prompt))
            for backend in ("hf", "ct2"):
                [[ids]] = engines[backend].generate_ids([prompt], unguarded)
                assert len(ids) == forced + NEW_TOKENS, (backend, len(ids), forced)

            def greedy(backend: str) -> Callable[[], object]:
                return lambda: engines[backend].generate_ids([prompt], unguarded)

            paths: list[tuple[str, Callable[[], object]]] = [
                (BASELINE, greedy("hf")),
                (CT2_GREEDY, greedy("ct2")),
            ]
            paths += [(bot_label(k), lambda k=k: bot.reply(k)) for k in candidates]
            if bot.engine._impl.vmap_rows is not None:
                k = default_candidates()
                paths.append((bot_label(k) + WHOLE, lambda: bot.reply(k, vocabulary_map=False)))
            wall, cpu = _time_round_robin(paths, repeats, warmup)
            lengths = {k: bot.candidate_lengths(k) for k in candidates}
            bot_threads = bot.engine._impl.threads
        finally:
            bot.close()
    figures = _figures(arch, source_tokens, repeats, t2 - t1, load_s, wall, cpu)
    figures["candidate_tokens"] = {str(k): v for k, v in lengths.items()}
    figures["bot_ct2_threads"] = bot_threads
    figures["hf_torch_threads"] = hf_threads
    figures["vocabulary_map_rows"] = chat_pieces or None
    return figures


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def vmap_label(rows: int | None, arch: Arch) -> str:
    return f"{rows:,} of {arch.vocab_size:,} rows + the prompt's" if rows else "none (every row)"


# What the second candidate costs: bare CTranslate2 calls on the bot's source, one change each
# from the bot's call (k=2 sampled, both guards, scores), so each row prices one ingredient.
_SAMPLED = {
    "beam_size": 1,
    "sampling_topk": TOP_K,
    "sampling_topp": TOP_P,
    "sampling_temperature": TEMPERATURE,
}
_GUARDS = {"no_repeat_ngram_size": NO_REPEAT_NGRAM_SIZE, "repetition_penalty": REPETITION_PENALTY}
_BOT_K2 = {**_SAMPLED, **_GUARDS, "num_hypotheses": 2, "use_vmap": True, "return_scores": True}
_FIRST_STEP = {"max_decoding_length": 1, "min_decoding_length": 1}
# num_hypotheses > 1 makes CTranslate2 compute the scores whatever return_scores says
BREAKDOWN: dict[str, tuple[int, dict]] = {  # label: (copies of the source, options)
    "greedy k=1, no guards": (1, {"beam_size": 1}),
    "sampled k=1, guards, scores": (1, {**_SAMPLED, **_GUARDS, "return_scores": True}),
    "sampled k=1, no guards, no scores": (1, _SAMPLED),
    "sampled k=2, guards, scores, vocabulary map (the bot)": (1, _BOT_K2),
    "  the same, return_scores=False": (1, {**_BOT_K2, "return_scores": False}),
    "  the same, return_alternatives": (1, {**_BOT_K2, "return_alternatives": True}),
    "  the same, every row (no map)": (1, {**_SAMPLED, **_GUARDS, "num_hypotheses": 2}),
    "  the same, no guards": (1, {**_SAMPLED, "num_hypotheses": 2}),
    "  the same, top-k 10": (1, {**_SAMPLED, **_GUARDS, "num_hypotheses": 2, "sampling_topk": 10}),
    "  the same, 2 sources (encoder twice)": (2, {**_SAMPLED, **_GUARDS, "return_scores": True}),
    "encoder + first step, k=1": (1, {**_SAMPLED, **_GUARDS, **_FIRST_STEP}),
    "encoder + first step, k=2": (1, {**_SAMPLED, **_GUARDS, **_FIRST_STEP, "num_hypotheses": 2}),
}


def ct2_breakdown(
    arch: Arch, repeats: int, warmup: int, threads: list[int], chat_pieces: int = CHAT_PIECES
) -> dict:
    """p50 wall and CPU ms of each BREAKDOWN call, per CTranslate2 thread count, round-robin."""
    import ctranslate2
    from transformers import AutoTokenizer

    from training.model.ct2 import export_ct2
    from training.model.model_dir import CT2_DIRNAME

    with tempfile.TemporaryDirectory(prefix="reply-breakdown-") as tmp:
        model_dir = build_model_dir(arch, Path(tmp) / "model", chat_pieces)
        export_ct2(model_dir, quantization="int8")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        words = max(w for w in range(1, 60) if _source_length(tokenizer, w) <= 225)
        source = tokenizer.convert_ids_to_tokens(_source_ids(tokenizer, words))
        fixed = {"max_decoding_length": NEW_TOKENS, "min_decoding_length": NEW_TOKENS}
        paths: list[tuple[str, Callable[[], object]]] = []
        for n in threads:
            translator = ctranslate2.Translator(
                str(model_dir / CT2_DIRNAME), device="cpu", inter_threads=1, intra_threads=n
            )
            for label, (copies, options) in BREAKDOWN.items():
                kwargs = {"max_input_length": 0, **fixed, **options}
                paths.append(
                    (
                        f"{n} thread(s): {label}",
                        lambda t=translator, c=copies, kw=kwargs: t.translate_batch(
                            [source] * c, **kw
                        ),
                    )
                )
        # the other way to use both cores for k=2: one candidate per core, each encoding the
        # source itself (inter_threads=2, one OpenMP thread each), both calls at once
        per_core = ctranslate2.Translator(
            str(model_dir / CT2_DIRNAME), device="cpu", inter_threads=2, intra_threads=1
        )
        one = {"max_input_length": 0, **fixed, **_SAMPLED, **_GUARDS, "use_vmap": True}

        def one_per_core() -> object:
            calls = [per_core.translate_batch([source], **one, asynchronous=True) for _ in "ab"]
            return [call[0].result() for call in calls]

        paths.append(("2 x 1 thread: k=2 as 2 calls at once, one per core", one_per_core))
        wall, cpu = _time_round_robin(paths, repeats, warmup)
    return {
        "arch": arch.name,
        "source_tokens": len(source),
        "paths": {
            label: {"p50_ms": percentile(ms, 50), "cpu_p50_ms": percentile(cpu[label], 50)}
            for label, ms in wall.items()
        },
    }


def _source_ids(tokenizer, words: int) -> list[int]:
    return tokenizer("\n".join(chat_lines(words)) + f"\nreply as {PERSONA}:")["input_ids"]


def _source_length(tokenizer, words: int) -> int:
    return len(_source_ids(tokenizer, words))


def print_breakdown(results: list[dict]) -> None:
    table = Table(title=f"Bare CTranslate2 int8 calls, {NEW_TOKENS} new tokens (ms)")
    for column in ("architecture", "call", "p50", "CPU p50"):
        table.add_column(column, justify="left" if column in ("architecture", "call") else "right")
    for result in results:
        for i, (label, figures) in enumerate(result["paths"].items()):
            table.add_row(
                f"{result['arch']} ({result['source_tokens']} tokens)" if i == 0 else "",
                label,
                f"{figures['p50_ms']:,.0f}",
                f"{figures['cpu_p50_ms']:,.0f}",
            )
        table.add_section()
    Console(width=120).print(table)


def _time_round_robin(
    paths: list[tuple[str, Callable[[], object]]], repeats: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process CPU milliseconds per path; one call of each path per round."""
    wall: dict[str, list[float]] = {label: [] for label, _ in paths}
    cpu: dict[str, list[float]] = {label: [] for label, _ in paths}
    console = Console(stderr=True)
    for round_ in range(warmup + repeats):
        for label, run in paths:  # interleaved: noise hits every path alike
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            if round_ >= warmup:
                wall[label].append(elapsed * 1000)
                cpu[label].append(elapsed_cpu * 1000)
        console.print(f"  round {round_ + 1}/{warmup + repeats}", end="\r")
    console.print()
    return wall, cpu


def _figures(
    arch: Arch,
    source_tokens: int,
    repeats: int,
    convert_s: float,
    load_s: dict,
    wall: dict[str, list[float]],
    cpu: dict[str, list[float]],
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
                "cpu_p50_ms": percentile(cpu[label], 50),
            }
            for label, ms in wall.items()
        },
    }


def print_table(results: list[dict], k_sent: int) -> None:
    sources = ", ".join(f"{r['arch']} {r['source_tokens']}" for r in results)
    table = Table(
        title=f"Reply latency (ms), batch 1, {NEW_TOKENS} new tokens; source tokens: {sources}"
    )
    table.add_column("architecture")
    table.add_column("reply path")
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    table.add_column("CPU p50", justify="right")
    table.add_column("p50 / HF greedy p50", justify="right")
    for result in results:
        paths = result["paths"]
        baseline = paths[BASELINE]["p50_ms"]
        for i, (label, figures) in enumerate(paths.items()):
            table.add_row(
                result["arch"] if i == 0 else "",
                label,
                f"{figures['p50_ms']:,.0f}",
                f"{figures['p95_ms']:,.0f}",
                f"{figures['cpu_p50_ms']:,.0f}",
                f"{figures['p50_ms'] / baseline:.2f}",
            )
        if bot_label(k_sent) in paths:
            ratio = paths[bot_label(k_sent)]["p50_ms"] / baseline
            verdict = "meets" if ratio <= 1 / 3 else "misses"
            table.add_row("", f"bot reply (k={k_sent}) / HF greedy = {ratio:.2f}: {verdict} 0.33")
        table.add_section()
    Console(width=120).print(table)


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
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for every path (default: as the bot: each engine times 1, 2 and 4 "
        "when it loads and keeps the fastest)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--candidates",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="time the bot's reply with K candidates, per K (default: REPLY_CANDIDATES' default)",
    )
    parser.add_argument(
        "--breakdown",
        type=int,
        nargs="+",
        default=None,
        metavar="THREADS",
        help="instead: bare CTranslate2 calls that price each part of the bot's call "
        "(guards, scores, top-k, the second candidate), per CTranslate2 thread count",
    )
    parser.add_argument(
        "--chat-pieces",
        type=int,
        default=CHAT_PIECES,
        metavar="N",
        help="rows of the reply vocabulary the bench model is saved with, so export_ct2 writes "
        f"the vocabulary map the bot decodes with (default {CHAT_PIECES:,}: a large real chat's "
        "pieces; 0: no map, every row)",
    )
    args = parser.parse_args(argv)
    if args.chat_pieces < 0:
        parser.error("--chat-pieces must be >= 0")
    if args.candidates and min(args.candidates) < 1:
        parser.error("--candidates: each K must be >= 1")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    k_sent = default_candidates()
    candidates = args.candidates or [k_sent]

    load_before = load_average()
    if args.breakdown:
        parts = [
            ct2_breakdown(ARCHS[a], args.repeats, args.warmup, args.breakdown, args.chat_pieces)
            for a in args.arch
        ]
        print_breakdown(parts)
        Console().print(f"load average {load_before} before, {load_average()} after")
        if args.json:
            args.json.write_text(json.dumps(parts, indent=2) + "\n", encoding="utf-8")
        return
    results = [
        bench_arch(ARCHS[a], args.repeats, args.warmup, args.threads, candidates, args.chat_pieces)
        for a in args.arch
    ]
    print_table(results, k_sent)
    # The machine is shared: a load average above the core count means the figures are noisy.
    load_after = load_average()
    load = f"load average (1/5/15 min) {load_before} before, {load_after} after"
    Console().print(f"{load} ({os.cpu_count()} cores)")
    for result in results:
        result["load_average"] = [load_before, load_after]
        tokens = result["candidate_tokens"]
        short = {k: v for k, v in tokens.items() if not v or min(v) < NEW_TOKENS}
        if short:
            Console().print(f"[yellow]{result['arch']}: candidates shorter than 32 tokens: {short}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
