"""How many optimizer steps fit the tiny model's time budget: the loop gets what is left.

Issue 12 gives the tiny model five minutes for the whole ``train`` command on two CPU cores.
A fixed token cap is sized for one machine: 1.2M tokens took 362 s where the cores ran slowly,
and 150-240 s on a faster machine whose validation loss was still falling where the cap
stopped it (BENCHMARKS.md, "Training to the time budget"). So, once the data is encoded,
:func:`affordable_steps` times a few optimizer steps and one validation pass on a throwaway
copy of the model, and plans as many steps as the rest of the budget holds after what comes
later (``AFTER_LOOP_SECONDS``, ``LOOP_SHARE``).

The timing decides one number and nothing else: the steps are the same batches in the same
order as in any run, the random state is put back afterwards, and ``train`` records the
number as ``max_steps`` (friendbot.json, checkpoints), so ``--max-steps N`` repeats the run
exactly and ``--resume`` continues the same plan.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from training.model.batching import Encoded
from training.model.config import TrainConfig
from training.model.loop import (
    DataOrder,
    make_optimizer,
    step_batches,
    train_step,
    validation_loss,
)

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

log = logging.getLogger(__name__)

AFTER_LOOP_SECONDS = 45.0
"""Kept back for what follows the loop: the voice and next-speaker scorers, saving, exit.
10-25 s on the real chats measured alone (BENCHMARKS.md, "Training to the time budget"), 25-32 s
with another job running, plus a margin for a slower machine."""
LOOP_SHARE = 0.85
"""The share of the time left that the timed steps may fill: a loop's steps ran up to 1.23x
slower than the ones timed before it (checkpoints and logging; the machine's own speed moved
between 6,700 and 11,400 tokens/s within one run), which without a margin took the whole
command to 319 s on the Slack chat."""
UNTIMED_STEPS = 2  # the first steps grow the allocator's pools: not what the loop pays
TIMED_STEPS = 6
MIN_TOKENS_TO_TIME = 600_000
"""Smaller plans are not timed: at the slowest speed measured (5,200 tokens/s) they train in
under two minutes, inside any budget of five, and small runs (tests, small chats) stay free of
the few seconds the timing costs."""


def affordable_steps(
    config: TrainConfig,
    accelerator: Accelerator,
    order: DataOrder,
    planned: int,
    validation: Sequence[Encoded],
    new_model: Callable[[], torch.nn.Module],
    pad_id: int,
    token_budget: int,
    seconds_left: float,
) -> int:
    """The steps of ``planned`` that fit in ``seconds_left`` (at least one), by timing.

    ``new_model`` builds a model like the one to train (a throwaway copy is timed);
    ``seconds_left`` is the budget minus what the command has spent so far.
    """
    if planned <= UNTIMED_STEPS + TIMED_STEPS or _plan_tokens(order, planned) < MIN_TOKENS_TO_TIME:
        return planned
    with _random_state_kept():
        step_s, validation_s = _time_steps(
            config, accelerator, order, validation, new_model, pad_id, token_budget
        )
    # the last step is always validated
    loop_s = (seconds_left - AFTER_LOOP_SECONDS - validation_s) * LOOP_SHARE
    per_step = step_s + (validation_s / config.eval_every if validation else 0.0)
    fits = max(1, int(loop_s / per_step)) if loop_s > 0 else 1
    steps = min(planned, fits)
    log.info(
        "time budget: %.0f s left, %.3f s per step, %.1f s per validation: %d of %d "
        "planned steps (--max-steps %d repeats this run)",
        seconds_left,
        step_s,
        validation_s,
        steps,
        planned,
        steps,
    )
    return steps


def _plan_tokens(order: DataOrder, planned: int) -> int:
    """Real tokens in the first ``planned`` steps of ``order``."""
    tokens, epoch = 0, 0
    while planned > 0:
        step_tokens = order.epoch(epoch)[2][:planned]
        if not step_tokens:
            break
        tokens += sum(step_tokens)
        planned -= len(step_tokens)
        epoch += 1
    return tokens


def _time_steps(
    config: TrainConfig,
    accelerator: Accelerator,
    order: DataOrder,
    validation: Sequence[Encoded],
    new_model: Callable[[], torch.nn.Module],
    pad_id: int,
    token_budget: int,
) -> tuple[float, float]:
    """(seconds per optimizer step, seconds per validation pass) of a throwaway model."""
    import torch

    model = new_model().to(accelerator.device)
    model.train()
    optimizer = make_optimizer(model, config, fused=False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    sources, steps, _tokens = order.epoch(0)
    times = []
    with accelerator.autocast():
        for micro_batches in steps[: UNTIMED_STEPS + TIMED_STEPS]:
            start = time.perf_counter()
            micro = step_batches(sources, micro_batches, order.data, pad_id, config)
            train_step(accelerator, model, optimizer, scheduler, micro, config.max_grad_norm)
            if accelerator.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        if validation:
            validation_loss(accelerator, model, validation, token_budget, pad_id, config)
        validation_s = time.perf_counter() - start
    timed = sorted(times[UNTIMED_STEPS:])
    return timed[len(timed) // 2], validation_s  # the median step


class _random_state_kept:
    """Put torch's, numpy's and Python's random state back: timing must not change the run."""

    def __enter__(self) -> None:
        import numpy as np
        import torch

        self.torch_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        self.numpy_state = np.random.get_state()
        self.python_state = random.getstate()

    def __exit__(self, *exc: object) -> None:
        import numpy as np
        import torch

        torch.set_rng_state(self.torch_state)
        if self.cuda_state is not None:
            torch.cuda.set_rng_state_all(self.cuda_state)
        np.random.set_state(self.numpy_state)
        random.setstate(self.python_state)
