"""A small scorer of replies the group liked against replies it disliked (issue 14).

The same features as the voice classifier (training.model.imitation): character 2-4-grams
within words, case kept, since spelling, punctuation, emoji and casing are what a short chat
message is made of. A logistic regression on them says how likely a reply is to be liked; the
bot adds that probability to a candidate's score when it picks the best of k.

Stored as plain JSON (``feedback_scorer.json`` in the model directory: the n-gram weights and
the intercept), never a pickle: loading a model directory must not run code, and scoring is a
dictionary lookup per n-gram, so the bot needs neither scikit-learn nor any time to speak of.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCORER_FILE = "feedback_scorer.json"
FORMAT = 1
NGRAMS = (2, 4)
MIN_PER_CLASS = 3
"""Fewer liked (or disliked) replies than this: no scorer, it would learn noise."""
MAX_FEATURES = 50_000
_SPACE = re.compile(r"\s+")


def char_ngrams(text: str, lo: int = NGRAMS[0], hi: int = NGRAMS[1]) -> set[str]:
    """Character n-grams of each word padded with spaces (scikit-learn's ``char_wb``)."""
    grams: set[str] = set()
    for word in _SPACE.sub(" ", text).split():
        padded = f" {word} "
        for n in range(lo, hi + 1):
            grams.update(padded[i : i + n] for i in range(len(padded) - n + 1))
    return grams


def features(text: str) -> dict[str, float]:
    """Binary n-gram presence, L2-normalised (so a long reply does not win on length)."""
    grams = char_ngrams(text)
    if not grams:
        return {}
    value = 1.0 / math.sqrt(len(grams))
    return dict.fromkeys(grams, value)


@dataclass(frozen=True)
class FeedbackScorer:
    """P(liked) of a reply text from n-gram weights; 0.5 means "no idea"."""

    weights: dict[str, float]
    intercept: float
    info: dict[str, Any] = field(default_factory=dict)

    def score(self, texts: Sequence[str]) -> list[float]:
        """Probability that the group likes each text (an empty text gets the prior)."""
        out = []
        for text in texts:
            z = self.intercept + sum(
                value * self.weights.get(gram, 0.0) for gram, value in features(text).items()
            )
            out.append(1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z)))))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": f"char_wb {NGRAMS[0]}-{NGRAMS[1]} binary, l2-normalised",
            "intercept": self.intercept,
            "weights": self.weights,
            "info": self.info,
        }


def fit(texts: Sequence[str], liked: Sequence[bool], seed: int = 0) -> FeedbackScorer | None:
    """Fit on reply texts and whether the group liked them; None when either side has fewer
    than ``MIN_PER_CLASS`` non-empty texts (balanced class weights: a group that reacts
    mostly with 👍 must not make every reply look liked)."""
    pairs = [(t, bool(y)) for t, y in zip(texts, liked, strict=True) if t.strip()]
    n_liked = sum(y for _, y in pairs)
    n_disliked = len(pairs) - n_liked
    if min(n_liked, n_disliked) < MIN_PER_CLASS:
        return None
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = DictVectorizer()
    matrix = vectorizer.fit_transform([features(t) for t, _ in pairs])
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000, random_state=seed)
    model.fit(matrix, [int(y) for _, y in pairs])
    coefs = model.coef_[0]
    names = vectorizer.get_feature_names_out()
    ranked = sorted(
        ((str(n), float(c)) for n, c in zip(names, coefs, strict=True) if abs(c) > 1e-6),
        key=lambda item: -abs(item[1]),
    )[:MAX_FEATURES]
    info = {"liked": n_liked, "disliked": n_disliked}
    return FeedbackScorer(dict(ranked), float(model.intercept_[0]), info)


def save(scorer: FeedbackScorer, model_dir: Path) -> Path:
    """Write ``model_dir/feedback_scorer.json`` (UTF-8 JSON: emoji n-grams kept readable)."""
    path = Path(model_dir) / SCORER_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(scorer.to_json(), ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


def load(model_dir: Path) -> FeedbackScorer | None:
    """The scorer saved with a model, or None when it has none.

    Raises ValueError for a file that is not a scorer this version wrote.
    """
    path = Path(model_dir) / SCORER_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a feedback scorer of format {FORMAT}")
    weights = {str(k): float(v) for k, v in dict(data["weights"]).items()}
    return FeedbackScorer(weights, float(data["intercept"]), dict(data.get("info") or {}))
