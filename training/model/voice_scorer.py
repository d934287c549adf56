"""Who wrote a reply, among the chat's regulars: the voice term of best-of-k (issue 12 §4).

When the bot speaks as a friend it samples k replies and sends the best-scored one
(training.model.rerank). This classifier says how likely it is that the persona wrote each
candidate, so among replies the model finds about equally likely, the one in the friend's voice
wins. It is fit on the training split's messages of the most active speakers when the model is
trained, and saved next to the weights (``voice_scorer.json``), so the bot and ``friendbot
evaluate`` rank with the very same numbers.

Features are the feedback scorer's (training.model.scorer_files): character 2-4-grams within
words, case kept, present or not, L2-normalised; the model is a multinomial logistic regression
with balanced classes (a reply that sounds like nobody in particular gets about 1/N for every
friend, not the most active friend's share). Stored as plain JSON, one weight per speaker for
each kept n-gram, never a pickle: loading a model directory must not run code, and scoring is a
dictionary lookup per n-gram (tens of microseconds per candidate, BENCHMARKS.md) without
scikit-learn in the bot's process.

Note for reading ``evaluate``'s voice: the judging classifier (training.model.imitation) is fit
on the same messages with similar features, so reranking with this scorer flatters it; the
report also gives voice under a judge on word n-grams (``imitation.fit_word_judge``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.model import scorer_files
from training.model.scorer_files import char_ngrams, features

SCORER_FILE = "voice_scorer.json"
FORMAT = 1
TOP_SPEAKERS = 8
MIN_MESSAGES = 20
MAX_PER_SPEAKER = 1000
MAX_FEATURES = 30_000
MIN_DF = 2
C = 1.0


@dataclass(frozen=True)
class VoiceScorer:
    """P(speaker wrote text) for the speakers it knows; multinomial logistic regression."""

    speakers: tuple[str, ...]
    weights: dict[str, list[float]]
    intercepts: list[float]
    info: dict[str, Any] = field(default_factory=dict)
    _rows: dict[str, int] = field(init=False, repr=False, compare=False)
    _matrix: Any = field(init=False, repr=False, compare=False)
    _intercepts: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # one matrix row per n-gram: scoring is a dictionary lookup per n-gram and one numpy
        # sum (a Python loop over grams x speakers took 1.2 ms for a 140-character reply)
        import numpy as np

        object.__setattr__(self, "_rows", {g: i for i, g in enumerate(self.weights)})
        matrix = np.array(list(self.weights.values()), dtype=np.float64)
        object.__setattr__(self, "_matrix", matrix.reshape(len(self.weights), len(self.speakers)))
        object.__setattr__(self, "_intercepts", np.array(self.intercepts, dtype=np.float64))

    def probabilities(self, text: str) -> dict[str, float]:
        """P(each speaker wrote ``text``); an empty text gets the intercepts' prior."""
        probs = self._softmax(text)
        return {name: float(p) for name, p in zip(self.speakers, probs, strict=True)}

    def probability(self, text: str, speaker: str) -> float:
        """P(``speaker`` wrote ``text``); 0 for a speaker it does not know (every candidate
        then scores the same, so the voice term orders nothing)."""
        if speaker not in self.speakers:
            return 0.0
        return float(self._softmax(text)[self.speakers.index(speaker)])

    def _softmax(self, text: str) -> Any:
        import numpy as np

        grams = char_ngrams(text)
        found = [i for i in map(self._rows.get, grams) if i is not None]
        z = self._intercepts
        if found:
            z = z + self._matrix[found].sum(axis=0) * (1.0 / math.sqrt(len(grams)))
        exp = np.exp(z - z.max())
        return exp / exp.sum()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": "char_wb 2-4 binary, l2-normalised",
            "speakers": list(self.speakers),
            "intercepts": self.intercepts,
            "weights": self.weights,
            "info": self.info,
        }


def top_speakers(
    senders: Sequence[str], top_n: int = TOP_SPEAKERS, min_messages: int = MIN_MESSAGES
) -> list[str]:
    """The ``top_n`` most active senders with at least ``min_messages`` messages."""
    return [name for name, n in Counter(senders).most_common() if n >= min_messages][:top_n]


def latest_messages(
    texts: Sequence[str], senders: Sequence[str], speakers: Sequence[str], per_speaker: int
) -> list[tuple[str, str]]:
    """Each of ``speakers``' latest ``per_speaker`` non-empty messages, newest first, as
    (text, sender): the latest, because the chat goes on after the training split."""
    keep = set(speakers)
    taken: Counter[str] = Counter()
    chosen: list[tuple[str, str]] = []
    for text, sender in reversed(list(zip(texts, senders, strict=True))):
        if sender in keep and text.strip() and taken[sender] < per_speaker:
            taken[sender] += 1
            chosen.append((text, sender))
    return chosen


def fit(
    texts: Sequence[str],
    senders: Sequence[str],
    speakers: Sequence[str] | None = None,
    per_speaker: int = MAX_PER_SPEAKER,
    seed: int = 0,
) -> VoiceScorer | None:
    """Fit on messages and their senders (each speaker's latest ``per_speaker``, since the
    chat goes on after the training split); None with fewer than two speakers to tell apart."""
    chosen_speakers = list(speakers) if speakers is not None else top_speakers(senders)
    chosen = latest_messages(texts, senders, chosen_speakers, per_speaker)
    taken = Counter(sender for _, sender in chosen)
    names = [s for s in chosen_speakers if taken[s]]
    if len(names) < 2:
        return None
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    # n-grams of a single message tell nobody apart and only slow the fit: dropped
    seen = Counter(g for t, _ in chosen for g in char_ngrams(t))
    rows = [{g: v for g, v in features(t).items() if seen[g] >= MIN_DF} for t, _ in chosen]
    vectorizer = DictVectorizer()
    matrix = vectorizer.fit_transform(rows)
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=300, random_state=seed)
    model.fit(matrix, [s for _, s in chosen])
    classes = [str(c) for c in model.classes_]
    coefs = model.coef_ if len(classes) > 2 else _two_class(model.coef_)
    intercepts = (
        model.intercept_ if len(classes) > 2 else _two_class(model.intercept_[None, :])[:, 0]
    )
    order = [classes.index(s) for s in names]
    grams = vectorizer.get_feature_names_out()
    strength = abs(coefs).max(axis=0)
    kept = sorted(range(len(grams)), key=lambda j: -strength[j])[:MAX_FEATURES]
    weights = {
        str(grams[j]): [round(float(coefs[i, j]), 5) for i in order]
        for j in kept
        if strength[j] > 1e-6
    }
    info = {"messages": len(chosen), "per_speaker": {s: taken[s] for s in names}}
    return VoiceScorer(tuple(names), weights, [float(intercepts[i]) for i in order], info)


def _two_class(coef: Any) -> Any:
    """scikit-learn's one row for two classes as two softmax rows (-w/2, +w/2): same odds."""
    import numpy as np

    return np.vstack([-coef[0] / 2, coef[0] / 2])


def save(scorer: VoiceScorer, model_dir: Path) -> Path:
    """Write ``model_dir/voice_scorer.json`` (training.model.scorer_files)."""
    return scorer_files.save(scorer.to_json(), Path(model_dir) / SCORER_FILE)


def load(model_dir: Path) -> VoiceScorer | None:
    """The scorer saved with a model, or None when it has none.

    Raises ValueError for a file that is not a voice scorer this version wrote.
    """
    path = Path(model_dir) / SCORER_FILE
    data = scorer_files.load(path, FORMAT, "voice scorer")
    if data is None:
        return None
    speakers = tuple(str(s) for s in data["speakers"])
    intercepts = [float(v) for v in data["intercepts"]]
    weights = {str(k): [float(v) for v in row] for k, row in dict(data["weights"]).items()}
    if len(intercepts) != len(speakers) or any(len(r) != len(speakers) for r in weights.values()):
        raise ValueError(f"{path}: weights do not match its {len(speakers)} speakers")
    return VoiceScorer(speakers, weights, intercepts, dict(data.get("info") or {}))


def save_for_training(targets: Sequence[str], model_dir: Path) -> Path | None:
    """Fit on a chat model's training targets (``Sender: text``) and save it into
    ``model_dir``; None (nothing written) when fewer than two speakers can be told apart."""
    from training.formatting import parse_turn

    parsed = [parse_turn(t) for t in targets]
    texts = [text for sender, text in parsed if sender]
    senders = [sender for sender, _ in parsed if sender]
    scorer = fit(texts, senders)
    return save(scorer, model_dir) if scorer is not None else None
