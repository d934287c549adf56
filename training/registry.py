"""Which model directory is in service: the ``models/current`` symlink.

Switching models must never leave a moment where the bot finds no model or half a model, so
the link is replaced with ``os.replace`` (an atomic rename on POSIX) of a freshly made link.
"""

from __future__ import annotations

import os
from pathlib import Path

CURRENT = "current"


def current_link(models_dir: Path) -> Path:
    """Path of the pointer to the model in service."""
    return Path(models_dir) / CURRENT


def resolve_current(models_dir: Path) -> Path | None:
    """The model directory in service, or None when nothing has been promoted yet."""
    link = current_link(models_dir)
    if not link.exists():
        return None
    return link.resolve()


def set_current(models_dir: Path, target: Path) -> None:
    """Point ``models_dir/current`` at ``target`` atomically.

    The link is relative, so the models folder can be moved or mounted elsewhere whole.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    link = current_link(models_dir)
    tmp = models_dir / f".{CURRENT}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(Path(target).resolve(), models_dir.resolve()))
    os.replace(tmp, link)
