"""The training loop: which batches each step uses, one optimizer step, validation, the loop.

What makes it fast is what the perf notes measured: token-budget batches of similar lengths
padded to a few bucket sizes, and no host-device synchronisation inside a step (the loss is
read back only every ``log_every`` steps). Every process derives the whole data order from
the seed (``DataOrder``), so a run can resume at any step with the same result as an
uninterrupted one, and N processes train what one process accumulating N micro-batches would.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import InputError
from training.model.batching import Encoded, collate, epoch_sources, plan_batches, real_tokens
from training.model.checkpoints import METRICS_FILE, TrainState, save_best, save_checkpoint
from training.model.config import TrainConfig

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

log = logging.getLogger(__name__)


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

    def planned_steps(self, epochs: int, token_cap: int) -> int:
        """Steps in ``epochs`` epochs, or up to the step that reaches ``token_cap`` real tokens
        (0: no cap). A pure function of the data order, so a resumed run plans the same."""
        steps = seen = 0
        for epoch in range(epochs):
            step_tokens = self.epoch(epoch)[2]
            if not token_cap:
                steps += len(step_tokens)
                continue
            for tokens in step_tokens:
                if seen >= token_cap:
                    return steps
                seen += tokens
                steps += 1
        return steps

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, step within that epoch) of a global step."""
        epoch = 0
        while step >= (n := self.steps_in_epoch(epoch)):
            if n == 0:
                raise InputError(f"{self.config.data}: too little data for one training step")
            step -= n
            epoch += 1
        return epoch, step


def make_optimizer(
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


def make_scheduler(
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


def step_batches(
    sources: Sequence[list[int]],
    micro_batches: Sequence[list[int]],
    data: Sequence[Encoded],
    pad_id: int,
    config: TrainConfig,
) -> list[dict[str, torch.Tensor]]:
    """One optimizer step's padded micro-batches (``DataOrder.epoch``'s indices into ``data``,
    with that epoch's ``sources``)."""
    return [
        collate(
            [sources[j] for j in idx],
            [data[j].labels for j in idx],
            pad_id,
            config.max_source_length,
            config.max_target_length,
        )
        for idx in micro_batches
    ]


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


def validation_due(step: int, total_steps: int, config: TrainConfig) -> bool:
    """Validate every ``eval_every`` steps and after the last one, but not twice in a row.

    The last step is always validated (the saved model is the best one *seen*); a scheduled
    validation less than half an interval before it is skipped: 806 steps validated at 800
    and again at 806, a whole validation pass for six steps of training.
    """
    if step == total_steps:
        return True
    every = config.eval_every
    return step % every == 0 and total_steps - step >= every // 2


@dataclass
class Loop:
    """Optimizer steps from ``state.step`` to ``total_steps`` (or an early stop), with logging,
    validation, best weights and checkpoints at their intervals."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    config: TrainConfig
    work: Path
    train_set: Sequence[Encoded]
    val_set: Sequence[Encoded]
    order: DataOrder
    total_steps: int
    token_budget: int
    pad_id: int
    resume_settings: dict[str, Any]  # stored with checkpoints: what a resume must share
    on_step: Callable[[int, int], None] | None = None
    _window: dict[str, Any] = field(default_factory=dict, init=False)

    def run(self, state: TrainState) -> TrainState:
        """Train until done; ``state`` is updated in place and returned."""
        import torch

        from training.progress import progress

        cfg, main = self.config, self.accelerator.is_main_process
        stopper = EarlyStopping(state, cfg.patience, cfg.min_delta)
        # the logging window: loss summed on the device (no sync per step), steps, tokens
        self._window = {
            "loss": torch.full((), state.window_loss, device=self.accelerator.device),
            "steps": state.window_steps,
            "tokens": state.window_tokens,
            "start": time.perf_counter(),
        }
        bar = progress(
            self.total_steps,
            "training",
            initial=state.step,
            unit="step",
            enabled=main and cfg.progress,
        )
        epoch, offset = self.order.locate(state.step)
        step_start = time.perf_counter()
        self.model.train()
        while state.step < self.total_steps and not state.stopped_early:
            sources, steps, step_tokens = self.order.epoch(epoch)
            for micro_batches, tokens in zip(steps[offset:], step_tokens[offset:], strict=True):
                self._optimizer_step(state, sources, micro_batches, tokens)
                bar.update(1)
                self._log(state, bar, epoch + (offset + 1) / max(len(steps), 1))
                pause_start = time.perf_counter()
                self._validate(state, stopper)
                self._checkpoint(state)
                now = time.perf_counter()
                self._window["start"] += now - pause_start  # tokens/s counts training only
                state.seconds += now - step_start
                step_start = now
                if self.on_step and main:
                    self.on_step(state.step, self.total_steps)
                offset += 1
                if state.step >= self.total_steps or state.stopped_early:
                    break
            epoch, offset = epoch + 1, 0
        bar.close()
        return state

    def _optimizer_step(
        self,
        state: TrainState,
        sources: list[list[int]],
        micro_batches: list[list[int]],
        tokens: int,
    ) -> None:
        """Forward/backward per micro-batch, clip, step, schedule; count steps and tokens."""
        cfg = self.config
        micro = step_batches(sources, micro_batches, self.train_set, self.pad_id, cfg)
        self._window["loss"] += train_step(
            self.accelerator,
            self.model,
            self.optimizer,
            self.scheduler,
            micro,
            cfg.max_grad_norm,
        )
        state.step += 1
        state.tokens += tokens
        self._window["steps"] += 1
        self._window["tokens"] += tokens

    def _log(self, state: TrainState, bar: Any, epoch: float) -> None:
        """Every ``log_every`` steps: the only host-device sync of the loop."""
        if state.step % self.config.log_every and state.step != self.total_steps:
            return
        w = self._window
        now = time.perf_counter()
        mean = self.accelerator.reduce(w["loss"], reduction="mean").item() / w["steps"]
        speed = w["tokens"] / max(now - w["start"], 1e-9)
        state.last_train_loss = mean
        bar.set_postfix(loss=f"{mean:.3f}", tok_s=f"{speed:,.0f}")
        self._record(
            step=state.step,
            epoch=round(epoch, 3),
            train_loss=round(mean, 5),
            lr=self.scheduler.get_last_lr()[0],
            tokens_per_s=round(speed, 1),
        )
        w["loss"].zero_()
        w["steps"], w["tokens"], w["start"] = 0, 0, now

    def _validate(self, state: TrainState, stopper: EarlyStopping) -> None:
        """Validate; keep the best weights; stop when the loss stops improving."""
        if not (self.val_set and validation_due(state.step, self.total_steps, self.config)):
            return
        val_loss = validation_loss(
            self.accelerator, self.model, self.val_set, self.token_budget, self.pad_id, self.config
        )
        improved, stop = stopper.update(val_loss, state.step)
        self._record(step=state.step, val_loss=round(val_loss, 5))
        if improved and self.accelerator.is_main_process:
            inner = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
            save_best(inner, self.work)
        if stop:
            state.stopped_early = True
            log.info("early stop at step %d: best %.4f", state.step, state.best_loss)
        self.model.train()

    def _checkpoint(self, state: TrainState) -> None:
        """Every ``checkpoint_every`` steps (all processes: each saves its own RNG state)."""
        if state.step % self.config.checkpoint_every or state.step >= self.total_steps:
            return
        w = self._window
        state.window_loss = self.accelerator.reduce(w["loss"], reduction="mean").item()
        state.window_steps, state.window_tokens = w["steps"], w["tokens"]
        save_checkpoint(
            self.accelerator,
            self.model,
            self.optimizer,
            self.scheduler,
            self.work,
            state,
            self.resume_settings,
        )

    def _record(self, **fields: Any) -> None:
        """Append one line to metrics.jsonl (main process only)."""
        if self.accelerator.is_main_process:
            with (self.work / METRICS_FILE).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(fields) + "\n")
