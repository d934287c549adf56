"""The models folder as retraining manages it: promote, roll back, prune.

``models/current`` (see training.model.model_dir) is the model in service;
``models/previous`` is the one it replaced, kept so ``friendbot rollback`` is one atomic switch
away. Both are relative symlinks replaced with ``os.replace``, so a reader never finds a missing
or half-made pointer.
Retraining names its candidates ``retrain-<run id>-<UTC time>``; only directories with that
name are ever pruned, so hand-trained models and task models (paraphrase, joke) are safe.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from training.errors import InputError
from training.model.model_dir import resolve_current, set_current
from training.output_dirs import MODEL_KIND, remove_owned

PREVIOUS = "previous"
CANDIDATE_PATTERN = re.compile(r"^retrain-(?P<run>\d+)-(?P<stamp>\d{8}T\d{6})$")


def candidate_name(run_id: int, when: datetime) -> str:
    """Directory name of run ``run_id``'s candidate: sortable by time, traceable to its run."""
    return f"retrain-{run_id:04d}-{when.strftime('%Y%m%dT%H%M%S')}"


def is_model_dir(path: Path) -> bool:
    """True for a finished model directory (training writes ``config.json`` last, atomically)."""
    return (Path(path) / "config.json").is_file()


def previous_link(models_dir: Path) -> Path:
    """Path of the pointer to the model that ``current`` replaced."""
    return Path(models_dir) / PREVIOUS


def resolve_previous(models_dir: Path) -> Path | None:
    """The previously served model directory, or None (nothing promoted over it yet)."""
    link = previous_link(models_dir)
    return link.resolve() if link.exists() else None


def _point(models_dir: Path, name: str, target: Path) -> None:
    """Replace symlink ``models_dir/name`` by one to ``target`` in one rename."""
    models_dir = Path(models_dir)
    tmp = models_dir / f".{name}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(Path(target).resolve(), models_dir.resolve()))
    os.replace(tmp, models_dir / name)


def promote(models_dir: Path, candidate: Path) -> Path | None:
    """Serve ``candidate``; the model it replaces becomes ``previous``. Returns that one.

    ``previous`` is switched first: a crash between the two renames leaves the old model
    serving and still reachable, never a pointer to nothing.
    """
    old = resolve_current(models_dir)
    if old is not None and old != Path(candidate).resolve():
        _point(models_dir, PREVIOUS, old)
    set_current(models_dir, candidate)
    return old


def rollback(models_dir: Path, target: Path | None = None) -> tuple[Path | None, Path]:
    """Serve ``target`` (default: ``previous``) again; the model it replaces becomes previous.

    Rolling back twice therefore rolls forward again. Returns (replaced, now served).
    """
    models_dir = Path(models_dir)
    if target is None:
        target = resolve_previous(models_dir)
        if target is None:
            raise InputError(f"{previous_link(models_dir)}: no previous model to roll back to")
    target = Path(target).resolve()
    if not is_model_dir(target):
        raise InputError(f"{target}: not a model directory (no config.json)")
    old = resolve_current(models_dir)
    if old == target:
        raise InputError(f"{target}: already the model in service")
    if old is not None:
        _point(models_dir, PREVIOUS, old)
    set_current(models_dir, target)
    return old, target


def candidates(models_dir: Path) -> list[Path]:
    """Retraining's model directories, oldest first."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    found = []
    for path in models_dir.iterdir():
        match = CANDIDATE_PATTERN.match(path.name)
        if match and path.is_dir() and not path.is_symlink():
            found.append((match["stamp"], int(match["run"]), path))
    return [path for _, _, path in sorted(found)]


def prune(models_dir: Path, keep: int) -> list[Path]:
    """Delete retraining's oldest model directories beyond ``keep``; never current or previous.

    Returns what was deleted. Only ``retrain-*`` directories count, so a model someone trained
    by hand in the same folder is never touched.
    """
    protected = {p for p in (resolve_current(models_dir), resolve_previous(models_dir)) if p}
    pool = candidates(models_dir)
    excess = len(pool) - keep
    removed = []
    for path in pool:
        if excess <= 0:
            break
        if path.resolve() in protected:
            continue
        if not remove_owned(path, MODEL_KIND):
            continue  # someone else's files are inside: leave the whole directory alone
        removed.append(path)
        excess -= 1
    return removed
