"""What the two small text scorers saved with a chat model share: features and file format.

The voice scorer (training.model.voice_scorer: who wrote a reply) and the feedback scorer
(training.model.feedback_scorer: would the group like it) both score a candidate reply inside
best-of-k, so both read it the same cheap way, character 2-4-grams within words, present or
not, L2-normalised; and both are stored next to the weights as plain JSON with a format
number, never a pickle: loading a model directory must not run code, and the bot needs no
scikit-learn to score.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from training.output_dirs import write_durably

NGRAMS = (2, 3, 4)
# what loading a damaged scorer file raises (the loaders below and each scorer's own checks):
# the bot logs and ignores such a file, ``evaluate`` refuses it
DAMAGED = (OSError, ValueError, KeyError, TypeError)


def char_ngrams(text: str) -> set[str]:
    """Character 2-4-grams of each word padded with spaces (as scikit-learn's ``char_wb``
    for words of two letters or more), in one comprehension: this runs for every candidate."""
    return {
        padded[i : i + n]
        for padded in (f" {word} " for word in text.split())
        for n in NGRAMS
        for i in range(len(padded) - n + 1)
    }


def features(text: str) -> dict[str, float]:
    """Binary n-gram presence, L2-normalised (so a long reply does not win on length)."""
    grams = char_ngrams(text)
    return dict.fromkeys(grams, 1.0 / math.sqrt(len(grams))) if grams else {}


def save(data: dict[str, Any], path: Path) -> Path:
    """Write ``path`` durably (a crash leaves the old file or the new one, never half of
    one); UTF-8 JSON, so emoji n-grams stay readable."""
    write_durably(path, json.dumps(data, ensure_ascii=False))
    return path


def load(path: Path, fmt: int, what: str) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file.

    Raises ValueError for a file that is not a ``what`` of format ``fmt`` (the bot logs and
    ignores it; ``evaluate`` refuses it).
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ValueError(f"{path}: not a {what} of format {fmt}")
    return data
