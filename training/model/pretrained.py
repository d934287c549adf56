"""Where training starts: the base model and its tokenizer (``tiny``, a directory, or a hub id).

A hub id is read from the local Hugging Face cache first. Only when it is not there is the
hub asked, and only after a 2-second check that the hub answers at all: offline, the hub
client retried for about 50 s and printed some 20 duplicated warnings before failing, where
one line at once says the same. A path that does not exist is "no such directory", never
"cannot load this hub id".
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from training.errors import InputError, first_line
from training.model.config import TINY

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from training.model.tasks import TaskData

HUB_TIMEOUT_S = 2.0
# owner/name as the hub spells ids; anything else can only be meant as a directory
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
T = TypeVar("T")


def load_tokenizer(
    base_model: str,
    data: TaskData,
    work: Path,
    accelerator: Accelerator,
    *,
    resume: bool,
    tiny_vocab: int,
) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, or for ``tiny`` one trained on the training text.

    The tiny tokenizer is trained once by the main process and saved in the work directory,
    so every process (and a resumed run) uses the very same vocabulary.
    """
    from transformers import AutoTokenizer

    if base_model != TINY:
        return from_base(AutoTokenizer.from_pretrained, base_model)
    saved = work / "tokenizer"
    if not (resume and saved.is_dir()):
        if accelerator.is_main_process:
            from training.model.tiny import train_tokenizer

            texts = [t for e in data.train for t in (e.source, e.target)]
            tokenizer = train_tokenizer(texts, vocab_size=tiny_vocab)
            tmp = work / "tokenizer.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tokenizer.save_pretrained(tmp)
            shutil.rmtree(saved, ignore_errors=True)
            os.replace(tmp, saved)
        accelerator.wait_for_everyone()
    return AutoTokenizer.from_pretrained(saved)


def load_model(
    base_model: str, tokenizer: PreTrainedTokenizerBase, *, seed: int, dropout: float | None
) -> PreTrainedModel:
    """The tiny T5 built from its shape, or any seq2seq checkpoint; dropout overridden if asked."""
    from transformers import AutoModelForSeq2SeqLM

    if base_model == TINY:
        from training.model.tiny import build_model

        model = build_model(tokenizer, seed=seed)
        # transformers 5 always ties T5's lm_head to the input embeddings (std 1 at init);
        # unscaled, the first logits are ~sqrt(d_model) too large (initial loss ~40). Scale
        # the decoder output by 1/sqrt(d_model) as the original tied T5 did: the config keeps
        # it, and CTranslate2's converter applies the same scale to tied models.
        model.config.scale_decoder_outputs = True
    else:
        model = from_base(AutoModelForSeq2SeqLM.from_pretrained, base_model)
    if dropout is not None:
        _set_dropout(model, dropout)
    if model.config.vocab_size < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return model


def add_lora(
    model: PreTrainedModel, rank: int, alpha: int, dropout: float, targets: str
) -> PreTrainedModel:
    """Wrap the model with LoRA adapters on ``targets`` (comma-separated): only they train."""
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=[m.strip() for m in targets.split(",") if m.strip()],
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise InputError(f"--lora-targets {targets}: {exc}") from exc


def from_base(loader: Callable[..., T], base_model: str) -> T:
    """``loader(base_model)`` (a ``from_pretrained``), refusing in one line what cannot load.

    A directory is used as it is. A hub id is tried from the local cache first; only if it is
    not (completely) there, and the hub answers, is it downloaded.
    """
    path = Path(base_model).expanduser()
    if path.exists() or not _HUB_ID.match(base_model):
        return _from_directory(loader, base_model, path)
    try:
        return loader(base_model, local_files_only=True)
    except (OSError, ValueError):
        pass  # not cached (or only partly): the hub must have it
    endpoint = hub_endpoint()
    if not hub_reachable(endpoint):
        raise InputError(
            f"--base-model {base_model}: no such directory, and as a hub id it is not in the "
            f"local Hugging Face cache while {endpoint} cannot be reached (offline?); "
            "download it where there is network, or pass a local model directory"
        )
    try:
        return loader(base_model)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"--base-model {base_model}: cannot load this hub id: {first_line(exc)}"
        ) from exc


def _from_directory(loader: Callable[..., T], base_model: str, path: Path) -> T:
    if not path.exists():
        raise InputError(f"--base-model {base_model}: no such directory")
    if not path.is_dir():
        raise InputError(f"--base-model {base_model}: not a directory")
    if not (path / "config.json").is_file():
        raise InputError(f"--base-model {base_model}: no config.json (not a model directory)")
    try:
        return loader(str(path), local_files_only=True)
    except Exception as exc:  # a broken directory: each library raises its own type
        raise InputError(
            f"--base-model {base_model}: cannot load this directory: {first_line(exc)}"
        ) from exc


def hub_endpoint() -> str:
    """The hub's address as the hub client uses it (``HF_ENDPOINT`` or huggingface.co)."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


@functools.cache
def hub_reachable(endpoint: str) -> bool:
    """Whether the hub accepts a connection within HUB_TIMEOUT_S (never in offline mode)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return False
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=HUB_TIMEOUT_S):
            return True
    except OSError:  # no DNS, refused, timed out: all mean "not now"
        return False


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _set_dropout(model: Any, rate: float) -> None:
    """Override every dropout: layers, attention's functional dropout, and the config."""
    import torch

    model.config.dropout_rate = rate
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = rate
        elif isinstance(getattr(module, "dropout", None), float):
            module.dropout = rate
