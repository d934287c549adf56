"""``friendbot train``: fine-tune a seq2seq model (FLAN-T5 or the offline tiny T5) on pairs.

``train`` reads as its steps, in the spirit of nanoGPT rather than a Trainer subclass: start
the processes, load and encode the data, build the model and optimizer, resume, run the loop,
save. The pieces live next door: ``pretrained.py`` (base model and tokenizer), ``loop.py``
(data order, optimizer step, validation, the loop), ``budget.py`` (how many steps fit the tiny
model's five minutes), ``checkpoints.py`` (what ``--resume``
reads, in formats that cannot run code), ``model_dir.py`` (what the saved directory must be).

Multi-process training goes through Hugging Face Accelerate: the same command runs as one
process, under ``torchrun`` or under ``accelerate launch`` (DDP on GPUs, gloo on CPUs).

Layout while training: ``OUT.partial/`` holds checkpoints, the tokenizer, the best weights and
``metrics.jsonl``. The finished model is written to a temporary sibling directory and renamed
to ``OUT`` only when complete, so a directory named ``OUT`` is always a whole model. A run that
fails before its first checkpoint removes ``OUT.partial/`` again: there is nothing to resume.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from training.errors import InputError
from training.model import next_speaker, reply_vocabulary, voice_scorer
from training.model.batching import Encoded, preprocess
from training.model.budget import affordable_steps
from training.model.checkpoints import (
    BEST_WEIGHTS,
    METRICS_FILE,
    TrainState,
    latest_checkpoint,
    restore,
    saved_settings,
)
from training.model.config import TINY, TINY_MAX_THREADS, TrainConfig
from training.model.loop import DataOrder, Loop, make_optimizer, make_scheduler
from training.model.model_dir import write_info
from training.model.pretrained import add_lora, load_model, load_tokenizer
from training.model.tasks import TaskData, load_task
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
T = TypeVar("T")

LOSS_PLOT = "loss.png"
RESUME_KEYS = (
    "base_model", "task", "epochs", "max_steps", "train_tokens", "learning_rate", "schedule",
    "warmup", "weight_decay", "max_grad_norm", "token_budget", "grad_accum", "seed", "dropout",
    "persona_prob", "max_source_length", "max_target_length", "lora", "lora_r", "lora_alpha",
    "lora_targets", "tiny_vocab",
)  # fmt: skip


@dataclass
class _Run:
    """What the steps of one ``train`` call share: processes, device, precision, work area."""

    accelerator: Accelerator
    precision: str
    use_cuda: bool
    token_budget: int
    work: Path  # OUT.partial/
    phases: Phases  # the steps' seconds, logged once the model is saved

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


@dataclass
class _Data:
    """The task's examples, the tokenizer and both splits as token ids."""

    task: TaskData
    tokenizer: PreTrainedTokenizerBase
    train: list[Encoded]
    validation: list[Encoded]


def train(config: TrainConfig, on_step: Callable[[int, int], None] | None = None) -> Path:
    """Fine-tune ``config.base_model`` on ``config.data``; return the finished model directory.

    ``on_step(step, total_steps)`` is called on the main process after every optimizer step
    (the retraining pipeline heartbeats its lock from it; an exception there interrupts
    training and leaves the last checkpoint to ``--resume`` from).
    """
    phases = Phases()
    with phases("start"):
        run = _start(config, phases)
    try:
        data = _load_data(config, run)
        order, total_steps = _plan(config, run, data)
        with phases("model"):
            model, optimizer, scheduler = _build(config, run, data, total_steps)
            state = _resume(config, run, model, optimizer, scheduler)
        loop = Loop(
            accelerator=run.accelerator,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            config=config,
            work=run.work,
            train_set=data.train,
            val_set=data.validation,
            order=order,
            total_steps=total_steps,
            token_budget=run.token_budget,
            pad_id=data.tokenizer.pad_token_id,
            resume_settings=_resume_settings(config),
            on_step=on_step,
        )
        with phases("loop"):
            loop.run(state)
        with phases("save"):
            _finish(config, run, model, data, state)
        if run.main:
            log.info("%s", phases.line())
    except BaseException:
        _drop_unresumable_work(config, run)
        raise
    return config.out


# --- the steps, in order --------------------------------------------------------------------


def _start(config: TrainConfig, phases: Phases) -> _Run:
    """Processes, device, precision and threads; refuse a bad OUT; a fresh work area."""
    _passive_openmp()
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

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
        # With passive OpenMP waiting (above), two threads trained the tiny model 2.1-2.3x
        # faster in wall time than one on a busy 2-core machine, for no more CPU; with the
        # default spin-waiting they burnt 8-10x the CPU and ran 4-6x slower. More than two
        # threads were not measured for matrices this small.
        torch.set_num_threads(min(TINY_MAX_THREADS, os.cpu_count() or 1))
    run = _Run(
        accelerator=accelerator,
        precision=precision,
        use_cuda=use_cuda,
        token_budget=config.token_budget or (16384 if use_cuda else 2048),
        work=partial_dir(config.out),
        phases=phases,
    )
    _check_out(config)
    if not config.resume and run.main:
        make_work_dir(run.work, PARTIAL_KIND)  # never mixes with an older run's leftovers
    accelerator.wait_for_everyone()
    set_seed(config.seed)
    return run


def _load_data(config: TrainConfig, run: _Run) -> _Data:
    """Examples -> tokenizer -> token ids, once, before the loop; too few pairs are refused."""
    with run.phases("read"):
        task = load_task(config.task, config.data, config.seed)
    if len(task.train) < config.min_examples:
        raise InputError(
            f"{config.data}: {len(task.train)} training pair(s); at least "
            f"{config.min_examples} are needed to learn anything worth serving "
            "(--min-examples N to train anyway)"
        )
    with run.phases("tokenizer"):
        tokenizer = load_tokenizer(
            config.base_model,
            task,
            run.work,
            run.accelerator,
            resume=config.resume,
            tiny_vocab=config.tiny_vocab,
        )
    lengths = (config.max_source_length, config.max_target_length)
    with run.phases("encode"):
        data = _Data(
            task=task,
            tokenizer=tokenizer,
            train=preprocess(task.train, tokenizer, *lengths),
            validation=preprocess(
                validation_sample(task.validation, config.eval_examples or 0, config.seed),
                tokenizer,
                *lengths,
            ),
        )
    if not data.validation:
        log.warning("%s: no validation examples; no early stopping, last weights kept", config.data)
    return data


def _plan(config: TrainConfig, run: _Run, data: _Data) -> tuple[DataOrder, int]:
    """The data order and the number of optimizer steps (refused when there is not one)."""
    acc = run.accelerator
    order = DataOrder(data.train, config, run.token_budget, acc.num_processes, acc.process_index)
    if config.max_steps:
        total_steps = config.max_steps
        order.locate(0)  # fails clearly when there is not even one step of data
    else:
        assert config.epochs is not None  # TrainConfig filled in the default
        total_steps = order.planned_steps(config.epochs, config.train_tokens)
    if total_steps == 0:
        raise InputError(f"{config.data}: too little data for one training step")
    if config.time_budget and not config.max_steps and acc.num_processes == 1:
        total_steps = _within_budget(config, run, data, order, total_steps)
    return order, total_steps


def _within_budget(
    config: TrainConfig, run: _Run, data: _Data, order: DataOrder, planned: int
) -> int:
    """The planned steps cut to what the time budget holds (training.model.budget).

    A cut is recorded as ``config.max_steps``, so friendbot.json and the checkpoints hold it: a
    ``--resume`` continues the interrupted run's plan instead of timing again.
    """
    if config.resume:
        saved = saved_settings(run.work).get("max_steps")
        steps = int(saved) if saved else planned
    else:
        with run.phases("budget"):
            steps = affordable_steps(
                config,
                run.accelerator,
                order,
                planned,
                data.validation,
                lambda: load_model(
                    config.base_model, data.tokenizer, seed=config.seed, dropout=config.dropout
                ),
                data.tokenizer.pad_token_id,
                run.token_budget,
                config.time_budget - run.phases.elapsed(),
            )
    if steps < planned:
        config.max_steps = steps
    return steps


def _build(
    config: TrainConfig, run: _Run, data: _Data, total_steps: int
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Model (fp32 master weights; autocast does the bf16 compute), optimizer, LR schedule."""
    import torch

    model = load_model(config.base_model, data.tokenizer, seed=config.seed, dropout=config.dropout)
    model = model.to(run.accelerator.device)
    if config.lora:
        model = add_lora(
            model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets
        )
    if config.compile:
        model = torch.compile(model)
    optimizer = make_optimizer(model, config, fused=run.use_cuda)
    scheduler = make_scheduler(optimizer, config, total_steps)
    # The scheduler is stepped by hand once per optimizer step (not prepared: Accelerate
    # would step it once per process); checkpoints save it themselves (checkpoints.py).
    model, optimizer = run.accelerator.prepare(model, optimizer)
    return model, optimizer, scheduler


def _resume(
    config: TrainConfig,
    run: _Run,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> TrainState:
    """Fresh counters, or everything from the last checkpoint (the work area rewound to it)."""
    if not config.resume:
        return TrainState()
    settings = _resume_settings(config)
    state = restore(run.accelerator, model, optimizer, scheduler, run.work, settings)
    log.info("resumed from %s at step %d", latest_checkpoint(run.work), state.step)
    return state


def _finish(
    config: TrainConfig, run: _Run, model: torch.nn.Module, data: _Data, state: TrainState
) -> None:
    """Best weights, merged adapters, tokenizer, friendbot.json; rename into place."""
    acc = run.accelerator
    acc.wait_for_everyone()
    if run.main:
        inner = acc.unwrap_model(model, keep_fp32_wrapper=False, keep_torch_compile=False)
        _save_model(inner, config, run, data, state)
        if not config.keep_checkpoints:
            remove_owned(run.work, PARTIAL_KIND)
    acc.wait_for_everyone()
    acc.end_training()


def _drop_unresumable_work(config: TrainConfig, run: _Run) -> None:
    """After a failure, remove this run's ``OUT.partial/`` unless it holds a checkpoint.

    Without a checkpoint there is nothing to ``--resume``: an empty work area left behind
    only confuses (and blocks nothing). A resumed run's work area is always kept.
    """
    if run.main and not config.resume and latest_checkpoint(run.work) is None:
        remove_owned(run.work, PARTIAL_KIND)


# --- helpers --------------------------------------------------------------------------------


def partial_dir(out: Path) -> Path:
    """Where a run in progress keeps its checkpoints: ``OUT.partial`` next to ``OUT``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def validation_sample(examples: Sequence[T], limit: int, seed: int) -> list[T]:
    """At most ``limit`` of ``examples`` (0: all), a seeded sample in their original order.

    Validation runs only rank checkpoints for early stopping; the same sample every time
    makes successive losses comparable, and ``friendbot evaluate`` still scores every pair.
    """
    if not limit or len(examples) <= limit:
        return list(examples)
    import numpy as np

    keep = np.sort(np.random.default_rng([seed, 2]).choice(len(examples), limit, replace=False))
    return [examples[i] for i in keep.tolist()]


class Phases:
    """Wall and CPU seconds (all threads of this process) of ``train``'s steps.

    Issue 12 gives the tiny model five minutes for the whole command, not only the loop; the
    one line logged once the model is saved (``bench/train_budget.py`` reads it) says where the
    rest goes without a profiler. Nothing is logged for a run that fails, so a user's mistake
    stays one line on the terminal.
    """

    def __init__(self) -> None:
        self.times: list[tuple[str, float, float]] = []
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        """Wall seconds since ``train`` began (what the time budget has left: the rest)."""
        return time.perf_counter() - self.started

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.times.append((name, time.perf_counter() - wall, time.process_time() - cpu))

    def line(self) -> str:
        steps = ", ".join(f"{name} {wall:.1f} / {cpu:.1f}" for name, wall, cpu in self.times)
        return f"phases (s wall / CPU s): {steps}"


def _one_blas_thread() -> Any:
    """Limit BLAS (OpenBLAS under numpy/scipy) to one thread while a scorer is fitted.

    OpenBLAS's threads spin while they wait; fitting the voice scorer on the Slack chat took
    23.8 s wall with its default two threads and 9.3 s with one on the shared 2-core machine
    (load ~3), for the same fit up to rounding (BENCHMARKS.md, "A 1.2M-token cap ...").
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _passive_openmp() -> None:
    """Let idle OpenMP threads sleep instead of spinning, unless the user chose a policy.

    GNU OpenMP (torch's CPU threads) spins a waiting thread for a while before sleeping; on a
    CPU shared with other busy processes, the thread it waits for is often descheduled, so
    the spinning eats the very core the work needs (measured: 8-10x the CPU of one thread).
    The policy is read once, when torch loads OpenMP, so it must be set before that.
    """
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _resolve_precision(precision: str, use_cuda: bool) -> str:
    """``auto``: bf16 autocast on GPUs that support it, fp32 otherwise (CPU bf16 is slow)."""
    import torch

    if precision != "auto":
        return precision
    return "bf16" if use_cuda and torch.cuda.is_bf16_supported() else "fp32"


def _check_out(config: TrainConfig) -> None:
    """Refuse early (before minutes of training) to clobber a model or resume nothing."""
    check_location(config.out, [config.data])
    check_location(partial_dir(config.out), [config.data])
    if config.out.exists() and not config.overwrite:
        raise InputError(f"{config.out}: already exists (pass --overwrite to replace it)")
    check_replaceable(config.out, MODEL_KIND, "a `friendbot train` model directory")
    if config.resume and latest_checkpoint(partial_dir(config.out)) is None:
        raise InputError(f"{partial_dir(config.out)}: no checkpoint to --resume from")


def _resume_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the interrupted one (data order, shapes)."""
    return {k: getattr(config, k) for k in RESUME_KEYS}


def _save_model(
    model: PreTrainedModel, config: TrainConfig, run: _Run, data: _Data, state: TrainState
) -> Path:
    """Write the model directory to a temporary sibling, then rename it to ``config.out``."""
    import torch

    from training.progress import quiet_hf_bars

    quiet_hf_bars()  # transformers' "Writing model shards" bar: only on a terminal

    best = run.work / BEST_WEIGHTS
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
        data.tokenizer.save_pretrained(tmp)
        write_info(tmp, _info(config, run, data.task, state))
        if config.task == "chat":  # the voice term of the bot's best-of-k (issue 12 §4)
            with run.phases("voice scorer"), _one_blas_thread():
                voice_scorer.save_for_training([e.target for e in data.task.train], tmp)
            # who the bot speaks as: the turn-taking scorer (training.model.next_speaker)
            with run.phases("next-speaker scorer"), _one_blas_thread():
                pairs = [(e.source, e.target) for e in data.task.train]
                next_speaker.save_for_training(pairs, tmp)
            # the pieces replies are decoded over by CTranslate2 (export-ct2's vmap.txt)
            seen = _seen_ids([*data.train, *data.validation])
            reply_vocabulary.save(seen, _special_ids(data.tokenizer), tmp)
        if (run.work / METRICS_FILE).exists():
            shutil.copyfile(run.work / METRICS_FILE, tmp / METRICS_FILE)
            from training.model.plots import plot_losses

            plot_losses(tmp / METRICS_FILE, tmp / LOSS_PLOT)
        stamp(tmp, MODEL_KIND)
        publish(tmp, out, MODEL_KIND)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved %s (validation loss %s)", out, state.best_loss)
    return out


def _info(config: TrainConfig, run: _Run, data: TaskData, state: TrainState) -> dict[str, Any]:
    """friendbot.json's record: how to serve the model, and how it was made.

    ``memory`` (only for a model trained on a ``prepare --memory`` dataset) tells the bot to
    put that many memory and voice lines into its prompts, as training did.
    """
    memory = {"memory": data.memory} if config.task == "chat" and data.memory else {}
    return {
        "base_model": config.base_model,
        "task": config.task,
        # who the chat model can speak as: the bot offers these names even to a new chat
        "speakers": _speakers(data.train) if config.task == "chat" else [],
        "dataset": {
            "path": str(config.data),  # as given
            # where it was, whatever the working directory: /guess plays its test split
            "dir": str(Path(config.data).resolve()),
            "fingerprint": data.fingerprint,
            "train_examples": len(data.train),
            "validation_examples": len(data.validation),
        },
        "hyperparameters": config.hyperparameters(),
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
        "precision": run.precision,
        "world_size": run.accelerator.num_processes,
        "device": str(run.accelerator.device.type),
        "package_version": _package_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **memory,
    }


def _seen_ids(encoded: Sequence[Encoded]) -> set[int]:
    """Every token id of the examples as tokenized for training (sources, alternatives,
    targets): the pieces the chat is written in."""
    seen: set[int] = set()
    for e in encoded:
        seen.update(e.source)
        seen.update(e.labels)
        if e.alt is not None:
            seen.update(e.alt)
    return seen


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Pad (T5's decoder start), eos (a reply must end) and unk."""
    ids = (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    return [i for i in ids if i is not None]


def _speakers(examples: Sequence[Any]) -> list[str]:
    """The senders of the training responses, most frequent first."""
    from collections import Counter

    from training.formatting import parse_turn

    counts = Counter(parse_turn(e.target)[0] for e in examples)
    return [name for name, _ in counts.most_common() if name]


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("friendbot")
    except PackageNotFoundError:
        return "0+unknown"
