"""The reply engine: one ``generate`` call in front of two inference backends.

The bot, the paraphrase and joke commands, and the latency benchmark all generate through
``ReplyEngine``, so they encode prompts exactly as training did (``encode_source``) and decode
the same way, whichever backend runs the model:

- ``hf``: Hugging Face ``generate`` on the model directory itself. Always available; the
  fallback.
- ``ct2``: CTranslate2 on ``MODEL_DIR/ct2`` (written by ``friendbot export-ct2``,
  training/model/ct2.py), int8 on CPU. About 3x faster per reply on a 2-core CPU, because it
  runs the decoder loop in C++ with int8 matrices instead of Python + fp32 (docs/inference.md).
  When the conversion has a vocabulary map (``ct2/vmap.txt``, training.model.reply_vocabulary)
  replies are decoded over the chat's pieces and the prompt's only: a cheaper output layer.

``backend="auto"`` uses CTranslate2 when a conversion is present, imports, and is newer than the
weights (``training.model.model_dir.ct2_problem``), and Hugging Face otherwise. What a usable
model directory is (tokenizer, friendbot.json, lengths) is decided by
``training.model.model_dir.validate``, never here.

A prompt that asks for a persona (last line ``reply as NAME:``) gets replies that start with
``NAME:``: both backends are given those ids as a decoder prefix
(``training.formatting.reply_prefix_ids``), and the texts and ids they return include it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from bot.threads import fastest, thread_options
from training.errors import InputError, first_line
from training.formatting import encode_source, reply_prefix_ids
from training.model import reply_vocabulary
from training.model.decoding import (
    MAX_NEW_TOKENS,
    NO_REPEAT_NGRAM_SIZE,
    REPETITION_PENALTY,
    REPLY_CANDIDATES,
    TEMPERATURE,
    TOP_K,
    TOP_P,
    DecodeOptions,
    hf_decoder_prefix,
    hf_generate_kwargs,
    mean_reply_logprob,
)
from training.model.model_dir import CT2_DIRNAME, ModelInfo, ct2_problem, read_export_meta, validate
from training.progress import quiet_hf_bars

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKENDS = ("auto", "hf", "ct2")
WARM_UP_SOURCE_TOKENS = 64
WARM_UP_NEW_TOKENS = 4
_TEST_CALL = DecodeOptions(
    max_new_tokens=WARM_UP_NEW_TOKENS,
    min_new_tokens=WARM_UP_NEW_TOKENS,
    top_k=2,
    num_return_sequences=REPLY_CANDIDATES,
)
"""The load-time call that warms a model up and times its thread counts (bot.threads): a
padded source and a few forced steps of a chat reply's batch (the cost per step is what
threads change; a full reply would only make loading slower)."""


class _Backend(Protocol):
    name: str

    def generate_ids(
        self, sources: list[list[int]], opts: DecodeOptions, prefix: list[int]
    ) -> list[list[int]]:
        """Token ids per output, ``num_return_sequences`` consecutive rows per source; every
        row starts with ``prefix`` (forced, not sampled), which counts towards no length."""
        ...

    def generate_scored(
        self, sources: list[list[int]], opts: DecodeOptions, prefix: list[int]
    ) -> list[tuple[list[int], float]]:
        """As ``generate_ids``, each row with a length-normalised log-probability score."""
        ...


class ReplyEngine:
    """A loaded model ready to reply; safe to call from several worker threads."""

    def __init__(self, model: ModelInfo, backend: _Backend) -> None:
        self.model = model
        self.model_dir = model.path
        self.info = model.fields  # friendbot.json ({} for a plain task model directory)
        self.task = model.task
        self.backend = backend.name
        self.max_source_length = model.max_source_length
        self._tokenizer: PreTrainedTokenizerBase = model.tokenizer
        self._impl = backend
        # One generation at a time: the model already uses every core for one batch, torch's
        # global RNG (seeded runs) and the Rust tokenizer are not meant for concurrent use.
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        backend: str = "auto",
        threads: int | None = None,
        chat: bool = True,
    ) -> ReplyEngine:
        """Load ``model_dir`` for replying, with CTranslate2 when it is present and fresh.

        ``chat``: the directory must be a chat model with its friendbot.json; False for task
        models (paraphrase, joke, a plain FLAN-T5). A broken directory is an InputError.
        ``threads`` sets the CPU threads generation uses (torch's setting is process-wide;
        CTranslate2's is per engine); None: the fastest of 1, 2 and 4, timed now (bot.threads).
        """
        if backend not in BACKENDS:
            raise InputError(f"{backend}: unknown backend (choose one of {', '.join(BACKENDS)})")
        model = validate(Path(model_dir), chat=chat)
        model_dir, tokenizer = model.path, model.tokenizer
        chosen = _choose_backend(model_dir, backend)
        impl: _Backend
        if chosen == "ct2":
            try:
                impl = _CT2Backend(model_dir / CT2_DIRNAME, tokenizer, threads)
            except InputError:
                if backend == "ct2":
                    raise
                log.warning("%s/%s failed to load; using HF generate", model_dir, CT2_DIRNAME)
                impl = _HFBackend(model_dir, threads)
        else:
            impl = _HFBackend(model_dir, threads)
        log.info("reply engine: %s backend for %s", impl.name, model_dir)
        return cls(model, impl)

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int = MAX_NEW_TOKENS,
        sample: bool = True,
        temperature: float = TEMPERATURE,
        top_p: float = TOP_P,
        top_k: int = TOP_K,
        num_return_sequences: int = 1,
        seed: int | None = None,
        min_new_tokens: int = 0,
        no_repeat_ngram_size: int = NO_REPEAT_NGRAM_SIZE,
        repetition_penalty: float = REPETITION_PENALTY,
    ) -> list[list[str]]:
        """Replies to each prompt: ``num_return_sequences`` decoded texts per prompt.

        Prompts are encoded as in training (oldest lines dropped first past
        ``max_source_length``) and generated as one padded batch; special tokens are skipped.
        ``seed`` makes sampling repeatable; the loop guards are on by default, as everywhere
        replies are decoded (see training.model.decoding.DecodeOptions for the rest).
        """
        opts = DecodeOptions(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            sample=sample,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            num_return_sequences=num_return_sequences,
            seed=seed,
            no_repeat_ngram_size=no_repeat_ngram_size,
            repetition_penalty=repetition_penalty,
        )
        if not prompts:
            return []
        with self._lock:
            rows = self._generate_rows(prompts, opts)
            texts = [
                t.strip() for t in self._tokenizer.batch_decode(rows, skip_special_tokens=True)
            ]
        return _group(texts, num_return_sequences)

    def generate_scored(
        self, prompts: list[str], options: DecodeOptions | None = None
    ) -> list[list[tuple[str, float]]]:
        """Replies with the model's mean token log-probability of each, grouped per prompt.

        For best-of-k: the ``num_return_sequences`` samples of one prompt come from one batch
        and the score is what the backend computed while decoding (no second pass), averaged
        over tokens so that short replies are not favoured just for being short.
        """
        opts = options or DecodeOptions()
        if not prompts:
            return []
        with self._lock:
            rows = self._by_prefix(prompts, opts, self._impl.generate_scored)
            texts = self._tokenizer.batch_decode([ids for ids, _ in rows], skip_special_tokens=True)
        scored = [(t.strip(), score) for t, (_, score) in zip(texts, rows, strict=True)]
        return _group(scored, opts.num_return_sequences)

    def generate_ids(
        self, prompts: list[str], options: DecodeOptions | None = None
    ) -> list[list[list[int]]]:
        """Generated token ids (no decoder start token), grouped per prompt like ``generate``.

        For callers that need exact tokens rather than text: the backend agreement test, and
        tools that score or inspect replies.
        """
        opts = options or DecodeOptions()
        with self._lock:
            rows = self._generate_rows(prompts, opts)
        return _group(rows, opts.num_return_sequences)

    def _generate_rows(self, prompts: list[str], opts: DecodeOptions) -> list[list[int]]:
        if not prompts:
            return []
        return self._by_prefix(prompts, opts, self._impl.generate_ids)

    def _by_prefix(
        self,
        prompts: list[str],
        opts: DecodeOptions,
        call: Callable[[list[list[int]], DecodeOptions, list[int]], list[T]],
    ) -> list[T]:
        """``call`` once per distinct reply prefix (one batch when all prompts share one, as a
        bot reply's k candidates do), the rows put back in prompt order."""
        tokenizer, limit = self._tokenizer, self.max_source_length
        sources = [encode_source(tokenizer, prompt, limit) for prompt in prompts]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(tuple(reply_prefix_ids(tokenizer, prompt)), []).append(i)
        n = opts.num_return_sequences
        rows: list[list[T]] = [[] for _ in prompts]
        for prefix, idx in groups.items():
            out = call([sources[i] for i in idx], opts, list(prefix))
            for j, i in enumerate(idx):
                rows[i] = out[j * n : (j + 1) * n]
        return [row for group in rows for row in group]

    def __repr__(self) -> str:
        return f"ReplyEngine(model_dir={str(self.model_dir)!r}, backend={self.backend!r})"


# ---------------------------------------------------------------------------------------------
# Hugging Face backend


class _HFBackend:
    """``AutoModelForSeq2SeqLM.generate`` in eval mode, without autograd."""

    name = "hf"

    def __init__(self, model_dir: Path, threads: int | None) -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM

        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model setting
        quiet_hf_bars()
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
        except Exception as exc:  # any unreadable weights/config (safetensors has its own error)
            raise InputError(f"{model_dir}: cannot load the model ({first_line(exc)})") from exc
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        saved = model.generation_config
        eos = saved.eos_token_id
        self.eos_id: int | None = eos[0] if isinstance(eos, list) else eos
        self.pad_id = int(saved.pad_token_id if saved.pad_token_id is not None else 0)
        # Only the special token ids come from the saved generation_config.json: decoding knobs
        # saved there (beams, repetition penalties) would make HF and CTranslate2 disagree, so
        # DecodeOptions alone decides how tokens are picked.
        self.special_ids = {
            "decoder_start_token_id": saved.decoder_start_token_id,
            "eos_token_id": saved.eos_token_id,
            "pad_token_id": self.pad_id,
        }
        options = [] if threads or self.device.type != "cpu" else thread_options()
        if len(options) > 1:
            # process-wide, like INFERENCE_THREADS: the last model loaded sets it
            torch.set_num_threads(fastest({n: partial(self._test_call, n) for n in options}))

    def _test_call(self, threads: int) -> None:
        """A small sampled generation with ``threads`` torch threads: bot.threads times it."""
        import torch

        torch.set_num_threads(threads)
        source = [self.pad_id] * WARM_UP_SOURCE_TOKENS
        self._generate([source], _TEST_CALL, [], scores=True)

    def generate_ids(
        self, sources: list[list[int]], opts: DecodeOptions, prefix: list[int]
    ) -> list[list[int]]:
        out = self._generate(sources, opts, prefix, scores=False)
        # out: (batch * num_return_sequences, 1 + new tokens). Drop the decoder start token, and
        # the eos with the padding after it, as CTranslate2 does: both backends return alike.
        return [_cut_at(row[1:].tolist(), self.eos_id) for row in out.cpu()]

    def generate_scored(
        self, sources: list[list[int]], opts: DecodeOptions, prefix: list[int]
    ) -> list[tuple[list[int], float]]:
        import torch

        out = self._generate(sources, opts, prefix, scores=True)
        with torch.inference_mode():
            # log-probabilities of the chosen tokens under the distribution they were drawn from
            steps = self.model.compute_transition_scores(
                out.sequences, out.scores, normalize_logits=True
            ).cpu()
        result = []
        for row, logps in zip(out.sequences.cpu(), steps, strict=True):
            ids = _cut_at(row[1:].tolist(), self.eos_id)
            result.append((ids, mean_reply_logprob(ids, len(prefix), logps)))
        return result

    def _generate(
        self, sources: list[list[int]], opts: DecodeOptions, prefix: list[int], *, scores: bool
    ) -> Any:
        import torch
        from transformers import GenerationConfig

        # (batch, longest source), right-padded as T5 was trained
        longest = max(len(s) for s in sources)
        input_ids = torch.full((len(sources), longest), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sources), longest), dtype=torch.long)
        for i, ids in enumerate(sources):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[i, : len(ids)] = 1
        # Every decoding knob, the loop guards included, comes from the shared DecodeOptions.
        kwargs: dict[str, Any] = {**self.special_ids, **hf_generate_kwargs(opts)}
        if scores:
            kwargs.update(output_scores=True, return_dict_in_generate=True)
        decoder: dict[str, Any] = {}
        if prefix:
            start = self.special_ids["decoder_start_token_id"]
            rows = hf_decoder_prefix(start, prefix, len(sources))
            decoder["decoder_input_ids"] = rows.to(self.device)
        # A seeded call must not disturb the RNG of whatever else runs in this process.
        rng = torch.random.fork_rng(devices=[]) if opts.seed is not None else nullcontext()
        with torch.inference_mode(), rng:
            if opts.seed is not None:
                torch.manual_seed(opts.seed)
            return self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                generation_config=GenerationConfig(**kwargs),
                **decoder,
            )


# ---------------------------------------------------------------------------------------------
# CTranslate2 backend


class _CT2Backend:
    """``ctranslate2.Translator`` on the converted model; tokens are the HF tokenizer's."""

    name = "ct2"

    def __init__(
        self, ct2_dir: Path, tokenizer: PreTrainedTokenizerBase, threads: int | None
    ) -> None:
        import ctranslate2

        self._ct2 = ctranslate2
        self.ct2_dir = ct2_dir
        self.quantization = read_export_meta(ct2_dir).get("quantization", "int8")
        on_gpu = ctranslate2.get_cuda_device_count() > 0
        self.device = "cuda" if on_gpu else "cpu"
        # CPU: compute in the type chosen at export (int8 by default). CUDA: int8 weights with
        # float16 activations, or plain float16 for an unquantized export.
        if on_gpu:
            int8 = self.quantization.startswith("int8")
            self.compute_type = "int8_float16" if int8 else "float16"
        else:
            self.compute_type = "default"
        self.tokenizer = tokenizer
        self.vocab_size = _ct2_vocab_size(ct2_dir, default=len(tokenizer))
        # export-ct2's vocabulary map: the rows every reply may use (None: no map, all rows)
        self.vmap_rows = reply_vocabulary.always_allowed(ct2_dir)
        # Each thread count needs its own translator (CTranslate2 fixes them at construction):
        # all of them live while they are timed, the fastest is kept.
        # (on a GPU the threads only run CTranslate2's host-side work: one, untimed)
        options = [threads or 1] if threads or on_gpu else thread_options()
        translators = {n: self._new_translator(n) for n in options}
        if len(translators) > 1:
            self.threads = fastest({n: partial(self._test_call, t) for n, t in translators.items()})
        else:
            self.threads = options[0]
            self._test_call(translators[self.threads])
        self.translator = translators[self.threads]

    def _test_call(self, translator: Any) -> None:
        """One small sampled translation: timed to choose the threads (bot.threads), and run
        at load anyway, so the first chat reply is not the slow one.

        CTranslate2's first call grows its memory caches and touches every weight page: about
        10% on top of a flan-t5-small reply, measured on the 2-core machine. Doing it here
        moves that cost to loading (start-up, /reload), where nobody waits for an answer.
        """
        pad_id = self.tokenizer.pad_token_id or 0
        source = [pad_id] * WARM_UP_SOURCE_TOKENS
        self._translate([source], _TEST_CALL, [], scores=True, translator=translator)

    def _new_translator(self, threads: int | None = None) -> Any:
        try:
            return self._ct2.Translator(
                str(self.ct2_dir),
                device=self.device,
                compute_type=self.compute_type,
                inter_threads=1,
                intra_threads=threads or self.threads,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            reason = first_line(exc)
            raise InputError(
                f"{self.ct2_dir}: cannot load the CTranslate2 model ({reason})"
            ) from exc

    def generate_ids(
        self, sources: list[list[int]], opts: DecodeOptions, prefix: list[int]
    ) -> list[list[int]]:
        return [ids for ids, _ in self._translate(sources, opts, prefix, scores=False)]

    def _use_vmap(self, opts: DecodeOptions) -> bool:
        """Decode over the chat's pieces (and the prompt's) when the conversion has a map.

        CTranslate2 picks its top-k (or its beams) among the rows it decodes over and refuses
        more than there are; a call asking for more than the map always allows uses them all.
        """
        if self.vmap_rows is None:
            return False
        wanted = min(opts.top_k, self.vocab_size) if opts.sample else opts.num_return_sequences
        return wanted <= self.vmap_rows

    def generate_scored(
        self, sources: list[list[int]], opts: DecodeOptions, prefix: list[int]
    ) -> list[tuple[list[int], float]]:
        return self._translate(sources, opts, prefix, scores=True)

    def _translate(
        self,
        sources: list[list[int]],
        opts: DecodeOptions,
        prefix: list[int],
        *,
        scores: bool,
        translator: Any = None,
    ) -> list[tuple[list[int], float]]:
        """One ``translate_batch`` for ``opts``, on ``translator`` (default: the engine's own;
        the load-time test calls pass each thread count's)."""
        tokens = [self.tokenizer.convert_ids_to_tokens(ids) for ids in sources]
        common: dict[str, Any] = {
            # CTranslate2 counts a target prefix in its decoding lengths (and returns it in
            # each hypothesis); HF counts only the new tokens: add it, so both decode alike.
            "max_decoding_length": opts.max_new_tokens + len(prefix),
            "min_decoding_length": opts.min_new_tokens + len(prefix),
            "max_input_length": 0,  # sources are already cut by encode_source
            "return_scores": scores,
            # the loop guards, under the same names and meaning as in HF generate
            "no_repeat_ngram_size": opts.no_repeat_ngram_size,
            "repetition_penalty": opts.repetition_penalty,
            "use_vmap": self._use_vmap(opts),
        }
        n = opts.num_return_sequences
        translator = self.translator if translator is None else translator
        if opts.sample and min(opts.top_k, self.vocab_size) == 1 and n > 1:
            # top-k 1 is greedy: CTranslate2 refuses several hypotheses from one greedy search,
            # so the n (identical) replies come from n copies of the source.
            tokens = [t for t in tokens for _ in range(n)]
            common.update(beam_size=1, num_hypotheses=1, sampling_topk=1)
        elif opts.sample:
            # Sampling draws n independent replies. num_hypotheses with beam_size=1 encodes each
            # source once and decodes its n copies as one batch (the encoder's state is repeated
            # after encoding), where repeating the source would run the encoder n times.
            # CTranslate2 returns them best score first; they are independent draws all the same.
            common.update(
                beam_size=1,
                num_hypotheses=n,
                sampling_topk=min(opts.top_k, self.vocab_size),  # 0: whole vocabulary
                sampling_topp=opts.top_p,
                sampling_temperature=opts.temperature,
            )
            if opts.seed is not None:
                # CTranslate2 seeds a worker thread's generator once, when that thread first
                # samples; later set_random_seed calls do not reach it. Only a translator with
                # fresh threads replays a seed (a reload: seeded calls are for tests, not chat).
                self._ct2.set_random_seed(opts.seed)
                translator = self._new_translator()
        else:
            common.update(beam_size=n, num_hypotheses=n)
        if prefix:
            target = self.tokenizer.convert_ids_to_tokens(prefix)
            common["target_prefix"] = [target] * len(tokens)
        results = translator.translate_batch(tokens, **common)
        rows = []
        for r in results:
            for i, hyp in enumerate(r.hypotheses):
                ids = self.tokenizer.convert_tokens_to_ids(hyp)
                # CTranslate2's own score (length-normalised with the default
                # length_penalty=1); not on HF's scale, and whether a forced prefix counts in it
                # is CTranslate2's choice, but best-of-k only compares the candidates of one
                # batch, from one backend, and they all share the prefix.
                rows.append((ids, float(r.scores[i]) if scores else 0.0))
        return rows


# ---------------------------------------------------------------------------------------------
# Helpers


def _choose_backend(model_dir: Path, requested: str) -> str:
    """Resolve ``auto``; an explicit ``ct2`` that cannot work is an InputError."""
    if requested == "hf":
        return "hf"
    ct2_dir = model_dir / CT2_DIRNAME
    problem = ct2_problem(model_dir)
    if problem is None:
        return "ct2"
    if requested == "ct2":
        raise InputError(f"{ct2_dir}: {problem}")
    if ct2_dir.exists():  # a conversion exists but cannot be used: say why
        log.warning("%s: %s; using HF generate", ct2_dir, problem)
    return "hf"


def _ct2_vocab_size(ct2_dir: Path, default: int) -> int:
    """Target vocabulary size (CTranslate2 refuses a top-k larger than it)."""
    for name in ("shared_vocabulary.json", "target_vocabulary.json"):
        try:
            return len(json.loads((ct2_dir / name).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return default


def _cut_at(ids: list[int], eos_id: int | None) -> list[int]:
    """``ids`` up to (not including) the first ``eos_id``."""
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def _group(rows: list[T], n: int) -> list[list[T]]:
    """Consecutive runs of ``n`` rows: the outputs of one prompt."""
    return [rows[i : i + n] for i in range(0, len(rows), n)]
