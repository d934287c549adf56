"""What a model directory is, whether one is usable, and which one is in service.

Everything that reads a model directory goes through ``validate``: ``friendbot evaluate``,
``chat``, ``run`` and ``/reload`` (bot/engine.py), ``rollback``, ``export-ct2`` and the
retraining gate. It is the one place that knows the layout, so a broken directory is refused
with one line everywhere instead of being half-used somewhere. A usable model directory has:

- ``config.json`` and weights (``model.safetensors``, shards, or ``pytorch_model*.bin``);
- a tokenizer *with its vocabulary* (``tokenizer.json`` or ``spiece.model``) whose size fits
  the model's embedding rows (``config.json``'s ``vocab_size``). Without the vocabulary file,
  ``AutoTokenizer`` quietly builds a 4-token tokenizer: losses then look fine (even lower) and
  every reply is "...". Measured on FLAN-T5: 32,100 tokens for 32,128 rows (padded to a
  multiple of 128), hence the ``EMBEDDING_SLACK``;
- ``friendbot.json`` (``INFO_FORMAT``), required for a chat model: its prompt lengths are part
  of the model (the tiny model learns on 32 source tokens; encoding 512 shows it contexts it
  never saw). A task model (paraphrase, joke, a plain FLAN-T5 used for them) may be a plain
  Hugging Face directory; it then gets T5's own limits, 512 source / 64 target tokens;
- optionally ``ct2/``, a CTranslate2 conversion, used only while newer than the weights.

The models folder: ``models/current`` points at the model in service, ``models/previous`` at
the one it replaced. Switching must never leave a moment where the bot finds no model or half a
model, so each link is replaced by ``os.replace`` (an atomic rename on POSIX) of a freshly made
relative link (``_swap_link``, the only code that writes links).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import InputError, first_line
from training.model.tasks import TASKS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CURRENT = "current"
PREVIOUS = "previous"
INFO_FILE = "friendbot.json"  # written by friendbot train next to the weights
INFO_FORMAT = 1  # the newest friendbot.json layout this version reads and writes
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
# Files that hold a tokenizer's vocabulary (fast tokenizers, SentencePiece, BPE, WordPiece).
VOCABULARY_FILES = (
    "tokenizer.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
)
EMBEDDING_SLACK = 128  # embedding rows a model may have beyond its tokenizer (padding)
PLAIN_SOURCE_LENGTH = 512  # a plain Hugging Face directory (no friendbot.json): T5's limit
PLAIN_TARGET_LENGTH = 64


@dataclass(frozen=True)
class ModelInfo:
    """A validated model directory: what its readers need, typed, and its tokenizer."""

    path: Path  # resolved (``models/current`` followed)
    task: str | None  # chat | paraphrase | joke; None for a plain Hugging Face directory
    max_source_length: int
    max_target_length: int
    speakers: tuple[str, ...]  # who a chat model may speak as
    base_model: str | None
    embedding_rows: int  # config.json's vocab_size
    fields: dict[str, Any]  # friendbot.json as written ({} for a plain directory)
    tokenizer: PreTrainedTokenizerBase = field(repr=False, compare=False)

    @property
    def is_chat(self) -> bool:
        return self.task == "chat"


def validate(model_dir: Path, *, chat: bool = True) -> ModelInfo:
    """The model directory's ModelInfo, or an InputError saying in one line what is wrong.

    ``chat``: it must be a chat model with its friendbot.json (MODEL_DIR, evaluate, rollback,
    the retraining gate); otherwise any seq2seq model directory will do (task models,
    export-ct2). Weights are not loaded here (seconds, gigabytes): their headers are read.
    """
    path = check_model_dir(Path(model_dir))
    rows = _embedding_rows(path)
    _check_weight_headers(path)
    info = read_info(path)
    task = info.get("task")
    if chat and not info:
        raise InputError(
            f"{model_dir}: no {INFO_FILE}, so its prompt lengths are unknown; a chat model must "
            "come from friendbot train (or carry the file: docs/training.md, The model directory)"
        )
    if chat and task != "chat":
        raise InputError(f"{model_dir}: a {task} model, not a chat model ({INFO_FILE} task)")
    tokenizer = _load_tokenizer(path, rows, model_dir)
    base = info.get("base_model")
    return ModelInfo(
        path=path,
        task=task,
        max_source_length=info.get("max_source_length", PLAIN_SOURCE_LENGTH),
        max_target_length=info.get("max_target_length", PLAIN_TARGET_LENGTH),
        speakers=tuple(info.get("speakers") or ()),
        base_model=str(base) if base else None,
        embedding_rows=rows,
        fields=info,
        tokenizer=tokenizer,
    )


def check_model_dir(model_dir: Path) -> Path:
    """The resolved directory if it holds config.json and weights; else a one-line InputError."""
    if not model_dir.exists():
        raise InputError(f"{model_dir}: no such model directory")
    resolved = model_dir.resolve()
    if not resolved.is_dir():
        raise InputError(f"{model_dir}: not a directory")
    if not (resolved / "config.json").is_file():
        if (resolved / "adapter_config.json").is_file():
            raise InputError(
                f"{model_dir}: a LoRA adapter without its base (trained with --no-merge); "
                "train with --merge to get a model that can be served"
            )
        raise InputError(
            f"{model_dir}: not a model directory (no config.json; train one with friendbot train)"
        )
    if not weight_files(resolved):
        raise InputError(f"{model_dir}: no model weights (model.safetensors) in the directory")
    return resolved


def is_model_dir(path: Path) -> bool:
    """True for a finished model directory (training writes ``config.json`` last, atomically).

    A cheap test for listing and waiting; ``validate`` before using one.
    """
    return (Path(path) / "config.json").is_file()


def weight_files(model_dir: Path) -> list[Path]:
    return [p for pattern in WEIGHT_PATTERNS for p in Path(model_dir).glob(pattern)]


# ---------------------------------------------------------------------------------------------
# friendbot.json


def read_info(model_dir: Path) -> dict[str, Any]:
    """friendbot.json of a model directory, checked field by field ({} when there is none).

    The one reader of that file: a file that exists but is not a valid record is an error,
    never silently an empty dict (which would serve the model with default lengths).
    """
    path = Path(model_dir) / INFO_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not valid JSON ({first_line(exc)})") from exc
    problem = info_problem(info)
    if problem:
        raise InputError(f"{path}: {problem}")
    return info


def write_info(model_dir: Path, info: dict[str, Any]) -> None:
    """Write friendbot.json, stamped with ``INFO_FORMAT``; refuse a record readers would refuse."""
    record = {"format": INFO_FORMAT, **info}
    problem = info_problem(record)
    if problem:
        raise ValueError(f"{INFO_FILE}: {problem}")  # a bug in the writer, not user input
    text = json.dumps(record, indent=2) + "\n"
    (Path(model_dir) / INFO_FILE).write_text(text, encoding="utf-8")


def info_problem(info: Any) -> str | None:
    """What is wrong with a friendbot.json record (the fields readers rely on), or None."""
    if not isinstance(info, dict):
        return "expected a JSON object"
    fmt = info.get("format")
    if not _is_int(fmt):
        return f'no format number (expected "format": {INFO_FORMAT})'
    if fmt > INFO_FORMAT:
        return f"format {fmt} is newer than this friendbot reads ({INFO_FORMAT}): upgrade friendbot"
    if fmt < 1:
        return f"format {fmt}: not a friendbot.json format"
    if info.get("task") not in TASKS:
        return f"task {info.get('task')!r}: expected one of {', '.join(TASKS)}"
    for key in ("max_source_length", "max_target_length"):
        value = info.get(key)
        if not (_is_int(value) and value > 0):
            return f"{key} {value!r}: expected a positive whole number of tokens"
    speakers = info.get("speakers", [])
    if not (isinstance(speakers, list) and all(isinstance(s, str) for s in speakers)):
        return "speakers: expected a list of names"
    base = info.get("base_model")
    if base is not None and not isinstance(base, str):
        return f"base_model {base!r}: expected a hub id or a directory"
    if not isinstance(info.get("metrics", {}), dict):
        return "metrics: expected an object"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------
# Config, weights, tokenizer


def _embedding_rows(path: Path) -> int:
    """config.json's ``vocab_size``: the rows of the model's token embedding."""
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{config_file}: not valid JSON ({first_line(exc)})") from exc
    rows = config.get("vocab_size") if isinstance(config, dict) else None
    if not (_is_int(rows) and rows > 0):
        raise InputError(f"{config_file}: no vocab_size (not a seq2seq model's config)")
    return rows


def _check_weight_headers(path: Path) -> None:
    """Read each safetensors header: a truncated or foreign file fails here, in milliseconds."""
    from safetensors import SafetensorError, safe_open

    for weights in path.glob("*.safetensors"):
        if weights.name.startswith("adapter_"):
            continue
        try:
            with safe_open(str(weights), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError, ValueError) as exc:
            reason = first_line(exc)
            raise InputError(f"{weights}: cannot load the model weights ({reason})") from exc


def _load_tokenizer(path: Path, rows: int, shown: Path) -> PreTrainedTokenizerBase:
    """The directory's tokenizer, refused when its vocabulary is missing or does not fit."""
    from transformers import AutoTokenizer

    if not any((path / name).is_file() for name in VOCABULARY_FILES):
        raise InputError(
            f"{shown}: no tokenizer vocabulary (tokenizer.json or spiece.model); "
            "copy the tokenizer files from the model it was trained from"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # any broken tokenizer file: each library raises its own type
        raise InputError(f"{shown}: cannot load the tokenizer ({first_line(exc)})") from exc
    size = len(tokenizer)
    if size > rows or size < rows - EMBEDDING_SLACK:
        raise InputError(
            f"{shown}: the tokenizer has {size} tokens but the model {rows} embedding rows "
            "(config.json vocab_size): the tokenizer files belong to another model"
        )
    return tokenizer


# ---------------------------------------------------------------------------------------------
# CTranslate2 conversion


def ct2_problem(model_dir: Path) -> str | None:
    """Why ``model_dir/ct2`` cannot serve this model, or None when it can.

    A conversion older than the weights would silently serve the previous model after
    retraining, so it counts as missing.
    """
    model_dir = Path(model_dir)
    model_bin = model_dir / CT2_DIRNAME / "model.bin"
    if not model_bin.is_file():
        return "no CTranslate2 conversion (run friendbot export-ct2)"
    try:
        import ctranslate2  # noqa: F401
    except ImportError as exc:
        return f"ctranslate2 does not import ({first_line(exc)})"
    newest_weights = max(p.stat().st_mtime_ns for p in weight_files(model_dir))
    if model_bin.stat().st_mtime_ns < newest_weights:
        return "conversion is older than the model weights (rerun friendbot export-ct2)"
    return None


def read_export_meta(ct2_dir: Path) -> dict[str, Any]:
    """What export-ct2 recorded; {} for a conversion made by hand (int8 assumed)."""
    try:
        meta = json.loads((Path(ct2_dir) / EXPORT_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


# ---------------------------------------------------------------------------------------------
# The models folder: current and previous


def current_link(models_dir: Path) -> Path:
    """Path of the pointer to the model in service."""
    return Path(models_dir) / CURRENT


def previous_link(models_dir: Path) -> Path:
    """Path of the pointer to the model that ``current`` replaced."""
    return Path(models_dir) / PREVIOUS


def resolve_current(models_dir: Path) -> Path | None:
    """The model directory in service, or None when nothing has been promoted yet."""
    link = current_link(models_dir)
    return link.resolve() if link.exists() else None


def resolve_previous(models_dir: Path) -> Path | None:
    """The previously served model directory, or None (nothing promoted over it yet)."""
    link = previous_link(models_dir)
    return link.resolve() if link.exists() else None


def set_current(models_dir: Path, target: Path) -> None:
    """Point ``models_dir/current`` at ``target`` atomically (``previous`` is left alone)."""
    _swap_link(models_dir, CURRENT, target)


def promote(models_dir: Path, candidate: Path) -> Path | None:
    """Serve ``candidate``; the model it replaces becomes ``previous``. Returns that one.

    ``previous`` is switched first: a crash between the two renames leaves the old model
    serving and still reachable, never a pointer to nothing.
    """
    old = resolve_current(models_dir)
    if old is not None and old != Path(candidate).resolve():
        _swap_link(models_dir, PREVIOUS, old)
    set_current(models_dir, candidate)
    return old


def rollback(models_dir: Path, target: Path | None = None) -> tuple[Path | None, Path]:
    """Serve ``target`` (default: ``previous``) again; the model it replaces becomes previous.

    Rolling back twice rolls forward again. Returns (replaced, now served).
    """
    target = rollback_target(models_dir, target)
    old = resolve_current(models_dir)
    promote(models_dir, target)
    return old, target


def rollback_target(models_dir: Path, target: Path | None = None) -> Path:
    """What ``rollback`` would serve, or an InputError saying why it cannot.

    The target must pass ``validate`` as a chat model: rolling back to a broken directory
    would take the bot down. Separate from ``rollback`` so the command can refuse before it
    opens the database or takes a lock (a refused command creates nothing).
    """
    models_dir = Path(models_dir)
    if target is None:
        target = resolve_previous(models_dir)
        if target is None:
            raise InputError(f"{previous_link(models_dir)}: no previous model to roll back to")
    try:
        target = validate(Path(target)).path
    except InputError as exc:
        raise InputError(f"{exc}; nothing was changed") from exc
    if resolve_current(models_dir) == target:
        raise InputError(f"{target}: already the model in service")
    return target


def _swap_link(models_dir: Path, name: str, target: Path) -> None:
    """Replace symlink ``models_dir/name`` by one to ``target`` in one rename.

    The link is relative, so the models folder can be moved or mounted elsewhere whole.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = models_dir / f".{name}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(Path(target).resolve(), models_dir.resolve()))
    os.replace(tmp, models_dir / name)
