"""``friendbot export-ct2``: convert a model directory for CTranslate2 (fast CPU replies).

Conversion is a training-side job (it writes into a model directory and runs after retraining),
so it lives here; the bot only loads what it wrote (bot/engine.py).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from training.errors import InputError, first_line
from training.model import reply_vocabulary
from training.model.model_dir import CT2_DIRNAME, EXPORT_META, TOKENIZER_FILES, validate
from training.output_dirs import CT2_KIND, check_replaceable, new_work_dir, publish, stamp

log = logging.getLogger(__name__)

QUANTIZATIONS = (
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
)


def export_ct2(model_dir: Path, quantization: str = "int8", *, vocabulary_map: bool = True) -> Path:
    """Convert ``model_dir`` for CTranslate2 into ``model_dir/ct2``, never half-written.

    The conversion goes to a temporary sibling directory first and is renamed into place only
    when complete, so a crash leaves the previous ``ct2/`` (or none) and a running bot never
    loads a partial model. Any usable model directory converts (task models too). Quantizing
    to int8 is what makes CPU replies fast; the tokenizer files are copied along so ``ct2/``
    is self-contained. With ``vocabulary_map`` and a ``reply_vocabulary.json`` saved by
    ``friendbot train``, ``ct2/vmap.txt`` restricts replies to the chat's pieces (faster
    decoding steps: training.model.reply_vocabulary).
    """
    if quantization not in QUANTIZATIONS:
        raise InputError(
            f"{quantization}: unknown quantization (choose one of {', '.join(QUANTIZATIONS)})"
        )
    # A broken directory (no tokenizer vocabulary, mismatched embedding) would convert fine
    # and serve nonsense fast: refuse it here as every reader does.
    model_dir = validate(Path(model_dir), chat=False).path
    try:
        reply_ids = reply_vocabulary.load(model_dir) if vocabulary_map else None
    except ValueError as exc:
        raise InputError(f"{exc} (--no-vocabulary-map converts without it)") from exc
    import ctranslate2
    import transformers
    from ctranslate2.converters import TransformersConverter

    copy_files = [name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    target = model_dir / CT2_DIRNAME
    check_replaceable(target, CT2_KIND, "a `friendbot export-ct2` conversion")
    tmp = new_work_dir(target, CT2_KIND)
    try:
        converter = TransformersConverter(str(model_dir), copy_files=copy_files)
        try:
            # the converter insists on creating its output directory itself
            converter.convert(str(tmp / CT2_DIRNAME), quantization=quantization, force=True)
        except (OSError, ValueError, KeyError) as exc:
            reason = first_line(exc)
            raise InputError(f"{model_dir}: cannot convert for CTranslate2 ({reason})") from exc
        meta = {
            "quantization": quantization,
            "ctranslate2": ctranslate2.__version__,
            "transformers": transformers.__version__,
        }
        converted = tmp / CT2_DIRNAME
        vmap = reply_vocabulary.write_vmap(converted, reply_ids) if reply_ids else None
        meta["vocabulary_map"] = reply_vocabulary.always_allowed(converted) if vmap else None
        (converted / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        stamp(converted, CT2_KIND)
        publish(converted, target, CT2_KIND)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "wrote %s (%s; %s)",
        target,
        quantization,
        f"replies over {meta['vocabulary_map']} pieces" if vmap else "whole vocabulary",
    )
    return target
