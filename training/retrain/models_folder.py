"""Retraining's candidates in the models folder: their names, and pruning old ones.

Retraining names its candidates ``retrain-<run id>-<UTC time>``; only directories with that
name are ever pruned, so hand-trained models and task models (paraphrase, joke) are safe.
The links themselves (``models/current`` and ``models/previous``, promote, rollback) belong to
training.model.model_dir, which knows what a usable model directory is; they are re-exported
here for retraining's callers.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from training.model.model_dir import (
    is_model_dir,
    promote,
    resolve_current,
    resolve_previous,
    rollback,
)
from training.output_dirs import MODEL_KIND, remove_owned

__all__ = [
    "CANDIDATE_PATTERN",
    "candidate_name",
    "candidates",
    "is_model_dir",
    "promote",
    "prune",
    "resolve_previous",
    "rollback",
]

CANDIDATE_PATTERN = re.compile(r"^retrain-(?P<run>\d+)-(?P<stamp>\d{8}T\d{6})$")


def candidate_name(run_id: int, when: datetime) -> str:
    """Directory name of run ``run_id``'s candidate: sortable by time, traceable to its run."""
    return f"retrain-{run_id:04d}-{when.strftime('%Y%m%dT%H%M%S')}"


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
