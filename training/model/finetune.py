"""``friendbot train``: fine-tune a seq2seq model (FLAN-T5 or the offline tiny T5) on pairs.

One training loop you can read top to bottom (``train``, in numbered sections), in the spirit
of nanoGPT rather than a Trainer subclass. What makes it fast is what the perf notes measured:
token-budget batches of similar lengths padded to a few bucket sizes, bf16 autocast, TF32 and
fused AdamW on GPU, and no host-device synchronisation inside a step (the loss is read back
only every ``log_every`` steps).

Multi-process training goes through Hugging Face Accelerate: the same command runs as one
process, under ``torchrun`` or under ``accelerate launch`` (DDP on GPUs, gloo on CPUs). Every
process derives the whole data order from the seed, takes its share of each step's batches,
and can therefore resume at any step with the same result as an uninterrupted run.

Layout while training: ``OUT.partial/`` holds checkpoints, the tokenizer, the best weights and
``metrics.jsonl``. The finished model is written to a temporary sibling directory and renamed
to ``OUT`` only when complete, so a directory named ``OUT`` is always a whole model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import InputError
from training.model.batching import (
    Encoded,
    collate,
    epoch_sources,
    plan_batches,
    preprocess,
    real_tokens,
)
from training.model.model_dir import INFO_FILE
from training.model.tasks import TASKS, TaskData, load_task
from training.output_dirs import (
    MODEL_KIND,
    PARTIAL_KIND,
    check_location,
    check_replaceable,
    make_work_dir,
    new_work_dir,
    publish,
    remove_owned,
    stamp,
)

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

TINY = "tiny"
METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"
BEST_WEIGHTS = "best.pt"
STATE_FILE = "trainer_state.json"
KEEP_CHECKPOINTS = 2
# (max source tokens, max target tokens) per task when not given
TASK_LENGTHS = {"chat": (512, 64), "paraphrase": (128, 128), "joke": (32, 128)}
TINY_CHAT_SOURCE_LENGTH = 32
RESUME_KEYS = (
    "base_model", "task", "epochs", "max_steps", "learning_rate", "schedule", "warmup",
    "weight_decay", "max_grad_norm", "token_budget", "grad_accum", "seed", "dropout",
    "persona_prob", "max_source_length", "max_target_length", "lora", "lora_r", "lora_alpha",
    "lora_targets", "tiny_vocab",
)  # fmt: skip


@dataclass
class TrainConfig:
    """Everything ``friendbot train`` can be told; stored in friendbot.json for reproduction."""

    data: Path = field(metadata={"help": "prepared dataset dir (chat), PAWS TSV, or jokes CSV"})
    out: Path = field(metadata={"help": "model directory to write"})
    base_model: str = field(
        default=TINY, metadata={"help": "hub id or local dir, or `tiny` (offline)"}
    )
    task: str = field(default="chat", metadata={"help": "chat | paraphrase | joke"})
    epochs: int | None = field(
        default=None, metadata={"help": "passes over the data (unless max_steps); 8 tiny, 3"}
    )
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps; wins"})
    learning_rate: float | None = field(
        default=None, metadata={"help": "peak LR; default 1e-3 tiny, 1e-3 LoRA, 3e-4 full"}
    )
    schedule: str = field(default="cosine", metadata={"help": "cosine | linear | constant"})
    warmup: float = field(default=0.05, metadata={"help": "warmup: fraction if < 1, else steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decoupled decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping (0: off)"})
    token_budget: int | None = field(
        default=None, metadata={"help": "padded tokens per batch; default 16384 GPU, 2048 CPU"}
    )
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    seed: int = field(default=0, metadata={"help": "seeds data order, init and dropout"})
    dropout: float | None = field(
        default=None, metadata={"help": "override the model's dropout; tiny: 0"}
    )
    persona_prob: float = field(
        default=0.5, metadata={"help": "share of examples given the `reply as NAME:` hint"}
    )
    max_source_length: int | None = field(
        default=None,
        metadata={"help": "source tokens; chat 512 (tiny 32), paraphrase 128, joke 32"},
    )
    max_target_length: int | None = field(default=None, metadata={"help": "target tokens"})
    eval_every: int = field(default=200, metadata={"help": "steps between validation runs"})
    patience: int = field(
        default=3, metadata={"help": "stop after this many evals without improvement (0: off)"}
    )
    min_delta: float = field(default=0.0, metadata={"help": "smallest loss drop that counts"})
    checkpoint_every: int = field(default=500, metadata={"help": "steps between checkpoints"})
    resume: bool = field(default=False, metadata={"help": "continue from OUT.partial/"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep OUT.partial/ at end"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing OUT"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters (peft)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_targets: str = field(default="q,k,v,o", metadata={"help": "comma-separated modules"})
    merge_lora: bool = field(default=True, metadata={"help": "save merged weights"})
    tiny_vocab: int = field(default=2000, metadata={"help": "tiny: SentencePiece vocab size"})
    precision: str = field(default="auto", metadata={"help": "auto | bf16 | fp16 | fp32"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    cpu: bool = field(default=False, metadata={"help": "train on CPU even with a GPU"})
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for torch (default: 1 for tiny, else torch's)"}
    )
    log_every: int = field(default=10, metadata={"help": "steps between metric records"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        if self.task not in TASKS:
            raise InputError(f"--task {self.task}: unknown task (choose from {', '.join(TASKS)})")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise InputError(f"--schedule {self.schedule}: choose cosine, linear or constant")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise InputError(f"--precision {self.precision}: choose auto, bf16, fp16 or fp32")
        positive = {
            "--epochs": self.epochs if self.epochs is not None else 1,
            "--grad-accum": self.grad_accum,
            "--eval-every": self.eval_every,
            "--checkpoint-every": self.checkpoint_every,
            "--log-every": self.log_every,
            "--threads": self.threads if self.threads is not None else 1,
            "--max-steps": self.max_steps if self.max_steps is not None else 1,
            "--token-budget": self.token_budget if self.token_budget is not None else 1,
            "--learning-rate": self.learning_rate if self.learning_rate is not None else 1,
        }
        for name, value in positive.items():
            if value <= 0:
                raise InputError(f"{name} {value}: must be positive")
        if not 0.0 <= self.persona_prob <= 1.0:
            raise InputError(f"--persona-prob {self.persona_prob}: must be within [0, 1]")
        if self.lora and not self.merge_lora and self.base_model == TINY:
            raise InputError(
                "--no-merge: an unmerged adapter needs a base model that can be loaded again "
                "(a hub id or a directory); `tiny` is built in memory"
            )
        # Defaults: FLAN-T5 fine-tuning as usual; the tiny model learns from scratch in a few
        # CPU minutes, which (measured on the sample chat, docs/training.md) wants more epochs,
        # no dropout and a short context window (the last message or two).
        tiny = self.base_model == TINY
        default_src, default_tgt = TASK_LENGTHS[self.task]
        if tiny and self.task == "chat":
            default_src = TINY_CHAT_SOURCE_LENGTH
        self.max_source_length = self.max_source_length or default_src
        self.max_target_length = self.max_target_length or default_tgt
        if self.epochs is None:
            self.epochs = 8 if tiny else 3
        if self.dropout is None and tiny:
            self.dropout = 0.0
        if self.learning_rate is None:
            self.learning_rate = 1e-3 if tiny or self.lora else 3e-4


@dataclass
class TrainState:
    """The loop's counters: saved with every checkpoint so a resumed run continues exactly."""

    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    best_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    last_train_loss: float | None = None
    # the unfinished logging window, so a resumed run logs the very same averages
    window_loss: float = 0.0
    window_steps: int = 0
    window_tokens: int = 0


class EarlyStopping:
    """Counts validation runs without improvement; ``update`` says whether to stop."""

    def __init__(self, state: TrainState, patience: int, min_delta: float) -> None:
        self.state, self.patience, self.min_delta = state, patience, min_delta

    def update(self, loss: float, step: int) -> tuple[bool, bool]:
        """Record one validation loss; return (improved, should_stop)."""
        s = self.state
        improved = s.best_loss is None or loss < s.best_loss - self.min_delta
        if improved:
            s.best_loss, s.best_step, s.bad_evals = loss, step, 0
        else:
            s.bad_evals += 1
        return improved, self.patience > 0 and s.bad_evals >= self.patience


class DataOrder:
    """Which micro-batches every process uses at every step: a pure function of the seed.

    Each epoch draws each example's source form (free or hinted), plans token-budget batches
    over all examples, then deals them round-robin to processes and groups each process's share
    into optimizer steps of ``grad_accum`` micro-batches. A global step therefore maps to the
    same batches in a fresh run, a resumed run, and (for step i of N processes with
    accumulation 1) the same batches as one process accumulating N micro-batches.
    """

    def __init__(
        self,
        data: Sequence[Encoded],
        config: TrainConfig,
        token_budget: int,
        world_size: int,
        rank: int,
    ) -> None:
        self.data, self.config, self.budget = data, config, token_budget
        self.world_size, self.rank = world_size, rank
        self._cache: tuple[int, list[list[int]], list[list[list[int]]], list[int]] | None = None

    def epoch(self, epoch: int) -> tuple[list[list[int]], list[list[list[int]]], list[int]]:
        """(sources, this process's steps as lists of micro-batch indices, global tokens/step)."""
        if self._cache and self._cache[0] == epoch:
            return self._cache[1:]
        cfg = self.config
        sources = epoch_sources(self.data, cfg.persona_prob, cfg.seed, epoch)
        batches = plan_batches(
            [len(s) for s in sources],
            [len(e.labels) for e in self.data],
            self.budget,
            seed=cfg.seed,
            epoch=epoch,
            max_source_length=cfg.max_source_length,
            max_target_length=cfg.max_target_length,
        )
        per_step = self.world_size * cfg.grad_accum
        n_steps = len(batches) // per_step
        # Step i uses batches [i*per_step, (i+1)*per_step); process r takes every world_size-th.
        steps = [
            batches[i * per_step + self.rank : (i + 1) * per_step : self.world_size]
            for i in range(n_steps)
        ]
        tokens = [
            sum(
                real_tokens([sources[j] for j in b], [self.data[j].labels for j in b])
                for b in batches[i * per_step : (i + 1) * per_step]
            )
            for i in range(n_steps)
        ]
        self._cache = (epoch, sources, steps, tokens)
        return sources, steps, tokens

    def steps_in_epoch(self, epoch: int) -> int:
        """Optimizer steps in one epoch (the last incomplete step's batches are dropped)."""
        return len(self.epoch(epoch)[1])

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, step within that epoch) of a global step."""
        epoch = 0
        while step >= (n := self.steps_in_epoch(epoch)):
            if n == 0:
                raise InputError(f"{self.config.data}: too little data for one training step")
            step -= n
            epoch += 1
        return epoch, step


def train(config: TrainConfig, on_step: Callable[[int, int], None] | None = None) -> Path:
    """Fine-tune ``config.base_model`` on ``config.data``; return the finished model directory.

    ``on_step(step, total_steps)`` is called on the main process after every optimizer step
    (the retraining pipeline heartbeats its lock from it; an exception there interrupts
    training and leaves the last checkpoint to ``--resume`` from).
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from training.progress import progress

    # 1. Processes, device and precision. ----------------------------------------------------
    # Accelerate reads torchrun's / accelerate launch's environment: one process or many.
    use_cuda = torch.cuda.is_available() and not config.cpu
    precision = _resolve_precision(config.precision, use_cuda)
    accelerator = Accelerator(
        cpu=not use_cuda, mixed_precision={"fp32": "no"}.get(precision, precision)
    )
    if config.threads:  # on a shared CPU, fewer threads than cores avoids spin-waiting
        torch.set_num_threads(config.threads)
    if use_cuda:  # TF32 matmuls: fp32 range at near-bf16 speed for whatever is not autocast
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif config.base_model == TINY and not config.threads and "OMP_NUM_THREADS" not in os.environ:
        # The tiny model's matrices are too small to share between cores, and on a busy
        # machine two spinning OpenMP threads ran 38x slower than one (254 vs 9,656 tok/s).
        torch.set_num_threads(1)
    device, main = accelerator.device, accelerator.is_main_process
    work = partial_dir(config.out)
    _check_out(config, accelerator)
    if not config.resume and main:
        _reset_work_dir(work)  # a fresh run never mixes with an older run's leftovers
    accelerator.wait_for_everyone()
    set_seed(config.seed)
    budget = config.token_budget or (16384 if use_cuda else 2048)

    # 2. Data: examples -> tokenizer -> token ids (once, before the loop). ------------------
    data = load_task(config.task, config.data, config.seed)
    tokenizer = _load_tokenizer(config, data, work, accelerator)
    train_set = preprocess(
        data.train, tokenizer, config.max_source_length, config.max_target_length
    )
    val_set = preprocess(
        data.validation, tokenizer, config.max_source_length, config.max_target_length
    )
    if not val_set:
        log.warning("%s: no validation examples; no early stopping, last weights kept", config.data)
    order = DataOrder(
        train_set, config, budget, accelerator.num_processes, accelerator.process_index
    )
    if config.max_steps:
        total_steps = config.max_steps
        order.locate(0)  # fails clearly when there is not even one step of data
    else:
        total_steps = sum(order.steps_in_epoch(e) for e in range(config.epochs))
    if total_steps == 0:
        raise InputError(f"{config.data}: too little data for one training step")

    # 3. Model (fp32 master weights; autocast does the bf16 compute). ------------------------
    model = _load_model(config, tokenizer).to(device)
    if config.lora:
        model = _add_lora(model, config)
    if config.compile:
        model = torch.compile(model)

    # 4. Optimizer and learning-rate schedule. ----------------------------------------------
    optimizer = _make_optimizer(model, config, fused=use_cuda)
    scheduler = _make_scheduler(optimizer, config, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler is stepped by hand once per optimizer step (not prepared: Accelerate
    # would step it once per process), but saved and restored with the checkpoints.
    accelerator.register_for_checkpointing(scheduler)

    # 5. Resume: model, optimizer, scheduler, RNG and counters from the last checkpoint. ----
    state = _restore(accelerator, work, config) if config.resume else TrainState()
    stopper = EarlyStopping(state, config.patience, config.min_delta)

    # 6. The loop. ----------------------------------------------------------------------------
    pad_id = tokenizer.pad_token_id
    epoch, offset = order.locate(state.step)
    bar = progress(
        total_steps, "training", initial=state.step, unit="step", enabled=main and config.progress
    )
    loss_sum = torch.full((), state.window_loss, device=device)  # on device: no sync per step
    window_steps, window_tokens = state.window_steps, state.window_tokens
    window_start = time.perf_counter()
    step_start = time.perf_counter()
    model.train()
    while state.step < total_steps and not state.stopped_early:
        sources, steps, step_tokens = order.epoch(epoch)
        for micro_batches, tokens in zip(steps[offset:], step_tokens[offset:], strict=True):
            # 6a. one optimizer step: forward/backward per micro-batch, clip, step, schedule
            micro = [
                collate(
                    [sources[j] for j in idx],
                    [train_set[j].labels for j in idx],
                    pad_id,
                    config.max_source_length,
                    config.max_target_length,
                )
                for idx in micro_batches
            ]
            loss_sum += train_step(
                accelerator, model, optimizer, scheduler, micro, config.max_grad_norm
            )
            state.step += 1
            state.tokens += tokens
            window_steps += 1
            window_tokens += tokens
            bar.update(1)

            # 6b. log: the only host-device sync in the loop, every log_every steps
            if state.step % config.log_every == 0 or state.step == total_steps:
                now = time.perf_counter()
                mean = accelerator.reduce(loss_sum, reduction="mean").item() / window_steps
                speed = window_tokens / max(now - window_start, 1e-9)
                state.last_train_loss = mean
                bar.set_postfix(loss=f"{mean:.3f}", tok_s=f"{speed:,.0f}")
                _record(
                    accelerator,
                    work,
                    step=state.step,
                    epoch=round(epoch + (offset + 1) / max(len(steps), 1), 3),
                    train_loss=round(mean, 5),
                    lr=scheduler.get_last_lr()[0],
                    tokens_per_s=round(speed, 1),
                )
                loss_sum.zero_()
                window_steps, window_tokens, window_start = 0, 0, now

            # 6c. validate; remember the best weights; stop when it stops improving
            pause_start = time.perf_counter()
            if val_set and (state.step % config.eval_every == 0 or state.step == total_steps):
                val_loss = validation_loss(accelerator, model, val_set, budget, pad_id, config)
                improved, stop = stopper.update(val_loss, state.step)
                _record(accelerator, work, step=state.step, val_loss=round(val_loss, 5))
                if improved and main:
                    _save_best(accelerator.unwrap_model(model, keep_torch_compile=False), work)
                if stop:
                    state.stopped_early = True
                    log.info("early stop at step %d: best %.4f", state.step, state.best_loss)
                model.train()

            # 6d. checkpoint (all processes: each saves its own RNG state)
            if state.step % config.checkpoint_every == 0 and state.step < total_steps:
                state.window_loss = accelerator.reduce(loss_sum, reduction="mean").item()
                state.window_steps, state.window_tokens = window_steps, window_tokens
                _checkpoint(accelerator, work, state, config)
            now = time.perf_counter()
            window_start += now - pause_start  # tokens/s counts training time only
            state.seconds += now - step_start
            step_start = now
            if on_step and main:
                on_step(state.step, total_steps)
            offset += 1
            if state.step >= total_steps or state.stopped_early:
                break
        epoch, offset = epoch + 1, 0
    bar.close()

    # 7. Save: best weights, merged adapters, tokenizer, friendbot.json; rename into place. --
    accelerator.wait_for_everyone()
    if main:
        model = accelerator.unwrap_model(model, keep_fp32_wrapper=False, keep_torch_compile=False)
        _save_model(model, tokenizer, config, data, state, work, accelerator, precision)
        if not config.keep_checkpoints:
            remove_owned(work, PARTIAL_KIND)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return config.out


def train_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    micro_batches: Sequence[dict[str, torch.Tensor]],
    max_grad_norm: float,
) -> torch.Tensor:
    """One optimizer step over padded micro-batches; the mean loss stays on the device.

    Gradients are averaged across processes only on the last micro-batch (``no_sync`` before
    it), which is what makes N processes equal one process accumulating N micro-batches.
    Nothing here waits for the device: no ``.item()``, no clipping-norm readback.
    """
    import torch

    device = accelerator.device
    total = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        last = i == len(micro_batches) - 1
        with nullcontext() if last else accelerator.no_sync(model):
            loss = model(**batch).loss / len(micro_batches)  # (autocast from Accelerate)
            accelerator.backward(loss)
        total += loss.detach()
    if max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total


# --- helpers of the loop, in the order the loop uses them ----------------------------------


def partial_dir(out: Path) -> Path:
    """Where a run in progress keeps its checkpoints: ``OUT.partial`` next to ``OUT``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def _resolve_precision(precision: str, use_cuda: bool) -> str:
    """``auto``: bf16 autocast on GPUs that support it, fp32 otherwise (CPU bf16 is slow)."""
    import torch

    if precision != "auto":
        return precision
    return "bf16" if use_cuda and torch.cuda.is_bf16_supported() else "fp32"


def _check_out(config: TrainConfig, accelerator: Accelerator) -> None:
    """Refuse early (before minutes of training) to clobber a model or resume nothing."""
    check_location(config.out, [config.data])
    check_location(partial_dir(config.out), [config.data])
    if config.out.exists() and not config.overwrite:
        raise InputError(f"{config.out}: already exists (pass --overwrite to replace it)")
    check_replaceable(config.out, MODEL_KIND, "a `friendbot train` model directory")
    if config.resume and _latest_checkpoint(partial_dir(config.out)) is None:
        raise InputError(f"{partial_dir(config.out)}: no checkpoint to --resume from")


def _load_tokenizer(
    config: TrainConfig, data: TaskData, work: Path, accelerator: Accelerator
) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, or for ``tiny`` one trained on the training text.

    The tiny tokenizer is trained once by the main process and saved in the work directory,
    so every process (and a resumed run) uses the very same vocabulary.
    """
    from transformers import AutoTokenizer

    if config.base_model != TINY:
        local = Path(config.base_model)
        if local.is_dir() and not (local / "config.json").is_file():
            raise InputError(f"--base-model {local}: no config.json (not a model directory)")
        try:
            return AutoTokenizer.from_pretrained(config.base_model)
        except (OSError, ValueError) as exc:
            raise InputError(_load_error(config.base_model, exc)) from exc
    saved = work / "tokenizer"
    if not (config.resume and saved.is_dir()):
        if accelerator.is_main_process:
            from training.model.tiny import train_tokenizer

            texts = [t for e in data.train for t in (e.source, e.target)]
            tokenizer = train_tokenizer(texts, vocab_size=config.tiny_vocab)
            tmp = work / "tokenizer.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tokenizer.save_pretrained(tmp)
            shutil.rmtree(saved, ignore_errors=True)
            os.replace(tmp, saved)
        accelerator.wait_for_everyone()
    return AutoTokenizer.from_pretrained(saved)


def _load_error(base_model: str, exc: Exception) -> str:
    """One line saying why a base model did not load (offline hub, wrong directory)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = "directory" if Path(base_model).exists() else "hub id (no network or no such model?)"
    return f"--base-model {base_model}: cannot load this {where}: {first}"


def _load_model(config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The tiny T5 built from its shape, or any seq2seq checkpoint; dropout overridden if asked."""
    from transformers import AutoModelForSeq2SeqLM

    if config.base_model == TINY:
        from training.model.tiny import build_model

        model = build_model(tokenizer, seed=config.seed)
        # transformers 5 always ties T5's lm_head to the input embeddings (std 1 at init);
        # unscaled, the first logits are ~sqrt(d_model) too large (initial loss ~40). Scale
        # the decoder output by 1/sqrt(d_model) as the original tied T5 did: the config keeps
        # it, and CTranslate2's converter applies the same scale to tied models.
        model.config.scale_decoder_outputs = True
    else:
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(config.base_model)
        except (OSError, ValueError) as exc:
            raise InputError(_load_error(config.base_model, exc)) from exc
    if config.dropout is not None:
        import torch

        model.config.dropout_rate = config.dropout
        for module in model.modules():  # Dropout layers, and attention's functional dropout
            if isinstance(module, torch.nn.Dropout):
                module.p = config.dropout
            elif isinstance(getattr(module, "dropout", None), float):
                module.dropout = config.dropout
    if model.config.vocab_size < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return model


def _add_lora(model: PreTrainedModel, config: TrainConfig) -> PreTrainedModel:
    """Wrap the model with LoRA adapters: only they train, the base stays frozen."""
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=[m.strip() for m in config.lora_targets.split(",") if m.strip()],
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise InputError(f"--lora-targets {config.lora_targets}: {exc}") from exc


def _make_optimizer(
    model: torch.nn.Module, config: TrainConfig, fused: bool
) -> torch.optim.Optimizer:
    """AdamW (fused kernel on GPU) with no weight decay on norms and biases."""
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "layer_norm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=fused or None)


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup, then cosine or linear decay to zero (or constant)."""
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup = int(config.warmup * total_steps) if config.warmup < 1 else int(config.warmup)
    if config.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    make = (
        get_cosine_schedule_with_warmup
        if config.schedule == "cosine"
        else get_linear_schedule_with_warmup
    )
    return make(optimizer, warmup, total_steps)


def validation_loss(
    accelerator: Accelerator,
    model: torch.nn.Module,
    data: Sequence[Encoded],
    token_budget: int,
    pad_id: int,
    config: TrainConfig,
) -> float:
    """Mean per-token loss on the validation set (free prompts), shared out across processes."""
    from training.model.evaluate import loss_sums

    batches = plan_batches(
        [len(e.source) for e in data],
        [len(e.labels) for e in data],
        token_budget,
        seed=0,
        epoch=0,
        shuffle=False,
    )[accelerator.process_index :: accelerator.num_processes]
    inner = accelerator.unwrap_model(model)
    total, count = loss_sums(
        inner,
        [([data[j].source for j in b], [data[j].labels for j in b]) for b in batches],
        pad_id,
        accelerator.device,
        config.max_source_length,
        config.max_target_length,
    )
    sums = accelerator.reduce(total.reshape(1).double(), reduction="sum")
    counts = accelerator.reduce(count.reshape(1).double(), reduction="sum")
    return float(sums.item() / max(counts.item(), 1.0))


def _record(accelerator: Accelerator, work: Path, **fields: Any) -> None:
    """Append one line to metrics.jsonl (main process only)."""
    if not accelerator.is_main_process:
        return
    with (work / METRICS_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(fields) + "\n")


def _save_best(model: torch.nn.Module, work: Path) -> None:
    """Keep the best-so-far weights on disk (they survive an interruption and a resume)."""
    import torch

    # Only what training changes: with LoRA that is the adapters, not the frozen base.
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items() if k in trainable}
    tmp = work / (BEST_WEIGHTS + ".tmp")
    torch.save(weights, tmp)
    os.replace(tmp, work / BEST_WEIGHTS)


def _checkpoint(
    accelerator: Accelerator, work: Path, state: TrainState, config: TrainConfig
) -> None:
    """Save everything a resume needs into ``checkpoints/step-N``, atomically, keep the last 2."""
    root = work / "checkpoints"
    final = root / f"step-{state.step:08d}"
    tmp = root / f".step-{state.step:08d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=False)
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(
            json.dumps({"state": asdict(state), "config": _config_key(config)}, indent=2)
        )
        os.replace(tmp, final)
        for old in sorted(root.glob("step-*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _config_key(config: TrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the interrupted one (data order, shapes)."""
    return {k: getattr(config, k) for k in RESUME_KEYS}


def _latest_checkpoint(work: Path) -> Path | None:
    """The newest complete checkpoint (half-written ones are hidden ``.tmp`` directories)."""
    found = sorted((work / "checkpoints").glob("step-*")) if work.is_dir() else []
    return found[-1] if found else None


def _restore(accelerator: Accelerator, work: Path, config: TrainConfig) -> TrainState:
    """Load the newest checkpoint and drop metric lines written after it."""
    ckpt = _latest_checkpoint(work)
    assert ckpt is not None  # _check_out refused a resume without one
    saved = json.loads((ckpt / STATE_FILE).read_text())
    changed = {
        k: (v, saved["config"].get(k))
        for k, v in _config_key(config).items()
        if saved["config"].get(k) != v
    }
    if changed:
        what = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (new, old) in changed.items())
        raise InputError(f"{ckpt}: --resume with different settings ({what})")
    accelerator.load_state(str(ckpt))
    state = TrainState(**saved["state"])
    if accelerator.is_main_process:
        metrics = work / METRICS_FILE
        if metrics.exists():
            lines = metrics.read_text(encoding="utf-8").splitlines()
            kept = [ln for ln in lines if json.loads(ln)["step"] <= state.step]
            metrics.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
        best = work / BEST_WEIGHTS
        if state.best_step is None and best.exists():
            best.unlink()
    log.info("resumed from %s at step %d", ckpt, state.step)
    return state


def _reset_work_dir(work: Path) -> None:
    """Start a fresh run in an empty work directory (an old one only if friendbot made it)."""
    make_work_dir(work, PARTIAL_KIND)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("friendbot")
    except PackageNotFoundError:
        return "0+unknown"


def _save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: TrainConfig,
    data: TaskData,
    state: TrainState,
    work: Path,
    accelerator: Accelerator,
    precision: str,
) -> Path:
    """Write the model directory to a temporary sibling, then rename it to ``config.out``."""
    import torch

    best = work / BEST_WEIGHTS
    if state.best_step is not None and best.exists():
        weights = torch.load(best, map_location="cpu", weights_only=True)
        unexpected = model.load_state_dict(weights, strict=False).unexpected_keys
        assert not unexpected, unexpected
    if config.lora and config.merge_lora:
        model = model.merge_and_unload()
    out = config.out
    tmp = new_work_dir(out, MODEL_KIND)
    try:
        model.generation_config.max_new_tokens = config.max_target_length
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {
            "format": 1,
            "base_model": config.base_model,
            "task": config.task,
            # who the chat model can speak as: the bot offers these names even to a new chat
            "speakers": _speakers(data) if config.task == "chat" else [],
            "dataset": {
                "path": str(config.data),
                "fingerprint": data.fingerprint,
                "train_examples": len(data.train),
                "validation_examples": len(data.validation),
            },
            "hyperparameters": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()
            },
            "metrics": {
                "steps": state.step,
                "tokens": state.tokens,
                "train_seconds": round(state.seconds, 2),
                "tokens_per_s": round(state.tokens / max(state.seconds, 1e-9), 1),
                "train_loss": state.last_train_loss,
                "validation_loss": state.best_loss,
                "best_step": state.best_step,
                "stopped_early": state.stopped_early,
            },
            "max_source_length": config.max_source_length,
            "max_target_length": config.max_target_length,
            "persona_prob": config.persona_prob,
            "lora": (
                {"merged": config.merge_lora, "r": config.lora_r, "targets": config.lora_targets}
                if config.lora
                else None
            ),
            "precision": precision,
            "world_size": accelerator.num_processes,
            "device": str(accelerator.device.type),
            "package_version": _package_version(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if (work / METRICS_FILE).exists():
            shutil.copyfile(work / METRICS_FILE, tmp / METRICS_FILE)
            from training.model.plots import plot_losses

            plot_losses(tmp / METRICS_FILE, tmp / LOSS_PLOT)
        stamp(tmp, MODEL_KIND)
        publish(tmp, out, MODEL_KIND)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved %s (validation loss %s)", out, state.best_loss)
    return out


def _speakers(data: TaskData) -> list[str]:
    """The senders of the training responses, most frequent first."""
    from collections import Counter

    from training.formatting import parse_turn

    counts = Counter(parse_turn(e.target)[0] for e in data.train)
    return [name for name, _ in counts.most_common() if name]
