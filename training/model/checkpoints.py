"""A run in progress on disk: its counters and checkpoints, in formats that cannot run code.

``OUT.partial/checkpoints/step-N`` holds everything ``--resume`` needs to continue exactly:

- ``model.pt`` (trainable weights), ``optimizer.pt``, ``scaler.pt`` (fp16 only) and
  ``rng-RANK.pt`` (torch's generators): tensors in ``torch.save`` files, read back with
  ``weights_only=True``, whose unpickler builds tensors and plain containers only;
- ``scheduler.json``, ``rng-RANK.json`` (Python's and NumPy's generators) and
  ``trainer_state.json`` (the loop's counters and the settings a resume must share): JSON.

Why not Accelerate's ``save_state``: it pickles registered objects (the LR scheduler) into
``custom_checkpoint_0.pkl`` and loads them with ``weights_only=False``, so a file planted in
a checkpoint directory would run code on ``--resume``. Nothing here is ever unpickled in full.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import InputError, first_line

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

METRICS_FILE = "metrics.jsonl"  # one line per log and per validation
BEST_WEIGHTS = "best.pt"  # the best weights so far (trainable ones)
STATE_FILE = "trainer_state.json"
MODEL_STATE = "model.pt"
OPTIMIZER_STATE = "optimizer.pt"
SCHEDULER_STATE = "scheduler.json"
SCALER_STATE = "scaler.pt"
KEEP_CHECKPOINTS = 2


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


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights training changes (with LoRA: the adapters, not the frozen base), on CPU."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in trainable}


def save_best(model: torch.nn.Module, work: Path) -> None:
    """Keep the best-so-far weights on disk (they survive an interruption and a resume)."""
    import torch

    tmp = work / (BEST_WEIGHTS + ".tmp")
    torch.save(trainable_state(model), tmp)
    os.replace(tmp, work / BEST_WEIGHTS)


def latest_checkpoint(work: Path) -> Path | None:
    """The newest complete checkpoint (half-written ones are hidden ``.tmp`` directories)."""
    found = sorted((work / "checkpoints").glob("step-*")) if work.is_dir() else []
    return found[-1] if found else None


def saved_settings(work: Path) -> dict[str, Any]:
    """The settings the newest checkpoint was saved with ({} without one): what a resumed
    run must share, and the step count the time budget chose (training.model.budget)."""
    ckpt = latest_checkpoint(work)
    return dict(_read_json(ckpt / STATE_FILE)["config"]) if ckpt is not None else {}


def save_checkpoint(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    work: Path,
    state: TrainState,
    settings: dict[str, Any],
) -> None:
    """Save everything a resume needs into ``checkpoints/step-N``, atomically; keep the last 2.

    Every process saves its own generators; the main process the rest. ``settings`` are the
    options a resumed run must share (compared by ``restore``).
    """
    import torch

    root = work / "checkpoints"
    final = root / f"step-{state.step:08d}"
    tmp = root / f".step-{state.step:08d}.tmp"
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    _save_rng(tmp, accelerator.process_index)
    if main:
        inner = accelerator.unwrap_model(model, keep_torch_compile=False)
        torch.save(trainable_state(inner), tmp / MODEL_STATE)
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_STATE)
        _write_json(tmp / SCHEDULER_STATE, scheduler.state_dict())
        if accelerator.scaler is not None:
            torch.save(accelerator.scaler.state_dict(), tmp / SCALER_STATE)
    accelerator.wait_for_everyone()
    if main:
        _write_json(tmp / STATE_FILE, {"state": asdict(state), "config": settings})
        os.replace(tmp, final)
        for old in sorted(root.glob("step-*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def restore(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    work: Path,
    settings: dict[str, Any],
) -> TrainState:
    """Load the newest checkpoint (the caller checked there is one); refuse changed settings.

    The work area is rewound with it: metric lines and best weights written after the
    checkpoint never happened (the resumed run writes them again).
    """
    ckpt = latest_checkpoint(work)
    assert ckpt is not None
    saved = _read_json(ckpt / STATE_FILE)
    changed = {
        k: (v, saved["config"].get(k)) for k, v in settings.items() if saved["config"].get(k) != v
    }
    if changed:
        what = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (new, old) in changed.items())
        raise InputError(f"{ckpt}: --resume with different settings ({what})")
    missing = [name for name in (MODEL_STATE, OPTIMIZER_STATE, SCHEDULER_STATE)
               if not (ckpt / name).is_file()]  # fmt: skip
    if missing:
        raise InputError(
            f"{ckpt}: no {', '.join(missing)} (a checkpoint of an older friendbot?); "
            f"remove {work} and train again without --resume"
        )
    inner = accelerator.unwrap_model(model, keep_torch_compile=False)
    result = inner.load_state_dict(_load_tensors(ckpt / MODEL_STATE), strict=False)
    if result.unexpected_keys:
        raise InputError(f"{ckpt / MODEL_STATE}: weights of another model")
    optimizer.load_state_dict(_load_tensors(ckpt / OPTIMIZER_STATE))
    scheduler.load_state_dict(_read_json(ckpt / SCHEDULER_STATE))
    if accelerator.scaler is not None and (ckpt / SCALER_STATE).is_file():
        accelerator.scaler.load_state_dict(_load_tensors(ckpt / SCALER_STATE))
    _load_rng(ckpt, accelerator.process_index)
    state = TrainState(**saved["state"])
    if accelerator.is_main_process:
        _rewind(work, state)
    return state


def _rewind(work: Path, state: TrainState) -> None:
    metrics = work / METRICS_FILE
    if metrics.exists():
        lines = metrics.read_text(encoding="utf-8").splitlines()
        kept = [ln for ln in lines if json.loads(ln)["step"] <= state.step]
        metrics.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
    best = work / BEST_WEIGHTS
    if state.best_step is None and best.exists():
        best.unlink()


# ---------------------------------------------------------------------------------------------
# Files


def _load_tensors(path: Path) -> Any:
    """A ``torch.save`` file of tensors and plain containers; anything else is refused."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise InputError(
            f"{path}: not a plain tensor file, refusing to load it ({first_line(exc)})"
        ) from exc


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable checkpoint file ({first_line(exc)})") from exc


def _save_rng(directory: Path, rank: int) -> None:
    """This process's generators: Python's and NumPy's as JSON, torch's as tensors."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    _write_json(
        directory / f"rng-{rank}.json",
        {
            "python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        },
    )
    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(tensors, directory / f"rng-{rank}.pt")


def _load_rng(ckpt: Path, rank: int) -> None:
    import numpy as np
    import torch

    states = _read_json(ckpt / f"rng-{rank}.json")
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    tensors = _load_tensors(ckpt / f"rng-{rank}.pt")
    torch.set_rng_state(tensors["cpu"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])
