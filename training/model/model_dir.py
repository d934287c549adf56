"""What a model directory is, and which one is in service (the ``models/current`` symlink).

Switching models must never leave a moment where the bot finds no model or half a model, so
the link is replaced with ``os.replace`` (an atomic rename on POSIX) of a freshly made link.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from training.errors import InputError, first_line

CURRENT = "current"
INFO_FILE = "friendbot.json"  # written by friendbot train next to the weights
CT2_DIRNAME = "ct2"  # friendbot export-ct2's conversion, inside the model directory
EXPORT_META = "friendbot-ct2.json"  # written inside ct2/: how it was made
# Weight files whose modification time decides whether ``ct2/`` is stale.
WEIGHT_PATTERNS = ("model.safetensors", "model-*.safetensors", "pytorch_model*.bin")
# Tokenizer files copied next to the conversion so ``ct2/`` is usable on its own too.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
    "added_tokens.json",
)


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


def check_model_dir(model_dir: Path) -> Path:
    """The resolved model directory, or an InputError saying in one line what is wrong."""
    if not model_dir.exists():
        raise InputError(f"{model_dir}: no such model directory")
    resolved = model_dir.resolve()
    if not resolved.is_dir():
        raise InputError(f"{model_dir}: not a directory")
    if not (resolved / "config.json").is_file():
        raise InputError(
            f"{model_dir}: not a model directory (no config.json; train one with friendbot train)"
        )
    if not weight_files(resolved):
        raise InputError(f"{model_dir}: no model weights (model.safetensors) in the directory")
    return resolved


def weight_files(model_dir: Path) -> list[Path]:
    return [p for pattern in WEIGHT_PATTERNS for p in model_dir.glob(pattern)]


def read_info(model_dir: Path) -> dict[str, Any]:
    """friendbot.json of a model directory ({} for a plain Hugging Face directory).

    The one reader of that file: a file that exists but is not a JSON object is an error,
    never silently an empty dict (which would serve the model with default lengths).
    """
    path = Path(model_dir) / INFO_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not valid JSON ({first_line(exc)})") from exc
    if not isinstance(info, dict):
        raise InputError(f"{path}: expected a JSON object")
    return info
