"""A small scorer of replies the group liked against replies it disliked (issue 14).

The same features as the voice scorer (training.model.scorer_files): character 2-4-grams
within words, case kept, since spelling, punctuation, emoji and casing are what a short chat
message is made of. A logistic regression on them says how likely a reply is to be liked; the
bot adds that probability to a candidate's score when it picks the best of k.

Stored as plain JSON (``feedback_scorer.json`` in the model directory: the n-gram weights and
the intercept), never a pickle: loading a model directory must not run code, and scoring is a
dictionary lookup per n-gram, so the bot needs neither scikit-learn nor any time to speak of.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.model import scorer_files
from training.model.scorer_files import NGRAMS, features

SCORER_FILE = "feedback_scorer.json"
FORMAT = 1
MIN_PER_CLASS = 3
"""Fewer liked (or disliked) replies than this: no scorer, it would learn noise."""
MAX_FEATURES = 50_000


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
            "features": f"char_wb {NGRAMS[0]}-{NGRAMS[-1]} binary, l2-normalised",
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
    """Write ``model_dir/feedback_scorer.json`` (training.model.scorer_files)."""
    return scorer_files.save(scorer.to_json(), Path(model_dir) / SCORER_FILE)


def load(model_dir: Path) -> FeedbackScorer | None:
    """The scorer saved with a model, or None when it has none.

    Raises ValueError for a file that is not a scorer this version wrote.
    """
    data = scorer_files.load(Path(model_dir) / SCORER_FILE, FORMAT, "feedback scorer")
    if data is None:
        return None
    weights = {str(k): float(v) for k, v in dict(data["weights"]).items()}
    return FeedbackScorer(weights, float(data["intercept"]), dict(data.get("info") or {}))
