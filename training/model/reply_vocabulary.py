"""The pieces a chat model replies with, and the CTranslate2 vocabulary map built from them.

A decoding step ends with the output projection over the whole vocabulary: 32,128 rows for
FLAN-T5, a real share of each step (BENCHMARKS.md, "Reply latency"). A chat model never needs
most of them: its replies are made of the pieces its chat was written in. So ``friendbot
train`` saves the token ids that occur in the training examples (sources, alternative sources
and targets, as tokenized for training) next to the weights (``reply_vocabulary.json``), and
``friendbot export-ct2`` turns them into CTranslate2's vocabulary map (``ct2/vmap.txt``). The
bot's CTranslate2 backend then decodes over those rows only (``use_vmap``).

The map keeps replies able to say what the chat says now: besides the always-allowed line (the
chat's pieces and the special tokens), every other piece maps to itself, so a piece that occurs
in the prompt (a new name, a new word) is allowed for that reply. What the restriction changes:
a piece that occurred nowhere in the training data and is not in the prompt cannot be produced,
and the candidates' scores are normalised over the allowed rows (best-of-k only compares the
candidates of one call, so the ranking is unaffected). The HF backend always uses the whole
vocabulary.

File format of the map (CTranslate2's "dynamic vocabulary reduction"): one rule a line,
``source n-gram<TAB>target pieces``, pieces separated by single spaces; an empty source side
lists the target pieces that are always allowed. A piece holding whitespace cannot be written
there, so for such a vocabulary no map is written and replies use every row, as before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from training.model import scorer_files

log = logging.getLogger(__name__)

VOCABULARY_FILE = "reply_vocabulary.json"  # in the model directory, written by friendbot train
VMAP_FILE = "vmap.txt"  # in ct2/, the name CTranslate2 looks for
FORMAT = 1
CT2_VOCABULARIES = ("shared_vocabulary.json", "target_vocabulary.json")
SEPARATORS = " \t\n\r"  # what CTranslate2's map reader splits on (lines, sides, pieces)


def save(token_ids: Iterable[int], special_ids: Iterable[int], model_dir: Path) -> Path:
    """Write ``model_dir/reply_vocabulary.json``: the ids seen in training, plus the special
    tokens (pad, eos, unk: a reply must be able to end)."""
    ids = sorted({int(i) for i in token_ids} | {int(i) for i in special_ids if i is not None})
    data = {"format": FORMAT, "token_ids": ids}
    return scorer_files.save(data, Path(model_dir) / VOCABULARY_FILE)


def load(model_dir: Path) -> list[int] | None:
    """The ids saved with a model, or None when it has none (trained before this file existed).

    Raises ValueError, naming the file, for one that is not a reply vocabulary of this format.
    """
    path = Path(model_dir) / VOCABULARY_FILE
    data = scorer_files.load(path, FORMAT, "reply vocabulary")
    if data is None:
        return None
    ids = data.get("token_ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise ValueError(f"{path}: token_ids must be a list of non-negative integers")
    return ids


def write_vmap(ct2_dir: Path, allowed_ids: Iterable[int]) -> Path | None:
    """Write ``ct2_dir/vmap.txt`` for ``allowed_ids``; None (nothing written) when the converted
    vocabulary cannot be expressed in the map's format.

    The pieces are read from the conversion's own vocabulary file, so the ids index exactly
    what CTranslate2 decodes with. Ids beyond it (none, for a model trained with its tokenizer)
    are ignored.
    """
    pieces = _ct2_pieces(ct2_dir)
    if pieces is None:
        log.warning("%s: no vocabulary file; replies use the whole vocabulary", ct2_dir)
        return None
    unwritable = [p for p in pieces if not p or any(c in p for c in SEPARATORS)]
    if unwritable or len(set(pieces)) != len(pieces):
        log.warning(
            "%s: %s; replies use the whole vocabulary",
            ct2_dir,
            f"{len(unwritable)} piece(s) hold whitespace"
            if unwritable
            else "the vocabulary repeats a piece",
        )
        return None
    allowed = sorted({i for i in allowed_ids if 0 <= i < len(pieces)})
    if not allowed:
        return None
    kept = set(allowed)
    lines = ["\t" + " ".join(pieces[i] for i in allowed)]
    # any other piece is allowed in a reply whose prompt holds it
    lines += [f"{p}\t{p}" for i, p in enumerate(pieces) if i not in kept]
    path = Path(ct2_dir) / VMAP_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def always_allowed(ct2_dir: Path) -> int | None:
    """How many pieces the map of ``ct2_dir`` always allows; None when it has no map.

    The engine needs it because CTranslate2 refuses a top-k larger than the rows it decodes
    over, and with a map that is the allowed rows, not the vocabulary.
    """
    try:
        with (Path(ct2_dir) / VMAP_FILE).open(encoding="utf-8") as f:
            first = f.readline()
    except OSError:
        return None
    if not first.startswith("\t"):
        return None
    return len(first.split())


def _ct2_pieces(ct2_dir: Path) -> list[str] | None:
    for name in CT2_VOCABULARIES:
        try:
            pieces = json.loads((Path(ct2_dir) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(pieces, list) and all(isinstance(p, str) for p in pieces):
            return pieces
    return None
