"""Who speaks next: a small turn-taking scorer the bot asks before the model writes a word.

The chat model names the next speaker itself (its ``Sender:``), but a tiny model mostly names
the chat's most active member: on real multi-party logs its greedy pick was at or below the
"most frequent speaker" baseline (BENCHMARKS.md, "Imitation on real chats"). Who answers whom
is mostly turn-taking, not language: the last speaker going on, the one before answering back,
someone named in the last line, a pair of people who talk to each other. This scorer ranks
candidates on such features, and the bot then asks the model for a reply *as* the winner (the
persona prompt), so it is a scorer around the model, not a better model.

Candidates for one context: its distinct senders, newest first, plus the training split's
``FREQUENT_CANDIDATES`` most active senders. Each candidate is one row of :func:`features`
(the one place they are defined: fitting, the bot and ``evaluate`` all call it); a binary
logistic regression over those rows (was this candidate the real next sender?) gives a score,
and a softmax over one context's candidates a probability. Fit on the train split's pairs when
a chat model is trained, saved beside the weights as ``next_speaker.json`` (plain JSON read
through training.model.scorer_files, never a pickle; the tables it reads are capped so the
file stays small, ``MAX_FILE_BYTES``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from training.formatting import MEMORY_PREFIX, PERSONA_PREFIX, VOICE_PREFIX, clean_text, parse_turn
from training.model import scorer_files

T = TypeVar("T")
SCORER_FILE = "next_speaker.json"
FORMAT = 1
FREQUENT_CANDIDATES = 10  # the training split's most active senders, always candidates
IDENTITIES = 20  # one-hot features for the most active senders (their own habits)
RANKS = 6  # one-hot rank among the context's distinct senders, newest first
RECENT_LINES = 3  # "named in the last few lines"
MIN_NAME = 3  # shorter names match inside too many words to count as a mention
MAX_SPEAKERS = 1000  # prior counts kept (the rest count as never seen)
MAX_FOLLOWS = 4000  # (last sender, next sender) counts kept, the most frequent
SMOOTHING = 0.1
C = 1.0
MAX_ITER = 2000
PRIOR_BYTES = 96 * 1024  # bytes of names kept in the prior table, at most
FOLLOWS_BYTES = 320 * 1024  # ... and in the follows table
JSON_OVERHEAD = 16  # quotes, colon, count, comma per entry: generous, so the file cap holds
MAX_FILE_BYTES = 512 * 1024  # what the caps above keep the saved file under
FEATURE_NAMES: tuple[str, ...] = (
    "is_last_speaker",
    *(f"recent_rank_{k}" for k in range(RANKS)),
    "not_recent",
    "share_of_lines",
    "named_in_last_line",
    "addressed_by_last_line",
    f"named_in_last_{RECENT_LINES}_lines",
    "named_in_context",
    "named_last_speaker",
    "log_prior",
    "asked_last_question",
    "log_follows_last_speaker",
    *(f"is_top_{k}" for k in range(IDENTITIES)),
)
_SKIP = (MEMORY_PREFIX, VOICE_PREFIX, PERSONA_PREFIX)


def context_turns(lines: Iterable[str]) -> list[tuple[str, str]]:
    """(sender, casefolded text) of the ``Sender: text`` lines among ``lines``, oldest first:
    memory, voice and persona lines and lines without a sender are not turns."""
    turns = []
    for line in lines:
        if not line or line.startswith(_SKIP):
            continue
        sender, text = parse_turn(line)
        if sender:
            turns.append((sender, text.casefold()))
    return turns


@dataclass(frozen=True)
class Tables:
    """What the features read from the training split: counts, capped (``MAX_*``)."""

    prior: dict[str, int]  # responses per sender
    total: int  # responses in all
    follows: dict[str, dict[str, int]]  # last context sender -> next sender -> pairs
    after: dict[str, int]  # last context sender -> pairs
    frequent: tuple[str, ...]  # the FREQUENT_CANDIDATES most active senders
    identities: tuple[str, ...]  # the IDENTITIES most active senders

    @classmethod
    def count(cls, pairs: Sequence[tuple[Sequence[tuple[str, str]], str]]) -> Tables:
        """Counts over (turns, real next sender) pairs, the tails cut to the caps."""
        senders = Counter(sender for _, sender in pairs)
        ranked = _within(
            [name for name, _ in senders.most_common()], MAX_SPEAKERS, PRIOR_BYTES, _utf8
        )
        after = Counter(turns[-1][0] for turns, _ in pairs if turns)
        follows = Counter((turns[-1][0], sender) for turns, sender in pairs if turns)
        nested: dict[str, dict[str, int]] = {}
        kept = _within(
            [pair for pair, _ in follows.most_common()],
            MAX_FOLLOWS,
            FOLLOWS_BYTES,
            lambda pair: _utf8(pair[0]) + _utf8(pair[1]),
        )
        for last, nxt in kept:
            nested.setdefault(last, {})[nxt] = follows[(last, nxt)]
        return cls(
            prior={name: senders[name] for name in ranked},
            total=sum(senders.values()),
            follows=nested,
            after={last: after[last] for last in nested},
            frequent=tuple(ranked[:FREQUENT_CANDIDATES]),
            identities=tuple(ranked[:IDENTITIES]),
        )


def _within(items: list[T], most: int, budget: int, size: Callable[[T], int]) -> list[T]:
    """The first ``items`` while at most ``most`` of them and their names' bytes (plus JSON
    overhead) fit in ``budget``: long or emoji display names cannot blow up the saved file."""
    kept: list[T] = []
    for item in items[:most]:
        budget -= size(item) + JSON_OVERHEAD
        if budget < 0:
            break
        kept.append(item)
    return kept


def _utf8(name: str) -> int:
    return len(name.encode("utf-8"))


def candidates(turns: Sequence[tuple[str, str]], tables: Tables) -> list[str]:
    """The context's distinct senders, newest first, then the most active senders."""
    return list(dict.fromkeys([*(s for s, _ in reversed(turns)), *tables.frequent]))


def features(turns: Sequence[tuple[str, str]], tables: Tables) -> dict[str, list[float]]:
    """One row of ``FEATURE_NAMES`` values per candidate: the one definition of the features,
    for fitting, for the bot and for ``evaluate``."""
    recent = list(dict.fromkeys(s for s, _ in reversed(turns)))
    lines = Counter(s for s, _ in turns)
    last, last_text = turns[-1] if turns else (None, "")
    question = last_text.rstrip().endswith("?")
    texts = [t for _, t in reversed(turns)]  # newest first
    follows = tables.follows.get(last or "", {})
    after = tables.after.get(last or "", 0)
    last_key = (last or "").casefold()
    rows = {}
    for name in candidates(turns, tables):
        key = name.casefold()
        rank = recent.index(name) if name in recent else -1
        named = [i for i, text in enumerate(texts) if len(key) >= MIN_NAME and key in text]
        own = next((t for s, t in reversed(turns) if s == name), "")
        rows[name] = [
            float(name == last),
            *(float(rank == k) for k in range(RANKS)),
            float(rank < 0),
            lines[name] / max(1, len(turns)),
            float(bool(named) and named[0] == 0),
            float(len(key) >= MIN_NAME and last_text.lstrip("@ ").startswith(key)),
            float(bool(named) and named[0] < RECENT_LINES),
            float(bool(named)),
            float(len(last_key) >= MIN_NAME and name != last and last_key in own),
            math.log((tables.prior.get(name, 0) + 1) / (tables.total + 1)),
            float(question and name == last),
            math.log((follows.get(name, 0) + SMOOTHING) / (after + 1)),
            *(float(name == top) for top in tables.identities),
            *([0.0] * (IDENTITIES - len(tables.identities))),
        ]
    return rows


@dataclass(frozen=True)
class NextSpeaker:
    """Scores who sends the next message after some context lines."""

    tables: Tables
    weights: tuple[float, ...]
    intercept: float
    info: dict[str, Any] = field(default_factory=dict)

    def probabilities(self, context_lines: Sequence[str]) -> dict[str, float]:
        """P(each candidate sends the next message), best first (a softmax over the
        candidates' scores: they sum to one over the candidates, not over everyone)."""
        rows = features(context_turns(context_lines), self.tables)
        scores = {
            name: self.intercept + sum(w * x for w, x in zip(self.weights, row, strict=True))
            for name, row in rows.items()
        }
        top = max(scores.values())
        exp = {name: math.exp(s - top) for name, s in scores.items()}
        total = sum(exp.values())
        ranked = sorted(exp.items(), key=lambda kv: -kv[1])  # stable: ties keep newest first
        return {name: e / total for name, e in ranked}

    def pick(
        self,
        context_lines: Sequence[str],
        allowed: Collection[str] | None = None,
        avoid: Iterable[str] = (),
    ) -> str | None:
        """The likeliest candidate in ``allowed`` (any when None) and not in ``avoid``, both
        compared without case or extra spaces; None when no candidate qualifies."""
        avoid_keys = {clean_text(a).casefold() for a in avoid}
        allowed_keys = None if allowed is None else {clean_text(a).casefold() for a in allowed}
        for name in self.probabilities(context_lines):
            key = clean_text(name).casefold()
            if key not in avoid_keys and (allowed_keys is None or key in allowed_keys):
                return name
        return None

    def to_json(self) -> dict[str, Any]:
        t = self.tables
        return {
            "format": FORMAT,
            "features": list(FEATURE_NAMES),
            "weights": list(self.weights),
            "intercept": self.intercept,
            "prior": t.prior,
            "total": t.total,
            "follows": t.follows,
            "after": t.after,
            "frequent": list(t.frequent),
            "identities": list(t.identities),
            "info": self.info,
        }


def training_pairs(
    examples: Iterable[tuple[str, str]],
) -> list[tuple[list[tuple[str, str]], str]]:
    """(context turns, real next sender) of (model input, ``Sender: text`` target) pairs,
    as the chat model reads them; targets without a sender are left out."""
    pairs = []
    for source, target in examples:
        sender, _ = parse_turn(target)
        if sender:
            pairs.append((context_turns(source.split("\n")), sender))
    return pairs


def fit(examples: Iterable[tuple[str, str]], seed: int = 0) -> NextSpeaker | None:
    """Fit on (model input, target) pairs; None with fewer than two senders to choose from.

    lbfgs with a fixed seed: the same pairs give the same file.
    """
    pairs = training_pairs(examples)
    tables = Tables.count(pairs)
    if len(tables.prior) < 2:
        return None
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    matrix, labels = [], []
    for turns, sender in pairs:
        for name, row in features(turns, tables).items():
            matrix.append(row)
            labels.append(name == sender)
    if all(labels) or not any(labels):
        return None
    model = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed)
    model.fit(np.array(matrix, dtype=np.float64), np.array(labels))
    weights = tuple(round(float(w), 6) for w in model.coef_[0])
    info = {"pairs": len(pairs), "candidate_rows": len(labels)}
    return NextSpeaker(tables, weights, round(float(model.intercept_[0]), 6), info)


def save(scorer: NextSpeaker, model_dir: Path) -> Path:
    """Write ``model_dir/next_speaker.json`` durably (training.model.scorer_files)."""
    return scorer_files.save(scorer.to_json(), Path(model_dir) / SCORER_FILE)


def load(model_dir: Path) -> NextSpeaker | None:
    """The scorer saved with a model, or None when it has none.

    Raises ValueError naming the file for one that is not a next-speaker scorer this version
    wrote (other features, weights that do not match them).
    """
    path = Path(model_dir) / SCORER_FILE
    data = scorer_files.load(path, FORMAT, "next-speaker scorer")
    if data is None:
        return None
    if list(data.get("features") or []) != list(FEATURE_NAMES):
        raise ValueError(f"{path}: written for other features than this version's")
    weights = tuple(float(w) for w in data["weights"])
    if len(weights) != len(FEATURE_NAMES):
        raise ValueError(f"{path}: {len(weights)} weights for {len(FEATURE_NAMES)} features")
    follows = {
        str(last): {str(n): int(c) for n, c in dict(nxt).items()}
        for last, nxt in dict(data["follows"]).items()
    }
    tables = Tables(
        prior={str(k): int(v) for k, v in dict(data["prior"]).items()},
        total=int(data["total"]),
        follows=follows,
        after={str(k): int(v) for k, v in dict(data["after"]).items()},
        frequent=tuple(str(s) for s in data["frequent"]),
        identities=tuple(str(s) for s in data["identities"]),
    )
    if len(tables.identities) > IDENTITIES:
        raise ValueError(f"{path}: more than {IDENTITIES} identities")
    return NextSpeaker(tables, weights, float(data["intercept"]), dict(data.get("info") or {}))


def save_for_training(examples: Iterable[tuple[str, str]], model_dir: Path) -> Path | None:
    """Fit on a chat model's training pairs and save it into ``model_dir``; None (nothing
    written) when there is nobody to choose between."""
    scorer = fit(examples)
    return save(scorer, model_dir) if scorer is not None else None
